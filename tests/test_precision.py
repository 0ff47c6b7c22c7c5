"""Precision and batch sizes per device, with the device's capabilities and memory mocked."""

import pytest
import torch

from nbhelpers import precision
from nbhelpers.models import float32_pipeline, load_pipeline


@pytest.fixture()
def gpu(monkeypatch):
    """A pretend CUDA device: set its compute capability and free memory."""
    state = {"capability": (9, 0), "free": 80 * 2**30}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: state["capability"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (state["free"], 2**40))
    monkeypatch.delenv(precision.ENV_VAR, raising=False)
    return state


def test_bf16_only_with_native_support(gpu):
    for capability, expected in [((9, 0), "bf16"), ((8, 0), "bf16"), ((8, 6), "bf16"),
                                 ((7, 5), "fp16"), ((7, 0), "fp16"), ((6, 1), "fp16")]:
        gpu["capability"] = capability
        assert precision.pick_precision("cuda") == expected, capability
        assert precision.pick_precision("cuda:0") == expected
    assert precision.pick_precision("cpu") == "no"
    gpu["capability"] = (7, 5)                      # a T4
    assert precision.weights_dtype("cuda") == torch.float16
    assert not precision.native_bf16("cuda") and not precision.native_bf16("cpu")
    gpu["capability"] = (9, 0)                      # an H100 / H200
    assert precision.weights_dtype("cuda") == torch.bfloat16
    assert precision.weights_dtype("cpu") == torch.float32


def test_precision_override_and_bad_values(gpu, monkeypatch):
    monkeypatch.setenv(precision.ENV_VAR, "fp16")
    assert precision.pick_precision("cuda") == "fp16"
    monkeypatch.setenv(precision.ENV_VAR, "half")
    with pytest.raises(ValueError, match=r"NBHELPERS_PRECISION='half'.*no, bf16, fp16"):
        precision.pick_precision("cuda")
    monkeypatch.delenv(precision.ENV_VAR)
    assert precision.resolve_precision("auto", "cpu") == "no"
    assert precision.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="'fp32'"):
        precision.resolve_precision("fp32", "cpu")
    with pytest.raises(ValueError, match="needs a GPU"):
        precision.resolve_precision("fp16", "cpu")


def test_fit_batch():
    assert precision.fit_batch(None, 1e9, 32) == 32           # CPU: no limit from memory
    assert precision.fit_batch(10 * 2**30, 2**30, 32) == 7     # 70% of 10 GiB, 1 GiB each
    assert precision.fit_batch(2**20, 2**30, 32) == 1          # never below one
    assert precision.fit_batch(10**15, 2**30, 32) == 32        # never above the cap
    with pytest.raises(ValueError, match="upper"):
        precision.fit_batch(None, 1, 0)


class _Stub:
    """The parts of a pipeline that the batch-size functions read."""

    def __init__(self, device, dtype=torch.float16, sample_size=64):
        p = torch.nn.Parameter(torch.zeros(1, dtype=dtype))
        unet = type("U", (), {"config": type("C", (), {"sample_size": sample_size}),
                              "dtype": dtype, "device": torch.device(device)})
        vae = type("V", (), {"config": type("C", (), {"block_out_channels": (1, 2, 3, 4)}),
                             "device": torch.device(device)})
        self.unet, self.vae, self._p = unet, vae, p


def test_batch_sizes_follow_free_memory(gpu):
    sd = _Stub("cuda")
    gpu["free"] = 14 * 2**30                       # a 16 GB card with the weights loaded
    t4_unet, t4_decode = precision.unet_batch_size(sd), precision.decode_batch_size(sd)
    gpu["free"] = 130 * 2**30                      # an H200
    big_unet, big_decode = precision.unet_batch_size(sd), precision.decode_batch_size(sd)
    assert t4_unet < 32 and t4_decode < 16 and t4_unet >= 1 and t4_decode >= 1
    assert big_unet == 32 and big_decode == 16
    # twice the side, four times the latent pixels: a quarter of the rows
    gpu["free"] = 20 * 2**30                       # 70% of it: 20 rows of 0.7 GiB at 512 px
    assert precision.unet_batch_size(sd) == 20
    assert precision.unet_batch_size(sd, 1024, 1024) == 5
    # the CPU has no free-memory figure: the caller's cap
    assert precision.unet_batch_size(_Stub("cpu"), upper=64) == 64


def test_float32_pipeline_copies_only_half_precision(tiny_pipeline_dir):
    pipe = load_pipeline(str(tiny_pipeline_dir), device="cpu")
    with float32_pipeline(pipe) as same:
        assert same is pipe
    half = load_pipeline(str(tiny_pipeline_dir), device="cpu", dtype="bfloat16")
    with float32_pipeline(half) as twin:
        assert twin is not half and twin.unet.dtype == torch.float32
        assert twin.text_encoder.dtype == torch.float32 and twin.vae.dtype == torch.float32
    assert half.unet.dtype == torch.bfloat16 and half.text_encoder.dtype == torch.bfloat16
