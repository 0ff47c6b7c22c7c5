"""The Python API's entry points check their arguments before any work (#34 item 6), with
messages that name the argument in keyword form (``num_steps=0``), through one module,
nbhelpers.checks: ``sample_cfg``, ``sample_prompts``, ``load_pipeline`` and the widgets'
constructors."""

from __future__ import annotations

import math

import pytest

from nbhelpers import checks


@pytest.fixture(scope="module")
def toy():
    from nbhelpers.models import load_pipeline

    return load_pipeline("toy")


@pytest.mark.parametrize("change, error, says", [
    ({"scales": math.nan}, ValueError, "scale=nan: must be a finite number"),
    ({"scales": math.inf}, ValueError, "scale=inf: must be a finite number"),
    ({"scales": [1.0, math.nan]}, ValueError, "scales=nan: must be a finite number"),
    ({"scales": -1e30}, ValueError, "scale=-1e+30: must be between -1,000 and 1,000"),
    ({"scales": "abc"}, TypeError, "scale='abc': must be a number"),
    ({"scales": {1, 2}}, TypeError, "scales must be a number or a sequence of numbers"),
    ({"num_steps": -1}, ValueError, "num_steps=-1: must be between 1 and 1,000"),
    ({"num_steps": 0}, ValueError, "num_steps=0: must be between 1 and 1,000"),
    ({"num_steps": 2.5}, TypeError, "num_steps=2.5: must be a whole number"),
    ({"height": 0}, ValueError, "height=0: must be at least 8"),
    ({"width": 12}, ValueError, "multiples of 8"),
    ({"unet_batch": 0}, ValueError, "unet_batch=0: must be at least 1"),
    ({"rescale_phi": math.nan}, ValueError, "rescale_phi=nan: must be a finite number"),
    ({"rescale_phi": 2}, ValueError, "rescale_phi=2: must be between 0 and 1"),
    ({"pipe": None}, TypeError, "pipe=None: must be a Stable Diffusion pipeline"),
    ({"prompt": None}, TypeError, "prompt=None: must be a string"),
    ({"negative_prompt": None}, TypeError, "negative_prompt=None: must be a string"),
    ({"seed": 2**70}, ValueError, "seed=1180591620717411303424: must be between 0 and"),
    ({"seed": "x"}, TypeError, "seed='x': must be a whole number"),
    ({"seed": True}, TypeError, "seed=True: must be a whole number"),
])
def test_sample_cfg_names_the_bad_argument(toy, change, error, says):
    from nbhelpers.sampling import sample_cfg

    kwargs = {"pipe": toy, "prompt": "a red circle", "scales": 7.5, "num_steps": 1, **change}
    with pytest.raises(error) as err:
        sample_cfg(**kwargs)
    assert says in str(err.value)


def test_sample_cfg_still_takes_every_kind_of_scale(toy, one_torch_thread):
    import numpy as np
    import torch

    from nbhelpers.sampling import sample_cfg

    for scales, k in ((3, 1), (np.float32(3), 1), ([0, 1.5], 2), (np.array([1.0, 2.0]), 2),
                      (torch.tensor([1.0, 2.0, 3.0]), 3), (torch.tensor(2.0), 1)):
        assert sample_cfg(toy, "a red circle", scales, num_steps=1,
                          output="latents").shape[0] == k


@pytest.mark.parametrize("change, error, says", [
    ({"prompts": "a red circle"}, TypeError, "prompts must be a list of prompts"),
    ({"prompts": ["a", None]}, TypeError, "prompts=None: must be a string"),
    ({"scale": math.nan}, ValueError, "scale=nan: must be a finite number"),
    ({"seeds": [0, -1]}, ValueError, "seeds=-1: must be between 0 and"),
    ({"seed": checks.MAX_SEED}, ValueError, "2 seeds from it pass the largest"),
    ({"batch": 0}, ValueError, "batch=0: must be at least 1"),
    ({"num_steps": 0}, ValueError, "num_steps=0"),
])
def test_sample_prompts_names_the_bad_argument(toy, change, error, says):
    from nbhelpers.sampling import sample_prompts

    kwargs = {"pipe": toy, "prompts": ["a", "b"], "scale": 7.5, "num_steps": 1, **change}
    with pytest.raises(error) as err:
        sample_prompts(**kwargs)
    assert says in str(err.value)


def test_load_pipeline_names_the_bad_argument(monkeypatch):
    import torch

    from nbhelpers.models import load_pipeline

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda': torch sees no CUDA GPU.*"
                                         r"use device='cpu' or 'auto'"):
        load_pipeline("toy", device="cuda")
    with pytest.raises(ValueError, match=r"device='gpu': unknown device"):
        load_pipeline("toy", device="gpu")
    with pytest.raises(TypeError, match=r"device=None: must be"):
        load_pipeline("toy", device=None)
    with pytest.raises(ValueError, match=r"unknown dtype 'float8'.*'bfloat16'"):
        load_pipeline("toy", dtype="float8")
    with pytest.raises(ValueError, match=r"model must be 'toy'.*got None"):
        load_pipeline(None)


def test_the_widgets_constructors_name_the_bad_argument(toy):
    import numpy as np

    from nbhelpers.widgets import Debouncer, ImageSlider, LiveGuidanceSlider, TrainingMonitor

    def frame(v):
        return np.zeros((4, 4, 3), np.uint8)

    cases = [
        (lambda: ImageSlider(None, description="t", min=0, max=1), TypeError, "render=None"),
        (lambda: ImageSlider(frame, description="t", min=math.nan, max=1), ValueError,
         "min=nan: must be a finite number"),
        (lambda: ImageSlider(frame, description="t", min=0, max=1, step=0), ValueError,
         "step=0: must be greater than 0"),
        (lambda: ImageSlider(frame, description=None, min=0, max=1), TypeError,
         "description=None"),
        (lambda: LiveGuidanceSlider(None, "x"), TypeError, "pipe=None: must be a Stable"),
        (lambda: LiveGuidanceSlider(toy, None), TypeError, "prompt=None"),
        (lambda: LiveGuidanceSlider(toy, "x", s=math.nan), ValueError, "s=nan"),
        (lambda: LiveGuidanceSlider(toy, "x", s=30), ValueError, "s=30: must be between 0"),
        (lambda: LiveGuidanceSlider(toy, "x", seed=-1), ValueError, "seed=-1"),
        (lambda: LiveGuidanceSlider(toy, "x", steps=1), ValueError, "steps=1: must be between"),
        (lambda: TrainingMonitor(0), ValueError, "total=0: must be at least 1"),
        (lambda: TrainingMonitor(10, every=2.5), TypeError, "every=2.5: must be a whole"),
        (lambda: Debouncer(None), TypeError, "fn=None: must be a function"),
        (lambda: Debouncer(print, delay=-1), ValueError, "delay=-1: must be at least 0"),
    ]
    for make, error, says in cases:
        with pytest.raises(error) as err:
            make()
        assert says in str(err.value), (says, str(err.value))


def test_long_values_are_cut_in_messages():
    from nbhelpers.sampling import sample_cfg

    with pytest.raises(TypeError) as err:
        sample_cfg(object(), "x" * 100_000, 7.5)
    assert len(str(err.value)) < 300
    assert checks.shorten("y" * 3000).endswith("... (3,000 characters)")
    with pytest.raises(ValueError) as err:
        checks.check_choice("z" * 10_000, ["a", "b"], "thing")
    assert len(str(err.value)) < 300
