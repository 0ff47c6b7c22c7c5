"""Counting what generated images show: intervals, agreement, mixes, guidance curves."""

import math

import numpy as np
import pytest

from nbhelpers.toy import measure, world


def test_wilson_interval_matches_the_formula_and_edges():
    p = measure.wilson(8, 10)
    # Wilson 95% interval for 8/10, computed by hand: 0.4902 .. 0.9433
    assert p.p == 0.8 and p.lo == pytest.approx(0.4902, abs=1e-4)
    assert p.hi == pytest.approx(0.9433, abs=1e-4)
    zero, full = measure.wilson(0, 20), measure.wilson(20, 20)
    assert zero.lo == 0.0 and 0 < zero.hi < 0.2 and full.hi == 1.0 and 0.8 < full.lo < 1
    assert math.isnan(measure.wilson(0, 0).p)
    assert "80% (8/10; 95% CI 49-94%)" == str(p)
    with pytest.raises(ValueError, match="k <= n"):
        measure.wilson(5, 3)


def test_read_and_agreement_on_clean_renders():
    scenes = world.balanced_scenes(20, 11)
    images = np.stack([world.render(s) for s in scenes]).astype(np.float32) / 255
    ev = measure.read(images)
    targets = [dict(shape=s.shape, colour=s.colour, style=s.style) for s in scenes]
    acc = measure.agreement(ev, targets)
    assert acc["all"].k == 20 and acc["shape"].n == 20
    wrong = [dict(shape="circle" if s.shape != "circle" else "star") for s in scenes]
    assert measure.agreement(ev, wrong, ("shape",))["shape"].k == 0
    mix = measure.attribute_mix(ev, "shape")
    assert sum(p.k for p in mix.values()) == 20 and set(mix) == set(world.SHAPES)
    truth = [sum(s.shape == c for s in scenes) / 20 for c in world.SHAPES]
    assert measure.total_variation_from_uniform(mix) == pytest.approx(
        0.5 * sum(abs(t - 0.2) for t in truth))
    with pytest.raises(ValueError, match="targets"):
        measure.agreement(ev, targets[:3])
    with pytest.raises(ValueError, match="floats"):
        measure.read(np.zeros((1, 64, 64, 3), dtype=np.int64))


def test_total_variation_of_a_one_class_mix():
    mix = {c: measure.wilson(10 if c == "circle" else 0, 10) for c in world.SHAPES}
    assert measure.total_variation_from_uniform(mix) == pytest.approx(1 - 1 / 5)


def test_guidance_curves_on_a_tiny_model(tiny_pipeline_dir):
    from diffusers import DDIMScheduler

    from nbhelpers.models import load_pipeline

    pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    targets = [dict(shape="circle", colour="red", style="flat")]
    curves = measure.guidance_curves(pipe, targets, [0, 7.5], seeds=[0, 1], num_steps=2,
                                     prompt_template="a {colour} {shape}, {style} style")
    assert set(curves) == {0.0, 7.5}
    for row in curves.values():
        assert set(row) == {"adherence", "shape", "diversity", "saturation"}
        assert 0 <= row["adherence"] <= row["shape"] <= 1 and row["diversity"] >= 0
    with pytest.raises(ValueError, match="at least one"):
        measure.guidance_curves(pipe, targets, [], seeds=[0])
