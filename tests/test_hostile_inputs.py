"""Inputs a careless or hostile user gives (issue #34), each refused with a message that names
the value and the fix, through the real command line and before any training: a picture too
small for tiles, a folder that holds only sub-folders, bytes that are no embedding, an embedding
with absurdly large but finite values, one with more vectors than a prompt holds, and a token
name thousands of characters long."""

from __future__ import annotations

import os
import random

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from nbhelpers.cli import main
from nbhelpers.models import load_pipeline
from nbhelpers.ti.embeddings import Embedding
from nbhelpers.ti.pipeline import add_embedding_to_pipeline


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def test_tiles_on_a_picture_smaller_than_a_tile_names_the_picture(tmp_path, capsys):
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (4, 4), "red").save(tmp_path / "pics" / "tiny.png")
    code, err = _cli(capsys, "ti", "train", str(tmp_path / "pics"), "--token", "<x>",
                     "--steps", "2", "--framing", "tiles", "--out", str(tmp_path / "x.safetensors"))
    assert code == 2
    assert "tiny.png is 4x4 px" in err and "another framing" in err and "tile_side" not in err
    assert not (tmp_path / "x.safetensors").exists()


def test_a_folder_of_only_sub_folders_is_not_called_empty(tmp_path, capsys):
    sub = tmp_path / "pics" / "inner"
    sub.mkdir(parents=True)
    Image.new("RGB", (64, 64), "red").save(sub / "a red square.png")
    code, err = _cli(capsys, "ti", "train", str(tmp_path / "pics"), "--token", "<x>",
                     "--steps", "2", "--out", str(tmp_path / "x.safetensors"))
    assert code == 2
    assert "only sub-folders (inner)" in err and "recursive" in err and "empty" not in err


@pytest.mark.parametrize("head", [b"", b"\x80\x02", b"\x80\x04", b"PK\x03\x04"])
def test_random_bytes_are_not_an_embedding(tmp_path, capsys, head):
    """Junk is called junk (or a damaged file of the kind its first bytes claim), never "a
    pickle that needs full unpickling", which only a file that names a class gets."""
    for k in range(8):
        junk = tmp_path / f"junk{k}.pt"
        junk.write_bytes(head + random.Random(k).randbytes(4096))
        code, err = _cli(capsys, "ti", "inspect", str(junk))
        assert code == 2, err
        assert "unpickling" not in err, err
        assert "not an embedding file" in err or "damaged" in err and "fetch it again" in err, err


@pytest.fixture(scope="module")
def toy():
    return load_pipeline("toy")


def test_finite_but_absurd_values_are_refused_before_drawing(toy):
    width = toy.text_encoder.get_input_embeddings().weight.shape[1]
    emb = Embedding("<big>", torch.full((1, width), 1e38))
    with pytest.raises(ValueError, match=r"values reach 1e\+38.*saturate the text encoder"):
        add_embedding_to_pipeline(toy, emb)
    assert "<big>" not in toy.tokenizer.get_vocab()   # nothing was added


def test_more_vectors_than_a_prompt_holds_are_refused(toy):
    width = toy.text_encoder.get_input_embeddings().weight.shape[1]
    emb = Embedding("<many>", torch.randn(200, width) * 0.01)
    with pytest.raises(ValueError, match="200 vectors, and a prompt holds 75 tokens"):
        add_embedding_to_pipeline(toy, emb)


def test_a_token_thousands_of_characters_long_gives_a_short_message(tmp_path, capsys):
    path = tmp_path / "long.safetensors"
    save_file({" ".join(["word"] * 3000): torch.randn(128)}, str(path))
    code, err = _cli(capsys, "ti", "inspect", str(path))
    assert code == 2 and "whitespace" in err
    assert max(len(line) for line in err.splitlines()) < 400, len(err)


def test_a_prompt_past_the_token_budget_is_drawn_with_a_warning(toy):
    from nbhelpers.sampling import encode_prompts

    long = " ".join(["red circle"] * 60) + " on a blue background"
    with pytest.warns(UserWarning, match=r"prompt cut at the text encoder's 77 tokens"):
        encode_prompts(toy, [long])


@pytest.mark.parametrize("option, words", [
    (("--size", "65536"), "a picture framed at 65536 px (--size) needs"),
    (("--batch-size", "100000"), "a step of 100000 pictures of 64 px"),
])
def test_training_that_cannot_fit_in_memory_is_refused_with_the_figure(tmp_path, capsys, option,
                                                                       words):
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (64, 64), "red").save(tmp_path / "pics" / "a red square.png")
    code, err = _cli(capsys, "ti", "train", str(tmp_path / "pics"), "--token", "<x>", *option,
                     "--steps", "1", "--out", str(tmp_path / "x.safetensors"))
    assert code == 2 and words in err and "GiB of memory" in err, err
    assert not (tmp_path / "x-run").exists()


def test_a_fifo_named_as_a_caption_is_not_read(tmp_path):
    from nbhelpers.ti.images import load_folder

    (tmp_path / "pics").mkdir()
    Image.new("RGB", (64, 64), "red").save(tmp_path / "pics" / "square.png")
    os.mkfifo(tmp_path / "pics" / "square.txt")   # would block a plain open() forever
    report = load_folder(tmp_path / "pics")
    assert [item.caption for item in report.loaded] == ["square"]   # the file name's caption


@pytest.mark.parametrize("option, words", [
    (("--device", "cuda"), "--device cuda: torch sees no CUDA GPU"),
    (("--size", "0"), "argument --size: the size must be a positive multiple of 8"),
    (("--template", "{bad}"), "is not UTF-8 text"),
])
def test_ti_train_refuses_before_anything_loads(tmp_path, capsys, monkeypatch, option, words):
    if option[0] == "--device":   # the check asks torch; on a GPU machine, pretend it has none
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    bad = tmp_path / "templates.txt"
    bad.write_bytes(b"a painting of [name] \xff\xfe in [filewords]\n")
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (64, 64), "red").save(tmp_path / "pics" / "a red square.png")
    option = tuple(o.replace("{bad}", str(bad)) for o in option)
    try:
        code, err = _cli(capsys, "ti", "train", str(tmp_path / "pics"), "--token", "<x>",
                         *option, "--steps", "1", "--out", str(tmp_path / "x.safetensors"))
    except SystemExit as stop:   # argparse's own refusal
        code, err = stop.code, capsys.readouterr().err
    assert code == 2 and words in err, err
    if option[0] == "--template":
        assert "templates.txt" in err   # the message names the file
    assert not (tmp_path / "x-run").exists()
