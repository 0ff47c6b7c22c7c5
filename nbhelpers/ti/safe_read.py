"""The bytes of an embedding file, read without trusting them.

An embedding file comes from anywhere, so reading one must not run code or exhaust memory:

* a ``.pt`` file is a pickle, and unpickling runs whatever code the file names, so it is read
  with ``torch.load(..., weights_only=True)`` only (plain dicts, lists, numbers, strings and
  tensors); a file that needs more is refused, never unpickled in full;
* a file larger than :data:`MAX_EMBEDDING_BYTES`, or a zip-format ``.pt`` whose directory
  declares more, is refused before it is read: it is a model or a LoRA, or a zip bomb;
* a safetensors header size that the file cannot hold is refused before a reader trusts it;
* a LoRA file is named as one (with the way to load it) before its tensors are read.

What the payload means (which format, which token) is :mod:`nbhelpers.ti.formats`'s part.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nbhelpers.ti.embeddings import EmbeddingFileError

#: The most an embedding file may hold (or, zipped, unpack to). Embeddings are kilobytes (75
#: vectors of 1024 floats: 300 KB); anything near this is a model or a LoRA, or a zip bomb.
MAX_EMBEDDING_BYTES = 64 * 2 ** 20
#: The files diffusers' ``load_textual_inversion`` looks for in a concept folder, in its order.
CONCEPT_FILES = ("learned_embeds.safetensors", "learned_embeds.bin")
#: Keys of LoRA weights: kohya (``lora_unet_...``, ``.lora_down.``), diffusers (``_lora.up``),
#: PEFT (``.lora_A.``, ``.lora_B.``, ``lora_magnitude_vector``).
_LORA_KEY = re.compile(r"^lora_(?:unet|te\d?|transformer)_"
                       r"|(?:^|[._])lora(?:_A|_B|_up|_down|_magnitude|\.up|\.down)(?=[._]|$)")


def is_safetensors(path: Path) -> bool:
    """True if the file starts as safetensors do: a little-endian u64 header size, then '{'.

    A header size that the file cannot hold is refused here, before any reader trusts it.
    """
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (size,) = struct.unpack("<Q", head[:8])
    room = path.stat().st_size - 8
    if not 0 < size <= room:
        raise EmbeddingFileError(
            f"{path} is a damaged safetensors file: its header size field says {size} bytes, "
            f"and {room} bytes follow it (a truncated or corrupted download: fetch it again)")
    return True


def _too_big(path: Path, size: int, what: str, detail: str = "") -> EmbeddingFileError:
    return EmbeddingFileError(
        f"refusing to load {path}: {what} {size / 2 ** 20:.1f} MiB{detail}; an embedding is a few "
        f"KB (at most {MAX_EMBEDDING_BYTES // 2 ** 20} MiB are read). Is it a model checkpoint "
        "or a LoRA? Load those with diffusers' from_single_file or load_lora_weights")


def _check_zip_sizes(path: Path) -> None:
    """Refuse a zip-format ``.pt`` whose entries would unpack to too much, before unpacking.

    torch writes its zip entries stored (uncompressed), but its reader also inflates
    compressed ones, allocating the size that the zip directory declares: a few KB of
    deflated zeros can declare gigabytes. Those declared sizes are checked here.
    """
    import zipfile

    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # torch takes a file for a zip by these bytes too
            return
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except Exception as err:  # BadZipFile, NotImplementedError, OSError, ...
        raise EmbeddingFileError(f"{path} is a damaged zip-format PyTorch file "
                                 f"({err.__class__.__name__}: {err}); fetch it again") from None
    total = sum(info.file_size for info in infos)
    if total > MAX_EMBEDDING_BYTES:
        biggest = max(infos, key=lambda info: info.file_size)
        raise _too_big(path, total, "its zip entries unpack to",
                       f" (the largest, {biggest.filename!r}, packs {biggest.file_size} bytes "
                       f"into {biggest.compress_size})")


def read_pickle(path: Path, size: int) -> Any:
    """``torch.load`` with ``weights_only=True`` of the ``size``-byte file at ``path``; a file
    that needs more, or is too big, is refused."""
    import pickle
    import warnings

    if size > MAX_EMBEDDING_BYTES:
        raise _too_big(path, size, "it is")
    _check_zip_sizes(path)
    try:
        # a file object: torch.load would pick a reader from a misleading extension
        with open(path, "rb") as f, warnings.catch_warnings():
            # damaged files make torch warn about their protocol byte before failing
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "Weights only load failed" not in text:
            raise EmbeddingFileError(f"{path} is not a readable PyTorch file ({text.strip()})"
                                     ) from None
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found is None:   # not a class it names: an opcode no embedding file has (junk bytes)
            raise _not_an_embedding(path, "an unknown pickle opcode") from None
        what = f" (it names {found.group(1)})"
        raise EmbeddingFileError(
            f"refusing to load {path}: it needs full unpickling{what}, and unpickling runs "
            "whatever code the file names. Embedding files need only dicts and tensors, so it "
            "was not made by A1111, kohya or diffusers as they save today (the original "
            "textual-inversion repository's nn.ParameterDict files are one such case). Ask "
            "for a .safetensors version, or, only if you trust its source, convert it in a "
            "throwaway environment") from None
    except Exception as err:  # torch raises KeyError, RuntimeError, ... on non-torch bytes
        raise _not_an_embedding(path, err.__class__.__name__) from None


def _not_an_embedding(path: Path, stopped_at: str) -> EmbeddingFileError:
    return EmbeddingFileError(f"{path} is not an embedding file: its bytes read neither as "
                              f"safetensors nor as a PyTorch file (the reader stopped at "
                              f"{stopped_at}); check that the download finished, or open it "
                              f"with the tool that wrote it")


def resolve_file(path: Path) -> Path:
    """``path`` itself, or for a concept folder the file in it that diffusers would read."""
    if path.is_dir():
        for name in CONCEPT_FILES:
            if (path / name).is_file():
                return path / name
        others = sorted(p.name for p in path.iterdir()
                        if p.suffix.lower() in (".safetensors", ".bin", ".pt", ".png"))
        hint = f"; it holds {others[:5]}: pass one of those files" if others else ""
        raise FileNotFoundError(
            f"{path} is a folder without {' or '.join(CONCEPT_FILES)} (the embedding file of "
            f"a concept folder){hint}")
    if path.exists() and not path.is_file():   # a FIFO or device: reading could block
        raise EmbeddingFileError(f"{path} is not a regular file (a named pipe, socket or "
                                 f"device); pass the embedding file itself")
    if not path.is_file():
        raise FileNotFoundError(f"no embedding file at {path}")
    return path


def refuse_lora(keys: list, path: Path) -> None:
    """Name a LoRA file as one: its keys are LoRA weights (and maybe bundled embeddings)."""
    names = [k for k in keys if isinstance(k, str)]
    lora = [k for k in names if _LORA_KEY.search(k)]
    bundled = sorted({k.split(".")[1] for k in names
                      if k.startswith("bundle_emb.") and k.count(".") >= 2})
    if len(lora) < 2 and not bundled:  # a LoRA has two matrices per layer; "lora_A" may be a token
        return
    what = f"{len(lora)} LoRA weights such as {lora[0]!r}" if lora else "a LoRA bundle"
    extra = (f" It bundles the embedding(s) {bundled}, which A1111 loads together with the "
             "LoRA; nbhelpers does not extract them." if bundled else "")
    raise EmbeddingFileError(
        f"{path} is a LoRA file, not a textual-inversion embedding ({what}). Load it with "
        "diffusers' pipe.load_lora_weights(path), or put it in A1111's models/Lora folder."
        f"{extra}")


def read_safetensors(path: Path, size: int) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and header metadata of a safetensors file; LoRAs and big files refused."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = dict(f.metadata() or {})
            keys = list(f.keys())
            refuse_lora(keys, path)  # before reading a LoRA's hundreds of tensors
            if size > MAX_EMBEDDING_BYTES:
                raise _too_big(path, size, f"its {len(keys)} tensors take")
            payload = {key: f.get_tensor(key) for key in keys}
    except EmbeddingFileError:
        raise
    except Exception as err:
        raise EmbeddingFileError(f"{path} looks like safetensors but cannot be read "
                                 f"({err.__class__.__name__}: {err})") from None
    return payload, header
