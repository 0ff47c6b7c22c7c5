"""A textual-inversion run's first step, :func:`nbhelpers.ti.plan.plan_run`: every check that
needs no model, made before anything loads, with the same answer as the trainer (issues #31
item 1 and #34 items 2-4: the template rule, output path and format, token, the 77-token
budget, the caption cap, the run folder's lock)."""

import os
import subprocess
import sys
import warnings

import pytest
from PIL import Image

from nbhelpers import models
from nbhelpers.cli import main
from nbhelpers.ti.captions import MAX_CAPTION_CHARS, caption_for, check_templates
from nbhelpers.ti.config import Framing, TIConfig, TIData
from nbhelpers.ti.plan import plan_run
from nbhelpers.ti.run_folder import RunLock, RunLockedError

#: Issue #31's bug: the CLI accepted these (any template had [name]), the trainer refused them
#: (every template must) after the model had loaded and the latents were encoded.
HALF_NAMED = ["a painting of [name]", "a picture of [filewords]"]


@pytest.fixture()
def pictures(tmp_path):
    d = tmp_path / "pics"
    d.mkdir()
    for k, colour in enumerate(("red", "blue")):
        Image.new("RGB", (64, 64), colour).save(d / f"a {colour} square {k}.png")
    return d


@pytest.fixture()
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a pipeline was loaded before the input was checked")

    monkeypatch.setattr(models, "load_pipeline", refuse)


def _train(pictures, tiny_pipeline_dir, *extra):
    try:
        return main(["ti", "train", str(pictures), "--model", str(tiny_pipeline_dir), "--token",
                     "<s>", "--steps", "1", *extra])
    except SystemExit as stop:   # an option's type refused the value (argparse: exit status 2)
        return stop.code


def test_the_template_rule_is_one_answer_before_loading_and_in_the_trainer(
        pictures, tiny_pipeline_dir, tmp_path, capsys, no_model_loads):
    from nbhelpers.ti.train import train_textual_inversion

    template_file = tmp_path / "templates.txt"
    template_file.write_text("\n".join(HALF_NAMED) + "\n")
    out = tmp_path / "out" / "s.safetensors"
    assert _train(pictures, tiny_pipeline_dir, "--template", str(template_file),
                  "--out", str(out)) == 2
    cli_says = capsys.readouterr().err
    with pytest.raises(ValueError) as trainer:
        # the trainer checks before it touches the model or the data
        train_textual_inversion(None, None, HALF_NAMED, TIConfig(token="<s>"))
    reason = "template 'a picture of [filewords]' has no [name] slot"
    assert reason in cli_says and reason in str(trainer.value), (cli_says, trainer.value)
    assert cli_says.split(reason)[1].strip() == str(trainer.value).split(reason)[1]
    assert not out.exists() and not (tmp_path / "out" / "s-run").exists()
    # overwriting a word: [filewords] carries it; a template with neither still fails
    assert check_templates(["[filewords]"], overwrite=True) == ["[filewords]"]
    with pytest.raises(ValueError, match="has no \\[name\\] slot"):
        check_templates(["a photo"], overwrite=True)


@pytest.mark.parametrize("argv, says", [
    (["--out", "x.pt"], "format 'diffusers' is not saved as .pt"),
    (["--out", "x"], "has no file ending"),
    (["--out", "{folder}"], "is a folder"),
    (["--format", "a1111", "--out", "x.safetensors"], "format 'a1111' is not saved as"),
    (["--token", "emb_params"], "is a key of another format's files"),
    (["--token", "<../escaped>"], "path character"),
    (["--token", ".."], "path character"),
    (["--checkpoint-every", "-1"], "argument --checkpoint-every: -1: must be at least 0"),
    (["--seed", str(2**64)], f"argument --seed: {2**64}: must be between 0 and"),
])
def test_output_and_token_are_refused_before_loading(pictures, tiny_pipeline_dir, tmp_path,
                                                     capsys, no_model_loads, monkeypatch,
                                                     argv, says):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    argv = [a.replace("{folder}", str(folder)) for a in argv]
    assert _train(pictures, tiny_pipeline_dir, *argv) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder", "pics"]


