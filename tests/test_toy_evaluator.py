"""The shipped evaluator: accuracy on fresh renders, clean and degraded; inputs; training."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from nbhelpers.toy import degradations as D
from nbhelpers.toy import evaluator as E
from nbhelpers.toy import evaluator_train as ET
from nbhelpers.toy import world as W

# Fresh seeds: training scenes use seeds from ET.TRAIN_SEED_BASE up.
CLEAN_SEED, DEGRADED_SEED, N = 101, 102, 350


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_shipped_weights_are_small_and_match_the_world():
    assert E.WEIGHTS_PATH.is_file()
    assert E.WEIGHTS_PATH.stat().st_size < 2 * 1024 ** 2
    meta = json.loads(E.WEIGHTS_PATH.with_suffix(".json").read_text())
    assert {k: tuple(v) for k, v in meta["classes"].items()} == E.CLASSES
    assert meta["classes"]["style"][-1] == W.UNNAMED_STYLE
    assert E.load_evaluator() is E.load_evaluator()  # cached


def test_accuracy_on_clean_renders():
    acc = E.accuracy_report(N, seed=CLEAN_SEED)
    assert all(acc[k] >= 0.98 for k in E.ATTRIBUTES), acc


def test_accuracy_on_degraded_renders():
    acc = E.accuracy_report(N, seed=DEGRADED_SEED, degrade="vae")
    assert all(acc[k] >= 0.95 for k in E.ATTRIBUTES), acc


def test_every_input_form_gives_the_same_answer():
    scenes = W.balanced_scenes(6, seed=103)
    arrs = [W.render(s) for s in scenes]
    x = W.render_batch(scenes)
    ref = E.evaluate(x)
    assert len(ref) == 6 and set(ref[0]) == set(E.ATTRIBUTES)
    assert E.evaluate([Image.fromarray(a) for a in arrs]).labels == ref.labels
    assert E.evaluate(arrs).labels == ref.labels
    assert E.evaluate(np.stack(arrs)).labels == ref.labels
    assert E.evaluate(x[2])[0] == ref[2]
    assert E.evaluate(Image.fromarray(arrs[2]))[0] == ref[2]
    for k, p in ref.probs.items():
        assert p.shape == (6, len(E.CLASSES[k]))
        assert torch.allclose(p.sum(-1), torch.ones(6), atol=1e-5)
    # slight overshoot (VAE decoders) is clipped, not refused
    assert E.evaluate(x * 1.2).labels["shape"] == ref.labels["shape"]


def test_evaluation_helpers():
    images, _, scenes = W.toy_balanced_set(10, seed=104)
    ev = E.evaluate(images)
    counts = ev.counts("shape")
    assert sum(counts.values()) == 10 and set(counts) == set(W.SHAPES)
    assert ev.fraction("shape", "circle") == counts["circle"] / 10
    assert ev.prob("style", W.UNNAMED_STYLE).shape == (10,)
    assert ev.as_dicts()[3] == ev[3]
    assert set(E.accuracy(ev, scenes)) == set(E.ATTRIBUTES)
    with pytest.raises(ValueError, match="size"):
        ev.counts("size")
    with pytest.raises(ValueError, match="hexagon"):
        ev.fraction("shape", "hexagon")


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (torch.zeros(2, 3, 32, 32), "32"),
        (torch.zeros(2, 64, 64, 3), r"\(2, 64, 64, 3\)"),
        (torch.zeros(2, 3, 64, 64, dtype=torch.uint8), "uint8"),
        (torch.full((1, 3, 64, 64), 255.0), "255"),
        (torch.full((1, 3, 64, 64), float("nan")), "NaN"),
        (np.zeros((64, 64, 3), np.float64), "float64"),
        (np.zeros((48, 48, 3), np.uint8), "48"),
        ([np.zeros((64, 64, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)], "32"),
        ([], "empty"),
        ("a red circle", "str"),
    ],
)
def test_bad_inputs_raise_and_name_the_value(bad, needle):
    with pytest.raises(ValueError, match=needle):
        E.evaluate(bad)


def test_degrade_is_seeded_and_keeps_range():
    x = W.render_batch(W.balanced_scenes(8, seed=105))
    a = D.degrade(x, torch.Generator().manual_seed(0), "vae")
    b = D.degrade(x, torch.Generator().manual_seed(0), "vae")
    assert torch.equal(a, b) and a.shape == x.shape
    assert float(a.min()) >= -1 and float(a.max()) <= 1
    assert (a - x).abs().mean() > 0.01
    keep = D.degrade(x, torch.Generator().manual_seed(0), D.Degradation(p=0.0))
    assert torch.equal(keep, x)
    # blur keeps the mean and does nothing at sigma 0
    assert torch.allclose(D.gaussian_blur(x, torch.zeros(8)), x, atol=1e-6)
    blurred = D.gaussian_blur(x, torch.full((8,), 1.5))
    assert torch.allclose(blurred.mean((2, 3)), x.mean((2, 3)), atol=0.02)
    assert D.resample(x, 2).shape == x.shape
    with pytest.raises(ValueError, match="jpeg"):
        D.degrade(x, None, "jpeg")


def test_training_runs_saves_and_loads(tmp_path):
    cfg = ET.EvaluatorTrainConfig(seed=0, n_train=32, steps=3, batch_size=8)
    losses = []
    model, info = ET.train_evaluator(cfg, callback=lambda step, loss: losses.append(loss))
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert info["train"]["steps"] == 3
    path = E.save_evaluator(model, tmp_path / "ev.safetensors", info)
    loaded = E.load_evaluator(path)
    x = W.render_batch(W.balanced_scenes(4, seed=106))
    assert E.evaluate(x, model=loaded).probs["shape"].shape == (4, len(W.SHAPES))
    with pytest.raises(ValueError, match="ev.pt"):
        E.save_evaluator(model, tmp_path / "ev.pt")
    with pytest.raises(FileNotFoundError, match="train"):
        E.load_evaluator(tmp_path / "missing.safetensors")


def test_the_evaluator_command_line_trains_saves_and_reports(tmp_path, capsys):
    """``nbhelpers toy evaluator train`` sets the recipe's fields from its options, writes the
    weights and their card whole (no temporary file left), and reports; ``report`` reads any
    weights file."""
    from nbhelpers.cli import main

    out = tmp_path / "ev.safetensors"
    assert main(["toy", "evaluator", "train", "--out", str(out), "--steps", "3",
                 "--n-train", "32", "--seed", "1", "--n", "8"]) == 0
    printed = capsys.readouterr().out
    assert f"saved {out}" in printed and printed.count("%") == 10   # two rows of five
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["info"]["train"]["steps"] == 3 and card["info"]["train"]["n_train"] == 32
    assert card["info"]["train"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ev.json", "ev.safetensors"]
    assert main(["toy", "evaluator", "report", "--weights", str(out), "--n", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["condition", *E.ATTRIBUTES, "all"]
    assert [line.split()[0] for line in lines[1:]] == ["clean", "vae"]
