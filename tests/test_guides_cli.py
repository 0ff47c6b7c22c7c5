"""``--guide NAME`` in ``nbhelpers generate`` and ``nbhelpers sweep``, on the toy model."""

import contextlib
import io

import numpy as np
import pytest
import torch
from PIL import Image

from nbhelpers.cli import main
from nbhelpers.guides import GUIDES

PROMPT = "a red circle on a white background"


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stop:   # argparse refuses a bad value itself (exit status 2)
            code = stop.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def weak_toy(tmp_path_factory):
    """The toy pipeline with its UNet disturbed, saved as a folder: a stand-in for the weak
    model that issue 30 (item 3) will ship."""
    from nbhelpers.models import load_pipeline

    pipe = load_pipeline("toy", device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pipe.unet.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    folder = tmp_path_factory.mktemp("weak") / "weak-toy"
    pipe.save_pretrained(folder)
    return folder


def test_generate_with_apg_on_the_toy(tmp_path):
    common = ["generate", "--model", "toy", "--prompt", PROMPT, "--steps", "3", "--seed", "2"]
    code, out, err = _run([*common, "--guide", "apg", "--guide-eta", "0",
                           "--guide-momentum", "-0.5", "--guide-norm-threshold", "10",
                           "--out", str(tmp_path / "apg.png")])
    assert code == 0, err
    assert "wrote" in out and (tmp_path / "apg.png").exists()
    assert _run([*common, "--out", str(tmp_path / "cfg.png")])[0] == 0
    apg, cfg = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("apg", "cfg"))
    assert apg.shape == cfg.shape and (apg != cfg).any()


def test_sweep_with_autoguidance_on_the_toy(tmp_path, weak_toy):
    out = tmp_path / "auto.gif"
    code, stdout, err = _run(["sweep", "--model", "toy", "--prompt", PROMPT, "--scales", "1,3",
                              "--steps", "2", "--guide", "autoguidance",
                              "--guide-weak-model", str(weak_toy), "--out", str(out)])
    assert code == 0, err
    assert out.exists() and out.with_suffix(".png").exists() and "2 frames" in stdout


def test_bad_guide_options_fail_before_loading_and_write_nothing(tmp_path):
    out = tmp_path / "x.png"
    base = ["generate", "--prompt", "x", "--out", str(out)]
    cases = {("--guide", "pag", "--guide-eta", "1"): "--guide-eta is an option of --guide apg",
             ("--guide", "autoguidance"): "needs --guide-weak-model",
             ("--guide", "autoguidance", "--guide-weak-model", str(tmp_path / "none")):
                 "--guide-weak-model: no folder at",
             ("--guide", "apg", "--guide-momentum", "1.5"):
                 "argument --guide-momentum: 1.5: must be between -0.999 and 0.999",
             ("--guide", "cfg-zero-star", "--guide-zero-steps", "-1"):
                 "argument --guide-zero-steps: -1: must be at least 0",
             ("--guide", "apg", "--guide-eta", "nan"):
                 "argument --guide-eta: nan: must be a finite number",
             ("--guide", "pag", "--guide-layers", "down.2", "--steps", "1"):
                 "'down.2' has no self-attention"}
    for extra, message in cases.items():
        code, _, err = _run([*base, *extra])
        assert code == 2 and message in err, (extra, err)
    assert not out.exists()


def test_help_lists_every_guide():
    for command in ("generate", "sweep"):
        text = io.StringIO()
        with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
            main([command, "--help"])
        for name in GUIDES:
            assert name in text.getvalue(), (command, name)
        for flag in ("--guide-eta", "--guide-momentum", "--guide-norm-threshold",
                     "--guide-zero-steps", "--guide-weak-model", "--guide-layers",
                     "--guide-pag-scale"):
            assert flag in text.getvalue()
