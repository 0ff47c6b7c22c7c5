"""Ctrl-C during a textual-inversion run (issues #31 item 2, #34 item 2): one exception carries
the step and the vectors; the state saved is the one from before the interrupted step, so
Ctrl-C + resume equals an uninterrupted run exactly; the previous run's output and checkpoints
are kept until the new run finishes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nbhelpers.cli import main
from nbhelpers.models import load_pipeline
from nbhelpers.ti.checkpoints import checkpoint_steps
from nbhelpers.ti.config import TIConfig
from nbhelpers.ti.formats import load_embedding
from nbhelpers.ti.latents import LatentSet, encode_images
from nbhelpers.ti.train import TrainingInterrupted, train_textual_inversion

pytestmark = pytest.mark.reliability
ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ["a painting of [filewords] in the style of [name]", "[name] style"]


class _StopsMidStep(LatentSet):
    """Raises KeyboardInterrupt in the ``at``-th draw, after drawing: the generator has moved
    and a micro-batch's gradient is accumulated, as when Ctrl-C lands inside a step."""

    at: int = 0

    def draw(self, batch_size, generator):
        drawn = super().draw(batch_size, generator)
        type(self).calls += 1
        if type(self).calls == self.at:
            raise KeyboardInterrupt
        return drawn


def test_ctrl_c_inside_a_step_then_resume_equals_an_uninterrupted_run(tiny_pipeline_dir,
                                                                       tmp_path,
                                                                       one_torch_thread):
    pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=g) * 2 - 1 for _ in range(3)]
    cache = encode_images(pipe.vae, images)
    captions = [["a red circle", "a blue square", "a star"]]
    kw = dict(token="<s>", init_word="style", steps=5, batch_size=2, grad_accum=2,
              lr="0.05", checkpoint_every=2)
    straight = train_textual_inversion(pipe, LatentSet([cache], captions), TEMPLATES,
                                       TIConfig(**kw, out_dir=str(tmp_path / "a")))

    _StopsMidStep.calls, _StopsMidStep.at = 0, 6   # the second micro-batch of step 3
    with pytest.raises(TrainingInterrupted) as stop:
        train_textual_inversion(load_pipeline(str(tiny_pipeline_dir), device="cpu"),
                                _StopsMidStep([cache], captions), TEMPLATES,
                                TIConfig(**kw, out_dir=str(tmp_path / "b")))
    assert stop.value.step == 2 and isinstance(stop.value, KeyboardInterrupt)
    assert stop.value.checkpoint == tmp_path / "b" / "checkpoint"
    assert checkpoint_steps(stop.value.checkpoint) == [2]   # the state before step 3
    resumed = train_textual_inversion(load_pipeline(str(tiny_pipeline_dir), device="cpu"),
                                      LatentSet([cache], captions), TEMPLATES,
                                      TIConfig(**kw, out_dir=str(tmp_path / "b"), resume=True))
    assert torch.equal(resumed.vectors, straight.vectors)   # exactly, not to a tolerance
    assert resumed.losses == straight.losses and resumed.result is resumed


def _pictures(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k, name in enumerate(["a red circle", "a blue square", "a green star"]):
        Image.fromarray(rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)).save(
            folder / f"{name} {k}.png")
    return folder


def test_sigint_names_the_step_saved_keeps_the_finished_run_and_resumes_exactly(
        tiny_pipeline_dir, tmp_path, capsys, one_torch_thread):
    data, out = _pictures(tmp_path / "data"), tmp_path / "words" / "emb.safetensors"
    argv = ["ti", "train", str(data), "--model", str(tiny_pipeline_dir), "--token", "<k>",
            "--steps", "16", "--batch-size", "2", "--lr", "0.05", "--checkpoint-every", "2",
            "--seed", "3", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0                      # a finished run ...
    capsys.readouterr()
    finished = out.read_bytes()
    work = tmp_path / "words" / "emb-run"
    # ... then the same command again, from scratch, stopped with SIGINT after a few steps
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nbhelpers.cli", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (work / "checkpoint" / "state-000004.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    said, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    step = load_embedding(work / "emb-unfinished.safetensors").step
    assert 4 <= step < 16 and checkpoint_steps(work / "checkpoint")[0] == step
    assert f"interrupted: the state of step {step} is saved in {work / 'checkpoint'}" in err
    assert "Traceback" not in err and "plus --resume" in err, err
    # the finished run's file is untouched, its checkpoints set aside, not deleted
    assert out.read_bytes() == finished
    assert checkpoint_steps(work / "previous" / "checkpoint") == [16, 14]
    assert not (work / "lock").exists()
    # Ctrl-C + --resume: the very vectors of the uninterrupted run
    assert main([*argv, "--resume"]) == 0
    assert f"resuming from step {step} of 16" in capsys.readouterr().out
    assert torch.equal(load_embedding(out).vectors, _vectors(finished))
    assert not (work / "previous").exists() and not (work / "emb-unfinished.safetensors").exists()


def _vectors(safetensors_bytes: bytes) -> torch.Tensor:
    from safetensors.torch import load

    (tensor,) = load(safetensors_bytes).values()
    return tensor


def test_a_non_finite_loss_leaves_the_finished_file_as_it_was(tiny_pipeline_dir, tmp_path,
                                                              one_torch_thread):
    from nbhelpers.ti.engine import train_from_folder
    from nbhelpers.ti.train import NonFiniteLossError

    data, out = _pictures(tmp_path / "data"), tmp_path / "emb.safetensors"
    out.write_bytes(b"the finished run's file")
    cfg = TIConfig(token="<k>", steps=20, batch_size=2, lr="1e30")
    with pytest.raises(NonFiniteLossError, match="emb-unfinished.safetensors") as stop:
        train_from_folder(data, load_pipeline(str(tiny_pipeline_dir), device="cpu"), cfg, out,
                          cache_dir=tmp_path / "cache")
    assert out.read_bytes() == b"the finished run's file"
    kept = load_embedding(tmp_path / "emb-run" / "emb-unfinished.safetensors")
    assert kept.step == stop.value.step and torch.isfinite(kept.vectors).all()
    assert torch.equal(kept.vectors, stop.value.vectors)
    assert not (tmp_path / "emb-run" / "lock").exists()
