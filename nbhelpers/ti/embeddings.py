"""Textual-inversion embeddings: one dataclass, three file formats, and a loader into a pipeline.

A learned embedding is a placeholder token (``"<my-style>"``), a tensor ``vectors`` of shape
``(n_vectors, width)`` and some metadata. ``width`` is the text encoder's hidden size: 768 for
Stable Diffusion 1.x (CLIP ViT-L/14), 1024 for SD 2.x (OpenCLIP ViT-H/14); vectors of one
family mean nothing to the other. A token of ``n`` vectors stands for ``n`` prompt tokens,
named as diffusers' ``load_textual_inversion`` names them: ``<tok>``, ``<tok>_1``, ...,
``<tok>_{n-1}``; a prompt that says ``<tok>`` is expanded to ``"<tok> <tok>_1 ... "``.

Files (what diffusers 0.42's ``load_textual_inversion`` reads, checked in its source):

==========  ==============================================  =================================
format      content                                         diffusers reads it
==========  ==============================================  =================================
diffusers   safetensors ``{token: (n, width)}``, one key    yes: the key is the token
a1111       ``.pt`` dict: ``string_to_token {'*': 265}``,   yes: ``name`` is the token,
            ``string_to_param {'*': (n, width)}``,          ``string_to_param['*']`` the
            ``name``, ``step``, ``sd_checkpoint``,          vectors
            ``sd_checkpoint_name``
kohya       ``{"emb_params": (n, width)}``, .safetensors    with ``token=`` (one key, so it
            or .pt; no token name in the file               is read as a diffusers file)
a1111 PNG   a PNG carrying the a1111 dict: base64 JSON in   no (read here, never written;
            a ``sd-ti-embedding`` text chunk, or coded in   see :mod:`nbhelpers.ti.a1111_png`)
            the pixels of two side strips
==========  ==============================================  =================================

:func:`load_embedding` tells the format from the content, not the file name. A ``.pt`` file is
a pickle, and unpickling runs whatever code the file names, so ``.pt`` files are read with
``torch.load(..., weights_only=True)`` only (plain dicts, lists, numbers, strings and tensors);
a file that needs more is refused, never unpickled in full. A1111's PNGs hold JSON, not pickles.
A file larger than :data:`MAX_EMBEDDING_BYTES`, or a zip-format ``.pt`` whose directory declares
more, is refused before it is read: it is a model or a LoRA, or a zip bomb.

Step and metadata (``init_word``, ``model_name``, ...) travel in the safetensors header
(diffusers and kohya .safetensors) or in the A1111 dict (``step``, ``sd_checkpoint_name``
and an extra ``nbhelpers_meta`` JSON string that other tools ignore). A kohya ``.pt`` holds the
vectors alone, since diffusers reads only one-key dicts as bare embeddings. ``.pt`` files are
written in torch's legacy (non-zip) serialization: AUTOMATIC1111's safe unpickler refuses the
zip entries that current torch adds (``.format_version``, ``byteorder``, ...).

In a pipeline, :func:`add_embedding_to_pipeline` does what ``load_textual_inversion`` does
(new tokens, bigger embedding matrix, the vectors in the new rows), and also replaces the row
of an existing word on request (``overwrite=True``), for the bias experiments.
:func:`inspect_embedding` reports norms and the nearest vocabulary words.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from nbhelpers.files import torch_bytes, write_bytes

EmbeddingFormat = Literal["diffusers", "a1111", "kohya"]
FORMATS: tuple[str, ...] = ("diffusers", "a1111", "kohya")
#: The id of ``*`` in CLIP's vocabulary; A1111 writes it in ``string_to_token``.
A1111_STAR_ID = 265
#: Text-encoder widths of the model families, to name them in messages.
FAMILIES: dict[int, str] = {
    768: "SD 1.x",
    1024: "SD 2.x",
    1280: "SDXL's second text encoder",
}
#: Which extensions each format may be saved with.
_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "diffusers": (".safetensors",),
    "a1111": (".pt",),
    "kohya": (".safetensors", ".pt"),
}
#: Keys that mark the other layouts; a diffusers file must not use them as its token.
_RESERVED = frozenset({"emb_params", "string_to_param", "clip_l", "clip_g"})
_META_KEY = "nbhelpers_meta"  # extra key of our A1111 files; A1111 and diffusers ignore it
#: The most an embedding file may hold (or, zipped, unpack to). Embeddings are kilobytes (75
#: vectors of 1024 floats: 300 KB); anything near this is a model or a LoRA, or a zip bomb.
MAX_EMBEDDING_BYTES = 64 * 2 ** 20
#: The files diffusers' ``load_textual_inversion`` looks for in a concept folder, in its order.
CONCEPT_FILES = ("learned_embeds.safetensors", "learned_embeds.bin")
#: Keys of LoRA weights: kohya (``lora_unet_...``, ``.lora_down.``), diffusers (``_lora.up``),
#: PEFT (``.lora_A.``, ``.lora_B.``, ``lora_magnitude_vector``).
_LORA_KEY = re.compile(r"^lora_(?:unet|te\d?|transformer)_"
                       r"|(?:^|[._])lora(?:_A|_B|_up|_down|_magnitude|\.up|\.down)(?=[._]|$)")


class EmbeddingFileError(ValueError):
    """An embedding file that cannot be read: unknown layout, unsafe pickle, missing token."""


class TokenRequiredError(EmbeddingFileError):
    """A kohya file read without ``token=``: the format stores no token name.

    Attributes: ``path`` (the file), ``saved`` (the token nbhelpers saved it for, if it wrote
    the file, else None), so that a caller can phrase the fix in its own terms.
    """

    def __init__(self, message: str, path: Path, saved: str | None) -> None:
        super().__init__(message)
        self.path, self.saved = path, saved


# --------------------------------------------------------------------------------------------
# The embedding itself
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Embedding:
    """A learned token: its string, its vectors ``(n_vectors, width)``, the training step, meta.

    Args:
        token: the placeholder as written in prompts, e.g. ``"<my-style>"``; no whitespace.
        vectors: float tensor ``(n_vectors, width)``, one row per prompt token it stands for.
        step: training steps behind it (0 if unknown).
        meta: JSON-able extra facts; the conventional keys are ``init_word`` and
            ``model_name``.
    """

    token: str
    vectors: Tensor
    step: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_token(self.token)
        if not isinstance(self.vectors, Tensor):
            raise TypeError(f"vectors must be a torch.Tensor of shape (n_vectors, width), "
                            f"got {type(self.vectors).__name__}")
        if self.vectors.ndim != 2:
            hint = (" (one vector: use vectors.unsqueeze(0))" if self.vectors.ndim == 1 else "")
            raise ValueError(f"vectors must be 2-D (n_vectors, width), got shape "
                             f"{tuple(self.vectors.shape)}{hint}")
        if self.vectors.shape[0] < 1 or self.vectors.shape[1] < 1:
            raise ValueError(f"vectors of shape {tuple(self.vectors.shape)} are empty; an "
                             "embedding needs at least one vector of width >= 1")
        if not self.vectors.is_floating_point():
            raise ValueError(f"vectors must be floating point, got {self.vectors.dtype}")
        if isinstance(self.step, bool) or not isinstance(self.step, int) or self.step < 0:
            raise ValueError(f"step must be an int >= 0, got {self.step!r}")
        if not isinstance(self.meta, dict):
            raise TypeError(f"meta must be a dict, got {type(self.meta).__name__}")

    @property
    def n_vectors(self) -> int:
        """How many prompt tokens this embedding stands for."""
        return int(self.vectors.shape[0])

    @property
    def width(self) -> int:
        """The text encoder's hidden size these vectors are made for (768 for SD 1.x)."""
        return int(self.vectors.shape[1])

    @property
    def token_strings(self) -> list[str]:
        """The tokenizer entries, as diffusers names them: ``<tok>``, ``<tok>_1``, ..."""
        return [self.token] + [f"{self.token}_{i}" for i in range(1, self.n_vectors)]