def test_a_token_pushed_past_77_tokens_is_refused_naming_the_caption(
        pictures, tiny_pipeline_dir, tmp_path, capsys, no_model_loads):
    long = " ".join(["circle"] * 90)
    (pictures / "a red square 0.txt").write_text(long)
    template_file = tmp_path / "t.txt"
    template_file.write_text("[filewords], in the style of [name]\n")
    assert _train(pictures, tiny_pipeline_dir, "--template", str(template_file),
                  "--out", str(tmp_path / "s.safetensors")) == 2
    err = capsys.readouterr().err
    assert "the token would not fit in the prompt" in err, err
    assert "a red square 0.txt" in err or "a red square 0.png" in err, err
    assert f"({len(long)} characters)" in err   # the long value cut short
    # [name] first: the caption is cut after the token, which trains
    template_file.write_text("in the style of [name], [filewords]\n")
    plan = plan_run(TIConfig(token="<s>"), tmp_path / "s.safetensors",
                    TIData(template=str(template_file)), folder=pictures,
                    tokenizer=_tokenizer(tiny_pipeline_dir))
    assert plan.budget_checked and plan.templates == ("in the style of [name], [filewords]",)


def _tokenizer(model_dir):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer")


def test_a_huge_caption_file_is_cut_with_a_warning_naming_it(tmp_path):
    image = tmp_path / "fox.png"
    Image.new("RGB", (8, 8)).save(image)
    (tmp_path / "fox.txt").write_text("a fox " * 400_000)   # 2.4 MB
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        caption, source = caption_for(image)
    assert source == "txt" and len(caption) <= MAX_CAPTION_CHARS
    assert any(str(tmp_path / "fox.txt") in str(w.message) for w in seen), seen


def test_a_fifo_named_png_is_never_opened(tmp_path):
    d = tmp_path / "pics"
    d.mkdir()
    os.mkfifo(d / "stream.png")
    Image.new("RGB", (64, 64), "red").save(d / "red.png")
    plan = plan_run(TIConfig(token="<s>"), tmp_path / "s.safetensors", folder=d)
    assert [c for c, _ in plan.captions] == ["red"]


def test_a_second_run_on_the_same_output_refuses_naming_the_pid(pictures, tiny_pipeline_dir,
                                                                tmp_path, capsys,
                                                                no_model_loads):
    out = tmp_path / "s.safetensors"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        work = tmp_path / "s-run"
        work.mkdir()
        (work / "lock").write_text(f"{holder.pid}\n")
        assert _train(pictures, tiny_pipeline_dir, "--out", str(out)) == 1
        err = capsys.readouterr().err
        assert f"PID {holder.pid}" in err and "in use by another run" in err, err
        with pytest.raises(RunLockedError, match=f"PID {holder.pid}"):
            RunLock(work).__enter__()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale, taken over with a note, and given back at the end
    with pytest.warns(UserWarning, match=f"the run that left it \\(PID {holder.pid}\\) is gone"):
        with RunLock(work):
            assert (work / "lock").read_text().strip() == str(os.getpid())
    assert not (work / "lock").exists()


def test_the_data_options_are_the_fields_of_tidata():
    import typing

    from nbhelpers.cli import build_parser
    from nbhelpers.ti.formats import FORMATS
    from nbhelpers.ti.framing import FRAMING_MODES

    assert list(typing.get_args(Framing)) == list(FRAMING_MODES)
    args = build_parser().parse_args(["ti", "train", "d", "--token", "<s>", "--size", "32",
                                      "--framing", "focal", "--format", "kohya"])
    from nbhelpers.cli.options import config_from_args
    from nbhelpers.cli.ti import DATA_OPTIONS, FILE_OPTIONS

    data = config_from_args(TIData, args, DATA_OPTIONS + FILE_OPTIONS)
    assert data == TIData(framing="focal", size=32, format="kohya")
    assert list(typing.get_args(typing.get_type_hints(TIData)["format"])) == list(FORMATS)
    assert TIData(template=["a [name]"]).template == ("a [name]",)


def test_without_a_tokenizer_the_budget_is_checked_before_any_image_is_encoded(
        pictures, tiny_pipeline_dir, tmp_path):
    """Where the tokenizer alone is not at hand (the rehearsal models), run_plan checks the
    budget first thing: before the lock, the images and the latent cache."""
    from nbhelpers.ti.engine import run_plan

    (pictures / "a red square 0.txt").write_text(" ".join(["circle"] * 90))
    plan = plan_run(TIConfig(token="<s>", steps=1), tmp_path / "s.safetensors",
                    TIData(template=("[filewords], [name] style",),
                           cache_dir=str(tmp_path / "cache")), folder=pictures)
    assert not plan.budget_checked
    with pytest.raises(ValueError, match="the token would not fit in the prompt"):
        run_plan(plan, models.load_pipeline(str(tiny_pipeline_dir), device="cpu"))
    assert not (tmp_path / "cache").exists() and not (tmp_path / "s-run").exists()
