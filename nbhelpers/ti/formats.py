"""Textual-inversion file formats: one reader/writer per format, in one table.

Files (what diffusers 0.42's ``load_textual_inversion`` reads, checked in its source):

==========  ==============================================  =================================
format      content                                         diffusers reads it
==========  ==============================================  =================================
diffusers   safetensors ``{token: (n, width)}``, one key    yes: the key is the token
            (one vector: ``(width,)``, as InvokeAI needs)
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

Each format is one :class:`Format` object (its name, file endings, help text, how its files
are recognised, read and written) in the table :data:`FORMATS`; :func:`save_embedding`,
:func:`load_embedding`, :func:`detect_format` and the command line's ``--format`` choices and
help all go through the table, so a new format is one class added to it.

:func:`load_embedding` tells the format from the content, not the file name, and reads the
bytes without trusting them (:mod:`nbhelpers.ti.safe_read`: ``.pt`` pickles with
``weights_only=True`` only, size limits first, LoRA files named as such; PNGs hold JSON).

Step and metadata (``init_word``, ``model_name``, ...) travel in the safetensors header
(diffusers and kohya .safetensors) or in the A1111 dict (``step``, ``sd_checkpoint_name``
and an extra ``nbhelpers_meta`` JSON string that other tools ignore). A kohya ``.pt`` holds the
vectors alone, since diffusers reads only one-key dicts as bare embeddings. ``.pt`` files are
written in torch's legacy (non-zip) serialization: AUTOMATIC1111's safe unpickler refuses the
zip entries that current torch adds (``.format_version``, ``byteorder``, ...).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from nbhelpers.files import torch_bytes, write_bytes
from nbhelpers.ti.a1111_png import is_png, read_png_embedding
from nbhelpers.ti.embeddings import (
    Embedding,
    EmbeddingFileError,
    TokenRequiredError,
    check_finite,
    check_token,
)
from nbhelpers.ti.safe_read import (
    is_safetensors,
    read_pickle,
    read_safetensors,
    refuse_lora,
    resolve_file,
)

#: The names in :data:`FORMATS`, for type checkers (a test keeps the two the same).
EmbeddingFormat = Literal["diffusers", "a1111", "kohya"]
#: The id of ``*`` in CLIP's vocabulary; A1111 writes it in ``string_to_token``.
A1111_STAR_ID = 265
_META_KEY = "nbhelpers_meta"  # extra key of our A1111 files; A1111 and diffusers ignore it
#: Keys of SDXL embeddings (one tensor per text encoder); a diffusers file must not use them.
_SDXL_KEYS = frozenset({"clip_l", "clip_g"})


# --------------------------------------------------------------------------------------------
# The formats
# --------------------------------------------------------------------------------------------


class Format:
    """One file format: its names, its file endings, how its files are told, read and written.

    A subclass sets the class attributes and overrides :meth:`read` and :meth:`write` (and
    :meth:`recognises` if no one key marks its files, :meth:`check` if it cannot hold every
    embedding); its instance in :data:`FORMATS` is all that saving, loading, detecting and the
    command line need.
    """

    #: The name in ``format=`` and ``--format``.
    name: str = ""
    #: How messages call it where the name is not enough (``"AUTOMATIC1111"``).
    title: str = ""
    #: The file endings it is saved with.
    extensions: tuple[str, ...] = ()
    #: The endings that mean this format when a file is saved without ``format=``.
    default_for: tuple[str, ...] = ()
    #: How help texts list it: ``"diffusers (.safetensors)"``.
    summary: str = ""
    #: Its layout, as messages describe it: ``"kohya (emb_params)"``.
    layout: str = ""
    #: The key that marks its files, looked for before the layouts without one (None: the
    #: layout is told by :meth:`recognises`, after LoRA and SDXL files are refused).
    marker: str | None = None

    def recognises(self, payload: dict) -> bool:
        """True if ``payload`` (a file's dict of tensors and values) is in this layout."""
        return self.marker is not None and self.marker in payload

    def check(self, emb: Embedding) -> None:
        """Refuse (``ValueError``) an embedding this format cannot hold, before writing."""

    def read(self, payload: dict, header: dict[str, str], path: Path,
             token: str | None) -> Embedding:
        """The embedding in ``payload``; ``header`` is the safetensors metadata ({} for .pt),
        ``token`` the caller's ``token=`` (None: the stored name)."""
        raise NotImplementedError

    def write(self, emb: Embedding, suffix: str, header: dict[str, str]) -> bytes:
        """The bytes of a ``suffix`` file (``".pt"``) holding ``emb``; ``header`` holds
        ``nbhelpers_format``, ``token``, ``step`` and ``meta`` (JSON), all strings."""
        raise NotImplementedError


class Diffusers(Format):
    """diffusers' ``learned_embeds.safetensors``: ``{token: (n, width)}``."""

    name = title = "diffusers"
    extensions = default_for = (".safetensors",)
    summary = "diffusers (.safetensors)"
    layout = "diffusers ({token: tensor})"

    def recognises(self, payload: dict) -> bool:
        return bool(payload) and all(isinstance(k, str) and isinstance(v, Tensor)
                                     for k, v in payload.items())

    def check(self, emb: Embedding) -> None:
        reserved = {f.marker for f in FORMATS.values() if f.marker} | _SDXL_KEYS
        if emb.token in reserved:
            raise ValueError(f"token {emb.token!r} is a key of another format's files, so a "
                             "diffusers file of it would be misread; pick another token name")

    def read(self, payload: dict, header: dict[str, str], path: Path,
             token: str | None) -> Embedding:
        step, meta = _header_step_meta(header)
        if len(payload) == 1:
            name, vectors = next(iter(payload.items()))
        elif token is not None and token in payload:
            name, vectors = token, payload[token]
        else:
            raise EmbeddingFileError(f"{path} holds {len(payload)} tokens {sorted(payload)}; "
                                     "pass token= to pick one")
        vectors = _as_matrix(vectors, path, f"the tensor of {name!r}")
        return _build(path, token, name, vectors, step, meta)

    def write(self, emb: Embedding, suffix: str, header: dict[str, str]) -> bytes:
        vectors = _cpu(emb)   # one vector as (width,), for InvokeAI (see INVOKEAI_NOTE)
        return _safetensors_bytes({emb.token: vectors[0] if len(vectors) == 1 else vectors},
                                  header)


class A1111(Format):
    """AUTOMATIC1111's ``.pt``: a dict with ``string_to_param {'*': (n, width)}`` and ``name``."""

    name = "a1111"
    title = "AUTOMATIC1111"
    extensions = (".pt",)
    summary = "a1111 (.pt)"
    layout = "A1111 (string_to_param, name, ...)"
    marker = "string_to_param"

    def read(self, payload: dict, header: dict[str, str], path: Path,
             token: str | None) -> Embedding:
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
        return _build(path, token, name, vectors, step, meta)

    def write(self, emb: Embedding, suffix: str, header: dict[str, str]) -> bytes:
        return _pt_bytes({
            "string_to_token": {"*": A1111_STAR_ID},
            "string_to_param": {"*": _cpu(emb)},
            "name": emb.token,
            "step": emb.step,
            "sd_checkpoint": _str_or_none(emb.meta.get("sd_checkpoint")),
            "sd_checkpoint_name": _str_or_none(emb.meta.get("model_name")),
            _META_KEY: header["meta"],
        })


class Kohya(Format):
    """kohya's sd-scripts: ``{"emb_params": (n, width)}``, no token name in the file."""

    name = title = summary = "kohya"
    extensions = (".safetensors", ".pt")
    layout = "kohya (emb_params)"
    marker = "emb_params"

    def read(self, payload: dict, header: dict[str, str], path: Path,
             token: str | None) -> Embedding:
        step, meta = _header_step_meta(header)
        vectors = _as_matrix(payload["emb_params"], path, "emb_params")
        if token is None:
            saved = header.get("token")
            hint = f" (it was saved for {saved!r})" if saved else ""
            raise TokenRequiredError(
                f"{path} is a kohya embedding, which stores no token name{hint}; pass the "
                "token to use in prompts, e.g. load_embedding(path, token='<my-style>')",
                path, saved or None)
        return _build(path, token, token, vectors, step, meta)

    def write(self, emb: Embedding, suffix: str, header: dict[str, str]) -> bytes:
        if suffix == ".safetensors":
            return _safetensors_bytes({"emb_params": _cpu(emb)}, header)
        return _pt_bytes({"emb_params": _cpu(emb)})


class A1111Png:
    """AUTOMATIC1111's embedding images, read only: a PNG that carries the a1111 dict (which
    :class:`A1111` then reads); the decoding is :mod:`nbhelpers.ti.a1111_png`'s."""

    name = "a1111 PNG"
    extensions = (".png",)
    summary = "a1111 PNG (.png, read only)"

    def recognises(self, head: bytes) -> bool:
        """True if ``head``, a file's first bytes, starts a PNG."""
        return is_png(head)

    def read(self, path: Path) -> dict:
        """The a1111 dict in the PNG at ``path``."""
        return read_png_embedding(path)


#: The formats embeddings are saved and loaded in, by name; detection looks in this order.
FORMATS: dict[str, Format] = {f.name: f for f in (Diffusers(), A1111(), Kohya())}
A1111_PNG = A1111Png()


def _saved_extensions() -> list[str]:
    """Every file ending some format in the table is saved with, sorted."""
    return sorted({s for f in FORMATS.values() for s in f.extensions})


def _or(items: list[str]) -> str:
    """``"a, b or c"``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


#: InvokeAI's probe takes a diffusers file's first tensor's ``shape[0]`` for the width.
INVOKEAI_NOTE = ("for InvokeAI, an embedding of several vectors must be a1111 or kohya (it "
                 "reads diffusers files of one vector only)")


def format_help(default: str | None = None) -> str:
    """The help of a ``--format`` option: ``"file format: diffusers (.safetensors), a1111
    (.pt) or kohya"``, `` (default diffusers)`` for ``default="diffusers"``, INVOKEAI_NOTE."""
    text = "file format: " + _or([f.summary for f in FORMATS.values()])
    return (text if default is None else f"{text} (default {default})") + f"; {INVOKEAI_NOTE}"


def dst_format_help() -> str:
    """The help of ``ti convert --format``, the format of the file written: ``"format of dst
    (default: diffusers for .safetensors; a .pt file needs --format a1111 or kohya)"``."""
    defaults = [f"{f.name} for {' and '.join(f.default_for)}" for f in FORMATS.values()
                if f.default_for]
    ambiguous = []
    for suffix in _saved_extensions():
        if not any(suffix in f.default_for for f in FORMATS.values()):
            may = [f.name for f in FORMATS.values() if suffix in f.extensions]
            ambiguous.append(f"a {suffix} file needs --format {_or(may)}")
    return (f"format of dst (default: {_or(defaults)}" + "".join(f"; {a}" for a in ambiguous)
            + f"); {INVOKEAI_NOTE}")


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


def _build(path: Path, token: str | None, name: Any, vectors: Tensor, step: int,
           meta: dict[str, Any]) -> Embedding:
    """The embedding read: named ``token`` if given, else the stored ``name``."""
    final = token if token is not None else name
    if not isinstance(final, str):
        raise EmbeddingFileError(f"{path}: the stored token {final!r} is not a string; "
                                 "pass token=")
    try:
        return Embedding(token=final, vectors=vectors, step=int(step), meta=dict(meta))
    except (TypeError, ValueError) as err:
        raise EmbeddingFileError(f"{path}: {err}") from None


def _cpu(emb: Embedding) -> Tensor:
    return emb.vectors.detach().to("cpu").contiguous().clone()


def _safetensors_bytes(tensors: dict[str, Tensor], header: dict[str, str]) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=header)


