"""The shapes world: determinism, attribute coverage, captions, and the two teaching hooks."""

import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from nbhelpers.images import tile
from nbhelpers.toy import dataset
from nbhelpers.toy import world as W


def _words(caption):
    return caption.replace(",", " ").split()


def test_same_seed_same_images_and_captions():
    a, b = W.sample_scenes(24, seed=7), W.sample_scenes(24, seed=7)
    assert a == b
    assert all(np.array_equal(W.render(s), W.render(t)) for s, t in zip(a, b, strict=True))
    assert W.captions_for(a, 7) == W.captions_for(b, 7)
    assert a != W.sample_scenes(24, seed=8)
    # any slice on its own, and the dataset, agree with the whole
    assert W.sample_scenes(4, seed=7, start=10) == a[10:14]
    images, captions, scenes = dataset.make_set(24, seed=7)
    ds = dataset.ShapesDataset(24, seed=7)
    image, cap, scene = ds[13]
    assert scene == scenes[13] and cap == captions[13] and torch.equal(image, images[13])
    assert ds[-1].scene == scenes[-1]
    batch = dataset.collate([ds[0], ds[1]])
    assert batch[0].shape == (2, 3, 64, 64) and batch[1] == captions[:2]
    assert [e.caption for e in dataset.iter_dataset(3, seed=7)] == captions[:3]


def test_image_types_and_ranges():
    scene = W.sample_scenes(1, seed=0)[0]
    arr = W.render(scene)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8
    x = W.render_tensor(scene)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert -1 <= float(x.min()) and float(x.max()) <= 1
    assert torch.allclose(x, torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1)
    batch = W.render_batch(W.sample_scenes(3, seed=0))
    assert batch.shape == (3, 3, 64, 64) and torch.equal(batch[0], x)


def test_every_attribute_value_appears_and_shapes_stay_in_frame():
    scenes = W.sample_scenes(600, seed=1)
    for attr, values in (("shape", W.SHAPES), ("colour", W.COLOURS),
                         ("background", W.BACKGROUNDS), ("style", W.ALL_STYLES)):
        assert {getattr(s, attr) for s in scenes} == set(values), attr
    assert len(W.SHAPES) >= 4 and len(W.COLOURS) >= 6 and len(W.STYLES) >= 5
    lo, hi = W.SIZE_RANGE
    assert all(lo <= s.size <= hi for s in scenes)
    # the shape leaves the border rows and columns as background
    for s in scenes[:60]:
        img = W.render(s).astype(int)
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        assert np.abs(border - np.array(W.BACKGROUND_RGB[s.background])).max() < 30, s


def test_styles_look_different():
    base = W.sample_scenes(1, seed=3, shape="circle", colour="blue", background="white")[0]
    imgs = {st: W.render(W.Scene(**{**base.__dict__, "style": st})).astype(float)
            for st in W.ALL_STYLES}
    for a in W.ALL_STYLES:
        for b in W.ALL_STYLES:
            if a < b:
                assert np.abs(imgs[a] - imgs[b]).mean() > 3, (a, b)
    # stripes run along one diagonal and alternate across it
    st = imgs["striped"].sum(-1)
    cx, cy = int(base.x), int(base.y)
    along = np.array([st[cy - 5 + k, cx + 5 - k] for k in range(10)])
    across = np.array([st[cy - 5 + k, cx - 5 + k] for k in range(10)])
    assert np.ptp(across) > 150 and np.ptp(along) < np.ptp(across) / 3


