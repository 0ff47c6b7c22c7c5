"""The training examples: framed images with their captions, and the prompts to train them with.

:class:`TIDataset` frames every image once (:mod:`nbhelpers.ti.framing`) and holds the examples
(pixels ``(3, h, w)`` in ``[-1, 1]``, caption, source); it draws each step's prompts from a
seeded generator (:func:`~nbhelpers.ti.captions.draw_prompts`) and groups examples of one shape
into batches. Its items come from :func:`~nbhelpers.ti.images.load_folder`, or from images in
memory through :func:`items_from_images`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from nbhelpers.ti.captions import draw_prompts, fill_template, load_templates, tidy_spaces
from nbhelpers.ti.framing import Box, FramedImage, FramingMode, frame
from nbhelpers.ti.images import LoadedImage, LoadReport, to_rgb

__all__ = ["TIDataset", "TIExample", "items_from_images"]


def items_from_images(
    images: Sequence[Image.Image | np.ndarray | Tensor],
    captions: Sequence[str],
    *,
    sources: Sequence[str | os.PathLike | None] | None = None,
) -> list[LoadedImage]:
    """Items for :class:`TIDataset` from images in memory (the toy world's, for example).

    ``images``: PIL images (any mode), ``(H, W, 3)`` uint8 arrays or ``(3, H, W)`` tensors in
    ``[-1, 1]``; ``captions``: one per image (may be ``""``).
    """
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions; "
                         f"pass one caption per image ('' for none)")
    if sources is not None and len(sources) != len(images):
        raise ValueError(f"got {len(sources)} sources for {len(images)} images")
    items = []
    for i, (img, cap) in enumerate(zip(images, captions, strict=True)):
        if isinstance(img, Tensor):
            if img.ndim != 3 or img.shape[0] != 3:
                raise ValueError(f"image {i}: expected a (3, H, W) tensor, got "
                                 f"{tuple(img.shape)}")
            arr = ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            pil = Image.fromarray(arr.permute(1, 2, 0).cpu().numpy(), mode="RGB")
        elif isinstance(img, np.ndarray):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"image {i}: expected an (H, W, 3) uint8 array, got "
                                 f"{img.dtype} {img.shape}")
            pil = Image.fromarray(img, mode="RGB")
        elif isinstance(img, Image.Image):
            pil = to_rgb(img)
        else:
            raise TypeError(f"image {i}: expected a PIL image, array or tensor, got "
                            f"{type(img).__name__}")
        src = None if sources is None or sources[i] is None else Path(sources[i])
        items.append(LoadedImage(path=src, image=pil, caption=tidy_spaces(cap)))
    return items


@dataclass(frozen=True)
class TIExample:
    """One training example: ``pixels`` ``(3, h, w)`` float32 in ``[-1, 1]`` (``h = w =
    size`` except for buckets), the caption (no template), and where it came from."""

    pixels: Tensor
    caption: str
    source: Path | None
    crop_box: Box
    flipped: bool


class TIDataset(torch.utils.data.Dataset):
    """Framed training examples and the prompts to train them with.

    Every image is framed once, here (framing is deterministic); ``dataset[i]`` is a
    :class:`TIExample`. Prompts are drawn per step by :meth:`prompts` from a generator seeded
    with ``(seed, step)``, so step ``k`` gets the same prompts whatever ran before it.

    Args:
        items: a :class:`LoadReport` or :class:`LoadedImage` list (:func:`items_from_images`).
        name: the placeholder token that fills ``[name]``, e.g. ``"<mosaic>"``.
        templates: ``"style"``, ``"object"``, a template file or a list (:func:`load_templates`).
        size, mode, flip, overlap: as :func:`frame`.
        seed: seeds prompt sampling and batch order.
    """

    def __init__(
        self,
        items: LoadReport | Sequence[LoadedImage],
        *,
        name: str,
        templates: Literal["style", "object"] | str | os.PathLike | Sequence[str],
        size: int,
        mode: FramingMode = "center",
        flip: bool = False,
        overlap: float = 0.25,
        seed: int = 0,
    ) -> None:
        loaded = list(items.loaded if isinstance(items, LoadReport) else items)
        if not loaded:
            raise ValueError("no items to train on; load_folder(...) or items_from_images(...) "
                             "gives them")
        fill_template("[name]", name)  # validates name
        self.name = name
        self.templates = load_templates(templates)
        self.size, self.mode, self.flip, self.seed = size, mode, flip, seed
        self._framed: list[tuple[FramedImage, str]] = []
        for item in loaded:
            for f in frame(item.image, size, mode, flip=flip, overlap=overlap,
                           source=item.path):
                self._framed.append((f, item.caption))

    def __len__(self) -> int:
        return len(self._framed)

    def __getitem__(self, index: int) -> TIExample:
        f, caption = self._framed[index]
        return TIExample(f.tensor(), caption, f.source, f.crop_box, f.flipped)

    @property
    def captions(self) -> list[str]:
        return [c for _, c in self._framed]

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """``(h, w)`` of every example (all ``(size, size)`` unless ``mode="buckets"``)."""
        return [(f.image.size[1], f.image.size[0]) for f, _ in self._framed]

    @property
    def framed(self) -> list[FramedImage]:
        return [f for f, _ in self._framed]

    def prompts(self, indices: Sequence[int], step: int) -> list[str]:
        """Prompts for the examples ``indices`` at training step ``step``, reproducibly."""
        rng = np.random.default_rng([self.seed, step])
        return draw_prompts([self._framed[i][1] for i in indices], self.templates,
                              self.name, rng)

    def batches(self, batch_size: int, epoch: int = 0) -> list[list[int]]:
        """Shuffled index batches in which every example has the same shape (one bucket).

        Seeded with ``(seed, epoch)``. The last batch of a shape may be smaller.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        rng = np.random.default_rng([self.seed, epoch, 1])
        groups: dict[tuple[int, int], list[int]] = {}
        for i, shape in enumerate(self.shapes):
            groups.setdefault(shape, []).append(i)
        out: list[list[int]] = []
        for shape in sorted(groups):
            idx = [groups[shape][k] for k in rng.permutation(len(groups[shape]))]
            out += [idx[j:j + batch_size] for j in range(0, len(idx), batch_size)]
        return [out[k] for k in rng.permutation(len(out))]

    def batch(self, indices: Sequence[int]) -> tuple[Tensor, list[str]]:
        """Stack examples: pixels ``(B, 3, h, w)`` in ``[-1, 1]`` and their captions."""
        shapes = {self.shapes[i] for i in indices}
        if len(shapes) != 1:
            raise ValueError(f"examples {list(indices)} have different shapes {sorted(shapes)}; "
                             f"use batches() to group them by bucket")
        return (torch.stack([self._framed[i][0].tensor() for i in indices]),
                [self._framed[i][1] for i in indices])