def check_token(token: object) -> None:
    """Refuse a token that cannot be one prompt token: not a str, empty, or with whitespace."""
    if not isinstance(token, str):
        raise TypeError(f"token must be a str such as '<my-style>', got {type(token).__name__}")
    if not token:
        raise ValueError("token is empty; give the placeholder as written in prompts, "
                         "e.g. token='<my-style>'")
    if any(c.isspace() for c in token):
        suggestion = re.sub(r"\s+", "-", token.strip())
        raise ValueError(f"token {token!r} contains whitespace; prompts are split at spaces, "
                         f"so use one word such as {suggestion!r}")


def guess_family(width: int) -> str | None:
    """The model family whose text encoder is ``width`` wide (768: SD 1.x, 1024: SD 2.x)."""
    return FAMILIES.get(int(width))


def _width_label(width: int) -> str:
    family = guess_family(width)
    return f"{width} wide ({family})" if family else f"{width} wide"


def check_width(emb: Embedding, model_width: int) -> None:
    """Refuse an embedding whose width differs from the text encoder's, naming both families."""
    if emb.width != model_width:
        raise ValueError(
            f"this embedding is {_width_label(emb.width)}; the model's text encoder is "
            f"{_width_label(model_width)}; embeddings do not transfer between them. Use an "
            f"embedding trained on this model family (token {emb.token!r})")


