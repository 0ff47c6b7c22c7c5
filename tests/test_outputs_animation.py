"""Animations (``sweep --out x.mp4 / x.gif``) are written whole or not at all, and streamed.

Issue 34: on a nearly full disk ``sweep --out s.mp4`` exited 0, printed "wrote" and renamed a
4 KB file over a good video, because ffmpeg's "Error writing trailer: No space left on device"
was ignored; a full-disk GIF printed imageio's "Exception ignored"; GIF frames were all held in
memory until the end. Here the encoders fail for real (a fake ffmpeg, an injected ENOSPC, a
file-size limit in a child process) and each failure must end in a clear message, exit 1, the
earlier file byte-identical and no temporary file left.
"""

import errno
import gc
import os
import subprocess
import sys
import textwrap
import weakref

import numpy as np
import pytest
from PIL import Image

from nbhelpers.cli import main
from nbhelpers.files import WriteError
from nbhelpers.sweep import write_animation

OLD = b"a good video, kept byte for byte" * 100


def frames(n=4, side=32):
    return (np.full((side, side, 3), 20 * i, np.uint8) for i in range(n))


def fake_ffmpeg(tmp_path, monkeypatch, *, status, stderr, junk=b"\0" * 4096):
    """An ffmpeg that swallows its input, writes ``junk`` to its output, prints ``stderr``
    and exits with ``status``, put where the writer looks for ffmpeg."""
    script = tmp_path / "bin" / "ffmpeg"
    script.parent.mkdir()
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        sys.stdin.buffer.read()
        open(sys.argv[-1], "wb").write({junk!r})
        sys.stderr.write({stderr!r})
        sys.exit({status})
        """))
    script.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(script))
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return script


def only(folder, *names):
    """The folder holds exactly ``names``: no temporary file was left behind."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_cli_sweep_mp4_on_a_full_disk_keeps_the_old_video(tmp_path, monkeypatch, capsys):
    """The reported case, through the real CLI: ffmpeg says the disk is full and exits 0."""
    fake_ffmpeg(tmp_path, monkeypatch, status=0,
                stderr="[mp4 @ 0x1] Error writing trailer of s.mp4: No space left on device\n")
    work = tmp_path / "work"
    work.mkdir()
    out = work / "s.mp4"
    out.write_bytes(OLD)
    rc = main(["sweep", "--prompt", "a red circle", "--scales", "0,1", "--steps", "1",
               "--out", str(out), "--sheet", str(work / "sheet.png")])
    captured = capsys.readouterr()
    assert rc == 1
    assert "no space left on the disk" in captured.err and "s.mp4" in captured.err
    assert "wrote" not in captured.out and "Traceback" not in captured.err
    assert out.read_bytes() == OLD
    only(work, "s.mp4")


