"""`nbhelpers ti ...` and `generate --embedding` end to end on a tiny random model."""

import numpy as np
import pytest
import torch
from PIL import Image

from nbhelpers.cli import main
from nbhelpers.ti.formats import load_embedding


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "paintings"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in ("fox in the snow.png", "Füchse im Wald.jpg", "a boat (2).png"):
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(d / name)
    (d / "notes.md").write_text("not an image")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return d


def test_ti_train_convert_inspect_generate(tiny_pipeline_dir, folder, tmp_path, capsys):
    out = tmp_path / "emb" / "style.safetensors"
    rc = main(["ti", "train", str(folder), "--model", str(tiny_pipeline_dir), "--token",
               "<fox-style>", "--vectors", "2", "--steps", "3", "--batch-size", "2",
               "--framing", "focal", "--flip", "--out", str(out), "--cache-dir",
               str(tmp_path / "cache"), "--checkpoint-every", "2"])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert "broken.png" in text.out and "notes.md" in text.out  # skipped files are listed
    assert "6 framed images" in text.out  # 3 images, flipped
    emb = load_embedding(out)
    assert emb.token == "<fox-style>" and emb.vectors.shape == (2, 32) and emb.step == 3
    assert (tmp_path / "emb" / "style-run" / "checkpoint" / "state-000003.pt").exists()

    pt = tmp_path / "emb" / "style.pt"
    assert main(["ti", "convert", str(out), str(pt), "--format", "a1111"]) == 0
    assert torch.equal(load_embedding(pt).vectors, emb.vectors)
    assert main(["ti", "inspect", str(pt), "--model", str(tiny_pipeline_dir)]) == 0
    report = capsys.readouterr().out
    assert "<fox-style>" in report and "nearest" in report.lower()

    png = tmp_path / "x.png"
    assert main(["generate", "--model", str(tiny_pipeline_dir), "--prompt",
                 "a boat, <fox-style>", "--steps", "2", "--embedding", str(pt),
                 "--out", str(png)]) == 0
    assert "loaded <fox-style> (2 vector(s)" in capsys.readouterr().out and png.exists()


