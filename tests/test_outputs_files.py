"""Single files the package writes (PNGs, embeddings) and reads (images, embeddings), issue 34:
a full disk or a short write is a :class:`WriteError` with the earlier file kept and no
temporary file left; a FIFO is never opened as an image; a 1-vector diffusers embedding is a
``(width,)`` tensor, which InvokeAI's probe reads as the width. Also the one float-to-uint8
conversion and the one enlargement (issue 31).
"""

import builtins
import errno
import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import nbhelpers.files as files
from nbhelpers.cli import main
from nbhelpers.files import WriteError, save_png, write_bytes
from nbhelpers.images import enlarge, float_to_uint8
from nbhelpers.sweep import label_frame
from nbhelpers.ti.embeddings import Embedding, EmbeddingFileError
from nbhelpers.ti.formats import load_embedding, save_embedding
from nbhelpers.ti.images import check_image_folder, load_folder


class _Disk:
    """Writes to files under ``root`` fail with ``code`` once ``room`` bytes are written
    (``short``: the bytes past ``room`` are dropped without a word, as a failing disk might)."""

    def __init__(self, monkeypatch, root, room, code=errno.ENOSPC, short=False):
        real_open = builtins.open

        def fake_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if "w" not in mode or not str(file).startswith(str(root)):
                return f
            return _Writer(f, self, code, short)

        self.room = room
        monkeypatch.setattr(builtins, "open", fake_open)


class _Writer:
    def __init__(self, f, disk, code, short):
        self.f, self.disk, self.code, self.short = f, disk, code, short

    def write(self, data):
        n = len(memoryview(data).cast("B"))
        self.disk.room -= n
        if self.disk.room < 0:
            if self.short:
                return n
            raise OSError(self.code, os.strerror(self.code))
        return self.f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


def only(folder, *names):
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_png_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "a.png"
    out.write_bytes(b"old picture")
    _Disk(monkeypatch, tmp_path, room=100)
    with pytest.raises(WriteError, match="no space left on the disk") as info:
        save_png(np.zeros((64, 64, 3), np.uint8) + 7, out)
    assert info.value.errno == errno.ENOSPC and "a.png was left as it was" in str(info.value)
    assert out.read_bytes() == b"old picture"
    only(tmp_path, "a.png")


def test_a_short_write_is_caught_by_the_read_back(tmp_path, monkeypatch):
    """The disk takes the bytes and loses some: the size check (bytes) and Pillow's verify
    (PNG) see it before the rename."""
    out = tmp_path / "e.bin"
    out.write_bytes(b"old")
    _Disk(monkeypatch, tmp_path, room=10, short=True)
    with pytest.raises(WriteError, match="not whole when read back"):
        write_bytes(out, b"x" * 100)
    with pytest.raises(WriteError, match="not whole when read back"):
        save_png(np.zeros((16, 16, 3), np.uint8), tmp_path / "new.png")
    assert out.read_bytes() == b"old"
    only(tmp_path, "e.bin")


def emb(n=1, width=768):
    return Embedding("<s>", torch.randn(n, width, generator=torch.Generator().manual_seed(n)))


def test_cli_ti_convert_on_a_full_disk(tmp_path, monkeypatch, capsys):
    """Through the real CLI: exit 1 with the message, the earlier file byte-identical."""
    src = save_embedding(emb(2), tmp_path / "src.safetensors")
    dst = tmp_path / "dst.pt"
    dst.write_bytes(b"an earlier conversion")
    _Disk(monkeypatch, tmp_path, room=50)
    assert main(["ti", "convert", str(src), str(dst), "--format", "a1111"]) == 1
    err = capsys.readouterr().err
    assert "no space left on the disk" in err and "dst.pt was left as it was" in err
    assert dst.read_bytes() == b"an earlier conversion"
    only(tmp_path, "src.safetensors", "dst.pt")


