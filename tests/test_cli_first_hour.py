"""What a new user meets first: --help, errors before any model loads, clear messages."""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from nbhelpers import models
from nbhelpers import profile as prof
from nbhelpers.cli import build_parser, main
from tests.test_cli_examples import _subparsers

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction,
                               argparse._SubParsersAction)):
            continue
        yield action


@pytest.mark.parametrize("path, parser", list(_subparsers(build_parser())),
                         ids=lambda v: " ".join(v) or "nbhelpers" if isinstance(v, tuple) else "")
def test_every_subcommand_help_has_description_example_and_defaults(path, parser):
    name = " ".join(("nbhelpers", *path))
    assert parser.description, f"{name} --help has no description"
    assert (parser.epilog or "").startswith(f"Example: {name}"), f"{name}: example of another"
    for action in _options(parser):
        label = action.option_strings[0] if action.option_strings else action.dest
        assert action.help, f"{name} {label} has no help line"
        if action.option_strings and not action.required:
            assert "default" in action.help, f"{name} {label}: the help says no default"
            if (action.default not in (None, False, "") and not isinstance(action.default, str)
                    and "default:" not in action.help):
                assert f"{action.default:g}" in action.help, f"{name} {label}: default"


def test_help_prints_the_example_on_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == ('Example: nbhelpers generate --model toy --prompt "a red circle on a '
                         'white background" --seed 3 --out x.png')


