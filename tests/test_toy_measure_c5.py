"""Claim C5's measurement: how one seed's image changes as s grows (nbhelpers.toy.measure)."""

from dataclasses import replace

import numpy as np
import pytest

from nbhelpers.toy import measure, world


def _renders():
    """Clean renders shaped (targets, seeds, scales, H, W, 3): 1 target, 2 seeds, 3 scales.

    Seed 0: the same red circle at the first two scales, a square at the third. Seed 1: a red
    circle, then the same circle moved, then the moved circle again.
    """
    a = world.balanced_scenes(1, 3)[0]
    a = replace(a, shape="circle", colour="red", style="flat", background="white")
    moved = replace(a, x=a.x + 6)
    square = replace(a, shape="square")
    seed0 = [a, a, square]
    seed1 = [a, moved, moved]
    images = np.stack([np.stack([world.render(s) for s in row]) for row in (seed0, seed1)])
    return images[None].astype(np.float32) / 255, dict(shape="circle", colour="red",
                                                       style="flat")


def test_scale_changes_measures_each_seeds_image_between_consecutive_scales():
    images, _ = _renders()
    changes = measure.scale_changes(images, [1, 4, 8])
    assert list(changes) == [(1.0, 4.0), (4.0, 8.0)]
    first, second = changes[(1.0, 4.0)], changes[(4.0, 8.0)]
    # seed 0 is unchanged from 1 to 4 and seed 1 moved: half the images' pixel distance
    moved = np.abs(images[0, 1, 0] - images[0, 1, 1]).mean()
    assert first["pixel"] == pytest.approx(moved / 2)
    assert first["reading"] == 0.0 and first["shape"] == 0.0
    # from 4 to 8 seed 0 turns into a square (its reading changes), seed 1 stays
    assert second["reading"] == 0.5 and second["shape"] == 0.5 and second["colour"] == 0.0
    with pytest.raises(ValueError, match="two or more"):
        measure.scale_changes(images[:, :, :1], [1])


def test_curves_from_renders_counts_adherence_and_diversity_per_scale():
    images, target = _renders()
    curves = measure.curves_from_renders(images, [target], [1, 4, 8])
    assert curves[1.0]["adherence"] == 1.0 and curves[8.0]["shape"] == 0.5
    assert curves[1.0]["diversity"] == 0.0       # both seeds drew the same image at s = 1
    assert curves[4.0]["diversity"] > 0.0


def test_first_scale_finds_where_a_curve_reaches_a_level():
    curves = {0.0: {"adherence": 0.0}, 0.5: {"adherence": 0.2}, 1.0: {"adherence": 0.75},
              2.0: {"adherence": 0.5}}
    assert measure.first_scale(curves, 0.5) == 1.0
    assert measure.first_scale(curves, 0.2) == 0.5
    assert measure.first_scale(curves, 0.9) is None


def test_render_scales_renders_targets_by_seeds_by_scales(tiny_pipeline_dir):
    from diffusers import DDIMScheduler

    from nbhelpers.models import load_pipeline

    pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    targets = [dict(shape="circle", colour="red", style="flat")]
    images = measure.render_scales(pipe, targets, [1, 7.5], seeds=[0, 1], num_steps=2,
                                   prompt_template="a {colour} {shape}, {style} style")
    assert images.shape == (1, 2, 2, 64, 64, 3)
    assert set(measure.scale_changes(images, [1, 7.5])[(1.0, 7.5)]) == {
        "pixel", "reading", "shape", "colour", "style"}
    with pytest.raises(ValueError, match="at least one"):
        measure.render_scales(pipe, targets, [1], seeds=[])
