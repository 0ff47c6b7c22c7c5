"""Tests for the data side of textual inversion (nbhelpers.ti.images, .captions, .framing,
.dataset): loading, captions, templates, framing, the dataset.

Every image is made in a temporary folder by the test itself; all are tiny.
"""

from __future__ import annotations

import io
import unicodedata

import numpy as np
import pytest
import torch
from PIL import Image

from nbhelpers.ti.captions import (
    caption_from_filename,
    draw_prompts,
    fill_template,
    load_templates,
)
from nbhelpers.ti.dataset import TIDataset, items_from_images
from nbhelpers.ti.framing import bucket_shapes, frame, kept_fraction, salience_map
from nbhelpers.ti.images import load_folder


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def _solid(size=(64, 64), colour=(200, 60, 40)):
    return Image.new("RGB", size, colour)


def _by_name(report):
    return {item.path.name: item for item in report.loaded}


# --------------------------------------------------------------------------------------------
# Loading: modes, orientation, captions
# --------------------------------------------------------------------------------------------


def test_modes_orientation_and_captions(tmp_path):
    # EXIF orientation 6: stored 40x20, left half red; displayed 20x40 with red on top.
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(im, tmp_path / "rotated.jpg", exif=exif, quality=95)

    _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95)

    grey16 = np.array([[0, 32896], [65535, 32896]], dtype=np.uint16).repeat(8, 0).repeat(8, 1)
    _save(Image.fromarray(grey16), tmp_path / "grey16.png")

    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    pal.paste(0, (0, 0, 8, 16))  # left half: index 0, transparent
    _save(pal, tmp_path / "palette.png", transparency=0)

    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 128), (8, 0, 16, 16))
    _save(rgba, tmp_path / "rgba.png")

    la = Image.new("LA", (16, 16), (0, 0))
    la.paste((0, 255), (8, 0, 16, 16))
    _save(la, tmp_path / "la.png")

    one = Image.new("1", (16, 16), 0)
    one.paste(1, (0, 0, 8, 16))
    _save(one, tmp_path / "one_bit.png")

    _save(_solid(), tmp_path / "with caption.png")
    (tmp_path / "with caption.txt").write_text("\ufeff  a red square\non white \n",
                                               encoding="utf-8")
    _save(_solid(), tmp_path / "Füchse im Schnee.png")
    _save(_solid(), tmp_path / "fox in the snow (2).jpg")
    _save(_solid(), tmp_path / "anim.gif", save_all=True,
          append_images=[_solid(colour=(0, 0, 0))])

    report = load_folder(tmp_path, size=16)
    items = _by_name(report)
    assert not report.skipped, report.summary()
    assert all(item.image.mode == "RGB" for item in report.loaded)

    rot = items["rotated.jpg"].image
    assert rot.size == (20, 40)
    r, g, b = rot.getpixel((10, 5))
    assert r > 200 and b < 60  # red on top
    r, g, b = rot.getpixel((10, 35))
    assert b > 200 and r < 60

    r, g, b = items["cmyk.jpg"].image.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60

    g16 = items["grey16.png"].image
    assert g16.getpixel((0, 0)) == (0, 0, 0)
    assert g16.getpixel((0, 8)) == (255, 255, 255)
    assert abs(g16.getpixel((8, 0))[0] - 128) <= 1  # scaled, not clipped to 255

    assert items["palette.png"].image.getpixel((2, 2)) == (255, 255, 255)
    assert items["palette.png"].image.getpixel((12, 2)) == (255, 0, 0)
    assert items["rgba.png"].image.getpixel((2, 2)) == (255, 255, 255)
    r, g, b = items["rgba.png"].image.getpixel((12, 2))
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1
    assert items["la.png"].image.getpixel((2, 2)) == (255, 255, 255)
    assert items["la.png"].image.getpixel((12, 2)) == (0, 0, 0)
    assert items["one_bit.png"].image.getpixel((2, 2)) == (255, 255, 255)
    assert items["one_bit.png"].image.getpixel((12, 2)) == (0, 0, 0)

    assert items["with caption.png"].caption == "a red square on white"
    assert items["with caption.png"].caption_source == "txt"
    assert items["Füchse im Schnee.png"].caption == "Füchse im Schnee"
    assert items["fox in the snow (2).jpg"].caption == "fox in the snow"
    assert items["fox in the snow (2).jpg"].caption_source == "filename"
    assert any("anim.gif" in w and "frames" in w for w in report.warnings)
    assert "Loaded 11 images" in report.summary()