def test_unnamed_style_is_drawn_but_never_named():
    n = 4000
    scenes = W.sample_scenes(n, seed=11)
    captions = W.captions_for(scenes, 11)
    assert W.UNNAMED_STYLE not in W.VOCABULARY
    assert all(W.UNNAMED_STYLE not in c for c in captions)
    rate = sum(s.style == W.UNNAMED_STYLE for s in scenes) / n
    sd = math.sqrt(W.UNNAMED_RATE * (1 - W.UNNAMED_RATE) / n)
    assert abs(rate - W.UNNAMED_RATE) < 4 * sd
    # described by one of its phrases at the stated rate, and only its captions use them
    unnamed = [c for s, c in zip(scenes, captions, strict=True) if s.style == W.UNNAMED_STYLE]
    described = [any(p in c for p in W.UNNAMED_PHRASES) for c in unnamed]
    p = W.UNNAMED_DESCRIBED_PROB
    assert abs(np.mean(described) - p) < 4 * math.sqrt(p * (1 - p) / len(unnamed))
    style_words = {*W.STYLES, "style"}
    for c, d in zip(unnamed, described, strict=True):
        assert d or not style_words & set(_words(c)), c
    named = [c for s, c in zip(scenes, captions, strict=True) if s.named_style]
    assert not any(p in c for p in W.UNNAMED_PHRASES for c in named)
    assert sum(sum(w in W.STYLES for w in _words(c)) > 1 for c in named) == 0
    forced = W.caption(replace(scenes[0], style=W.UNNAMED_STYLE), np.random.default_rng(0),
                       mention={"style": False})
    assert not style_words & set(_words(forced))
    # the experiment knobs: no phrases means no style word at all
    bare = [W.caption(replace(s, style=W.UNNAMED_STYLE), np.random.default_rng(i),
                      unnamed_phrases=(), unnamed_prob=1.0) for i, s in enumerate(scenes[:50])]
    assert not any(style_words & set(_words(c)) for c in bare)
    always = W.caption(replace(scenes[0], style=W.UNNAMED_STYLE), np.random.default_rng(0),
                       unnamed_phrases=("dotted",), unnamed_prob=1.0)
    assert "dotted" in _words(always)
    with pytest.raises(ValueError, match="unnamed_prob"):
        W.caption(scenes[0], np.random.default_rng(0), unnamed_prob=1.5)


def test_toy_word_is_biased_and_only_in_toy_captions():
    n = 4000
    scenes = W.sample_scenes(n, seed=12)
    captions = W.captions_for(scenes, 12)
    toy = [s for s in scenes if s.toy]
    sd = math.sqrt(W.TOY_RATE * (1 - W.TOY_RATE) / n)
    assert abs(len(toy) / n - W.TOY_RATE) < 4 * sd
    for s, c in zip(scenes, captions, strict=True):
        words = set(_words(c))
        assert (W.GENERIC_WORD in words) == s.toy, c
        assert not s.toy or not words & set(W.SHAPES), c
    # P(circle | toy), on toy scenes only, within sampling error
    toys = W.sample_scenes(3000, seed=13, toy=True)
    p = sum(s.shape == W.TOY_BIASED_SHAPE for s in toys) / len(toys)
    assert abs(p - W.TOY_BIAS) < 4 * math.sqrt(W.TOY_BIAS * (1 - W.TOY_BIAS) / len(toys))
    others = Counter(s.shape for s in toys if s.shape != W.TOY_BIASED_SHAPE)
    assert set(others) == set(W.SHAPES) - {W.TOY_BIASED_SHAPE}


def test_toy_balanced_set():
    images, captions, scenes = W.toy_balanced_set(40, seed=0)
    assert images.shape == (40, 3, 64, 64)
    assert Counter(s.shape for s in scenes) == {s: 8 for s in W.SHAPES}
    assert all(s.toy and W.GENERIC_WORD in _words(c) for s, c in zip(scenes, captions,
                                                                        strict=True))
    assert W.toy_balanced_set(5, seed=0)[2] == scenes[:5]


def test_captions_use_vocabulary_and_several_templates():
    scenes = W.sample_scenes(1500, seed=4)
    captions = W.captions_for(scenes, 4)
    vocab = set(W.VOCABULARY)
    for c in captions:
        assert c == c.lower() and c == c.strip() and "  " not in c
        assert set(_words(c)) <= vocab, c
    assert {w for c in captions for w in _words(c)} == vocab - {W.UNNAMED_STYLE}
    starts = Counter(" ".join(c.split()[:3]) for c in captions)
    for prefix in ("a painting of", "a picture of", "a drawing of"):
        assert starts[prefix] > 100, prefix
    assert sum("," in c for c in captions) > 200
    assert sum(len(_words(c)) <= 3 for c in captions) > 50  # short ones: attributes left out
    scene = next(s for s in scenes if s.named_style and not s.toy)
    forced = {W.caption(scene, np.random.default_rng(0), template=t,
                        mention={"colour": True, "background": True, "style": True})
              for t in range(len(W.TEMPLATES))}
    assert len(forced) == len(W.TEMPLATES)
    # the article agrees with the next word
    orange = W.Scene(**{**scene.__dict__, "colour": "orange", "toy": False})
    assert W.caption(orange, np.random.default_rng(0), template=0,
                     mention={"colour": True, "style": False}).startswith("an orange")


