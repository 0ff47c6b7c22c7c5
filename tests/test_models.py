"""The one loader, on local folders the tests make, and the SD 1.4-shaped random model."""

import time

import pytest
import torch

from nbhelpers import models


def _tiny_pipeline_folder(folder):
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    from nbhelpers.toy.tokenizer import make_tokenizer

    torch.manual_seed(0)
    tok = make_tokenizer()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32,
                                        num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=64, max_position_embeddings=77))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4,
                                layers_per_block=1, block_out_channels=(32, 64),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=32, attention_head_dim=8,
                                norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8,
                        layers_per_block=1, sample_size=64)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler(beta_schedule="scaled_linear",
                                                           beta_start=0.00085, beta_end=0.012,
                                                           steps_offset=1, clip_sample=False),
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


def test_load_pipeline_from_a_local_folder(tmp_path):
    folder = _tiny_pipeline_folder(tmp_path / "tiny-sd")
    pipe = models.load_pipeline(str(folder), device="cpu")
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"
    out = pipe("a red circle", num_inference_steps=2, guidance_scale=2.0, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 64, 64, 3)


def test_missing_hub_model_fails_at_once_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match=r"hf download nobody/no-such-sd.*toy"):
        models.load_pipeline("nobody/no-such-sd", device="cpu")
    assert time.monotonic() - start < 30  # no network retries


def test_folder_that_is_not_a_pipeline(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        models.load_pipeline(str(tmp_path), device="cpu")


def test_missing_toy_model_says_how_to_rebuild(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "toy_model_dir", lambda: tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="nbhelpers toy train"):
        models.load_pipeline("toy", device="cpu")


def test_sd14_shapes_without_memory():
    parts = models.random_sd14_components(device="meta")
    count = {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in parts.items()}
    assert 855 < count["unet"] < 865          # SD 1.4 UNet: about 860 M parameters
    assert 83 < count["vae"] < 84.5
    assert 122 < count["text_encoder"] < 124
    assert parts["unet"].config.cross_attention_dim == 768
    assert parts["vae"].config.scaling_factor == pytest.approx(0.18215)
    with pytest.raises(ValueError, match="clip"):
        models.random_sd14_components(parts=("clip",), device="meta")
