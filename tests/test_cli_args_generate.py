"""``generate --n N`` draws its seeds in batches (#32 item 5) and streams them to disk with
progress and bounded memory (#34 item 4); Ctrl-C is one line; ``--overwrite`` lets the
README's notebook-07 workflow (an embedding of a vocabulary word) load (#34 item 5)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nbhelpers import sampling
from nbhelpers.cli import generate, main


@pytest.fixture(scope="module")
def toy():
    from diffusers import DDIMScheduler

    from nbhelpers.models import load_pipeline

    pipe = load_pipeline("toy")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe


def test_the_batch_draws_the_images_one_call_per_seed_drew(toy, one_torch_thread, tmp_path,
                                                          capsys):
    from nbhelpers.images import hstack

    out = tmp_path / "x.png"
    assert main(["generate", "--prompt", "a red circle", "--n", "3", "--seed", "5",
                 "--steps", "2", "--negative-prompt", "blue", "--out", str(out)]) == 0
    assert "seed 5..7" in capsys.readouterr().out
    before = [sampling.sample_cfg(toy, "a red circle", 7.5, negative_prompt="blue",
                                  num_steps=2, seed=s)[0] for s in (5, 6, 7)]
    before = hstack([(im * 255).round().astype(np.uint8) for im in before])
    now = np.asarray(Image.open(out).convert("RGB"))
    assert now.shape == before.shape
    # the same pictures: the CPU's kernels round differently for another batch size, by at
    # most one level of 255 on a few pixels
    diff = np.abs(now.astype(int) - before.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    # the same computation: with the UNet batch of one call per seed, the latents are equal
    one_by_one = [sampling.sample_cfg(toy, "a red circle", 7.5, num_steps=2, seed=s,
                                      output="latents") for s in (5, 6, 7)]
    batched = sampling.sample_prompts(toy, ["a red circle"] * 3, 7.5, seeds=[5, 6, 7],
                                      num_steps=2, unet_batch=2, output="latents")
    assert all((b == a[0]).all() for a, b in zip(one_by_one, batched, strict=True))


class _Recorder:
    """sample_prompts, counting the images asked for at once; Ctrl-C at call ``stop``."""

    def __init__(self, real, stop: int | None = None) -> None:
        self.real, self.stop, self.sizes = real, stop, []

    def __call__(self, pipe, prompts, *args, **kwargs):
        if len(self.sizes) + 1 == self.stop:
            raise KeyboardInterrupt
        self.sizes.append(len(prompts))
        return self.real(pipe, prompts, *args, **kwargs)


def test_each_streams_a_batch_at_a_time_with_progress(monkeypatch, one_torch_thread, tmp_path,
                                                      capsys):
    recorder = _Recorder(sampling.sample_prompts)
    monkeypatch.setattr(sampling, "sample_prompts", recorder)
    monkeypatch.setattr(generate, "BATCH", 2)
    out = tmp_path / "x.png"
    assert main(["generate", "--prompt", "a red circle", "--n", "5", "--seed", "10",
                 "--steps", "1", "--each", "--out", str(out)]) == 0
    assert recorder.sizes == [2, 2, 1]        # never more than a batch in memory
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"x-{s}.png" for s in range(10, 15)]
    captured = capsys.readouterr()
    assert "generate 5 images" in captured.err and "5/5" in captured.err   # the progress bar
    assert f"wrote {tmp_path / 'x-SEED.png'} (5 images" in captured.out


@pytest.mark.parametrize("each", [True, False])
def test_ctrl_c_is_one_line_and_keeps_what_is_finished(monkeypatch, one_torch_thread, tmp_path,
                                                       capsys, each):
    monkeypatch.setattr(sampling, "sample_prompts", _Recorder(sampling.sample_prompts, stop=2))
    monkeypatch.setattr(generate, "BATCH", 2)
    out = tmp_path / "x.png"
    argv = ["generate", "--prompt", "a red circle", "--n", "5", "--steps", "1",
            "--out", str(out)]
    assert main(argv + (["--each"] if each else [])) == 130
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("interrupted (Ctrl-C) after 2 of 5 images")
    assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in err)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == (["x-0.png", "x-1.png"] if each else [])   # no half-written picture


def test_an_embedding_of_a_vocabulary_word_loads_with_overwrite(one_torch_thread, tmp_path,
                                                                capsys):
    import torch

    from nbhelpers.ti.embeddings import Embedding
    from nbhelpers.ti.formats import save_embedding

    # what `ti train --token red --overwrite` writes: the word's one row, learned
    path = save_embedding(Embedding("red", torch.zeros(1, 128)), tmp_path / "red.safetensors")
    out = tmp_path / "x.png"
    argv = ["generate", "--prompt", "a red circle", "--steps", "1", "--embedding", str(path),
            "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pass --overwrite" in err and "overwrite=True" not in err and "Traceback" not in err
    assert not out.exists()
    assert main(argv + ["--overwrite"]) == 0
    assert "loaded red (1 vector(s), 128 wide)" in capsys.readouterr().out and out.exists()
