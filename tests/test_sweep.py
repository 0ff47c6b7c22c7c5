"""Guidance sweeps: scale parsing, atomic animation files, the CLI on a tiny random model."""

import numpy as np
import pytest
from PIL import Image

from nbhelpers.cli import main
from nbhelpers.sweep import contact_sheet, label_frame, parse_scales, write_animation


def test_parse_scales():
    assert parse_scales("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert len(parse_scales("0:20:0.02")) == 1001
    assert parse_scales("0, 1,7.5") == [0.0, 1.0, 7.5]
    for bad in ("0:1", "1:0:0.1", "0:1:0", "a,b", ""):
        with pytest.raises(ValueError, match="cannot read scales"):
            parse_scales(bad)


def test_label_frame_upscales_and_prints():
    frame = label_frame(np.zeros((64, 64, 3), np.uint8) + 200, "s = 7.50")
    assert frame.shape == (256, 256, 3)
    assert (frame[:20, :60] == 255).any() and (frame[:20, :60] == 0).any()


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_write_animation(tmp_path, suffix):
    frames = [np.full((64, 64, 3), 25 * i, np.uint8) for i in range(6)]
    out = tmp_path / f"a{suffix}"
    assert write_animation(iter(frames), out, fps=14) == 6
    import imageio.v2 as imageio

    with imageio.get_reader(out) as reader:
        frames_read = reader.count_frames() if suffix == ".mp4" else len(list(reader))
    assert frames_read == 6
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_failed_animation_leaves_nothing_behind(tmp_path):
    out = tmp_path / "a.gif"
    out.write_bytes(b"old")

    def frames():
        yield np.zeros((8, 8, 3), np.uint8)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_animation(frames(), out)
    assert out.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(ValueError, match="mp4 or .gif"):
        write_animation(iter([]), tmp_path / "a.avi")


def test_contact_sheet_layout():
    sheet = contact_sheet([np.zeros((64, 64, 3), np.uint8)] * 5, [str(i) for i in range(5)],
                          ncols=4)
    assert sheet.shape == (128 * 2 + 4, 128 * 4 + 12, 3)


def test_cli_sweep_on_tiny_model(tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "sweep.gif"
    rc = main(["sweep", "--model", str(tiny_pipeline_dir), "--prompt", "a red circle",
               "--scales", "0:3:0.25", "--steps", "2", "--per-call", "5", "--out", str(out)])
    assert rc == 0 and "13 frames" in capsys.readouterr().out
    gif = Image.open(out)
    assert gif.n_frames == 13 and gif.size == (256, 256)
    assert Image.open(tmp_path / "sweep.png").size[0] > 256
    assert main(["sweep", "--model", str(tiny_pipeline_dir), "--prompt", "x",
                 "--scales", "3:1:1", "--out", str(out)]) == 2
    assert "cannot read scales" in capsys.readouterr().err
