"""The one loader, on local folders the tests make."""

import time

import pytest
import torch

from nbhelpers import locations, models


def test_load_pipeline_from_a_local_folder(tiny_pipeline_dir):
    pipe = models.load_pipeline(str(tiny_pipeline_dir), device="cpu")
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
    monkeypatch.setattr(locations, "toy_model_dir", lambda: tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="nbhelpers toy train"):
        models.load_pipeline("toy", device="cpu")


def test_toy_model_location_can_be_overridden(monkeypatch, tiny_pipeline_dir):
    monkeypatch.setenv("NBHELPERS_TOY_MODEL", str(tiny_pipeline_dir))
    assert locations.toy_model_dir() == tiny_pipeline_dir.resolve()
    pipe = models.load_pipeline("toy", device="cpu")
    assert pipe.unet.config.sample_size == 8


def test_toy_model_stays_on_the_cpu_in_float32_with_device_auto(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.resolve_device("auto", "toy") == "cpu"
    assert models.resolve_device("auto", "CompVis/stable-diffusion-v1-4") == "cuda"
    assert models.resolve_device("cpu", "CompVis/stable-diffusion-v1-4") == "cpu"