def _check_finite(emb: Embedding, action: str) -> None:
    bad = int((~torch.isfinite(emb.vectors)).sum())
    if bad:
        raise ValueError(
            f"refusing to {action} {emb.token!r}: {bad} of its {emb.vectors.numel()} values are "
            "NaN or inf (training diverged: lower the learning rate, or keep the trainable "
            "embedding in float32 under fp16 mixed precision)")


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"unknown embedding format {format!r}; use one of {list(FORMATS)}")


def _infer_save_format(path: Path, format: str | None) -> str:
    suffix = path.suffix.lower()
    known = sorted({s for exts in _EXTENSIONS.values() for s in exts})
    if suffix not in known:
        raise ValueError(f"cannot save an embedding as {path.name!r}: use a file name ending in "
                         f"one of {known}")
    if format is None:
        if suffix == ".safetensors":
            return "diffusers"
        raise ValueError(f"{path.name!r}: a .pt file may be 'a1111' or 'kohya'; pass "
                         "format='a1111' (AUTOMATIC1111) or format='kohya'")
    _check_format(format)
    if suffix not in _EXTENSIONS[format]:
        raise ValueError(f"format {format!r} is not saved as {suffix}; name the file with "
                         f"{' or '.join(_EXTENSIONS[format])}")
    return format


def _meta_json(emb: Embedding) -> str:
    for key in emb.meta:
        if not isinstance(key, str):
            raise ValueError(f"meta keys must be strings, got {key!r}")
    try:
        return json.dumps(emb.meta, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"meta must hold JSON values (str, int, float, bool, None, lists, "
                         f"dicts) only: {err}; convert the offending value to a string") from err


def save_embedding(emb: Embedding, path: str | os.PathLike,
                   format: EmbeddingFormat | None = None) -> Path:
    """Write ``emb`` to ``path`` (atomically) in ``format``; returns the path.

    ``format`` defaults from the extension: ``.safetensors`` is ``"diffusers"``; ``.pt`` needs
    ``format="a1111"`` or ``"kohya"``. The vectors keep their dtype and go to the CPU. NaN or
    inf values are refused. A kohya file carries no token name (and, as ``.pt``, no step).
    """
    from safetensors.torch import save as safetensors_bytes

    if not isinstance(emb, Embedding):
        raise TypeError(f"save_embedding needs an Embedding, got {type(emb).__name__}")
    path = Path(path)
    format = _infer_save_format(path, format)  # type: ignore[assignment]
    _check_finite(emb, "save")
    if format == "diffusers" and emb.token in _RESERVED:
        raise ValueError(f"token {emb.token!r} is a key of another format's files, so a "
                         "diffusers file of it would be misread; pick another token name")
    meta_json = _meta_json(emb)
    vectors = emb.vectors.detach().to("cpu").contiguous().clone()
    header = {"nbhelpers_format": format, "token": emb.token, "step": str(emb.step),
              "meta": meta_json}
    if format == "diffusers":
        data = safetensors_bytes({emb.token: vectors}, metadata=header)
    elif format == "kohya" and path.suffix.lower() == ".safetensors":
        data = safetensors_bytes({"emb_params": vectors}, metadata=header)
    elif format == "kohya":
        data = _pt_bytes({"emb_params": vectors})
    else:
        data = _pt_bytes({
            "string_to_token": {"*": A1111_STAR_ID},
            "string_to_param": {"*": vectors},
            "name": emb.token,
            "step": emb.step,
            "sd_checkpoint": _str_or_none(emb.meta.get("sd_checkpoint")),
            "sd_checkpoint_name": _str_or_none(emb.meta.get("model_name")),
            _META_KEY: meta_json,
        })
    # written by us, not the libraries: a full disk or a read-only folder is then a WriteError
    # that names the file and the fix, and the previous file is kept
    write_bytes(path, data, durable=True)
    return path


