"""A1111's embedding PNGs (text chunk and pixel strips), built here by a small encoder that
follows the format, read back without unpickling anything."""

from __future__ import annotations

import base64
import json
import pickle
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from nbhelpers.cli import main
from nbhelpers.ti.a1111_png import lcg_stream
from nbhelpers.ti.embeddings import EmbeddingFileError
from nbhelpers.ti.formats import convert_embedding, detect_format, load_embedding

TOKEN = "<probe>"

# A1111's test of its stream (image_embedding.py): the first values, and the sum of the
# 100000 after the first 100
A1111_FIRST = [253, 242, 127, 44, 157, 27, 239, 133, 38, 79, 167, 4, 177, 95, 130, 79]
A1111_SUM_AFTER_100 = 12731374


def a1111_dict(vectors, name=TOKEN, step=7):
    return {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": name,
            "step": step, "sd_checkpoint": "6ce0161689", "sd_checkpoint_name": "v1-5-pruned"}


def to_json(data) -> bytes:
    """A1111's JSON: each tensor as {"TORCHTENSOR": nested list}."""
    def default(obj):
        if isinstance(obj, torch.Tensor):
            return {"TORCHTENSOR": obj.tolist()}
        raise TypeError(type(obj).__name__)

    return json.dumps(data, default=default).encode()


def picture(h=40, w=24, seed=0, seam=True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(1, 256, (h, w, 3), dtype=np.uint8)
    if seam:
        img[:, w // 2] = 0x30  # a column whose low nibbles are zero, inside the picture
    return img


def save_text_chunk_png(path, data: dict | None = None, text: str | None = None,
                        pixels: np.ndarray | None = None):
    info = PngImagePlugin.PngInfo()
    info.add_text("sd-ti-embedding", text if text is not None
                  else base64.b64encode(to_json(data)).decode())
    Image.fromarray(picture() if pixels is None else pixels).save(path, pnginfo=info)
    return path


def strip_image(data: dict, pic: np.ndarray, seed: int = 0) -> np.ndarray:
    """The pixel form: [low-nibble strip | black column | picture | black column | high strip].

    The compressed JSON is repeated to fill ``(H, w, 3)`` (as A1111's np.resize does), each
    strip's low nibble is the data xor the stream, and its high nibble is noise (A1111 draws
    dots there; readers ignore it).
    """
    h = pic.shape[0]
    packed = np.frombuffer(zlib.compress(to_json(data), 9), np.uint8)
    cols = -(-len(packed) // (3 * h)) + 1  # at least one value of padding, as A1111's
    block = np.resize(packed, (h, cols, 3))
    key = lcg_stream(block.size).reshape(block.shape) & 0x0F
    rng = np.random.default_rng(seed)
    low = ((block & 0x0F) ^ key) | (rng.integers(0, 16, block.shape, dtype=np.uint8) << 4)
    high = ((block >> 4) ^ key) | (rng.integers(0, 16, block.shape, dtype=np.uint8) << 4)
    black = np.zeros((h, 1, 3), np.uint8)
    return np.concatenate([low, black, pic, black, high], axis=1)


@pytest.fixture
def no_unpickling(monkeypatch):
    """Make any unpickling in the code under test fail loudly."""
    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling was attempted")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)


def test_stream_is_a1111s():
    values = lcg_stream(100 + 100_000)
    assert values[:len(A1111_FIRST)].tolist() == A1111_FIRST
    assert int(values[100:].sum(dtype=np.int64)) == A1111_SUM_AFTER_100
    assert len(lcg_stream(7)) == 7 and len(lcg_stream(0)) == 0


def test_text_chunk_png_loads(tmp_path, no_unpickling):
    vectors = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    path = save_text_chunk_png(tmp_path / "probe-500.png", a1111_dict(vectors))
    emb = load_embedding(path)
    assert emb.token == TOKEN and emb.step == 7
    assert emb.vectors.dtype == torch.float32 and torch.equal(emb.vectors, vectors)
    assert emb.meta == {"model_name": "v1-5-pruned", "sd_checkpoint": "6ce0161689"}
    assert detect_format(path) == "a1111"
    assert load_embedding(path, token="<other>").token == "<other>"


def test_pixel_png_loads_when_text_chunks_are_stripped(tmp_path, no_unpickling):
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(2))
    path = tmp_path / "probe.png"
    Image.fromarray(strip_image(a1111_dict(vectors, step=11), picture())).save(path)
    assert "sd-ti-embedding" not in Image.open(path).text
    emb = load_embedding(path)
    assert emb.token == TOKEN and emb.step == 11 and torch.equal(emb.vectors, vectors)


def test_png_converts_to_the_other_formats(tmp_path):
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(3))
    src = save_text_chunk_png(tmp_path / "e.png", a1111_dict(vectors))
    convert_embedding(src, tmp_path / "e.pt", format="a1111")
    back = load_embedding(tmp_path / "e.pt")
    assert back.token == TOKEN and torch.equal(back.vectors, vectors)
    assert main(["ti", "inspect", str(src)]) == 0


def test_png_without_embedding_is_refused_accurately(tmp_path, no_unpickling):
    plain = tmp_path / "preview.png"
    Image.fromarray(picture()).save(plain)
    with pytest.raises(EmbeddingFileError) as err:
        load_embedding(plain)
    text = str(err.value)
    assert "PNG without an embedding" in text and "no 'sd-ti-embedding' text chunk" in text
    assert "pixels hold no A1111 data strips" in text and ".safetensors" in text
    assert "not made by A1111" not in text
    # black side columns, but strips that are not data
    black = np.zeros((40, 1, 3), np.uint8)
    fake = np.concatenate([picture(seed=1, seam=False), black, picture(seed=2), black,
                           picture(seed=3, seam=False)], axis=1)
    Image.fromarray(fake).save(tmp_path / "fake.png")
    with pytest.raises(EmbeddingFileError, match="do not inflate"):
        load_embedding(tmp_path / "fake.png")


@pytest.mark.parametrize("text, match", [
    ("not base64 at all!", "not base64"),
    (base64.b64encode(b"{not json").decode(), "not A1111's JSON"),
    (base64.b64encode(b"[1, 2]").decode(), "a list, not A1111's dict"),
    (base64.b64encode(b'{"string_to_param": {"*": {"TORCHTENSOR": [[1.0], [2.0, 3.0]]}}}'
                      ).decode(), "not a rectangular list"),
    (base64.b64encode(b'{"string_to_param": {"*": {"TORCHTENSOR": [["x"]]}}}').decode(),
     "not a rectangular list"),
])
def test_bad_text_chunks_are_refused(tmp_path, no_unpickling, text, match):
    path = save_text_chunk_png(tmp_path / "bad.png", text=text)
    with pytest.raises(EmbeddingFileError, match=match):
        load_embedding(path)


def test_damaged_png_is_refused(tmp_path):
    path = save_text_chunk_png(tmp_path / "e.png", a1111_dict(torch.ones(1, 8)))
    data = path.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(EmbeddingFileError, match="damaged PNG"):
        load_embedding(tmp_path / "cut.png")
    assert main(["ti", "inspect", str(tmp_path / "cut.png")]) == 2
