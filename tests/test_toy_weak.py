"""The weak toy model of autoguidance (``toy-weak``, :mod:`nbhelpers.toy.weak`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nbhelpers.models import load_pipeline, resolve_model
from nbhelpers.toy.model import SHIPPED_DIR, read_card
from nbhelpers.toy.weak import WeakConfig


@pytest.fixture(scope="module")
def pipes():
    return load_pipeline("toy"), load_pipeline("toy-weak")


def test_resolves_to_its_own_folder():
    kind, folder = resolve_model("toy-weak")
    assert kind == "toy" and folder.name == "toy-weak" and folder != SHIPPED_DIR
    with pytest.raises(ValueError, match="toy-weak"):
        resolve_model("Toy-Weak")


def test_smaller_and_shorter_trained_same_vae_and_text_encoder(pipes):
    """As [AG] makes it: fewer UNet parameters, fewer steps; the VAE and text encoder are the
    toy model's own (same weights)."""
    strong, weak = pipes
    n = [sum(p.numel() for p in m.unet.parameters()) for m in (strong, weak)]
    assert n[1] < n[0] / 2
    card, strong_card = read_card(resolve_model("toy-weak")[1]), read_card(SHIPPED_DIR)
    assert card["config"]["steps"] < strong_card["config"]["steps"]
    assert card["parameters"]["unet"] == n[1]
    for name in ("vae", "text_encoder"):
        a, b = getattr(strong, name).state_dict(), getattr(weak, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_draws_finite_images_and_guides_the_toy_model(pipes):
    from nbhelpers.guides import autoguidance_guide, weak_model
    from nbhelpers.sampling import sample_prompts

    strong, weak = pipes
    prompts = ["a red circle on a white background", "a striped blue square"]
    alone = sample_prompts(weak, prompts, 1.0, num_steps=4)
    guided = sample_prompts(strong, prompts, 2.0, num_steps=4,
                            guide=autoguidance_guide(weak_model(weak, strong, prompts)))
    plain = sample_prompts(strong, prompts, 1.0, num_steps=4)
    for images in (alone, guided, plain):
        assert images.shape == (2, 64, 64, 3) and np.isfinite(images).all()
    assert not np.allclose(guided, plain, atol=1e-3)  # the weak model's pass took part


def test_weak_config_rejects_bad_values():
    with pytest.raises(ValueError, match="steps"):
        WeakConfig(steps=0)


def test_cli_refuses_to_overwrite_the_shipped_model(capsys):
    from nbhelpers.cli import main

    before = sorted(p.stat().st_mtime_ns for p in SHIPPED_DIR.rglob("*"))
    assert main(["toy", "train", "--weak-of", str(SHIPPED_DIR), "--threads", "1"]) == 2
    assert "--weak-of needs --out FOLDER" in capsys.readouterr().err
    assert sorted(p.stat().st_mtime_ns for p in SHIPPED_DIR.rglob("*")) == before
