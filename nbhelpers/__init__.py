"""nbhelpers: the support package behind the diffusion-guidance notebook series.

The notebooks import from here; nothing in here reads a notebook's globals.

Notation (the same in code, docstrings and the notebooks' markdown)
-------------------------------------------------------------------
==============  ===========================================================================
symbol          meaning
==============  ===========================================================================
``T``           number of training timesteps (1000 for Stable Diffusion)
``t``           integer timestep, ``0 <= t < T``; index into every schedule tensor
                (``t = 0`` is already one step noised; ``t = -1`` means clean data)
``beta``        ``beta[t]``, variance of the noise added at step t (Ho et al. 2020, eq. 2)
``alpha``       ``1 - beta``
``alpha_bar``   ``alpha_bar[t] = prod_{i<=t} alpha[i]``: the signal kept after step t
``sigma``       ``sqrt(1 - alpha_bar[t])``: standard deviation of the noise in ``x_t``
                (k-diffusion's sigma is ``sqrt((1 - alpha_bar) / alpha_bar)``; not used here)
``snr``         ``alpha_bar / (1 - alpha_bar)``, signal-to-noise ratio (Kingma et al. 2021)
``x0``          clean sample; ``x_t`` noisy sample at step t
``eps``         the Gaussian noise in ``x_t = sqrt(alpha_bar) x0 + sigma eps``
``eps_hat``     a model's prediction of ``eps``; ``x0_hat`` the matching estimate of ``x0``
``v``           ``sqrt(alpha_bar) eps - sigma x0`` (Salimans and Ho 2022)
``score``       ``grad_x log q_t(x)`` = ``-E[eps | x_t] / sigma`` (Song et al. 2021; Tweedie):
                the optimal ``eps_hat`` (the conditional mean of ``eps``) gives the score
                of the noised data ``q_t``; the sampled ``eps`` itself gives
                ``-eps / sigma``, the score of ``q(x_t | x0)`` for its own ``x0``
``s``           guidance scale, as diffusers' ``guidance_scale``: s = 0 unconditional,
                s = 1 conditional, s > 1 extrapolates. Papers that write ``w``
                (Ho and Salimans 2022) mean ``s = w + 1``.
==============  ===========================================================================

Modules, one idea each:

* math: :mod:`~nbhelpers.diffusion` (schedules, forward process, conversions, DDPM and DDIM
  steps), :mod:`~nbhelpers.guidance` (CFG combine, classifier guidance, rescale, interval, and
  the guides the SD loop combines its predictions with), :mod:`~nbhelpers.guides` (the guides
  since CFG: APG, CFG++, CFG-Zero*, autoguidance, PAG), :mod:`~nbhelpers.guide_passes` (the
  UNet passes and steps they need), :mod:`~nbhelpers.mixtures` (the exact
  2-D world), :mod:`~nbhelpers.grids` (the 2-D grids it is plotted and integrated on);
* models and loops: :mod:`~nbhelpers.toy2d` (small 2-D denoisers and a noisy classifier),
  :mod:`~nbhelpers.sampling` (the SD loop with CFG), :mod:`~nbhelpers.models` (one loader;
  SD 1.4-shaped random models), :mod:`~nbhelpers.locations` (where the models are on this
  machine), :mod:`~nbhelpers.rehearsal` (SD 1.4's structure with random weights),
  :mod:`~nbhelpers.precision` (dtypes and batch sizes per device), :mod:`nbhelpers.toy` (the
  shapes world, its evaluator and the tiny Stable Diffusion), :mod:`nbhelpers.ti` (textual
  inversion: images, captions, framing, training, embedding files);
* around them: :mod:`~nbhelpers.profile` (smoke/cpu/gpu budgets), :mod:`~nbhelpers.images`
  (the image convention, labelled grids), :mod:`~nbhelpers.sweep` (guidance-scale animations),
  :mod:`~nbhelpers.plotting`, :mod:`~nbhelpers.widgets` (with :mod:`~nbhelpers.static`, their
  pictures without a kernel), :mod:`~nbhelpers.progress`, :mod:`~nbhelpers.quiet` (library
  output while models load), :mod:`~nbhelpers.files` (atomic writes), :mod:`~nbhelpers.checks`
  (argument checks), :mod:`~nbhelpers.threads` (torch's CPU threads, chosen to hold beside a
  busy neighbour), :mod:`~nbhelpers.info`, :mod:`nbhelpers.cli`;
* the workshop: :mod:`~nbhelpers.course` (the one-day path and the extension, with teaching
  times), :mod:`nbhelpers.exercises` (functions learners write, the checks that answer them,
  and each lesson's recap).

The names a notebook or a script needs most are importable from the package itself
(``from nbhelpers import load_pipeline, sample_cfg, get_profile``; the list is ``__all__``).
They are loaded on first use (PEP 562), so ``import nbhelpers`` stays light: it imports
neither torch nor diffusers.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Where each public name lives: module (relative to the package) -> names.
_PUBLIC: dict[str, tuple[str, ...]] = {
    "models": ("load_pipeline", "resolve_model", "float32_pipeline"),
    "locations": ("find_sd_weights", "toy_model_dir"),
    "profile": ("get_profile", "Profile"),
    "sampling": ("sample_cfg", "sample_prompts", "decode_latents", "GuidedStep"),
    "guidance": ("cfg_combine", "cfg_guide", "rescale_guide", "interval_guide"),
    "mixtures": ("default_world", "GaussianMixture2D"),
    "grids": ("grid",),
    "plotting": ("image_grid",),
    "info": ("format_info",),
    # textual inversion: a folder of images to an embedding file, and the file back
    "ti.engine": ("train_from_folder",),
    "ti.formats": ("load_embedding", "save_embedding"),
    "ti.pipeline": ("add_embedding_to_pipeline",),
}
_HOME: dict[str, str] = {name: module for module, names in _PUBLIC.items() for name in names}

__all__ = list(_HOME)


def __getattr__(name: str):
    """Import a public name's module on first use and keep the name here (PEP 562)."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'nbhelpers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"nbhelpers.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