@pytest.mark.parametrize("status, stderr, junk, expect", [
    (1, "Unknown encoder 'libx264'\n", b"", "ffmpeg exited with status 1: Unknown encoder"),
    (0, "", b"\0\0\0\x20ftypisom" + b"\0" * 20, "not whole when read back"),
    (0, "", b"\0\0\x10\0moov" + b"\0" * 100, "cut short"),
    (0, "[out#0] Error muxing a packet\n", b"x", "Error muxing"),
])
def test_a_failed_ffmpeg_is_a_write_error(tmp_path, monkeypatch, status, stderr, junk, expect):
    """ffmpeg's exit status, its messages and the file it leaves are each checked."""
    fake_ffmpeg(tmp_path, monkeypatch, status=status, stderr=stderr, junk=junk)
    out = tmp_path / "a.mp4"
    out.write_bytes(OLD)
    with pytest.raises(WriteError, match=expect) as info:
        write_animation(frames(), out)
    assert "a.mp4 was left as it was" in str(info.value)
    assert out.read_bytes() == OLD
    only(tmp_path, "a.mp4", "bin")


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes are written."""

    def __init__(self, path, mode, room):
        self.f = open(path, mode)  # noqa: SIM115
        self.room = room

    def write(self, data):
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_gif_on_a_full_disk_cli_message_and_no_exception_ignored(tmp_path, monkeypatch, capfd):
    """An injected ENOSPC in the GIF encoder's writes, through the CLI: message, exit 1, old
    file kept, nothing left, and no "Exception ignored" from a writer's late close."""
    import nbhelpers.sweep as sweep

    monkeypatch.setattr(sweep, "open", lambda p, mode: _FullDisk(p, mode, 3000),
                        raising=False)
    out = tmp_path / "s.gif"
    out.write_bytes(OLD)
    rc = main(["sweep", "--prompt", "a red circle", "--scales", "0,1,2", "--steps", "1",
               "--out", str(out), "--sheet", str(tmp_path / "sheet.png")])
    gc.collect()
    captured = capfd.readouterr()
    assert rc == 1 and "no space left on the disk" in captured.err
    assert "Exception ignored" not in captured.err and "Traceback" not in captured.err
    assert out.read_bytes() == OLD
    only(tmp_path, "s.gif")


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_a_file_size_limit(tmp_path, suffix, capfd):
    """A real kernel refusal: a file-size limit (RLIMIT_FSIZE) on this process, which ffmpeg
    inherits. Python gets EFBIG, ffmpeg is killed by SIGXFSZ: either way a WriteError that
    says so, the old file kept, no temporary file, nothing "ignored"."""
    import resource

    out = tmp_path / f"a{suffix}"
    out.write_bytes(OLD)
    rng = np.random.default_rng(0)
    noisy = (rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(40))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20000, hard))
    try:
        with pytest.raises(WriteError, match="larger than this process may write"):
            write_animation(noisy, out, fps=10)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    gc.collect()
    assert "Exception ignored" not in capfd.readouterr().err
    assert out.read_bytes() == OLD
    only(tmp_path, out.name)


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_frames_are_streamed_not_held(tmp_path, suffix, monkeypatch):
    """However many frames, the writer holds none of the earlier ones: each frame it was given,
    and each Pillow image made of one, is gone (weakly referenced, freed) by the time the next
    frame is asked for. (Before, every GIF frame was kept until the end.)"""
    n = 20
    given: list[weakref.ref] = []
    alive = []
    fromarray, convert = Image.fromarray, Image.Image.convert

    def tracked(make):
        def wrapper(*args, **kwargs):
            image = make(*args, **kwargs)
            given.append(weakref.ref(image))
            return image
        return wrapper

    monkeypatch.setattr(Image, "fromarray", tracked(fromarray))
    monkeypatch.setattr(Image.Image, "convert", tracked(convert))

    def source():
        for i in range(n):
            alive.append(sum(r() is not None for r in given))
            frame = np.full((48, 48, 3), (i * 7) % 256, np.uint8)
            given.append(weakref.ref(frame))
            yield frame

    assert write_animation(source(), tmp_path / f"a{suffix}", fps=10) == n
    assert len(given) >= n and max(alive) <= 1, alive


def test_gif_streamed_decodes_to_the_frames(tmp_path):
    """The streamed GIF loops, has every frame with its duration, and shows the frames."""
    rng = np.random.default_rng(1)
    shots = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) // 64 * 64 for _ in range(5)]
    out = tmp_path / "a.gif"
    assert write_animation(iter(shots), out, fps=20) == 5
    with Image.open(out) as gif:
        assert gif.n_frames == 5 and gif.info["loop"] == 0 and gif.info["duration"] == 50
        for k, shot in enumerate(shots):
            gif.seek(k)
            assert np.array_equal(np.asarray(gif.convert("RGB")), shot)


def test_frames_of_another_size_or_kind_are_refused(tmp_path):
    out = tmp_path / "a.gif"
    mixed = iter([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)])
    with pytest.raises(ValueError, match="one size"):
        write_animation(mixed, out)
    with pytest.raises(ValueError, match="uint8"):
        write_animation(iter([np.zeros((8, 8, 3))]), out)
    for fps in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fps"):
            write_animation(frames(), out, fps=fps)
    with pytest.raises(ValueError, match="no frames"):
        write_animation(iter([]), out)
    only(tmp_path)


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: a real full disk (ENOSPC from the kernel, for Python and for ffmpeg).
    Mounting needs root and a kernel that lets this process mount; elsewhere the injected
    ENOSPC and file-size tests above cover the same paths."""
    disk = tmp_path / "disk"
    disk.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({run.stderr.strip()})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_a_really_full_disk(small_disk, suffix, capfd):
    out = small_disk / f"s{suffix}"
    out.write_bytes(OLD)
    rng = np.random.default_rng(0)
    noisy = (rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(60))
    with pytest.raises(WriteError, match="no space left on the disk") as info:
        write_animation(noisy, out, fps=10)
    assert info.value.errno == errno.ENOSPC
    gc.collect()
    assert "Exception ignored" not in capfd.readouterr().err
    assert out.read_bytes() == OLD
    only(small_disk, out.name)
