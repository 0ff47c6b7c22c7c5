import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_addoption(parser):
    parser.addoption("--trace-dir", default=None,
                     help="folder of the notebook cell records (tests/notebook_coverage.py)")


def build_tiny_pipeline_folder(folder):
    """Save a tiny random SD-shaped pipeline (toy tokenizer, 8x8 latents) for loader tests."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from nbhelpers.toy.tokenizer import make_tokenizer

    torch.manual_seed(0)
    tok = make_tokenizer()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32,
                                        num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=64, max_position_embeddings=77,
                                        bos_token_id=tok.bos_token_id,
                                        eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id))
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


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    return build_tiny_pipeline_folder(tmp_path_factory.mktemp("pipelines") / "tiny-sd")


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test: tiny models (and two loops racing each other) run
    fastest that way on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
