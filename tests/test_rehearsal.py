"""The rehearsal model: SD 1.4's tokenizer, configs and scheduler with seeded random weights."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from nbhelpers import rehearsal
from nbhelpers.cli import main
from nbhelpers.models import load_pipeline


@pytest.fixture(scope="module")
def mini_dir(tmp_path_factory):
    return rehearsal.write_rehearsal_model(tmp_path_factory.mktemp("rehearsal") / "sd-mini")


def test_sd14_tokenizer_ids():
    tok = rehearsal.sd14_tokenizer()
    assert len(tok) == 49_408 and tok.model_max_length == 77
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.pad_token == tok.eos_token == "<|endoftext|>" and tok.pad_token_id == 49407
    ids = tok(["a cat"], padding="max_length", max_length=77, truncation=True).input_ids[0]
    assert len(ids) == 77 and ids[3:] == [49407] * 74


def test_merges_file_missing_says_how_to_install(monkeypatch):
    monkeypatch.setattr(rehearsal.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps open-clip-torch"):
        rehearsal.clip_merges_path()


def test_full_configs_are_sd14s():
    parts = rehearsal.build_components("full", device="meta")
    count = {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in parts.items()}
    assert 855 < count["unet"] < 865          # SD 1.4 UNet: about 860 M parameters
    assert 83 < count["vae"] < 84.5
    assert 122 < count["text_encoder"] < 124
    unet, vae, text = (parts[k].config for k in ("unet", "vae", "text_encoder"))
    assert unet.cross_attention_dim == 768 and unet.sample_size == 64
    assert vae.scaling_factor == pytest.approx(0.18215)
    assert (text.vocab_size, text.hidden_size, text.max_position_embeddings) == (49408, 768, 77)
    assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (0, 2, 1)
    sched = rehearsal.configs("full")["scheduler"]
    assert sched == dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", skip_prk_steps=True,
                         set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    with pytest.raises(ValueError, match="clip"):
        rehearsal.build_components(parts=("clip",), device="meta")
    with pytest.raises(ValueError, match="'huge'"):
        rehearsal.configs("huge")


def test_mini_keeps_block_types_and_the_768_wide_embedding():
    full, mini = rehearsal.configs("full"), rehearsal.configs("mini")
    for part in ("unet", "vae"):
        for key in ("down_block_types", "up_block_types"):
            assert mini[part][key] == full[part][key]
    assert len(mini["vae"]["block_out_channels"]) == 4            # still a factor of 8
    for key in ("vocab_size", "hidden_size", "max_position_embeddings"):
        assert mini["text_encoder"][key] == full["text_encoder"][key]
    assert mini["scheduler"] == full["scheduler"]


def test_mini_folder_loads_in_diffusers_with_sd14s_tokenizer(mini_dir):
    from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(mini_dir))
    assert isinstance(pipe.scheduler, PNDMScheduler) and pipe.scheduler.config.steps_offset == 1
    # SD 1.4's scheduler config also says clip_sample: false, which DDIM takes from it
    assert not DDIMScheduler.from_config(pipe.scheduler.config).config.clip_sample
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368,
                                                            49407]
    assert pipe.text_encoder.get_input_embeddings().weight.shape == (49408, 768)
    card = json.loads((mini_dir / rehearsal.CARD_FILE).read_text())
    assert card["size"] == "mini" and card["seed"] == 0 and "random weights" in card["what"]


def test_same_seed_same_weights_other_seed_other_weights(mini_dir, tmp_path):
    a = rehearsal.build_components("mini", seed=0, parts=("unet",))["unet"]
    b = load_pipeline(str(mini_dir), device="cpu").unet
    c = rehearsal.build_components("mini", seed=1, parts=("unet",))["unet"]
    wa, wb, wc = (m.conv_in.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    with pytest.raises(FileExistsError, match="nothing was overwritten"):
        rehearsal.write_rehearsal_model(mini_dir)


def test_cached_rehearsal_model_by_name(monkeypatch, tmp_path, mini_dir):
    monkeypatch.setenv("NBHELPERS_CACHE", str(tmp_path))
    # a finished folder in the cache is used as it is (here: a copy of the fixture's)
    target = tmp_path / "rehearsal" / f"mini-seed0-v{rehearsal.BUILD_VERSION}"
    target.parent.mkdir(parents=True)
    target.symlink_to(mini_dir, target_is_directory=True)
    assert rehearsal.rehearsal_model_dir("mini") == target
    pipe = load_pipeline("rehearsal-mini", device="auto")
    assert pipe.device.type == "cpu" and pipe.unet.dtype == torch.float32
    assert pipe.tokenizer("a photo of a cat").input_ids[1] == 320


def test_cli_writes_a_folder_and_refuses_an_existing_one(tmp_path, capsys):
    out = tmp_path / "sd"
    assert main(["sd", "rehearsal-model", "--out", str(out), "--size", "mini",
                 "--seed", "3"]) == 0
    assert "random" in capsys.readouterr().out
    assert json.loads((out / rehearsal.CARD_FILE).read_text())["seed"] == 3
    assert main(["sd", "rehearsal-model", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_rehearsal_pipeline_runs_the_sd_loop(mini_dir):
    from diffusers import DDIMScheduler

    from nbhelpers.sampling import sample_cfg

    pipe = load_pipeline(str(mini_dir), device="cpu")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    ours = sample_cfg(pipe, "a photo of a cat", 7.5, num_steps=3, seed=0)
    ref = pipe("a photo of a cat", num_inference_steps=3, guidance_scale=7.5, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert ours.shape == (1, 64, 64, 3) and float(np.abs(ours - ref).max()) < 1e-3


def test_hub_cache_layout_is_found_without_network(tmp_path, mini_dir):
    """A Hugging Face cache as users have it, holding the mini model as CompVis' SD 1.4: the
    automatic profile (CUDA mocked) and load_pipeline by hub id both find it offline."""
    snap_hash = "0" * 39 + "1"
    repo = tmp_path / "hub" / "models--CompVis--stable-diffusion-v1-4"
    snapshot = repo / "snapshots" / snap_hash
    # as the hub client lays it out: snapshot files are links to content-named blobs
    for k, src in enumerate(sorted(p for p in mini_dir.rglob("*") if p.is_file())):
        blob = repo / "blobs" / f"{k:064x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.symlink_to(src)                      # (a link again, to keep the test fast)
        link = snapshot / src.relative_to(mini_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snap_hash)
    script = textwrap.dedent("""
        import torch
        from nbhelpers import profile
        from nbhelpers.models import load_pipeline
        profile._cuda_available = lambda: True          # CUDA mocked; nothing runs on it
        p = profile.get_profile()
        print(p.name, p.model)
        pipe = load_pipeline("CompVis/stable-diffusion-v1-4", device="cpu")
        print(pipe.tokenizer("a photo of a cat").input_ids[1], pipe.unet.config.sample_size)
    """)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0] == f"gpu {snapshot}"
    assert lines[1] == "320 8"


def test_ti_on_the_rehearsal_model_writes_768_wide_files_diffusers_loads(mini_dir, tmp_path):
    """The CLI path of a workshop on SD 1.4: train from a folder of pictures of any size, then
    diffusers' own loader gives the same images as the engine's."""
    from PIL import Image

    from nbhelpers.sampling import sample_prompts
    from nbhelpers.ti.formats import load_embedding
    from nbhelpers.ti.pipeline import add_embedding_to_pipeline

    pictures = tmp_path / "paintings"
    pictures.mkdir()
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate([(64, 96), (80, 64), (64, 64)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            pictures / f"a harbour at dusk {k}.png")
    out = tmp_path / "style.safetensors"
    assert main(["ti", "train", str(pictures), "--model", str(mini_dir), "--token",
                 "<my-style>", "--init-word", "painting", "--steps", "2", "--batch-size", "2",
                 "--framing", "focal", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    emb = load_embedding(out)
    assert emb.width == 768 and emb.n_vectors == 1 and emb.token == "<my-style>"
    theirs = load_pipeline(str(mini_dir), device="cpu")
    theirs.load_textual_inversion(str(out))
    ours = load_pipeline(str(mini_dir), device="cpu")
    add_embedding_to_pipeline(ours, emb)
    prompts = ["a lighthouse in the style of <my-style>"]
    a, b = (sample_prompts(p, prompts, 7.5, num_steps=2) for p in (theirs, ours))
    assert float(np.abs(a - b).max()) <= 1e-5
    assert main(["generate", "--model", str(mini_dir), "--prompt", prompts[0], "--steps", "2",
                 "--embedding", str(out), "--out", str(tmp_path / "x.png")]) == 0
    assert main(["sweep", "--model", str(mini_dir), "--prompt", "a lighthouse", "--scales",
                 "0,7.5", "--steps", "1", "--out", str(tmp_path / "s.gif")]) == 0
    assert (tmp_path / "x.png").is_file() and (tmp_path / "s.gif").is_file()