def test_framing_modes_are_explained(capsys):
    with pytest.raises(SystemExit):
        main(["ti", "train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for mode in ("center (the middle square", "focal (", "tiles (", "buckets ("):
        assert mode in text


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any pipeline load fails the test: bad input must be reported before one."""
    def refuse(*args, **kwargs):
        raise AssertionError("a pipeline was loaded before the input was checked")

    monkeypatch.setattr(models, "load_pipeline", refuse)
    monkeypatch.delenv(prof.ENV_VAR, raising=False)


@pytest.mark.parametrize("model, says", [
    ("/nope", "no folder at /nope"),
    ("./nope", "no folder at ./nope"),
    ("~/no-such-folder-here", "no folder at ~/no-such-folder-here"),
    ("tests/nope", "no folder at tests/nope"),   # its first part exists here
    ("a/b/c", "no folder at a/b/c"),
    ("nobody/no-such-sd", "hf download nobody/no-such-sd"),
    ("Toy", "model names are lower case; use toy"),
    ("REHEARSAL-MINI", "use rehearsal-mini"),
])
def test_wrong_model_fails_before_loading(model, says, no_model_loads, capsys, monkeypatch,
                                          tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commands = [["generate", "--prompt", "x", "--out", str(tmp_path / "x.png")],
                ["sweep", "--prompt", "x", "--out", str(tmp_path / "x.gif")],
                ["ti", "train", str(ROOT / "docs"), "--token", "<x>"]]
    for argv in commands:
        assert main([*argv, "--model", model]) == 2
        err = capsys.readouterr().err
        assert says in err, err
        assert "hf download" not in err or not says.startswith("no folder"), err
        assert "model=" not in err and "Error)" not in err, err  # no Python in the message


def test_a_folder_that_is_not_a_pipeline_and_a_file(no_model_loads, tmp_path, capsys):
    (tmp_path / "weights.bin").write_bytes(b"x")
    for model, says in ((tmp_path, "no model_index.json"), (tmp_path / "weights.bin", "is a file")):
        assert main(["generate", "--model", str(model), "--prompt", "x",
                     "--out", str(tmp_path / "x.png")]) == 2
        assert says in capsys.readouterr().err


def test_missing_files_fail_before_loading(no_model_loads, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    assert main(["generate", "--prompt", "x", "--embedding", "missing.safetensors",
                 "--out", out]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["ti", "train", str(empty), "--token", "<x>"]) == 2
    assert "folder is empty" in capsys.readouterr().err
    (empty / "notes.md").write_text("no pictures here")
    assert main(["ti", "train", str(empty), "--token", "<x>"]) == 2
    assert "no image in" in (err := capsys.readouterr().err) and "notes.md" in err
    assert main(["ti", "train", str(tmp_path / "absent"), "--token", "<x>"]) == 2
    assert "does not exist" in capsys.readouterr().err
    pics = tmp_path / "pics"
    from nbhelpers.toy import world

    world.save_picture_folder(pics, n=1)
    assert main(["ti", "train", str(pics), "--token", "<x>", "--template", "absent.txt"]) == 2
    assert "template file 'absent.txt' not found" in capsys.readouterr().err
    assert main(["ti", "train", str(pics), "--token", "<x>", "--resume",
                 "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "--resume: no checkpoint in" in err and "x-run" in err
    assert main(["ti", "inspect", str(tmp_path / "absent.pt")]) == 2
    assert "absent.pt" in capsys.readouterr().err
    assert main(["sweep", "--prompt", "x", "--scales", "0:20", "--out", "s.mp4"]) == 2
    assert "e.g. 0:20:0.2, 101 frames" in capsys.readouterr().err


def test_gpu_profile_on_a_cpu_machine_is_the_error_info_gives(no_model_loads, monkeypatch,
                                                              tmp_path, capsys):
    monkeypatch.setenv(prof.ENV_VAR, "gpu")
    monkeypatch.setattr(prof, "_cuda_available", lambda: False)
    assert main(["info"]) == 1
    info_error = capsys.readouterr().out.split("ERROR: ", 1)[1].splitlines()[0]
    assert "needs CUDA" in info_error
    for argv in (["generate", "--prompt", "x", "--out", str(tmp_path / "x.png")],
                 ["sweep", "--prompt", "x", "--out", str(tmp_path / "x.gif")]):
        assert main(argv) == 2
        assert capsys.readouterr().err.strip() == f"error: {info_error}"


def test_unknown_placeholder_warns_with_the_fix(one_torch_thread, tmp_path, capsys):
    from nbhelpers.sampling import sample_cfg
    from nbhelpers.ti.embeddings import Embedding
    from nbhelpers.ti.pipeline import (
        UnknownTokenWarning,
        add_embedding_to_pipeline,
        unknown_placeholders,
    )

    pipe = models.load_pipeline("toy")
    prompt = "a red circle, <never-trained> style"
    assert unknown_placeholders(pipe.tokenizer, prompt) == ["<never-trained>"]
    assert unknown_placeholders(pipe.tokenizer, "a red circle <|endoftext|>") == []
    with pytest.warns(UnknownTokenWarning, match=r"<never-trained> is not a learned token.*"
                      r"--embedding FILE.*load_embedding"):
        sample_cfg(pipe, prompt, 7.5, num_steps=1)
    import torch

    add_embedding_to_pipeline(pipe, Embedding("<never-trained>", torch.zeros(1, 128)))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownTokenWarning)
        sample_cfg(pipe, prompt, 7.5, num_steps=1)  # learned now: no warning
    # on the command line: one plain line on stderr, and the image is still written
    out = tmp_path / "x.png"
    assert main(["generate", "--prompt", prompt, "--steps", "1", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: <never-trained> is not a learned token") and out.exists()
    assert err.count("\n") == 1 and ".py:" not in err


def test_sweep_keeps_the_contact_sheet_of_an_earlier_sweep(one_torch_thread, tmp_path, capsys):
    from nbhelpers.sweep import default_sheet

    assert default_sheet(tmp_path / "a.gif") == tmp_path / "a.png"
    (tmp_path / "a.mp4").write_bytes(b"an earlier sweep")
    (tmp_path / "a.png").write_bytes(b"its contact sheet")
    assert default_sheet(tmp_path / "a.gif") == tmp_path / "a-gif.png"
    assert main(["sweep", "--prompt", "a red circle", "--scales", "0,7.5", "--steps", "1",
                 "--out", str(tmp_path / "a.gif")]) == 0
    text = capsys.readouterr().out
    assert (tmp_path / "a.png").read_bytes() == b"its contact sheet"
    assert (tmp_path / "a-gif.png").exists() and "a-gif.png" in text and "note:" in text
    # run again, either sweep keeps its own sheet
    assert default_sheet(tmp_path / "a.gif") == tmp_path / "a-gif.png"
    assert default_sheet(tmp_path / "a.mp4") == tmp_path / "a.png"


def test_toy_pictures_refuses_a_used_folder(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.png").write_bytes(b"x")
    assert main(["toy", "pictures", "--out", str(tmp_path / "full")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "full" / "mine.png").read_bytes() == b"x"
    assert main(["toy", "pictures", "--out", str(tmp_path / "t"), "--set", "balanced-toy",
                 "--side", "512"]) == 2
    assert "--side applies to the unnamed-style set" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    assert main(["toy", "pictures", "--out", str(tmp_path / "big"), "--n", "2",
                 "--side", "128"]) == 0
    from PIL import Image

    sizes = sorted(Image.open(p).size for p in (tmp_path / "big").iterdir()
                   if p.suffix != ".txt")
    assert sizes == [(128, 128), (192, 128)]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_enlarge_is_nearest_neighbour():
    import numpy as np

    from nbhelpers.images import enlarge

    img = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    big = enlarge(img, 3)
    assert big.shape == (6, 6, 3) and (big[:3, :3] == img[0, 0]).all()
    with pytest.raises(ValueError, match="whole number"):
        enlarge(img, 0)


def test_lab_extra_is_for_learners():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    lab = {d.split(">")[0].split("=")[0] for d in extras["lab"]}
    assert {"jupyterlab", "ipywidgets"} <= lab
    assert not lab & {"pytest", "ruff", "selenium", "nbval"}
    assert '.[lab]' in (ROOT / "README.md").read_text()


def test_make_without_a_target_lists_install():
    out = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT)],
                         capture_output=True, text=True, check=True).stdout
    assert "make install" in out and "make lab" in out and "make test" in out


def test_readme_says_what_s_means_here_and_in_the_pipeline():
    from diffusers import StableDiffusionPipeline

    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "s = 0 is the unconditional model, **s = 1 the conditional model**" in readme
    assert ("diffusers' pipeline itself switches guidance off for any `guidance_scale <= 1` "
            "and runs the conditional model") in readme
    # which is what the pipeline does
    src = inspect.getsource(StableDiffusionPipeline.do_classifier_free_guidance.fget)
    assert "guidance_scale > 1" in src