def _pt_bytes(obj: dict) -> bytes:
    """``torch.save`` in the legacy (pre-1.6, non-zip) format, which every reader accepts.

    A1111's safe unpickler allows only the zip entries ``version``, ``data.pkl`` and
    ``data/N``; current torch also writes ``.format_version``, ``byteorder``, ... and is
    refused there. The legacy format is pickles and raw storage bytes; ``torch.load(...,
    weights_only=True)`` and diffusers read it with identical values.
    """
    return torch_bytes(obj, legacy=True)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _is_safetensors(path: Path) -> bool:
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


def _read_pickle(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``; a file that needs more is refused."""
    import pickle
    import warnings

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
        what = f" (it names {found.group(1)})" if found else ""
        raise EmbeddingFileError(
            f"refusing to load {path}: it needs full unpickling{what}, and unpickling runs "
            "whatever code the file names. Embedding files need only dicts and tensors, so it "
            "was not made by A1111, kohya or diffusers as they save today (the original "
            "textual-inversion repository's nn.ParameterDict files are one such case). Ask "
            "for a .safetensors version, or, only if you trust its source, convert it in a "
            "throwaway environment") from None
    except Exception as err:  # torch raises KeyError, RuntimeError, ... on non-torch bytes
        raise EmbeddingFileError(f"{path} is neither a safetensors nor a PyTorch file "
                                 f"({err.__class__.__name__}: {err})") from None


def _resolve_file(path: Path) -> Path:
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
    if not path.is_file():
        raise FileNotFoundError(f"no embedding file at {path}")
    return path


def _refuse_lora(keys: list, path: Path) -> None:
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


def _read(path: Path) -> tuple[Any, dict[str, str], Path]:
    """The payload (a dict or tensor), the safetensors header metadata ({} for .pt) and the
    file read (for a concept folder, the embedding file in it)."""
    path = _resolve_file(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):  # A1111's embedding images
        from nbhelpers.ti.a1111_png import read_png_embedding

        return read_png_embedding(path), {}, path
    if _is_safetensors(path):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                header = dict(f.metadata() or {})
                keys = list(f.keys())
                _refuse_lora(keys, path)  # before reading a LoRA's hundreds of tensors
                if size > MAX_EMBEDDING_BYTES:
                    raise _too_big(path, size, f"its {len(keys)} tensors take")
                payload = {key: f.get_tensor(key) for key in keys}
        except EmbeddingFileError:
            raise
        except Exception as err:
            raise EmbeddingFileError(f"{path} looks like safetensors but cannot be read "
                                     f"({err.__class__.__name__}: {err})") from None
        return payload, header, path
    if size > MAX_EMBEDDING_BYTES:
        raise _too_big(path, size, "it is")
    return _read_pickle(path), {}, path


def _classify(payload: Any, path: Path) -> str:
    if isinstance(payload, Tensor):
        raise EmbeddingFileError(
            f"{path} holds a bare tensor {tuple(payload.shape)}, not one of the embedding "
            "layouts (diffusers, a1111, kohya); wrap it yourself: "
            "Embedding(token='<tok>', vectors=torch.load(path, weights_only=True))")
    if not isinstance(payload, dict):
        raise EmbeddingFileError(f"{path} holds a {type(payload).__name__}, not a dict of "
                                 "tensors; it is not an embedding file")
    keys = list(payload)
    if "string_to_param" in payload:
        return "a1111"
    if "emb_params" in payload:
        return "kohya"
    _refuse_lora(keys, path)
    if {"clip_l", "clip_g"} & set(keys):
        raise EmbeddingFileError(
            f"{path} is an SDXL embedding (keys {keys}): one tensor per text encoder; "
            "this series uses SD 1.x. Load it with diffusers' load_textual_inversion twice, "
            "passing state_dict['clip_l'] and state_dict['clip_g']")
    if keys and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in payload.items()):
        return "diffusers"
    raise EmbeddingFileError(
        f"{path} is not an embedding file: its keys {keys[:8]} match none of diffusers "
        "({token: tensor}), A1111 (string_to_param, name, ...) or kohya (emb_params)")


def detect_format(path: str | os.PathLike) -> EmbeddingFormat:
    """Which of ``"diffusers"``, ``"a1111"``, ``"kohya"`` the file is, from its content."""
    payload, _, path = _read(Path(path))
    return _classify(payload, path)  # type: ignore[return-value]


def _as_matrix(value: Any, path: Path, where: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise EmbeddingFileError(f"{path}: {where} is a {type(value).__name__}, not a tensor")
    value = value.detach()
    if value.ndim == 1:  # some tools write a single vector as (width,)
        value = value.unsqueeze(0)
    if value.ndim != 2:
        raise EmbeddingFileError(f"{path}: {where} has shape {tuple(value.shape)}; an "
                                 "embedding is (n_vectors, width)")
    return value


def _header_step_meta(header: dict[str, str]) -> tuple[int, dict[str, Any]]:
    try:
        step = int(header.get("step", 0))
    except ValueError:
        step = 0
    try:
        meta = json.loads(header["meta"]) if "meta" in header else {}
    except json.JSONDecodeError:
        meta = {}
    return max(step, 0), meta if isinstance(meta, dict) else {}


def load_embedding(path: str | os.PathLike, token: str | None = None) -> Embedding:
    """Read an embedding file of any of the three formats; the format is told from the content.

    Args:
        path: a diffusers ``.safetensors`` (or ``.bin``), an A1111 ``.pt`` or embedding PNG,
            a kohya file, or a concept folder (holding ``learned_embeds.safetensors`` or
            ``learned_embeds.bin``, as diffusers' loader accepts).
        token: the token to use. Required for kohya files (they hold no name); for the others
            it replaces the stored name, as diffusers' ``token=`` does, and picks one entry of
            a diffusers file that holds several tokens.

    ``.pt`` files are read with ``torch.load(..., weights_only=True)``; one that needs full
    unpickling raises :class:`EmbeddingFileError` without running anything. NaN values are
    read as they are (see :func:`inspect_embedding`); saving or using them is refused.
    """
    if token is not None:
        check_token(token)
    payload, header, path = _read(Path(path))
    format = _classify(payload, path)
    step, meta = _header_step_meta(header)

    if format == "diffusers":
        if len(payload) == 1:
            name, vectors = next(iter(payload.items()))
        elif token is not None and token in payload:
            name, vectors = token, payload[token]
        else:
            raise EmbeddingFileError(f"{path} holds {len(payload)} tokens {sorted(payload)}; "
                                     "pass token= to pick one")
        vectors = _as_matrix(vectors, path, f"the tensor of {name!r}")
    elif format == "kohya":
        vectors = _as_matrix(payload["emb_params"], path, "emb_params")
        if token is None:
            saved = header.get("token")
            hint = f" (it was saved for {saved!r})" if saved else ""
            raise TokenRequiredError(
                f"{path} is a kohya embedding, which stores no token name{hint}; pass the "
                "token to use in prompts, e.g. load_embedding(path, token='<my-style>')",
                path, saved or None)
        name = token
    else:
        params = payload["string_to_param"]
        if not isinstance(params, dict) or not params:
            raise EmbeddingFileError(f"{path}: string_to_param is {type(params).__name__}, "
                                     "expected a dict {'*': tensor}")
        vectors = params.get("*", next(iter(params.values())))
        vectors = _as_matrix(vectors, path, "string_to_param['*']")
        name = payload.get("name")
        if token is None and not (isinstance(name, str) and name):
            raise EmbeddingFileError(f"{path}: this A1111 file has no 'name'; pass token=")
        raw_step = payload.get("step")
        step = raw_step if isinstance(raw_step, int) and raw_step >= 0 else 0
        if isinstance(payload.get(_META_KEY), str):
            meta = _header_step_meta({"meta": payload[_META_KEY]})[1]
        else:
            meta = {}
            if payload.get("sd_checkpoint_name") is not None:
                meta["model_name"] = str(payload["sd_checkpoint_name"])
            if payload.get("sd_checkpoint") is not None:
                meta["sd_checkpoint"] = str(payload["sd_checkpoint"])

    final = token if token is not None else name
    if not isinstance(final, str):
        raise EmbeddingFileError(f"{path}: the stored token {final!r} is not a string; "
                                 "pass token=")
    try:
        return Embedding(token=final, vectors=vectors, step=int(step), meta=dict(meta))
    except (TypeError, ValueError) as err:
        raise EmbeddingFileError(f"{path}: {err}") from None


def convert_embedding(src: str | os.PathLike, dst: str | os.PathLike,
                      format: EmbeddingFormat | None = None, *,
                      token: str | None = None) -> Embedding:
    """Read ``src`` (any format; ``token=`` for kohya) and write it to ``dst`` in ``format``.

    Returns the embedding written. Converting to kohya drops the token name (and, as ``.pt``,
    the step and metadata): the format has no place for them.
    """
    emb = load_embedding(src, token=token)
    save_embedding(emb, dst, format=format)
    return emb


# --------------------------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------------------------


def expand_prompt(prompt: str, emb: Embedding) -> str:
    """Write a multi-vector token out as its ``n`` prompt tokens: ``"<t>"`` -> ``"<t> <t>_1"``.

    For prompts you tokenize yourself. diffusers pipelines expand prompts on their own
    (``maybe_convert_prompt``), so give them the short form. Already expanded text is left as
    it is; matching ignores case, as CLIP lower-cases prompts.
    """
    if emb.n_vectors == 1:
        return prompt
    full = " ".join(emb.token_strings)
    pattern = re.compile(re.escape(full) + "|" + re.escape(emb.token) + r"(?!_\d)",
                         re.IGNORECASE)
    return pattern.sub(lambda _: full, prompt)


#: What a placeholder token looks like in a prompt: ``<my-style>`` (not CLIP's ``<|...|>``).
_PLACEHOLDER = re.compile(r"<[^<>|\s]+>")


class UnknownTokenWarning(UserWarning):
    """A prompt uses a placeholder such as ``<my-style>`` that the model has not learned."""


def unknown_placeholders(tokenizer: Any, prompt: str) -> list[str]:
    """The placeholder-looking words of ``prompt`` (``<never-trained>``) that ``tokenizer``
    does not hold as a token, in order of appearance, each once.

    Such a word is split into ordinary pieces (``<``, ``never``, ...) and the prompt renders as
    if it were not there: the usual result of forgetting to load an embedding.
    """
    found = _PLACEHOLDER.findall(prompt)
    if not found:
        return []
    vocab = tokenizer.get_vocab()
    out: list[str] = []
    for word in found:
        if word in vocab or _normalized(tokenizer, word) in vocab or word in out:
            continue
        out.append(word)
    return out


def warn_unknown_placeholders(tokenizer: Any, prompts: Any, stacklevel: int = 3) -> list[str]:
    """Warn (:class:`UnknownTokenWarning`) about each :func:`unknown_placeholders` word of
    ``prompts``; returns the words."""
    import warnings

    words: list[str] = []
    for prompt in prompts:
        words += [w for w in unknown_placeholders(tokenizer, prompt) if w not in words]
    for word in words:
        warnings.warn(f"{word} is not a learned token of this model, so the prompt reads it as "
                      "ordinary text; load its embedding first (command line: --embedding "
                      "FILE; Python: add_embedding_to_pipeline(pipe, load_embedding(FILE)) "
                      "from nbhelpers.ti.embeddings)", UnknownTokenWarning,
                      stacklevel=stacklevel)
    return words


def _components(pipe: Any) -> tuple[Any, Any]:
    tokenizer = getattr(pipe, "tokenizer", None)
    text_encoder = getattr(pipe, "text_encoder", None)
    if tokenizer is None or text_encoder is None:
        raise ValueError(f"{type(pipe).__name__} has no tokenizer/text_encoder; pass a "
                         "Stable Diffusion pipeline (nbhelpers.models.load_pipeline)")
    return tokenizer, text_encoder


def _normalized(tokenizer: Any, token: str) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    return normalizer.normalize_str(token) if normalizer is not None else token


def _existing_id(tokenizer: Any, token: str) -> int | None:
    """The id ``token`` already has: as an entry, or as a word that is one token (``red``)."""
    vocab = tokenizer.get_vocab()
    if token in vocab:
        return int(vocab[token])
    ids = tokenizer(token, add_special_tokens=False).input_ids
    return int(ids[0]) if len(ids) == 1 else None


def _resize(text_encoder: Any, n: int) -> None:
    kwargs = {}
    if "mean_resizing" in inspect.signature(text_encoder.resize_token_embeddings).parameters:
        kwargs["mean_resizing"] = False  # the new rows are overwritten: skip sampling them
    text_encoder.resize_token_embeddings(n, **kwargs)


def add_embedding_to_pipeline(pipe: Any, emb: Embedding, *, overwrite: bool = False
                              ) -> list[int]:
    """Put ``emb`` into ``pipe``'s tokenizer and text encoder; returns the token ids written.

    1. Check: the widths match; the values are finite; the tokenizer keeps the token as it is.
    2. A new token: add ``<tok>``, ``<tok>_1``, ... to the tokenizer (as diffusers' loader
       does, so the pipeline expands prompts itself) and grow the embedding matrix.
    3. A token the tokenizer already knows is refused unless ``overwrite=True``:
       a token added before gets new vectors (more vectors add ``<tok>_k`` entries);
       a vocabulary word (``"red"``, one token) gets its one row replaced: every prompt that
       says the word now means the vector (the bias experiment). Nothing else changes.
    4. Write the vectors into the rows, in the text encoder's dtype and device.
    """
    if not isinstance(emb, Embedding):
        raise TypeError(f"add_embedding_to_pipeline needs an Embedding, got "
                        f"{type(emb).__name__}; read files with load_embedding first")
    tokenizer, text_encoder = _components(pipe)
    weight = text_encoder.get_input_embeddings().weight
    # 1. checks
    check_width(emb, int(weight.shape[1]))
    _check_finite(emb, "use")
    if _normalized(tokenizer, emb.token) != emb.token:
        low = _normalized(tokenizer, emb.token)
        raise ValueError(f"token {emb.token!r} changes under the tokenizer's normalisation "
                         f"(CLIP lower-cases prompts: {low!r}), so a multi-vector prompt "
                         f"would not expand; use token {low!r} (load_embedding(path, "
                         f"token={low!r}))")
    added = tokenizer.added_tokens_encoder
    special = set(getattr(tokenizer, "all_special_tokens", []))
    strings = emb.token_strings
    vocab = tokenizer.get_vocab()

    existing = _existing_id(tokenizer, emb.token)
    if existing is not None and tokenizer.convert_ids_to_tokens(existing) in special:
        raise ValueError(f"token {emb.token!r} is the special token "
                         f"{tokenizer.convert_ids_to_tokens(existing)!r}; pick a new token "
                         "such as '<my-style>'")
    if emb.token in added:
        current = [emb.token]
        while f"{emb.token}_{len(current)}" in added:
            current.append(f"{emb.token}_{len(current)}")
        if not overwrite:
            raise ValueError(
                f"token {emb.token!r} is already in this pipeline ({len(current)} vector(s)); "
                "pass overwrite=True to replace its vectors, or load a fresh pipeline")
        if emb.n_vectors < len(current):
            raise ValueError(
                f"token {emb.token!r} has {len(current)} vectors in this pipeline and the new "
                f"embedding {emb.n_vectors}; extra entries cannot be removed, so prompts would "
                "still expand to the old length. Load a fresh pipeline")
    elif existing is not None:
        word = tokenizer.convert_ids_to_tokens(existing)
        if not overwrite:
            raise ValueError(
                f"token {emb.token!r} is already in the tokenizer's vocabulary (as {word!r}, "
                f"id {existing}); adding it would change what it means in every prompt. Pick "
                f"a new token such as '<{emb.token.strip('<>')}-ti>', or pass overwrite=True "
                "to replace that word's embedding row (the bias experiment)")
        if emb.n_vectors != 1:
            raise ValueError(
                f"token {emb.token!r} is the vocabulary word {word!r}, which has one row; a "
                f"{emb.n_vectors}-vector embedding cannot replace it. Use a 1-vector "
                "embedding, or a new token such as '<my-style>'")
        ids = [existing]
    else:
        stale = [s for s in strings[1:] if s in vocab]
        if stale:
            raise ValueError(f"entries {stale} are already in the tokenizer while {emb.token!r} "
                             "is not; load a fresh pipeline or pick another token")

    if existing is None or emb.token in added:
        # 2. new entries (or extra ones for a token added before)
        new = [s for s in strings if s not in added]
        if new:
            tokenizer.add_tokens(new)
            _resize(text_encoder, len(tokenizer))
        ids = [int(i) for i in tokenizer.convert_tokens_to_ids(strings)]
    # 4. write the rows
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[ids] = emb.vectors.detach().to(device=weight.device, dtype=weight.dtype)
    return ids


def _readable(tokenizer: Any, token: str) -> str:
    try:
        text = tokenizer.convert_tokens_to_string([token]).strip()
    except Exception:
        return token
    # a byte-level fragment is not valid text on its own: show the raw token instead
    return token if not text or "\ufffd" in text else text


def inspect_embedding(emb: Embedding, pipe: Any = None, k: int = 5) -> dict[str, Any]:
    """Facts about ``emb``: token, shape, family, norms, and with ``pipe`` the nearest words.

    Returns a dict: ``token``, ``n_vectors``, ``width``, ``family`` (guessed from the width),
    ``step``, ``meta``, ``norms`` (L2 norm of each vector), ``nonfinite`` (count of NaN/inf);
    with a pipeline also ``vocab_norm_median`` (the median norm of the vocabulary rows, to
    compare against: learned vectors often grow far longer than any word's) and ``nearest``:
    for each vector, ``k`` dicts ``{"word", "token", "id", "cosine"}``, most similar first,
    over the tokenizer's own vocabulary (added and special tokens excluded).
    """
    if not isinstance(emb, Embedding):
        raise TypeError(f"inspect_embedding needs an Embedding, got {type(emb).__name__}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    vectors = emb.vectors.detach().to("cpu", torch.float32)
    info: dict[str, Any] = {
        "token": emb.token,
        "n_vectors": emb.n_vectors,
        "width": emb.width,
        "family": guess_family(emb.width),
        "step": emb.step,
        "meta": dict(emb.meta),
        "norms": [float(x) for x in vectors.norm(dim=1)],
        "nonfinite": int((~torch.isfinite(vectors)).sum()),
    }
    if pipe is None:
        return info
    tokenizer, text_encoder = _components(pipe)
    table = text_encoder.get_input_embeddings().weight.detach().to("cpu", torch.float32)
    check_width(emb, int(table.shape[1]))
    n_rows = min(len(tokenizer), table.shape[0])
    keep = torch.ones(n_rows, dtype=torch.bool)
    for i in tokenizer.added_tokens_decoder:
        if i < n_rows:
            keep[i] = False
    ids = torch.nonzero(keep).flatten()
    rows = table[ids]
    info["vocab_norm_median"] = float(rows.norm(dim=1).median())
    cos = torch.nn.functional.normalize(torch.nan_to_num(vectors), dim=1) @ \
        torch.nn.functional.normalize(rows, dim=1).T  # (n_vectors, V)
    top = cos.topk(min(k, rows.shape[0]), dim=1)
    nearest = []
    for values, idx in zip(top.values, top.indices, strict=True):
        found = []
        for value, j in zip(values.tolist(), idx.tolist(), strict=True):
            tid = int(ids[j])
            tok = tokenizer.convert_ids_to_tokens(tid)
            found.append({"word": _readable(tokenizer, tok), "token": tok, "id": tid,
                          "cosine": float(value)})
        nearest.append(found)
    info["nearest"] = nearest
    return info


def format_inspection(info: dict[str, Any]) -> str:
    """The dict of :func:`inspect_embedding` as a few lines of text, for the command line."""
    family = f" ({info['family']})" if info.get("family") else ""
    lines = [f"token {info['token']}: {info['n_vectors']} vector(s), "
             f"{info['width']} wide{family}, step {info['step']}"]
    if info.get("meta"):
        lines.append("meta: " + ", ".join(f"{k}={v}" for k, v in sorted(info["meta"].items())))
    if info.get("nonfinite"):
        lines.append(f"WARNING: {info['nonfinite']} NaN/inf values")
    if "vocab_norm_median" in info:
        lines.append(f"median norm of the vocabulary rows: {info['vocab_norm_median']:.3g}")
    for i, norm in enumerate(info["norms"]):
        name = info["token"] if i == 0 else f"{info['token']}_{i}"
        line = f"  {name}: norm {norm:.3g}" if math.isfinite(norm) else f"  {name}: norm {norm}"
        if "nearest" in info:
            line += "; nearest: " + ", ".join(f"{d['word']} ({d['cosine']:.2f})"
                                              for d in info["nearest"][i])
        lines.append(line)
    return "\n".join(lines)
