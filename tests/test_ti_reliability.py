"""What classrooms do to a trainer: kill it, share its cache, fill its disk, feed it huge photos.

Issue 19's four reliability checks, each on the tiny random pipeline of ``conftest.py``:

1. a ``ti train`` killed with SIGKILL at a random step resumes to the same embedding as an
   uninterrupted run, also when the newest checkpoint file was cut short;
2. latent-cache entries that are truncated or from another model are rebuilt, never trained
   on, and two ``ti train`` processes sharing one cache leave every entry valid;
3. a full disk, a file-size limit or a read-only folder during a save: a clear error, no
   traceback, the previous file byte for byte, no temporary file left;
4. a folder of 2,000 images, three of them 12000x9000, trains with the memory of a few images.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import multiprocessing
import os
import random
import resource
import shutil
import signal
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nbhelpers.cli import main
from nbhelpers.ti.checkpoints import checkpoint_steps
from nbhelpers.ti.embeddings import Embedding
from nbhelpers.ti.formats import load_embedding, save_embedding
from nbhelpers.ti.latents import encode_images, pixels_key, vae_fingerprint

pytestmark = pytest.mark.reliability


def _image_folder(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` small noisy PNGs with captions in their names (distinct pixels, so distinct
    cache entries)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = ["a red circle", "a blue square", "a green star", "a yellow cross", "a white ring"]
    for k in range(n):
        pixels = rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{names[k % len(names)]} {k}.png")
    return folder


def _train_argv(data: Path, model: Path, out: Path, cache: Path, steps: int = 8) -> list[str]:
    return ["ti", "train", str(data), "--model", str(model), "--token", "<kill>",
            "--steps", str(steps), "--batch-size", "2", "--lr", "0.05:4, 0.02",
            "--checkpoint-every", "2", "--seed", "3", "--out", str(out),
            "--cache-dir", str(cache)]


# --------------------------------------------------------------------------------------------
# 1. SIGKILL at a random step, then --resume
# --------------------------------------------------------------------------------------------

def _train_killed_at(step: int, argv: list[str]) -> None:
    """In a forked process: ``nbhelpers ti train`` unchanged, except that its trainer's
    callback kills the process with SIGKILL once ``step`` is done: no handler, no flush, no
    ``finally`` runs."""
    from nbhelpers.ti import engine

    torch.set_num_threads(1)
    real = engine.train_textual_inversion

    def killed_at_step(*args, callback=None, **kwargs):
        def cb(state):
            if state.step == step:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, callback=cb, **kwargs)

    engine.train_textual_inversion = killed_at_step   # this process's copy only
    os._exit(main(argv))


def test_sigkill_at_a_random_step_resumes_to_the_same_embedding(tiny_pipeline_dir, tmp_path,
                                                                  capsys, one_torch_thread):
    """Equal exactly, not to a tolerance: the resumed run restores the vectors, AdamW's moments
    and every process's RNG state bit for bit, and one CPU thread runs the same float
    operations in the same order, in the killed process or in this one."""
    data = _image_folder(tmp_path / "data", 5)
    cache = tmp_path / "cache"
    # a seeded random step of the 8, from 4 on: two checkpoints (every 2 steps) exist by then,
    # so the variant below has an older one to fall back to
    kill_at = random.Random(19).randint(4, 7)
    killed_out = tmp_path / "a" / "emb.safetensors"
    # forked, so that nothing is imported twice: a process of its own all the same
    proc = multiprocessing.get_context("fork").Process(target=_train_killed_at, args=(
        kill_at, _train_argv(data, tiny_pipeline_dir, killed_out, cache)))
    proc.start()
    proc.join(timeout=600)
    assert proc.exitcode == -signal.SIGKILL, capsys.readouterr().err
    assert not killed_out.exists()     # killed before the end: nothing final was written
    ckpt = tmp_path / "a" / "emb-run" / "checkpoint"
    last = kill_at - kill_at % 2       # the last checkpoint before the kill
    assert checkpoint_steps(ckpt) == [last, last - 2]   # the two newest kept

    # the variant: the same run, its newest checkpoint file then cut in half (a machine that
    # lost power before the disk caught up), so the one before it must be used
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    cut = tmp_path / "b" / "emb-run" / "checkpoint" / f"state-{last:06d}.pt"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])

    straight_out = tmp_path / "c" / "emb.safetensors"
    assert main(_train_argv(data, tiny_pipeline_dir, straight_out, cache)) == 0
    capsys.readouterr()
    assert main([*_train_argv(data, tiny_pipeline_dir, killed_out, cache), "--resume"]) == 0
    said = capsys.readouterr()
    assert f"resuming from step {last} of 8" in said.out, said.err
    cut_out = tmp_path / "b" / "emb.safetensors"
    assert main([*_train_argv(data, tiny_pipeline_dir, cut_out, cache), "--resume"]) == 0
    said = capsys.readouterr()
    assert f"resuming from step {last - 2} of 8" in said.out, said.err
    assert f"checkpoint skipped: {cut} is damaged" in said.err, said.err

    straight = load_embedding(straight_out)
    for out in (killed_out, cut_out):
        resumed = load_embedding(out)
        assert resumed.step == 8 and torch.equal(resumed.vectors, straight.vectors), out


def test_checkpoint_generations_and_what_find_checkpoint_skips(tmp_path):
    """The files themselves, without a model: two generations kept, a killed write's
    temporary file removed, a damaged RNG file skipped like a damaged state file, a run
    without resume starting with none."""
    from nbhelpers.ti.checkpoints import (
        find_checkpoint,
        remove_checkpoint_files,
        save_checkpoint,
    )
    from nbhelpers.ti.config import TIConfig
    from nbhelpers.ti.rows import TrainableRows

    rows = TrainableRows(torch.nn.Embedding(5, 4), [4], torch.zeros(1, 4))
    opt = torch.optim.AdamW([rows.vectors], lr=0.1)
    gen = torch.Generator().manual_seed(0)
    cfg = TIConfig(token="<t>", steps=8)
    folder = tmp_path / "checkpoint"
    losses: list[float] = []
    for step in (2, 4, 6):
        losses += [1.0, 1.0]
        save_checkpoint(folder, rows, opt, step, losses, gen, 0, cfg)
        if step == 4:
            (folder / ".state-000006-x1y2z3.pt").write_bytes(b"half")   # a write killed
    assert checkpoint_steps(folder) == [6, 4]
    assert sorted(p.name for p in folder.iterdir()) == [
        "rng-0-000004.pt", "rng-0-000006.pt", "state-000004.pt", "state-000006.pt"]
    rng = folder / "rng-0-000006.pt"
    rng.write_bytes(rng.read_bytes()[:40])
    with pytest.warns(UserWarning, match=f"checkpoint skipped: {rng} is damaged"):
        step, state, _ = find_checkpoint(folder, shape=(1, 4))
    assert step == 4 and len(state["losses"]) == 4
    with pytest.raises(ValueError, match=r"no usable checkpoint .* holds vectors of shape"):
        find_checkpoint(folder, shape=(2, 4), max_step=4)
    remove_checkpoint_files(folder, 0, set())
    assert list(folder.iterdir()) == []


# --------------------------------------------------------------------------------------------
# 2. The latent cache: damaged and foreign entries, and two processes at once
# --------------------------------------------------------------------------------------------


def _another_vae(pipe):
    """A VAE of the same config with other weights: another model, same latent shapes."""
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL.from_config(pipe.vae.config).eval()


def test_truncated_and_foreign_cache_entries_are_rebuilt_never_trained_on(tiny_pipeline_dir,
                                                                          tmp_path):
    from nbhelpers.models import load_pipeline

    pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=g) * 2 - 1 for _ in range(3)]
    fresh = encode_images(pipe.vae, images, cache_dir=tmp_path / "fresh")
    cache = tmp_path / "cache"
    encode_images(pipe.vae, images, cache_dir=cache)
    ours = cache / vae_fingerprint(pipe.vae)
    other = _another_vae(pipe)
    assert vae_fingerprint(other) != vae_fingerprint(pipe.vae)
    foreign = encode_images(other, images, cache_dir=cache)
    assert not torch.equal(foreign.mean, fresh.mean)   # using it would show
    keys = [pixels_key(img) for img in images]
    # 0: cut short; 1: the other model's entry for the same pixels, copied into our folder;
    # 2: the other model's entry renamed to another image's key of ours
    entry = ours / f"{keys[0]}.pt"
    entry.write_bytes(entry.read_bytes()[:100])
    shutil.copy(cache / vae_fingerprint(other) / f"{keys[1]}.pt", ours / f"{keys[1]}.pt")
    shutil.copy(ours / f"{keys[1]}.pt", ours / f"{keys[2]}.pt")
    with pytest.warns(UserWarning, match=rf"latent cache: rebuilt .* and 2 more in {ours}"):
        again = encode_images(pipe.vae, images, cache_dir=cache)
    assert again.hits == 0 and again.encoded == 3
    assert torch.equal(again.mean, fresh.mean) and torch.equal(again.std, fresh.std)
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # rebuilt for good: read back without a warning
        third = encode_images(pipe.vae, images, cache_dir=cache)
    assert third.hits == 3 and torch.equal(third.mean, fresh.mean)


def _train_in_a_child(argv: list[str], barrier) -> None:
    torch.set_num_threads(1)
    barrier.wait(timeout=300)              # both start together, to race on the same entries
    code = main(argv)
    sys.stdout.flush()
    os._exit(code)


def test_two_ti_train_processes_share_one_cache(tiny_pipeline_dir, tmp_path, capfd):
    """Two ``ti train`` runs (forked from this process, so nothing is imported twice) encode
    the same 12 framed images (6, flipped) into one cache folder at the same moment."""
    data = _image_folder(tmp_path / "data", 6)
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    outs = [tmp_path / f"run{k}" / "emb.safetensors" for k in (0, 1)]
    procs = [ctx.Process(target=_train_in_a_child, args=(
        [*_train_argv(data, tiny_pipeline_dir, out, cache, steps=2), "--flip"], barrier))
        for out in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    said = capfd.readouterr()
    assert [p.exitcode for p in procs] == [0, 0], said.err
    a, b = (load_embedding(out) for out in outs)
    assert torch.equal(a.vectors, b.vectors)   # the same data and seed: the same result
    from nbhelpers.models import load_pipeline

    pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    folder = cache / vae_fingerprint(pipe.vae)
    entries = sorted(folder.iterdir())
    assert len(entries) == 12 and not [e for e in entries if e.name.startswith(".")]
    # every entry whole and ours: reading all of them back warns about none
    from nbhelpers.ti.framing import frame
    from nbhelpers.ti.images import load_folder

    pixels = [f.tensor() for item in load_folder(data, size=64)
              for f in frame(item.image, 64, "center", flip=True)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = encode_images(pipe.vae, pixels, cache_dir=cache)
    assert back.hits == 12 and back.encoded == 0


# --------------------------------------------------------------------------------------------
# 3. Saving onto a full disk, over a file-size limit, into a read-only folder
# --------------------------------------------------------------------------------------------


def _saved(path: Path) -> bytes:
    emb = Embedding("<old>", torch.arange(64, dtype=torch.float32).reshape(2, 32))
    save_embedding(emb, path)
    return path.read_bytes()


def _no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_full_disk_during_a_save(tmp_path, monkeypatch, capsys):
    """ENOSPC half-way through the write, as a full disk gives it; the write is Python's
    ``open().write`` in ``nbhelpers.files``, so the failure is injected there."""
    import nbhelpers.files

    out_dir = tmp_path / "out"
    old = _saved(out_dir / "style.safetensors")
    src = tmp_path / "new.safetensors"
    save_embedding(Embedding("<new>", torch.ones(1, 32)), src)

    class FullDisk:
        def __init__(self, path, mode):
            self.f = open(path, mode)       # noqa: SIM115 - closed in __exit__

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(nbhelpers.files, "open", FullDisk, raising=False)
    assert main(["ti", "convert", str(src), str(out_dir / "style.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "no space left on the disk that holds" in err and "free some space" in err
    assert f"{out_dir / 'style.safetensors'} was left as it was" in err
    assert "Traceback" not in err
    assert (out_dir / "style.safetensors").read_bytes() == old and _no_temporary_files(out_dir)


def _convert_under_a_file_size_limit(src: str, dst: str, limit: int, err_w: int) -> None:
    os.dup2(err_w, 2)
    sys.stderr = os.fdopen(2, "w", closefd=False)
    sys.stdout = open(os.devnull, "w")   # noqa: SIM115 - the process ends here
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # the write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    code = main(["ti", "convert", src, dst, "--format", "a1111"])
    sys.stderr.flush()
    os._exit(code)


def test_a_file_size_limit_during_a_save(tmp_path):
    """A real failed write from the kernel: ``RLIMIT_FSIZE`` in a forked process (a pipe for
    its messages, which the limit does not touch)."""
    out_dir = tmp_path / "out"
    dst = out_dir / "style.pt"
    save_embedding(Embedding("<old>", torch.zeros(1, 32)), dst, format="a1111")
    old = dst.read_bytes()
    src = tmp_path / "new.safetensors"
    save_embedding(Embedding("<new>", torch.ones(8, 32)), src)
    r, w = os.pipe()
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_convert_under_a_file_size_limit,
                       args=(str(src), str(dst), 600, w))
    proc.start()
    os.close(w)
    with os.fdopen(r) as pipe:
        err = pipe.read()
    proc.join(timeout=120)
    assert proc.exitcode == 1, err
    assert "larger than this process may write" in err and str(dst) in err, err
    assert "Traceback" not in err
    assert dst.read_bytes() == old and _no_temporary_files(out_dir)


def test_a_read_only_output_folder(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    """chmod a-w; as root (CI containers), which chmod does not stop, the folder is made
    read-only where files are created instead: ``mkstemp`` fails as the kernel would."""
    import nbhelpers.files

    out_dir = tmp_path / "out"
    dst = out_dir / "style.safetensors"
    old = _saved(dst)
    src = tmp_path / "new.safetensors"
    save_embedding(Embedding("<new>", torch.ones(1, 32)), src)
    out_dir.chmod(0o555)
    if os.access(out_dir, os.W_OK):        # root: permissions are not checked
        real = nbhelpers.files.tempfile.mkstemp

        def read_only(*args, dir=None, **kwargs):
            if Path(dir) == out_dir:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(nbhelpers.files.tempfile, "mkstemp", read_only)
    try:
        assert main(["ti", "convert", str(src), str(dst)]) == 1
        err = capsys.readouterr().err
        assert f"cannot write to {out_dir}: the folder is read-only" in err, err
        assert f"chmod u+w '{out_dir}'" in err and "Traceback" not in err
        # ti train says so before it loads a model or trains a step
        data = _image_folder(tmp_path / "data", 1)
        argv = _train_argv(data, tiny_pipeline_dir, dst, tmp_path / "cache", steps=2)
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "read-only" in err and "Traceback" not in err
        assert not (out_dir / "style-run").exists()
        assert dst.read_bytes() == old and _no_temporary_files(out_dir)
    finally:
        out_dir.chmod(0o755)


# --------------------------------------------------------------------------------------------
# 4. 2,000 images, three of them 12000 x 9000
# --------------------------------------------------------------------------------------------

HUGE = (12000, 9000)     # 108 Mpx: over Pillow's decompression-bomb limit (89.5 Mpx)
#: Peak memory the whole run may add, from load_folder to the saved embedding (45 MB measured).
#: One of the huge images decoded at full size is 324 MB (12000 x 9000 x 3 bytes); the 2,003
#: framed images held at once as float32 pixels, as the trainer used to hold them, 98 MB.
PEAK_BOUND_MB = 100


@pytest.fixture(scope="session")
def huge_jpeg(tmp_path_factory) -> bytes:
    """One 12000x9000 JPEG of one colour: 1.7 MB on disk, made once per session."""
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    Image.new("RGB", HUGE, (200, 40, 90)).save(path, quality=80)
    return path.read_bytes()


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def test_2000_images_some_huge_train_in_bounded_memory(tiny_pipeline_dir, tmp_path, huge_jpeg,
                                                       one_torch_thread):
    """Peak RSS of this process measured from a reset of the kernel's high-water mark
    (``/proc/self/clear_refs``, Linux): the run adds at most PEAK_BOUND_MB."""
    from nbhelpers.models import load_pipeline
    from nbhelpers.ti.config import TIConfig
    from nbhelpers.ti.engine import train_from_folder

    folder = tmp_path / "data"
    folder.mkdir()
    colours = [((37 * k) % 256, (91 * k) % 256, (53 * k) % 256) for k in range(100)]
    small = [Image.new("RGB", (80, 64), c) for c in colours]
    for k in range(2000):      # 100 colours: each framed image is encoded once, then cached
        small[k % 100].save(folder / f"a painting {k:04d}.jpg", quality=90)
    for k in range(3):
        (folder / f"a huge photo {k}.jpg").write_bytes(huge_jpeg)
    pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    cfg = TIConfig(token="<many>", init_word="style", steps=2, batch_size=2, lr="0.01")

    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)   # give freed heap back, so the baseline is honest
    Path("/proc/self/clear_refs").write_text("5")   # reset the peak to the current RSS
    base = _rss_kb("VmRSS")
    run = train_from_folder(folder, pipe, cfg, tmp_path / "many.safetensors",
                            cache_dir=tmp_path / "cache")
    peak_mb = (_rss_kb("VmHWM") - base) / 1024
    assert len(run.report.loaded) == 2003 and not run.report.skipped, run.report.summary()
    huge = [item for item in run.report.loaded if "huge" in item.path.name]
    assert [item.size for item in huge] == [(1500, 1125)] * 3   # read at 1/8 in the decoder
    assert run.n_examples == 2003 and load_embedding(run.path).step == 2
    print(f"peak memory added: {peak_mb:.1f} MB")
    assert peak_mb < PEAK_BOUND_MB, f"peak memory {peak_mb:.0f} MB over {PEAK_BOUND_MB} MB"