def test_ti_train_bad_inputs(tiny_pipeline_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["ti", "train", str(empty), "--model", str(tiny_pipeline_dir), "--token",
                 "<x>", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["ti", "train", str(tmp_path / "missing"), "--model", str(tiny_pipeline_dir),
                 "--token", "<x>"]) == 2
    capsys.readouterr()
    d = tmp_path / "ok"
    d.mkdir()
    Image.new("RGB", (64, 64), "red").save(d / "red.png")
    assert main(["ti", "train", str(d), "--model", str(tiny_pipeline_dir), "--token", "red",
                 "--steps", "1", "--out", str(tmp_path / "r.safetensors")]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["ti", "train", str(d), "--model", str(tiny_pipeline_dir), "--token", "<r>",
                 "--init-word", "zebraxq", "--steps", "1",
                 "--out", str(tmp_path / "r.safetensors")]) == 2
    assert "init word" in capsys.readouterr().err
    assert main(["ti", "train", str(d), "--model", str(tiny_pipeline_dir), "--token", "<r>",
                 "--lr", "fast", "--out", str(tmp_path / "r.safetensors")]) == 2
    assert "learning-rate schedule" in capsys.readouterr().err
    assert not (tmp_path / "r.safetensors").exists()


@pytest.mark.parametrize("fmt, name", [("diffusers", "e.safetensors"), ("a1111", "e.pt"),
                                       ("kohya", "k.safetensors")])
def test_trained_files_name_the_model_not_its_local_path(tiny_pipeline_dir, tmp_path, capsys,
                                                         one_torch_thread, fmt, name):
    from safetensors import safe_open

    d = tmp_path / "data"
    d.mkdir()
    Image.new("RGB", (64, 64), "red").save(d / "red.png")
    out = tmp_path / name
    assert main(["ti", "train", str(d), "--model", str(tiny_pipeline_dir), "--token", "<r>",
                 "--steps", "1", "--batch-size", "1", "--format", fmt, "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0, capsys.readouterr().err
    raw = out.read_bytes()
    for local in (tiny_pipeline_dir, tiny_pipeline_dir.parent, tmp_path):
        assert str(local).encode() not in raw
    emb = load_embedding(out, token="<r>" if fmt == "kohya" else None)
    assert emb.meta["model_name"] == "tiny-sd"  # the folder's name
    assert not any(str(tiny_pipeline_dir) in str(v) for v in emb.meta.values())
    if fmt == "a1111":
        assert torch.load(out, weights_only=True)["sd_checkpoint_name"] == "tiny-sd"
    else:
        with safe_open(str(out), framework="pt") as f:
            assert not any(str(tiny_pipeline_dir) in v for v in f.metadata().values())


def test_model_name_is_never_a_local_path(tmp_path):
    from types import SimpleNamespace

    from nbhelpers.locations import toy_model_dir
    from nbhelpers.ti.engine import model_name

    def named(source):
        return model_name(SimpleNamespace(name_or_path=str(source)))

    assert named(toy_model_dir()) == "toy"
    snapshot = tmp_path / "hub" / "models--CompVis--stable-diffusion-v1-4" / "snapshots" / "ab12"
    snapshot.mkdir(parents=True)
    assert named(snapshot) == "CompVis/stable-diffusion-v1-4"
    assert named("runwayml/stable-diffusion-v1-5") == "runwayml/stable-diffusion-v1-5"
    (tmp_path / "my-sd").mkdir()
    assert named(tmp_path / "my-sd") == "my-sd"
    assert named(tmp_path / "gone" / "old-sd") == "old-sd"  # a folder that was moved
    assert model_name(SimpleNamespace()) is None and named("") is None


def test_kohya_files_on_the_command_line(tiny_pipeline_dir, tmp_path, capsys):
    from nbhelpers.ti.embeddings import Embedding
    from nbhelpers.ti.formats import save_embedding

    emb = Embedding("<k>", torch.randn(2, 32, generator=torch.Generator().manual_seed(0)))
    path = save_embedding(emb, tmp_path / "my_style.safetensors", format="kohya")
    # inspect shows the vectors under the file's stem, and names the option
    assert main(["ti", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "token my_style: 2 vector(s)" in out and "Pass --token" in out
    assert "load_embedding(" not in out
    assert main(["ti", "inspect", str(path), "--token", "<k>"]) == 0
    assert "token <k>: 2 vector(s)" in capsys.readouterr().out
    # a stem that cannot be a token: the option is named, not a Python call
    spaced = save_embedding(emb, tmp_path / "my style.pt", format="kohya")
    assert main(["ti", "inspect", str(spaced)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--token '<my-style>'" in err
    assert "load_embedding(" not in err and "Traceback" not in err
    # convert and generate say how to give the token on their command lines
    out_pt = tmp_path / "o.pt"
    assert main(["ti", "convert", str(path), str(out_pt), "--format", "a1111"]) == 2
    err = capsys.readouterr().err
    assert "saved for '<k>'" in err and "--token '<k>'" in err and "load_embedding(" not in err
    assert main(["ti", "convert", str(path), str(out_pt), "--format", "a1111",
                 "--token", "<k>"]) == 0
    assert torch.equal(load_embedding(out_pt).vectors, emb.vectors)
    assert main(["generate", "--model", str(tiny_pipeline_dir), "--prompt", "a <k>", "--steps",
                 "1", "--embedding", str(path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert f"--embedding '{path}:<k>'" in err and "load_embedding(" not in err


def test_ti_train_options_are_the_config_fields_with_one_default():
    """``ti train``'s run options are TIConfig's fields, built from them: every field with a
    help text is an option, and the options left alone give TIConfig's own defaults."""
    from dataclasses import fields

    from nbhelpers.cli import build_parser
    from nbhelpers.cli.options import config_from_args, option_fields
    from nbhelpers.cli.ti import HOW_IT_RUNS, WHAT_IS_LEARNED
    from nbhelpers.ti.config import TIConfig

    assert sorted(WHAT_IS_LEARNED + HOW_IT_RUNS) == sorted(option_fields(TIConfig))
    parser = build_parser()
    args = parser.parse_args(["ti", "train", "pictures/", "--token", "<x>"])
    assert config_from_args(TIConfig, args) == TIConfig(token="<x>")
    assert TIConfig(token="<x>").checkpoint_every == 100   # the documented default
    args = parser.parse_args(["ti", "train", "pictures/", "--token", "<x>", "--vectors", "3",
                              "--preview-prompt", "a [name]", "--preview-prompt", "b [name]",
                              "--mixed-precision", "bf16", "--resume", "--lr", "1e-3"])
    cfg = config_from_args(TIConfig, args)
    assert (cfg.n_vectors, cfg.preview_prompts, cfg.mixed_precision, cfg.resume, cfg.lr) == (
        3, ("a [name]", "b [name]"), "bf16", True, "1e-3")
    # the fields the command line does not offer keep their defaults
    offered = set(option_fields(TIConfig))
    assert all(getattr(cfg, f.name) == f.default for f in fields(TIConfig)
               if f.name not in offered)


def test_toy_train_options_set_the_recipe_s_fields():
    from dataclasses import replace

    from nbhelpers.cli import build_parser
    from nbhelpers.cli.options import config_from_args
    from nbhelpers.toy.train import TrainConfig, quick_config

    parser = build_parser()
    args = parser.parse_args(["toy", "train", "--quick", "--seed", "4", "--vae-steps", "2"])
    cfg = config_from_args(TrainConfig, args, ("steps", "vae_steps", "decoder_steps"),
                           base=quick_config(args.seed))
    assert cfg == replace(quick_config(4), vae_steps=2)
    args = parser.parse_args(["toy", "train"])
    assert (args.seed, args.steps, args.vae_steps, args.decoder_steps) == (0, None, None, None)