def _pt_bytes(obj: dict) -> bytes:
    """``torch.save`` in the legacy (pre-1.6, non-zip) format, which every reader accepts:
    A1111's safe unpickler refuses current torch's extra zip entries (``.format_version``,
    ``byteorder``); ``torch.load(..., weights_only=True)`` and diffusers read it exactly."""
    return torch_bytes(obj, legacy=True)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def _format(format: object) -> Format:
    if not isinstance(format, str) or format not in FORMATS:
        raise ValueError(f"unknown embedding format {format!r}; use one of {list(FORMATS)}")
    return FORMATS[format]


def save_format(path: Path, format: str | None) -> Format:
    """The format of an embedding saved as ``path`` (``format``, or its ending's); ValueError
    when they do not fit. One rule for the saver and ``ti train``'s plan (before loading)."""
    suffix = path.suffix.lower()
    known = _saved_extensions()
    if suffix not in known:
        raise ValueError(f"cannot save an embedding as {path.name!r}: use a file name ending in "
                         f"one of {known}")
    if format is None:
        for fmt in FORMATS.values():
            if suffix in fmt.default_for:
                return fmt
        may = [f for f in FORMATS.values() if suffix in f.extensions]
        passes = [f"format={f.name!r}" + (f" ({f.title})" if f.title != f.name else "")
                  for f in may]
        raise ValueError(f"{path.name!r}: a {suffix} file may be "
                         f"{_or([repr(f.name) for f in may])}; pass {_or(passes)}")
    fmt = _format(format)
    if suffix not in fmt.extensions:
        raise ValueError(f"format {format!r} is not saved as {suffix}; name the file with "
                         f"{' or '.join(fmt.extensions)}")
    return fmt


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
    if not isinstance(emb, Embedding):
        raise TypeError(f"save_embedding needs an Embedding, got {type(emb).__name__}")
    path = Path(path)
    fmt = save_format(path, format)
    check_finite(emb, "save")
    fmt.check(emb)
    header = {"nbhelpers_format": fmt.name, "token": emb.token, "step": str(emb.step),
              "meta": _meta_json(emb)}
    data = fmt.write(emb, path.suffix.lower(), header)
    # written by us, not the libraries: a full disk is a WriteError, the previous file kept
    write_bytes(path, data, durable=True)
    return path


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _read(path: Path) -> tuple[Any, dict[str, str], Path]:
    """The payload (a dict or tensor), the safetensors header metadata ({} for .pt) and the
    file read (for a concept folder, the embedding file in it)."""
    path = resolve_file(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
    if A1111_PNG.recognises(head):
        return A1111_PNG.read(path), {}, path
    if is_safetensors(path):
        return (*read_safetensors(path, size), path)
    return read_pickle(path, size), {}, path


def _classify(payload: Any, path: Path) -> Format:
    """The format of ``payload``: a marked layout, else (no LoRA, no SDXL) an unmarked one."""
    if isinstance(payload, Tensor):
        raise EmbeddingFileError(
            f"{path} holds a bare tensor {tuple(payload.shape)}, not one of the embedding "
            f"layouts ({', '.join(FORMATS)}); wrap it yourself: "
            "Embedding(token='<tok>', vectors=torch.load(path, weights_only=True))")
    if not isinstance(payload, dict):
        raise EmbeddingFileError(f"{path} holds a {type(payload).__name__}, not a dict of "
                                 "tensors; it is not an embedding file")
    keys = list(payload)
    for fmt in FORMATS.values():
        if fmt.marker is not None and fmt.recognises(payload):
            return fmt
    refuse_lora(keys, path)
    if _SDXL_KEYS & set(keys):
        raise EmbeddingFileError(
            f"{path} is an SDXL embedding (keys {keys}): one tensor per text encoder; "
            "this series uses SD 1.x. Load it with diffusers' load_textual_inversion twice, "
            "passing state_dict['clip_l'] and state_dict['clip_g']")
    for fmt in FORMATS.values():
        if fmt.marker is None and fmt.recognises(payload):
            return fmt
    raise EmbeddingFileError(
        f"{path} is not an embedding file: its keys {keys[:8]} match none of "
        + _or([f.layout for f in FORMATS.values()]))


def detect_format(path: str | os.PathLike) -> EmbeddingFormat:
    """Which of ``"diffusers"``, ``"a1111"``, ``"kohya"`` the file is, from its content."""
    payload, _, path = _read(Path(path))
    return _classify(payload, path).name  # type: ignore[return-value]


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
    read as they are (see :func:`~nbhelpers.ti.pipeline.inspect_embedding`); saving or using
    them is refused.
    """
    if token is not None:
        check_token(token)
    payload, header, path = _read(Path(path))
    return _classify(payload, path).read(payload, header, path, token)


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