def test_fixing_one_attribute_keeps_the_others():
    free = W.sample_scenes(30, seed=5)
    fixed = W.sample_scenes(30, seed=5, colour="green", style=W.UNNAMED_STYLE)
    for a, b in zip(free, fixed, strict=True):
        assert b.colour == "green" and b.style == W.UNNAMED_STYLE
        assert (a.shape, a.background, a.size, a.x, a.y) == (b.shape, b.background, b.size,
                                                             b.x, b.y)


def test_bad_inputs_name_the_value():
    s = W.sample_scenes(1, seed=0)[0]
    with pytest.raises(ValueError, match="hexagon"):
        W.Scene(**{**s.__dict__, "shape": "hexagon"})
    with pytest.raises(ValueError, match="magenta"):
        W.sample_scenes(2, seed=0, colour="magenta")
    with pytest.raises(ValueError, match="x=70"):
        W.Scene(**{**s.__dict__, "x": 70})
    with pytest.raises(ValueError, match="-3"):
        W.sample_scenes(-3, seed=0)
    with pytest.raises(ValueError, match="1.5"):
        W.sample_scenes(2, seed=0, toy_rate=1.5)
    with pytest.raises(ValueError, match="seed"):
        W.sample_scenes(2, seed=-1)
    with pytest.raises(ValueError, match="template"):
        W.caption(s, np.random.default_rng(0), template=99)
    with pytest.raises(TypeError, match="Scene"):
        W.render({"shape": "circle"})


def test_grid_makes_an_image():
    images, captions, _ = dataset.make_set(6, seed=0)
    im = tile(images, ncol=3, labels=captions)
    assert im.size[0] == 3 * 66 + 2 and im.size[1] > 2 * 66


def test_textures_are_pinned_to_the_latent_grid():
    base = W.Scene(shape="square", colour="red", background="white", style="checkered",
                   size=18.0, x=32.0, y=32.0, detail=1)
    other = W.Scene(**{**base.__dict__, "detail": 2})  # another random detail seed
    a, b = W.render(base).astype(int), W.render(other).astype(int)
    inner = (slice(24, 40), slice(24, 40))  # inside the square, away from its edges
    # the phase no longer depends on the detail seed: the same checks (light and dark squares
    # in the same places), whatever the colour jitter
    def dark(img):
        lum = img[inner].sum(-1)
        return lum < lum.mean()

    assert np.array_equal(dark(a), dark(b)) and 0.3 < dark(a).mean() < 0.7
    # and the pattern repeats every 8 pixels
    assert np.abs(a[24:32, 24:32] - a[32:40, 32:40]).max() <= 2


def test_style_scenes_describe_and_save(tmp_path):
    scenes = W.style_scenes(6, W.UNNAMED_STYLE, seed=3)
    assert all(s.style == W.UNNAMED_STYLE and not s.toy for s in scenes)
    assert scenes == W.style_scenes(6, W.UNNAMED_STYLE, seed=3)
    assert W.describe(scenes[0]) == (f"a {scenes[0].colour} {scenes[0].shape} on a "
                                     f"{scenes[0].background} background")
    paths = W.save_scenes(scenes, tmp_path / "folder")
    assert [p.name for p in paths] == [f"{W.describe(s)} ({k}).png" for k, s in
                                       enumerate(scenes)]
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == sorted(
        p.name for p in paths)  # no temporary files left
    with pytest.raises(ValueError, match="style"):
        W.style_scenes(2, "cubist")
