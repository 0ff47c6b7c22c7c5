"""Latents encoded once per image (and flip), cached on disk, reused across runs.

The VAE never runs in the training step: each framed image is encoded once into its posterior
``N(mean, std^2)`` (AutoencoderKL's diagonal Gaussian), and every step draws
``latent = (mean + std * noise) * scaling_factor`` from that cache, which is what the diffusers
example script gets by encoding and sampling every step, at none of the cost.

Cache key: a fingerprint of the VAE (its config and a few weight tensors) and the SHA-256 of the
framed image's pixels, so a different model, a different crop or a flip is a different entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from nbhelpers.files import atomic_path


def default_cache_dir() -> Path:
    """``$NBHELPERS_CACHE`` or ``~/.cache/nbhelpers``, plus ``/latents``."""
    root = os.environ.get("NBHELPERS_CACHE") or Path.home() / ".cache" / "nbhelpers"
    return Path(root) / "latents"


def vae_fingerprint(vae) -> str:
    """A short hash of the VAE's config and a sample of its weights (cheap, even for SD's)."""
    h = hashlib.sha256(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    params = list(vae.parameters())
    for p in params[:: max(1, len(params) // 16)]:
        h.update(p.detach().float().cpu().flatten()[:4096].numpy().tobytes())
    return h.hexdigest()[:16]


def pixels_key(pixels: Tensor) -> str:
    """SHA-256 of an image tensor's values, shape and dtype."""
    t = pixels.detach().cpu().contiguous()
    h = hashlib.sha256(str((tuple(t.shape), str(t.dtype))).encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()[:32]


@dataclass
class LatentCache:
    """Posterior means and standard deviations of a set of images, shape ``(N, 4, h, w)``."""

    mean: Tensor
    std: Tensor
    scaling_factor: float
    hits: int = 0       #: entries read from disk
    encoded: int = 0    #: entries computed by the VAE this time

    def sample(self, index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw scaled latents ``(B, 4, h, w)`` for the images ``index`` (one posterior draw)."""
        mean, std = self.mean[index], self.std[index]
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return (mean + std * noise) * self.scaling_factor


@torch.no_grad()
def encode_images(vae, images: Sequence[Tensor], cache_dir: str | Path | None = None,
                  batch_size: int = 8) -> LatentCache:
    """Encode ``(3, H, W)`` images in ``[-1, 1]`` with the VAE, reading and filling the cache.

    Args:
        cache_dir: folder of ``.pt`` entries; ``None`` uses :func:`default_cache_dir`. Entries
            are written atomically, so an interrupted run never leaves a broken one.

    Returns:
        a :class:`LatentCache` on the CPU, float32.
    """
    if not images:
        raise ValueError("no images to encode")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / vae_fingerprint(vae)
    folder.mkdir(parents=True, exist_ok=True)
    means: list[Tensor | None] = [None] * len(images)
    stds: list[Tensor | None] = [None] * len(images)
    todo, hits = [], 0
    for k, img in enumerate(images):
        entry = folder / f"{pixels_key(img)}.pt"
        if entry.exists():
            try:
                data = torch.load(entry, map_location="cpu", weights_only=True)
                means[k], stds[k] = data["mean"], data["std"]
                hits += 1
                continue
            except Exception:  # a damaged entry is recomputed
                pass
        todo.append(k)
    device, dtype = vae.device, vae.dtype
    for j in range(0, len(todo), batch_size):
        idx = todo[j:j + batch_size]
        batch = torch.stack([images[k] for k in idx]).to(device, dtype)
        dist = vae.encode(batch).latent_dist
        for k, m, s in zip(idx, dist.mean.float().cpu(), dist.std.float().cpu(), strict=True):
            means[k], stds[k] = m, s
            with atomic_path(folder / f"{pixels_key(images[k])}.pt") as tmp:
                torch.save({"mean": m.clone(), "std": s.clone()}, tmp)
    return LatentCache(torch.stack(means), torch.stack(stds),
                       float(vae.config.scaling_factor), hits=hits, encoded=len(todo))


@dataclass
class LatentSet:
    """Cached latents grouped by shape (aspect-ratio buckets give several), with captions.

    A batch never mixes shapes: :meth:`draw` picks a group with probability proportional to
    its size, then images within it.
    """

    groups: list[LatentCache]
    captions: list[list[str]]

    def __post_init__(self) -> None:
        if not self.groups or len(self.groups) != len(self.captions):
            raise ValueError("a LatentSet needs one caption list per latent group")
        for cache, caps in zip(self.groups, self.captions, strict=True):
            if len(cache.mean) != len(caps):
                raise ValueError(f"{len(caps)} captions for {len(cache.mean)} cached images")

    def __len__(self) -> int:
        return sum(len(c) for c in self.captions)

    @property
    def hits(self) -> int:
        return sum(g.hits for g in self.groups)

    @property
    def encoded(self) -> int:
        return sum(g.encoded for g in self.groups)

    def draw(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, list[str]]:
        """Scaled latents ``(B, 4, h, w)`` (one posterior draw each) and their captions."""
        sizes = torch.tensor([len(c) for c in self.captions], dtype=torch.float64)
        g = int(torch.multinomial(sizes, 1, generator=generator))
        idx = torch.randint(0, len(self.captions[g]), (batch_size,), generator=generator)
        return self.groups[g].sample(idx, generator), [self.captions[g][int(i)] for i in idx]

    @classmethod
    def encode(cls, vae, images: Sequence[Tensor], captions: Sequence[str],
               cache_dir: str | Path | None = None) -> LatentSet:
        """Encode ``(3, h, w)`` images (any mix of shapes) through the cache, grouped by shape."""
        if len(images) != len(captions):
            raise ValueError(f"{len(captions)} captions for {len(images)} images")
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for k, img in enumerate(images):
            by_shape.setdefault(tuple(img.shape), []).append(k)
        groups, caps = [], []
        for _, idx in sorted(by_shape.items()):
            groups.append(encode_images(vae, [images[k] for k in idx], cache_dir=cache_dir))
            caps.append([captions[k] for k in idx])
        return cls(groups, caps)
