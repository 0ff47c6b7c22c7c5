"""Bad embedding files: each is refused with a clear EmbeddingFileError (a ValueError), runs
nothing, allocates little, and on the command line gives exit code 2 and one `error:` line."""

from __future__ import annotations

import builtins
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from nbhelpers.cli import main
from nbhelpers.ti.embeddings import Embedding, EmbeddingFileError
from nbhelpers.ti.formats import load_embedding, save_embedding
from nbhelpers.ti.safe_read import MAX_EMBEDDING_BYTES

TOKEN = "<fuzz>"
WIDTH = 32


def emb(n=2, width=WIDTH) -> Embedding:
    return Embedding(TOKEN, torch.randn(n, width, generator=torch.Generator().manual_seed(0)),
                     step=5, meta={"init_word": "red"})


def cli_refuses(capsys, *argv) -> str:
    """Run ``nbhelpers ARGV``; it must exit 2 with one `error:` line (last, after any model
    loading progress bars) and no traceback. Returns that line."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error: ") for line in lines) == 1, err
    return lines[-1]


class _Opens:
    """Unpickling this calls ``open(marker, "w")``: it would create the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


# --- files that are not embeddings at all ---------------------------------------------------


def test_random_bytes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    prefixes = [b"", b"\x89PNG\r\n\x1a\n", b"PK\x03\x04", b"\x80\x02", b"\x80\x02\x8a\x0a",
                struct.pack("<Q", 20) + b"{"]
    for k in range(120):
        body = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
        path = tmp_path / f"r{k}.pt"
        path.write_bytes(prefixes[k % len(prefixes)] + body)
        with pytest.raises(EmbeddingFileError):
            load_embedding(path)
    cli_refuses(capsys, "ti", "inspect", str(tmp_path / "r1.pt"))
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(EmbeddingFileError):
        load_embedding(tmp_path / "empty.safetensors")


def test_truncated_safetensors(tmp_path, capsys):
    data = save_embedding(emb(), tmp_path / "e.safetensors").read_bytes()
    (header_size,) = struct.unpack("<Q", data[:8])
    for cut in (3, 8, 9, 8 + header_size // 2, 8 + header_size, 8 + header_size + 5,
                len(data) - 1):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        with pytest.raises(EmbeddingFileError) as err:
            load_embedding(path)
        if cut > 8:
            assert "safetensors" in str(err.value)
    cli_refuses(capsys, "ti", "inspect", str(tmp_path / f"cut{len(data) - 1}.safetensors"))


def test_safetensors_header_larger_than_the_file(tmp_path, capsys):
    path = tmp_path / "huge-header.safetensors"
    path.write_bytes(struct.pack("<Q", 2 ** 40) + b'{"__metadata__": {}}')
    with pytest.raises(EmbeddingFileError, match="header size field says 1099511627776 bytes, "
                                                 "and 20 bytes follow"):
        load_embedding(path)
    assert "fetch it again" in cli_refuses(capsys, "ti", "inspect", str(path))


@pytest.mark.parametrize("fmt, name", [("diffusers", "e.safetensors"), ("a1111", "e.pt"),
                                       ("kohya", "k.pt")])
def test_flipped_bytes_load_or_are_refused(tmp_path, fmt, name):
    """A damaged file either still reads (a flipped bit in a value) or is refused cleanly."""
    good = save_embedding(emb(), tmp_path / name, format=fmt).read_bytes()
    rng = np.random.default_rng(1)
    outcomes = set()
    for k in range(40):
        data = bytearray(good)
        for i in rng.integers(0, len(data), 3):
            data[i] ^= 1 << int(rng.integers(0, 8))
        path = tmp_path / f"flip{k}{name}"
        path.write_bytes(bytes(data))
        try:
            outcomes.add(type(load_embedding(path, token=TOKEN)).__name__)
        except EmbeddingFileError:
            outcomes.add("refused")
    assert outcomes <= {"Embedding", "refused"}


