"""The names embedding files get, and the word AUTOMATIC1111 knows them by (issue #28).

A1111 names an embedding after its file, not after the token stored in it: ``my-style-a1111.pt``
is typed ``my-style-a1111`` there. ``ti train`` names its file after the token by default (with
the format's ending), and says the A1111 word wherever it writes an A1111 file.
"""

import pytest
from PIL import Image

from nbhelpers.cli import main
from nbhelpers.cli.ti import a1111_note, default_file_name
from nbhelpers.ti.formats import load_embedding


@pytest.mark.parametrize("token, fmt, name", [
    ("<my-style>", "diffusers", "my-style.safetensors"),
    ("<my-style>", "a1111", "my-style.pt"),
    ("<my-style>", "kohya", "my-style.safetensors"),
    ("toy", "a1111", "toy.pt"),
    ("<>", "diffusers", "embedding.safetensors"),
])
def test_default_file_name_is_the_tokens_word(token, fmt, name):
    assert default_file_name(token, fmt) == name


def test_a1111_word_is_the_file_name():
    note = a1111_note("out/my-style-a1111.pt", "<my-style>")
    assert "type my-style-a1111" in note and "not after the token <my-style>" in note
    assert "not after" not in a1111_note("toy.pt", "toy")


def test_ti_train_a1111_default_name_and_note(tiny_pipeline_dir, tmp_path, capsys,
                                             one_torch_thread, monkeypatch):
    d = tmp_path / "data"
    d.mkdir()
    Image.new("RGB", (64, 64), "red").save(d / "red.png")
    monkeypatch.chdir(tmp_path)
    assert main(["ti", "train", str(d), "--model", str(tiny_pipeline_dir), "--token", "<r-x>",
                 "--steps", "1", "--batch-size", "1", "--format", "a1111",
                 "--cache-dir", str(tmp_path / "cache")]) == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert (tmp_path / "r-x.pt").is_file() and load_embedding(tmp_path / "r-x.pt").token == "<r-x>"
    assert "in AUTOMATIC1111" in said and "type r-x in the prompt" in said
    out = tmp_path / "copy-a1111.pt"
    assert main(["ti", "convert", str(tmp_path / "r-x.pt"), str(out), "--format", "a1111"]) == 0
    assert "type copy-a1111 in the prompt" in capsys.readouterr().out
