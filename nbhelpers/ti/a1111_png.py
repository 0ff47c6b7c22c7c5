"""AUTOMATIC1111's embeddings inside PNG images, read without unpickling anything.

A1111's trainer can save an embedding as a PNG ("Save images with embedding in PNG chunks"):
a preview picture that carries the same dict as its ``.pt`` file (``string_to_param``,
``name``, ``step``, ...) twice:

* text chunk: a ``tEXt`` chunk ``sd-ti-embedding`` whose value is base64 of JSON, where each
  tensor is written as ``{"TORCHTENSOR": nested list of numbers}``;
* pixels, for copies whose text chunks were stripped: the zlib-compressed JSON, split into
  low and high nibbles, fills two strips of shape ``(H, w, 3)`` left and right of the picture,
  each separated from it by one black column. The low nibble of every strip pixel is the data
  xor a fixed pseudo-random stream (A1111's ``lcg``: ``x <- (1664525 x + 1013904223) mod
  2**32`` from ``x = 0``, each ``x mod 255`` masked to its low nibble); the high nibble is a
  decorative dot pattern and carries nothing.

Both are parsed as data (base64, JSON, zlib, integer arithmetic), so a crafted PNG can make
the reader fail but never run code. Sizes are bounded before decoding (:data:`MAX_PIXELS`,
:data:`MAX_JSON_BYTES`). The result is the dict a ``.pt`` file would hold, tensors included.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nbhelpers.ti.embeddings import EmbeddingFileError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_KEY = "sd-ti-embedding"
#: A1111's pseudo-random stream: ``x <- (A x + C) mod 2**32``, starting from 0.
LCG_A, LCG_C, LCG_M = 1664525, 1013904223, 2 ** 32
#: Images larger than this are not decoded (an embedding PNG is a preview, about 512 x 600).
MAX_PIXELS = 40_000_000
#: The embedding's JSON may unpack to at most this many bytes (75 SD 1.x vectors: ~1.5 MB).
MAX_JSON_BYTES = 64 * 2 ** 20


def is_png(head: bytes) -> bool:
    """True if ``head`` (the first bytes of a file) is a PNG signature."""
    return head.startswith(PNG_SIGNATURE)


def lcg_stream(n: int) -> np.ndarray:
    """The first ``n`` values ``x_k mod 255`` (k = 1..n) of A1111's pseudo-random stream, as
    uint8; the xor key is their low nibble.

    Computed by doubling rather than one step at a time: if a block holds ``m`` consecutive
    states, ``f_m(x) = A_m x + C_m`` (mod 2**32) maps each to the state ``m`` later, with
    ``f_2m = f_m o f_m``, i.e. ``A_2m = A_m**2`` and ``C_2m = A_m C_m + C_m``. uint64 products
    of two values below 2**32 do not overflow, and wrapping mod 2**64 keeps them right mod
    2**32.
    """
    if n <= 0:
        return np.zeros(0, np.uint8)
    states = np.array([LCG_C], dtype=np.uint64)  # x_1 = A * 0 + C
    a_m, c_m = LCG_A, LCG_C  # f_1
    mask = np.uint64(LCG_M - 1)
    while len(states) < n:
        nxt = (states * np.uint64(a_m) + np.uint64(c_m)) & mask
        states = np.concatenate([states, nxt])
        a_m, c_m = (a_m * a_m) % LCG_M, (a_m * c_m + c_m) % LCG_M
    return (states[:n] % np.uint64(255)).astype(np.uint8)


def _tensor(value: Any) -> torch.Tensor:
    """A ``{"TORCHTENSOR": ...}`` value as a tensor: float32 when that loses nothing (A1111
    trains in float32; the JSON holds those values exactly), else float64."""
    try:
        t = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"a TORCHTENSOR entry is not a rectangular list of numbers ({err})"
                         ) from None
    f32 = t.to(torch.float32)
    same = torch.allclose(f32.to(torch.float64), t, rtol=0.0, atol=0.0, equal_nan=True)
    return f32 if same else t


def _object_hook(d: dict) -> Any:
    return _tensor(d["TORCHTENSOR"]) if "TORCHTENSOR" in d else d


def _parse_json(raw: bytes, path: Path, where: str) -> dict:
    try:
        data = json.loads(raw.decode("utf-8"), object_hook=_object_hook)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise EmbeddingFileError(f"{path}: the embedding in its {where} is not A1111's JSON "
                                 f"({err.__class__.__name__}: {err}); the file is damaged"
                                 ) from None
    if not isinstance(data, dict):
        raise EmbeddingFileError(f"{path}: the embedding in its {where} is a "
                                 f"{type(data).__name__}, not A1111's dict")
    return data


def decode_text_chunk(text: str, path: Path) -> dict:
    """The dict in the value of an ``sd-ti-embedding`` text chunk (base64 of JSON)."""
    if len(text) > MAX_JSON_BYTES * 4 // 3 + 4:
        raise EmbeddingFileError(f"{path}: its '{TEXT_KEY}' text chunk holds {len(text)} "
                                 f"characters, more than any embedding needs")
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as err:
        raise EmbeddingFileError(f"{path}: its '{TEXT_KEY}' text chunk is not base64 ({err}); "
                                 "the file is damaged") from None
    return _parse_json(raw, path, f"'{TEXT_KEY}' text chunk")


def _crop_to_content(rgb: np.ndarray) -> np.ndarray:
    """The bounding box of the pixels with no zero channel (A1111 crops the same way)."""
    mask = (rgb > 0).all(axis=2)
    if not mask.any():
        return rgb[:0, :0]
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return rgb[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def decode_pixels(rgb: np.ndarray) -> tuple[dict | None, str]:
    """The zlib-compressed JSON coded in the side strips of ``rgb`` ``(H, W, 3)`` uint8.

    Returns ``(raw JSON bytes or None, reason)``; the reason says why nothing was found.
    Steps (the inverse of what A1111 writes):
        1. Crop to the content, keep the low nibbles.
        2. The separator columns are the ones whose low nibbles are all zero: the first one
           ends the left strip (low nibbles of the data), the last one starts the right strip
           (high nibbles).
        3. Undo the xor with the stream, strip by strip (same stream, same shape), and join
           the nibbles into bytes, row by row.
        4. Inflate, at most :data:`MAX_JSON_BYTES`; the padding after the stream is ignored.
    """
    # 1. content, low nibbles
    low = _crop_to_content(rgb) & 0x0F
    if low.size == 0:
        return None, "the image is black"
    # 2. the strips beside the separators
    black = np.flatnonzero(low.sum(axis=(0, 2), dtype=np.int64) == 0)
    if len(black) < 2:
        return None, "no black separator columns"
    left, right = low[:, :black[0]], low[:, black[-1] + 1:]
    if left.size == 0 or left.shape != right.shape:
        return None, (f"the strips beside the black columns differ in shape "
                      f"({left.shape[1]} and {right.shape[1]} columns)")
    # 3. undo the xor, join the nibbles
    key = (lcg_stream(left.size) & 0x0F).reshape(left.shape)
    data = (((right ^ key) << 4) | (left ^ key)).astype(np.uint8).tobytes()
    # 4. inflate, bounded
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(data, MAX_JSON_BYTES)
    except zlib.error as err:
        return None, f"the strips do not inflate ({err})"
    if inflate.unconsumed_tail:
        return None, f"the strips inflate to more than {MAX_JSON_BYTES} bytes"
    if not inflate.eof:
        return None, "the strips end before their zlib stream does"
    return raw, ""


def read_png_embedding(path: Path) -> dict:
    """The A1111 dict stored in the PNG at ``path``: from its text chunk, else its pixels.

    Raises :class:`EmbeddingFileError` (a ``ValueError``) if the PNG is damaged or holds no
    embedding, saying which form was looked for.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise EmbeddingFileError(
                    f"{path} is a {w} x {h} PNG, too large to be an A1111 embedding image "
                    f"(at most {MAX_PIXELS} pixels are decoded)")
            im.load()
            text = getattr(im, "text", {}).get(TEXT_KEY)
            rgb = None if text is not None else np.asarray(im.convert("RGB"))
    except EmbeddingFileError:
        raise
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError,
            Image.DecompressionBombError) as err:
        raise EmbeddingFileError(f"{path} is a damaged PNG ({err.__class__.__name__}: {err}); "
                                 "fetch it again") from None
    if text is not None:
        return decode_text_chunk(text, path)
    raw, why = decode_pixels(rgb)
    if raw is None:
        raise EmbeddingFileError(
            f"{path} is a PNG without an embedding: it has no '{TEXT_KEY}' text chunk, and "
            f"its pixels hold no A1111 data strips ({why}). A1111 writes embedding PNGs (in "
            "textual_inversion/.../image_embeddings) only with 'Save images with embedding in "
            "PNG chunks'; a preview, or a copy that was resized or re-encoded, has lost it: "
            "use the embedding's .pt or .safetensors file")
    return _parse_json(raw, path, "pixels")
