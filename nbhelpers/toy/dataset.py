"""The shapes world as a torch ``Dataset``: captioned images made on demand, deterministic.

Item ``i`` of :class:`ShapesDataset` is scene ``i`` of :func:`nbhelpers.toy.world.sample_scenes`,
rendered, with its caption (an :class:`Example`); :func:`collate` batches them for a
``DataLoader``, :func:`make_set` makes ``n`` of them at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from nbhelpers.toy import world


@dataclass(frozen=True)
class Example:
    """One training example: image ``(3, 64, 64)`` in ``[-1, 1]``, its caption, its scene."""

    image: Tensor
    caption: str
    scene: world.Scene

    def __iter__(self) -> Iterator[Any]:  # unpacks as (image, caption, scene)
        return iter(getattr(self, f.name) for f in fields(self))


class ShapesDataset(torch.utils.data.Dataset):
    """The training set: item ``i`` is scene ``i`` of :func:`~nbhelpers.toy.world.sample_scenes`
    with its caption.

    Items are ``(image, caption, scene)`` (an :class:`Example`); made on demand and
    deterministic. Use :func:`collate` as a DataLoader's ``collate_fn``.

    Args:
        n: number of items.
        seed: the world seed.
        **kwargs: rates and fixed attributes, passed to :func:`~nbhelpers.toy.world.random_scene`.
    """

    def __init__(self, n: int, seed: int = 0, **kwargs: Any) -> None:
        world.check_count("n", n)
        world.check_seed(seed)
        self.n, self.seed, self.kwargs = int(n), int(seed), kwargs

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Example:
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for a dataset of {self.n}")
        i %= self.n
        scene = world.sample_scenes(1, self.seed, start=i, **self.kwargs)[0]
        image = world.render_tensor(scene)
        return Example(image, world.captions_for([scene], self.seed, start=i)[0], scene)


def collate(batch: Sequence[Example]) -> tuple[Tensor, list[str], list[world.Scene]]:
    """Stack examples into ``(images (B, 3, 64, 64), captions, scenes)``."""
    return (torch.stack([e.image for e in batch]), [e.caption for e in batch],
            [e.scene for e in batch])


def iter_dataset(n: int, seed: int = 0, **kwargs: Any) -> Iterator[Example]:
    """Yield the ``n`` examples of ``ShapesDataset(n, seed, **kwargs)`` in order."""
    ds = ShapesDataset(n, seed, **kwargs)
    for i in range(len(ds)):
        yield ds[i]


def make_set(n: int, seed: int = 0,
             **kwargs: Any) -> tuple[Tensor, list[str], list[world.Scene]]:
    """``n`` examples at once: ``(images (n, 3, 64, 64), captions, scenes)``."""
    scenes = world.sample_scenes(n, seed, **kwargs)
    return world.render_batch(scenes), world.captions_for(scenes, seed), scenes