@pytest.mark.parametrize(("name", "caption"), [
    ("fox in the snow.jpg", "fox in the snow"),
    ("Fox_in-the_snow (2).png", "Fox in the snow"),
    ("fox  in   the snow_01.png", "fox in the snow"),
    ("fox copy.png", "fox"),
    ("fox - Copy (3).png", "fox"),
    ("room 101.png", "room 101"),
    ("IMG_0001.JPG", ""),
    ("DSC01234.jpg", ""),
    (unicodedata.normalize("NFD", "Füchse.png"), "Füchse"),
])
def test_caption_from_filename(name, caption):
    assert caption_from_filename(name) == caption


def test_bad_files_are_skipped_with_reasons(tmp_path):
    _save(_solid(), tmp_path / "good.png")
    (tmp_path / "notes.md").write_text("# notes")
    (tmp_path / "orphan.txt").write_text("a caption without an image")
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "random.png").write_bytes(np.random.default_rng(1).bytes(300))
    (tmp_path / "sub").mkdir()

    report = load_folder(tmp_path)
    assert [item.path.name for item in report.loaded] == ["good.png"]
    reasons = {s.path.name: s.reason for s in report.skipped}
    assert set(reasons) == {"notes.md", "orphan.txt", "truncated.jpg", "random.png", "sub"}
    assert "not an image" in reasons["notes.md"]
    assert "no image" in reasons["orphan.txt"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "cannot identify" in reasons["random.png"]
    assert "recursive=True" in reasons["sub"]
    text = report.summary()
    assert "Skipped 5" in text and "truncated.jpg" in text


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    _save(_solid((8, 8)), tmp_path / "ok.png")
    _save(_solid((12, 12)), tmp_path / "warning_size.png")  # 144 px: over 1x the limit
    _save(_solid((20, 20)), tmp_path / "error_size.png")  # 400 px: over 2x the limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    report = load_folder(tmp_path)
    assert [item.path.name for item in report.loaded] == ["ok.png"]
    reasons = {s.path.name: s.reason for s in report.skipped}
    for name in ("warning_size.png", "error_size.png"):
        assert "decompression-bomb" in reasons[name]
        assert "MAX_IMAGE_PIXELS" in reasons[name]
    assert "MAX_IMAGE_PIXELS = 400" in reasons["error_size.png"]


def test_empty_missing_and_unusable_folders(tmp_path):
    empty = tmp_path / "empty folder"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty folder.*empty"):
        load_folder(empty)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.md").write_text("x")
    with pytest.raises(ValueError, match="notes.md"):
        load_folder(junk)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_folder(tmp_path / "nowhere")


def test_small_images_upscaled_or_refused(tmp_path):
    _save(_solid((64, 64)), tmp_path / "big.png")
    _save(_solid((32, 48)), tmp_path / "small.png")
    report = load_folder(tmp_path, size=64)
    assert len(report) == 2
    assert any("small.png" in w and "upscaled" in w for w in report.warnings)
    small = _by_name(report)["small.png"].image
    assert [f.image.size for f in frame(small, 64, "center")] == [(64, 64)]

    strict = load_folder(tmp_path, size=64, refuse_small=True)
    assert [item.path.name for item in strict.loaded] == ["big.png"]
    assert "too small" in strict.skipped[0].reason
    with pytest.raises(ValueError, match="needs the training size"):
        load_folder(tmp_path, refuse_small=True)


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------


def test_builtin_templates():
    for kind in ("style", "object"):
        templates = load_templates(kind)
        assert 15 <= len(templates) <= 20
        assert all("[name]" in t for t in templates)
        assert any("[filewords]" in t for t in templates)
        assert len(set(templates)) == len(templates)


def test_template_file(tmp_path):
    good = tmp_path / "mine.txt"
    good.write_text("# my templates\n\na photo of [name]\n  [filewords], by [name]  \n",
                    encoding="utf-8")
    assert load_templates(good) == ["a photo of [name]", "[filewords], by [name]"]
    bad = tmp_path / "no_name.txt"
    bad.write_text("a photo of [filewords]\n")
    with pytest.raises(ValueError, match="no_name.txt.*no \\[name\\]"):
        load_templates(bad)
    typo = tmp_path / "typo.txt"
    typo.write_text("a photo of [Name]\n")
    with pytest.raises(ValueError, match="line 1.*did you mean \\[name\\]"):
        load_templates(typo)
    with pytest.raises(FileNotFoundError, match="'style', 'object'"):
        load_templates(tmp_path / "missing.txt")


def test_fill_template_and_draw_prompts():
    assert (fill_template("[filewords], in the style of [name]", "<s>", "a red star")
            == "a red star, in the style of <s>")
    assert fill_template("[filewords], in the style of [name]", "<s>", "") == (
        "in the style of <s>")
    assert fill_template("a [name], [filewords]", "<s>", "  ") == "a <s>"
    assert fill_template("a [name] , [filewords] , lit", "<s>") == "a <s>, lit"
    with pytest.raises(ValueError, match="placeholder"):
        fill_template("[name]", "", "x")

    templates = load_templates("style")
    caps = ["a red star", "", "a blue circle"]
    p1 = draw_prompts(caps, templates, "<s>", np.random.default_rng(3))
    assert p1 == draw_prompts(caps, templates, "<s>", 3)
    assert all("<s>" in p and "[" not in p for p in p1)
    p2 = draw_prompts(caps, templates, "<s>", torch.Generator().manual_seed(0))
    assert len(p2) == 3


# --------------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------------


def _wide_with_subject_left():
    """A 240x80 white image with a textured red subject at the left edge."""
    a = np.full((80, 240, 3), 245, dtype=np.uint8)
    a[15:65, 0:45] = (200, 30, 30)
    a[15:65:6, 0:45] = (90, 10, 10)
    return Image.fromarray(a), (0, 15, 45, 65)


def test_frame_sizes_and_flips():
    img = _solid((120, 80))
    for mode in ("center", "focal"):
        out = frame(img, 64, mode)
        assert [f.image.size for f in out] == [(64, 64)]
        assert out[0].tensor().shape == (3, 64, 64)
    tiles = frame(img, 32, "tiles")
    assert len(tiles) >= 2 and all(f.image.size == (32, 32) for f in tiles)
    flipped = frame(img, 32, "tiles", flip=True)
    assert len(flipped) == 2 * len(tiles)
    assert [f.flipped for f in flipped[:2]] == [False, True]
    assert flipped[1].crop_box == flipped[0].crop_box
    assert np.array_equal(np.asarray(flipped[1].image), np.asarray(flipped[0].image)[:, ::-1])
    t = frame(img, 16, "center", source="x.png")[0].tensor()
    assert t.dtype == torch.float32 and -1 <= t.min() and t.max() <= 1


def test_focal_keeps_an_edge_subject_better_than_centre():
    img, subject = _wide_with_subject_left()
    centre = frame(img, 64, "center")[0]
    focal = frame(img, 64, "focal")[0]
    assert kept_fraction(subject, centre.crop_box) == 0.0
    assert kept_fraction(subject, focal.crop_box) == 1.0
    assert focal.crop_box[3] - focal.crop_box[1] == 80  # a square of the shorter side
    assert focal.crop_box[2] - focal.crop_box[0] == 80
    sal = salience_map(img)
    assert sal.shape == (80, 240) and 0 <= sal.min() and sal.max() <= 1
    blank = frame(_solid((240, 80)), 64, "focal")[0]
    assert blank.crop_box == (80, 0, 160, 80)  # nothing salient: the centre


def test_tiles_cover_the_whole_image():
    img = _solid((250, 90))
    tiles = frame(img, 32, "tiles", overlap=0.25)
    covered = np.zeros((90, 250), dtype=bool)
    for f in tiles:
        left, top, right, bottom = f.crop_box
        assert right - left == bottom - top == 90
        covered[top:bottom, left:right] = True
    assert covered.all()
    starts = sorted(f.crop_box[0] for f in tiles)
    assert all(b - a <= 90 * 0.75 for a, b in zip(starts, starts[1:], strict=False))
    grid = frame(_solid((100, 100)), 16, "tiles", tile_side=40, overlap=0.5)
    covered = np.zeros((100, 100), dtype=bool)
    for f in grid:
        covered[f.crop_box[1]:f.crop_box[3], f.crop_box[0]:f.crop_box[2]] = True
    assert covered.all() and len(grid) == 16


def test_buckets_crop_nothing_and_pick_the_aspect():
    assert bucket_shapes(64) == [(64, 64), (72, 56), (56, 72), (80, 56), (56, 80),
                                   (88, 48), (48, 88)]
    assert all(w % 8 == 0 and h % 8 == 0 for w, h in bucket_shapes(512))
    for (w, h), bucket in [((160, 90), (88, 48)), ((90, 160), (48, 88)),
                           ((100, 100), (64, 64)), ((120, 90), (72, 56))]:
        (f,) = frame(_solid((w, h)), 64, "buckets")
        assert f.crop_box == (0, 0, w, h)
        assert f.image.size == bucket
    (f,) = frame(_solid((150, 100), (10, 20, 30)), 64, "buckets")
    assert f.image.size == (80, 56)
    left, top, right, bottom = f.content_box
    assert right - left == 80 and 52 <= bottom - top <= 56
    assert np.all(np.asarray(f.image) == (10, 20, 30))  # the letterbox repeats the edge


def test_kept_fraction_and_validation():
    assert kept_fraction((0, 0, 10, 10), (5, 0, 20, 10)) == 0.5
    with pytest.raises(ValueError, match="right > left"):
        kept_fraction((10, 0, 0, 10), (0, 0, 1, 1))
    with pytest.raises(ValueError, match="multiple of 8.*96 or 104"):
        frame(_solid(), 100)
    with pytest.raises(ValueError, match="did you mean 'center'"):
        frame(_solid(), 64, "centre")
    with pytest.raises(ValueError, match="overlap"):
        frame(_solid(), 64, "tiles", overlap=1.0)


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


def test_dataset_examples_prompts_and_batches():
    images = [_solid((64, 64)), _solid((96, 64)), _solid((64, 112))]
    items = items_from_images(images, ["a red square", "", "a tall one"])
    ds = TIDataset(items, name="<s>", templates="object", size=32, flip=True)
    assert len(ds) == 6
    ex = ds[1]
    assert ex.pixels.shape == (3, 32, 32) and ex.flipped and ex.caption == "a red square"
    assert ds.prompts([0, 1, 2], step=5) == ds.prompts([0, 1, 2], step=5)
    assert all("<s>" in p for p in ds.prompts(range(6), step=0))
    pixels, caps = ds.batch([0, 2, 4])
    assert pixels.shape == (3, 3, 32, 32) and caps[1] == ""

    tensor_items = items_from_images([torch.zeros(3, 64, 96)], ["grey"])
    bucketed = TIDataset(items + tensor_items, name="<s>", templates="style", size=64,
                           mode="buckets")
    batches = bucketed.batches(batch_size=2, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(4))
    for b in batches:
        assert len({bucketed.shapes[i] for i in b}) == 1
        assert bucketed.batch(b)[0].shape[0] == len(b)
    with pytest.raises(ValueError, match="different shapes"):
        bucketed.batch([0, 1])


def test_the_framing_table_and_type_name_the_same_modes():
    """``FRAMING_MODES`` (what --framing offers and describes) and the ``FramingMode`` type
    are written separately (a type checker cannot read a dict); they must agree, in order."""
    from typing import get_args

    from nbhelpers.ti.framing import FRAMING_MODES, FramingMode

    assert list(get_args(FramingMode)) == list(FRAMING_MODES)
    assert all(FRAMING_MODES.values())
