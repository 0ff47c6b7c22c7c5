"""Latents encoded once per image (and flip), cached on disk, reused across runs.

The VAE never runs in the training step: each framed image is encoded once into its posterior
``N(mean, std^2)`` (AutoencoderKL's diagonal Gaussian), and every step draws
``latent = (mean + std * noise) * scaling_factor`` from that cache, which is what the diffusers
example script gets by encoding and sampling every step, at none of the cost.

Cache key: a fingerprint of the VAE (its config and a few weight tensors) and the SHA-256 of the
framed image's pixels, so a different model, a different crop or a flip is a different entry.
Each entry also records both and is checked when read: one that is truncated, from another
model or of the wrong shape is rebuilt, never trained on (:class:`_CacheFolder`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from nbhelpers.files import torch_bytes, write_bytes
from nbhelpers.images import vae_scale_factor


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


#: Bumped when an entry's content changes; entries of another version are rebuilt.
CACHE_FORMAT = 2


def latent_shape(vae, pixel_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(channels, h / f, w / f)``: the posterior's shape for ``(3, h, w)`` pixels."""
    f = vae_scale_factor(vae)
    return int(vae.config.latent_channels), int(pixel_shape[-2]) // f, int(pixel_shape[-1]) // f


class _CacheFolder:
    """The entries of one VAE: ``<cache>/<fingerprint>/<pixels_key>.pt``.

    An entry records the fingerprint, the pixels key and the latent shape it was made for, and
    is read only if all three match and its values are finite: a truncated file, one copied in
    from another model's folder, or one of an older format is rebuilt, never trained on. Entries
    are written under a temporary name and renamed, so processes that share the folder (two
    runs at once) each read either a whole entry or none.
    """

    def __init__(self, vae, cache_dir: str | Path | None) -> None:
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.fingerprint = vae_fingerprint(vae)
        self.folder = root / self.fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rebuilt: list[tuple[Path, str]] = []
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self, age_s: float = 3600.0) -> None:
        """Temporary files of writers that were killed (SIGKILL runs no cleanup): never read,
        but they would pile up. An hour old is stale: a writer takes milliseconds, so one of
        another run that is still going is never touched."""
        now = time.time()
        with os.scandir(self.folder) as entries:
            for e in entries:
                if e.name.startswith(".") and e.name.endswith(".pt"):
                    try:
                        if now - e.stat().st_mtime > age_s:
                            os.unlink(e.path)
                    except FileNotFoundError:
                        pass   # another process removed it first

    def read(self, key: str, shape: tuple[int, ...]) -> tuple[Tensor, Tensor] | None:
        entry = self.folder / f"{key}.pt"
        if not entry.exists():
            return None
        reason = None
        try:
            data = torch.load(entry, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a truncated file fails in many ways
            reason = f"unreadable ({type(e).__name__})"
        else:
            reason = self._why_not(data, key, shape)
        if reason is None:
            return data["mean"], data["std"]
        self.rebuilt.append((entry, reason))
        return None

    def _why_not(self, data, key: str, shape: tuple[int, ...]) -> str | None:
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            return "an entry of another format"
        if data.get("vae") != self.fingerprint:
            return f"made by another model (VAE {data.get('vae')!r})"
        if data.get("pixels") != key:
            return "made from other pixels"
        mean, std = data.get("mean"), data.get("std")
        for t in (mean, std):
            if not isinstance(t, Tensor) or tuple(t.shape) != shape or t.dtype != torch.float32:
                return f"latents of another shape or dtype (this model's: {shape}, float32)"
            if not bool(torch.isfinite(t).all()):
                return "NaN or infinite latents"
        if bool((std < 0).any()):
            return "negative standard deviations"
        return None

    def write(self, key: str, mean: Tensor, std: Tensor) -> None:
        write_bytes(self.folder / f"{key}.pt",
                    torch_bytes({"format": CACHE_FORMAT, "vae": self.fingerprint, "pixels": key,
                                 "mean": mean.clone(), "std": std.clone()}))

    def warn_rebuilt(self) -> None:
        if self.rebuilt:
            path, why = self.rebuilt[0]
            more = f" and {len(self.rebuilt) - 1} more" if len(self.rebuilt) > 1 else ""
            warnings.warn(f"latent cache: rebuilt {path.name}{more} in {self.folder} ({why}); "
                          "damaged or foreign entries are never trained on", stacklevel=3)


class _Group:
    """The posteriors of one image shape, in the order the images came, being filled."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.means: list[Tensor | None] = []
        self.stds: list[Tensor | None] = []
        self.captions: list[str] = []
        self.pending: dict[str, tuple[Tensor, list[int]]] = {}   # key: (pixels, slots)
        self.seen: dict[str, int] = {}     # key: the slot that holds its posterior
        self.hits = 0
        self.encoded = 0

    def cache(self, scaling_factor: float) -> LatentCache:
        return LatentCache(torch.stack(self.means), torch.stack(self.stds), scaling_factor,
                           hits=self.hits, encoded=self.encoded)


@torch.no_grad()
def _flush(vae, group: _Group, cache: _CacheFolder) -> None:
    """Encode the pending images of a group as one batch and write their entries."""
    if not group.pending:
        return
    batch = torch.stack([px for px, _ in group.pending.values()]).to(vae.device, vae.dtype)
    dist = vae.encode(batch).latent_dist
    for (key, (_, slots)), m, s in zip(group.pending.items(), dist.mean.float().cpu(),
                                       dist.std.float().cpu(), strict=True):
        cache.write(key, m, s)
        for slot in slots:
            group.means[slot], group.stds[slot] = m, s
        group.seen[key] = slots[0]
    group.encoded += len(group.pending)
    group.pending.clear()


def encode_stream(vae, examples: Iterable[tuple[Tensor, str]],
                  cache_dir: str | Path | None = None, batch_size: int = 8
                  ) -> tuple[list[LatentCache], list[list[str]]]:
    """Encode ``(pixels (3, h, w) in [-1, 1], caption)`` pairs as they come, through the cache.

    Memory stays bounded however many images there are: an example is held only until its
    batch (``batch_size`` images of one shape) is encoded; what is kept is its posterior
    (``(4, h/8, w/8)`` twice). Identical images are encoded once. The order of the examples
    within a shape is kept, whether their entries came from the cache or the VAE.

    Returns:
        one :class:`LatentCache` per image shape (sorted by shape) and the captions of each.
    """
    cache = _CacheFolder(vae, cache_dir)
    groups: dict[tuple[int, ...], _Group] = {}
    for pixels, caption in examples:
        shape = tuple(pixels.shape)
        group = groups.setdefault(shape, _Group(shape))
        key = pixels_key(pixels)
        slot = len(group.means)
        group.means.append(None)
        group.stds.append(None)
        group.captions.append(caption)
        if key in group.pending:          # the same image again, already in this batch
            group.pending[key][1].append(slot)
            continue
        if key in group.seen:             # ... or earlier in this run
            group.means[slot], group.stds[slot] = group.means[group.seen[key]], \
                group.stds[group.seen[key]]
            continue
        hit = cache.read(key, latent_shape(vae, shape))
        if hit is not None:
            group.means[slot], group.stds[slot] = hit
            group.seen[key] = slot
            group.hits += 1
            continue
        group.pending[key] = (pixels.detach().cpu(), [slot])
        if len(group.pending) >= batch_size:
            _flush(vae, group, cache)
    for group in groups.values():
        _flush(vae, group, cache)
    cache.warn_rebuilt()
    if not groups:
        raise ValueError("no images to encode")
    scaling = float(vae.config.scaling_factor)
    ordered = [groups[k] for k in sorted(groups)]
    return [g.cache(scaling) for g in ordered], [g.captions for g in ordered]


def encode_images(vae, images: Sequence[Tensor], cache_dir: str | Path | None = None,
                  batch_size: int = 8) -> LatentCache:
    """Encode ``(3, H, W)`` images in ``[-1, 1]`` (all of one shape) with the VAE, reading and
    filling the cache.

    Args:
        cache_dir: folder of ``.pt`` entries; ``None`` uses :func:`default_cache_dir`. Entries
            are written atomically, so an interrupted run never leaves a broken one, and each
            is checked when read (see :class:`_CacheFolder`): a damaged one is rebuilt, with
            a warning.

    Returns:
        a :class:`LatentCache` on the CPU, float32.
    """
    if not images:
        raise ValueError("no images to encode")
    shapes = {tuple(img.shape) for img in images}
    if len(shapes) > 1:
        raise ValueError(f"encode_images needs images of one shape, got {sorted(shapes)}; "
                         "use LatentSet.encode for a mix of shapes")
    groups, _ = encode_stream(vae, ((img, "") for img in images), cache_dir, batch_size)
    return groups[0]


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
        return cls.encode_stream(vae, zip(images, captions, strict=True), cache_dir=cache_dir)

    @classmethod
    def encode_stream(cls, vae, examples: Iterable[tuple[Tensor, str]],
                      cache_dir: str | Path | None = None) -> LatentSet:
        """As :meth:`encode`, from ``(pixels, caption)`` pairs made as they are needed: the
        pixels of a folder of any size are never all in memory at once (:func:`encode_stream`).
        """
        groups, captions = encode_stream(vae, examples, cache_dir=cache_dir)
        return cls(groups, captions)
