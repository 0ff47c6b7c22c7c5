"""Runtime profiles: the one place that decides how much work a notebook does.

Four profiles, chosen by the environment variable ``NBHELPERS_PROFILE``:

* ``smoke``:  CI. The embedded toy model, tiny step counts; every cell still runs.
* ``cpu``:    the toy model with full step counts; minutes on a laptop.
* ``gpu``:    Stable Diffusion 1.x on CUDA.
* ``sd-cpu``: the ``gpu`` profile's code path (its branches, prompts and SD-only cells) on the
  CPU, with SD 1.4's structure and random weights (``rehearsal-mini``,
  :mod:`nbhelpers.rehearsal`) and small budgets: CI's rehearsal of the SD cells.

With the variable unset the default is ``gpu`` when CUDA and SD 1.x weights are both
present on this machine, else ``cpu``. Notebooks read budgets (sample counts, step counts)
and the model choice from :func:`get_profile`; nothing else differs between profiles.

Two sets of budgets: the **toy budgets** (``n_samples`` ... ``sample_steps_2d``) are for the
sections that always run on the toy model or the 2-D world, on the CPU in float32, whatever the
profile; the **model budgets** (``sd_steps``, ``sd_ti_steps``, ``sd_batch``) are for the cells
that run the profile's ``model``: the toy model in ``smoke`` and ``cpu``, SD 1.x in ``gpu``, the
rehearsal model in ``sd-cpu``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Literal, get_args

from nbhelpers import threads as _threads
from nbhelpers.locations import find_sd_weights

ProfileName = Literal["smoke", "cpu", "gpu", "sd-cpu"]
PROFILE_NAMES: tuple[str, ...] = get_args(ProfileName)
ENV_VAR = "NBHELPERS_PROFILE"


@dataclass(frozen=True)
class Profile:
    """Budgets and model choice for one runtime profile.

    Attributes:
        name: ``"smoke"``, ``"cpu"``, ``"gpu"`` or ``"sd-cpu"``.
        model: the model of the model cells: ``"toy"`` (the embedded tiny Stable Diffusion),
            an SD 1.x hub id or folder, or ``"rehearsal-mini"``.
        device: torch device of ``model`` (``"cpu"`` or ``"cuda"``).
        dtype: its weights' dtype: ``"float32"``, or ``"auto"`` (bf16 where the GPU has it
            natively, else fp16: :mod:`nbhelpers.precision`).
        n_samples: Monte Carlo sample count for statistical checks and scatter plots.
        sample_steps: denoising steps of a sampler run.
        train_steps: optimisation steps of a training run in a notebook.
        ti_steps: optimisation steps of one textual-inversion run on the toy model.
        ti_side_steps: the same for the side runs that a notebook shows but checks nothing
            of (comparisons of init words, vector counts, image counts).
        ti_batch: images per step of those runs (smoke: 4, half the work per step and still
            enough to learn the unnamed style; 8 otherwise).
        render_steps: DDIM steps of a toy-model render that is measured (share of a style,
            mix of shapes); the evaluator reads the toy model's images at 10 steps as at 20.
        n_images: images generated for a measured figure.
        train_steps_2d: optimisation steps for each small 2-D network (notebook 03).
        sample_steps_2d: sampler steps on the 2-D world (notebook 03).
        sd_steps: sampling steps of a render with ``model``.
        sd_ti_steps: optimisation steps of a textual-inversion run on ``model``.
        sd_batch: images per textual-inversion step on ``model``.
        reason: one line saying why this profile was picked.
    """

    name: ProfileName
    model: str
    device: str
    dtype: str
    n_samples: int
    sample_steps: int
    train_steps: int
    ti_steps: int
    ti_side_steps: int
    ti_batch: int
    render_steps: int
    n_images: int
    train_steps_2d: int
    sample_steps_2d: int
    sd_steps: int
    sd_ti_steps: int
    sd_batch: int
    reason: str = ""

    @property
    def toy(self) -> bool:
        """True when the model cells run the toy model (so the evaluator can read them)."""
        return self.model == "toy"


_TOY_SMOKE = dict(n_samples=4_000, sample_steps=4, train_steps=20, ti_steps=300,
                  ti_side_steps=10, ti_batch=4, render_steps=10, n_images=8,
                  train_steps_2d=1_000, sample_steps_2d=50)
_TOY_FULL = dict(n_samples=100_000, sample_steps=50, train_steps=2_000, ti_steps=300,
                 ti_side_steps=300, ti_batch=8, render_steps=20, n_images=64,
                 train_steps_2d=5_000, sample_steps_2d=100)
#: Smoke keeps the cpu profile's 300 textual-inversion steps on the toy model: fewer leave the
#: learned word too weak for notebook 05's check to separate it from noise; it halves the images
#: per step instead, and the toy model's measured renders take 10 DDIM steps (the evaluator
#: reads them as it reads 20-step ones). The figures: docs/benchmarks.md, "The unnamed style"
#: and "Figures behind the defaults". Notebook 03's 2-D networks train 1,000 steps in smoke:
#: enough for its checks (learned eps within 25% RMS of the exact one, fidelity rising with s),
#: which fail with 30 sampling steps instead of 50, so those stay.
_BUDGETS: dict[str, Profile] = {
    "smoke": Profile("smoke", model="toy", device="cpu", dtype="float32", **_TOY_SMOKE,
                     sd_steps=10, sd_ti_steps=20, sd_batch=8),
    "cpu": Profile("cpu", model="toy", device="cpu", dtype="float32", **_TOY_FULL,
                   sd_steps=20, sd_ti_steps=300, sd_batch=8),
    "gpu": Profile("gpu", model="CompVis/stable-diffusion-v1-4", device="cuda", dtype="auto",
                   **_TOY_FULL, sd_steps=30, sd_ti_steps=3_000, sd_batch=4),
    "sd-cpu": Profile("sd-cpu", model="rehearsal-mini", device="cpu", dtype="float32",
                      **_TOY_SMOKE, sd_steps=4, sd_ti_steps=4, sd_batch=2),
}


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def get_profile(name: str | None = None) -> Profile:
    """Return the active :class:`Profile`.

    Args:
        name: force a profile; ``None`` reads ``NBHELPERS_PROFILE`` and falls back to the
            automatic choice (``gpu`` with CUDA and local SD 1.x weights, else ``cpu``).
            ``sd-cpu`` and ``sd_cpu`` are the same name.

    Every notebook calls it first, so it also applies the torch thread policy
    (:func:`nbhelpers.threads.ensure_applied`, once per process): before torch is imported,
    where it can still make waiting OpenMP threads sleep.

    Raises:
        ValueError: for an unknown name, ``gpu`` on a machine without CUDA, or a bad
            ``NBHELPERS_THREADS``.
    """
    _threads.ensure_applied()
    source = "argument"
    if name is None:
        name = os.environ.get(ENV_VAR, "").strip() or None
        source = f"{ENV_VAR}={name}"
    if name is None:
        cuda = _cuda_available()
        weights = find_sd_weights() if cuda else None
        if cuda and weights is not None:
            return replace(_BUDGETS["gpu"], model=str(weights),
                           reason=f"automatic: CUDA and SD 1.x weights at {weights}")
        why = "no CUDA device" if not cuda else "no SD 1.x weights found locally"
        return replace(_BUDGETS["cpu"], reason=f"automatic: {why}, so the toy model on the CPU")
    name = name.lower().replace("_", "-")
    if name not in _BUDGETS:
        raise ValueError(
            f"unknown profile {name!r} (from {source}); choose one of {', '.join(PROFILE_NAMES)}, "
            f"for example `export {ENV_VAR}=cpu`, or unset {ENV_VAR} for the automatic choice")
    if name == "gpu":
        if not _cuda_available():
            raise ValueError(
                f"profile 'gpu' (from {source}) needs CUDA, but torch.cuda.is_available() is False;"
                f" use `{ENV_VAR}=cpu` here (or `{ENV_VAR}=sd-cpu` to rehearse the SD cells on "
                "the CPU), or install a CUDA build of torch on a GPU machine")
        weights = find_sd_weights()
        model = str(weights) if weights is not None else _BUDGETS["gpu"].model
        return replace(_BUDGETS["gpu"], model=model, reason=f"chosen by {source}")
    return replace(_BUDGETS[name], reason=f"chosen by {source}")