# --- files that try to do harm ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["plain pickle", "legacy torch", "zip torch"])
def test_pickles_with_unexpected_globals_run_nothing(tmp_path, capsys, how):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    payload = {"string_to_token": {"*": 265}, "string_to_param": {"*": _Opens(marker)},
               "name": TOKEN, "step": 1}
    if how == "plain pickle":
        path.write_bytes(pickle.dumps(_Opens(marker), protocol=2))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=how == "zip torch")
    with pytest.raises(EmbeddingFileError, match="needs full unpickling"):
        load_embedding(path)
    assert "needs full unpickling" in cli_refuses(capsys, "ti", "inspect", str(path))
    cli_refuses(capsys, "ti", "convert", str(path), str(tmp_path / "out.safetensors"))
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_zip_bomb_is_refused_from_the_zip_directory(tmp_path, capsys, monkeypatch):
    """A deflated entry of zeros that declares more than the limit: refused before torch.load
    (which would allocate the declared size and inflate into it)."""
    path = tmp_path / "bomb.pt"
    torch.save({"emb_params": torch.zeros(1, WIDTH)}, path)  # a real zip-format .pt ...
    big = zipfile.ZipInfo("archive/data/1")  # ... plus one huge, well-compressed entry
    big.compress_type = zipfile.ZIP_DEFLATED
    size = MAX_EMBEDDING_BYTES + 2 ** 20
    with zipfile.ZipFile(path, "a") as z, z.open(big, "w", force_zip64=True) as w:
        chunk = bytes(2 ** 20)
        for _ in range(size // len(chunk)):
            w.write(chunk)
    assert path.stat().st_size < 2 ** 20  # small on disk

    def no_load(*args, **kwargs):
        raise AssertionError("torch.load was called on the bomb")

    monkeypatch.setattr(torch, "load", no_load)
    with pytest.raises(EmbeddingFileError, match=r"zip entries unpack to 65\.\d MiB.*"
                                                 r"'archive/data/1'"):
        load_embedding(path)
    cli_refuses(capsys, "ti", "inspect", str(path))


def test_oversized_files_are_not_read(tmp_path, capsys):
    path = tmp_path / "model.safetensors"
    save_file({"model.weight": torch.zeros(MAX_EMBEDDING_BYTES // 4 + 16)}, str(path))
    with pytest.raises(EmbeddingFileError, match="its 1 tensors take 64.0 MiB.*model checkpoint"):
        load_embedding(path)
    cli_refuses(capsys, "ti", "inspect", str(path))


# --- embedding-shaped files with bad values ---------------------------------------------------


def test_nan_and_inf_vectors(tmp_path, capsys, tiny_pipeline_dir):
    """Read as they are, so inspect can show a diverged run; refused when saved or used."""
    vectors = emb().vectors.clone()
    vectors[0, 1], vectors[1, 2] = float("nan"), float("inf")
    path = tmp_path / "nan.safetensors"
    save_file({TOKEN: vectors}, str(path))
    assert torch.isnan(load_embedding(path).vectors).sum() == 1
    capsys.readouterr()
    assert main(["ti", "inspect", str(path)]) == 0
    assert "WARNING: 2 NaN/inf values" in capsys.readouterr().out
    err = cli_refuses(capsys, "ti", "convert", str(path), str(tmp_path / "out.pt"), "--format",
                      "a1111")
    assert "2 of its 64 values are NaN or inf" in err and not (tmp_path / "out.pt").exists()
    err = cli_refuses(capsys, "generate", "--model", str(tiny_pipeline_dir), "--prompt", TOKEN,
                      "--steps", "1", "--embedding", str(path), "--out", str(tmp_path / "x.png"))
    assert "NaN or inf" in err and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("shape, match", [((2, 0), "empty"), ((2, 3, 4), r"shape \(2, 3, 4\)"),
                                          ((0, WIDTH), "empty")])
def test_malformed_shapes(tmp_path, capsys, shape, match):
    path = tmp_path / "bad.safetensors"
    save_file({TOKEN: torch.zeros(shape)}, str(path))
    with pytest.raises(EmbeddingFileError, match=match):
        load_embedding(path)
    cli_refuses(capsys, "ti", "inspect", str(path))


def test_wrong_width_for_the_model(tmp_path, capsys, tiny_pipeline_dir):
    path = save_embedding(emb(width=768), tmp_path / "sd15.safetensors")
    err = cli_refuses(capsys, "ti", "inspect", str(path), "--model", str(tiny_pipeline_dir))
    assert "768 wide (SD 1.x)" in err and "32 wide" in err
    cli_refuses(capsys, "generate", "--model", str(tiny_pipeline_dir), "--prompt", TOKEN,
                "--steps", "1", "--embedding", str(path), "--out", str(tmp_path / "x.png"))