def test_a_one_vector_diffusers_file_is_what_invokeais_probe_reads(tmp_path):
    """InvokeAI's probe: the first tensor's ``shape[0]`` is the width (768: SD 1.x). One
    vector is saved ``(768,)``; several keep ``(n, 768)`` (InvokeAI takes a1111 or kohya for
    those, as the --format help says); our loader reads both as ``(n, 768)``."""
    from safetensors.torch import load_file

    one = save_embedding(emb(1), tmp_path / "one.safetensors")
    tensors = load_file(one)
    assert list(tensors) == ["<s>"] and list(tensors.values())[0].shape[0] == 768
    assert tensors["<s>"].shape == (768,)
    three = save_embedding(emb(3), tmp_path / "three.safetensors")
    assert load_file(three)["<s>"].shape == (3, 768)
    for path, n in ((one, 1), (three, 3)):
        back = load_embedding(path)
        assert back.vectors.shape == (n, 768) and torch.equal(back.vectors, emb(n).vectors)


def test_diffusers_loads_a_one_vector_file_into_a_small_pipeline(tmp_path):
    """diffusers' own ``load_textual_inversion`` reads the ``(width,)`` file (the shipped toy
    pipeline, 128 wide), and the token's row is the vector."""
    from nbhelpers.toy.model import load_pipeline

    pipe = load_pipeline()
    width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    vec = emb(1, width)
    path = save_embedding(vec, tmp_path / "one.safetensors")
    pipe.load_textual_inversion(str(path))
    row = pipe.tokenizer.convert_tokens_to_ids("<s>")
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[row], vec.vectors[0])


def _within(seconds, fn, *args):
    """``fn(*args)`` in a daemon thread; fail (not hang) if it has not returned in time."""
    result = {}

    def call():
        try:
            result["value"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - raised again in the test's thread
            result["error"] = err

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__} is blocked (a FIFO opened?)"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_a_fifo_named_like_an_image_is_skipped_not_opened(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "stream.png")
    assert _within(60, check_image_folder, tmp_path) == 1
    report = _within(60, load_folder, tmp_path)
    assert [p.path.name for p in report.loaded] == ["a.png"]
    (skipped,) = report.skipped
    assert skipped.path.name == "stream.png" and "not a regular file" in skipped.reason
    # the file read again later is the FIFO now: refused, not waited on
    item = report.loaded[0]
    (tmp_path / "a.png").unlink()
    os.mkfifo(tmp_path / "a.png")
    with pytest.raises(ValueError, match="not a regular file"):
        _within(60, lambda: item.image)


def test_a_fifo_given_as_an_embedding_is_refused(tmp_path):
    os.mkfifo(tmp_path / "e.safetensors")
    with pytest.raises(EmbeddingFileError, match="not a regular file"):
        _within(60, load_embedding, tmp_path / "e.safetensors")
    with pytest.raises(ValueError, match="named pipe"):
        _within(60, files.open_regular, tmp_path / "e.safetensors")


def test_one_uint8_conversion_and_one_enlargement():
    x = np.linspace(0, 1, 97, dtype=np.float32).reshape(1, 97, 1).repeat(3, axis=2)
    assert np.array_equal(float_to_uint8(x), (x * 255).round().astype(np.uint8))
    assert np.array_equal(float_to_uint8(torch.from_numpy(x)), float_to_uint8(x))
    odd = np.array([[[-0.5, 1.5, np.nan]]], np.float32)
    assert float_to_uint8(odd).tolist() == [[[0, 255, 0]]]   # clipped, not wrapped round
    with pytest.raises(ValueError, match="floats"):
        float_to_uint8(np.zeros((2, 2, 3), np.uint8))
    small = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    # what label_frame did with Pillow's nearest resize is what enlarge does
    pil = np.asarray(Image.fromarray(small).resize((280, 280), Image.Resampling.NEAREST))
    assert np.array_equal(enlarge(small, 7), pil)
    framed = label_frame(small, "")
    assert framed.shape == (280, 280, 3) and np.array_equal(framed[40:], pil[40:])
