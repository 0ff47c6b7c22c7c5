"""The Stable Diffusion sampling loop with classifier-free guidance, written out.

:func:`sample_cfg` is diffusers' ``StableDiffusionPipeline.__call__`` reduced to its steps, with
three differences that matter for teaching:

* it renders **many guidance scales at once** from the same starting noise, packing the
  unconditional and conditional branches of all of them into UNet batches of a chosen size;
* it honours the scale convention everywhere: ``s = 0`` is the unconditional model and
  ``s = 1`` the conditional one. (diffusers' pipeline skips guidance altogether when
  ``guidance_scale <= 1`` and then runs the *conditional* model, so its ``s = 0`` is not the
  unconditional model.)
* a per-step ``callback`` sees the unconditional, conditional and guided noise predictions and
  the matching ``x0`` estimates, for plots and widgets.

It works with the DDPM-family schedulers of SD 1.x (DDIM, PNDM, DDPM, ...), whose latents are
``x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nbhelpers import checks
from nbhelpers.diffusion import eps_to_x0
from nbhelpers.guidance import Guide, build_guide, cfg_guide, needs_of
from nbhelpers.guide_passes import check_sampler, guided_step, predict_branches
from nbhelpers.images import vae_scale_factor
from nbhelpers.precision import decode_batch_size, unet_batch_size


@dataclass
class GuidedStep:
    """What :func:`sample_cfg` hands its callback after each denoising step.

    All tensors have one row per guidance scale, shape ``(K, 4, h, w)`` (latent space).
    """

    i: int                #: step index, 0 .. num_steps - 1
    t: int                #: the scheduler's timestep
    scales: Tensor        #: the effective scale of each row at this step, shape ``(K,)``
    latents: Tensor       #: x_t before the step
    eps_uncond: Tensor    #: for the negative (or empty) prompt; None if the guide skips it
    eps_cond: Tensor      #: noise prediction for the prompt
    eps_guided: Tensor    #: the combination that the scheduler steps with
    x0_uncond: Tensor
    x0_cond: Tensor
    x0_guided: Tensor


@torch.no_grad()
def encode_prompts(pipe, prompts: Sequence[str]) -> Tensor:
    """Text-encoder hidden states ``(B, 77, width)`` for prompts, as SD 1.x conditions on them.

    Prompts are padded to the tokenizer's ``model_max_length`` (77) and cut there. A
    placeholder the model has not learned (``<my-style>`` before its embedding is loaded) gets
    an :class:`~nbhelpers.ti.pipeline.UnknownTokenWarning`.
    """
    from nbhelpers.ti.pipeline import warn_unknown_placeholders

    tok = pipe.tokenizer
    warn_unknown_placeholders(tok, prompts, stacklevel=4)
    _warn_cut(tok, prompts)
    ids = tok(list(prompts), padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="pt").input_ids
    return pipe.text_encoder(ids.to(pipe.text_encoder.device))[0]


def _warn_cut(tok, prompts: Sequence[str]) -> None:
    """Warn, naming the first word lost, when a prompt is longer than the text encoder reads
    (diffusers cuts it silently in its own loop; A1111 would encode it in 75-token chunks)."""
    room = tok.model_max_length
    for prompt in dict.fromkeys(prompts):
        ids = tok(prompt, truncation=False).input_ids
        if len(ids) > room:
            lost = tok.decode(ids[room - 1:-1]).strip()
            warnings.warn(f"prompt cut at the text encoder's {room} tokens: {len(ids) - room} "
                          f"token(s) are not read, from {checks.shorten(lost, 60)!r} on; "
                          "shorten the prompt", stacklevel=5)


def _check_args(pipe, prompts: Sequence[object], negative_prompt: object, scales: Sequence,
                seeds: Sequence, *, num_steps: object, height: object, width: object,
                unet_batch: object, rescale_phi: object, scale_name: str = "scales",
                prompt_name: str = "prompt") -> list[float]:
    """The arguments of :func:`sample_cfg` and :func:`sample_prompts`, checked before any
    work with messages that name them; returns the scales as floats."""
    checks.check_pipe(pipe)
    for prompt in prompts:
        checks.check_text(prompt, prompt_name)
    checks.check_text(negative_prompt, "negative_prompt")
    s_list = [checks.check_scale(s, scale_name) for s in scales]
    for seed in seeds:
        checks.check_seed(seed, "seed" if len(seeds) == 1 else "seeds")
    most = int(getattr(pipe.scheduler.config, "num_train_timesteps", 1000))
    checks.check_int(num_steps, "num_steps", minimum=1, maximum=most)
    for name, value in (("height", height), ("width", width)):
        if value is not None:
            checks.check_int(value, name, minimum=8)
    if unet_batch is not None:
        checks.check_int(unet_batch, "unet_batch", minimum=1)
    checks.check_number(rescale_phi, "rescale_phi", minimum=0, maximum=1)
    return s_list


def _scale_values(scales: object) -> tuple[list, str]:
    """``scales`` of :func:`sample_cfg` as a list, and the name its check gives a bad one
    (``scale`` for one number, ``scales`` for several)."""
    if isinstance(scales, np.ndarray | Tensor):
        scales = scales.tolist()   # numbers, for the checks; a 0-d array is one number
    if np.isscalar(scales) or isinstance(scales, (str, bytes)):
        return [scales], "scale"
    if not isinstance(scales, Sequence):
        raise TypeError(f"scales must be a number or a sequence of numbers, got "
                        f"{checks.shorten(repr(scales))}")
    return list(scales), "scales"


def _check_pipeline(pipe) -> None:
    sched = pipe.scheduler
    if not hasattr(sched, "alphas_cumprod") or float(sched.init_noise_sigma) != 1.0:
        raise ValueError(
            f"{type(sched).__name__} is not a DDPM-family scheduler (x_t = sqrt(alpha_bar) x0 "
            "+ sqrt(1 - alpha_bar) eps); use DDIMScheduler.from_config(pipe.scheduler.config)")


@torch.no_grad()
def sample_cfg(pipe, prompt: str, scales: float | Sequence[float], *, negative_prompt: str = "",
               num_steps: int = 20, seed: int = 0, height: int | None = None,
               width: int | None = None, unet_batch: int | None = None,
               rescale_phi: float = 0.0,
               interval: tuple[int, int] | None = None, guide: Guide = cfg_guide,
               callback: Callable[[GuidedStep], None] | None = None,
               output: str = "np") -> np.ndarray | Tensor:
    """Render ``prompt`` at each guidance scale, all from the same initial noise.

    Steps (the loop a notebook shows, numbered as in the pipeline):
        1. Encode the prompt and the negative prompt (the empty prompt by default).
        2. Draw one initial latent from ``seed`` (as diffusers does) and copy it K times.
        3. For each timestep: run the UNet on the unconditional and conditional branches of all
           K rows, ``unet_batch`` rows per call; combine them with ``s`` per row through the
           guide (:mod:`nbhelpers.guidance`: plain CFG, optionally limited to a timestep
           ``interval``, then rescaled by ``rescale_phi``); step the scheduler; report to
           ``callback``.
        4. Decode the latents with the VAE.

    Args:
        pipe: a ``StableDiffusionPipeline`` (see :func:`nbhelpers.models.load_pipeline`).
        scales: one scale, or K scales rendered together.
        negative_prompt: the prompt of the unconditional branch (the empty prompt by default).
        rescale_phi: guidance rescale, 0 (none) to 1 (:func:`~nbhelpers.guidance.rescale_guide`).
        interval: ``(t_low, t_high)``: guide only there, s = 1 elsewhere
            (:func:`~nbhelpers.guidance.interval_guide`).
        guide: the combination that ``interval`` and ``rescale_phi`` wrap; plain CFG by default
            (a :data:`~nbhelpers.guidance.Guide`).
        unet_batch: rows per UNet call (both branches count); bigger is faster until memory
            runs out. None: as many as the device's free memory holds, at most 16
            (:func:`nbhelpers.precision.unet_batch_size`).
        output: ``"np"`` for ``(K, H, W, 3)`` floats in [0, 1], ``"latents"`` for the final
            latents ``(K, 4, h, w)``.

    Returns:
        the K images (or latents), in the order of ``scales``.

    Raises:
        TypeError, ValueError: an argument of the wrong type or out of range (a NaN or
            infinite scale, ``num_steps`` not a whole number in 1 .. the scheduler's training
            steps, a seed outside 0 .. 2**63 - 1, ...); the message names the argument.
    """
    values, name = _scale_values(scales)
    s_list = _check_args(pipe, [prompt], negative_prompt, values, [seed], num_steps=num_steps,
                         height=height, width=width, unet_batch=unet_batch,
                         rescale_phi=rescale_phi, scale_name=name)
    if not s_list:
        raise ValueError("scales is empty; give at least one guidance scale")
    K = len(s_list)
    # 1. the two prompts, each repeated for the K rows
    emb = encode_prompts(pipe, [negative_prompt, prompt])
    # 2. one initial latent from the seed, shared by every scale
    latents = initial_latents(pipe, [seed], height, width).repeat(K, 1, 1, 1)
    if unet_batch is None:
        unet_batch = unet_batch_size(pipe, height, width, upper=16)
    guide = build_guide(rescale_phi=rescale_phi, interval=interval, inner=guide)
    return _guided_loop(pipe, emb[:1].expand(K, -1, -1), emb[1:].expand(K, -1, -1), latents,
                        s_list, guide, num_steps=num_steps, unet_batch=unet_batch,
                        callback=callback, output=output)


def initial_latents(pipe, seeds: Sequence[int], height: int | None = None,
                    width: int | None = None) -> Tensor:
    """One starting latent per seed, drawn as diffusers draws it (CPU generator, then moved):
    ``(len(seeds), 4, height / 8, width / 8)`` on the UNet's device and dtype."""
    for seed in seeds:
        checks.check_seed(seed, "seeds")
    unet = pipe.unet
    vae_factor = vae_scale_factor(pipe.vae)
    height = height or unet.config.sample_size * vae_factor
    width = width or unet.config.sample_size * vae_factor
    if height % vae_factor or width % vae_factor:
        raise ValueError(f"height and width must be multiples of {vae_factor}, got "
                         f"{height}x{width}")
    shape = (1, unet.config.in_channels, height // vae_factor, width // vae_factor)
    rows = [torch.randn(shape, generator=torch.Generator(device="cpu").manual_seed(int(s)),
                        dtype=unet.dtype) for s in seeds]
    return torch.cat(rows).to(unet.device) * pipe.scheduler.init_noise_sigma


@torch.no_grad()
def sample_prompts(pipe, prompts: Sequence[str], scale: float, *, seeds: Sequence[int] | None
                   = None, seed: int = 0, negative_prompt: str = "", num_steps: int = 20,
                   batch: int = 32, unet_batch: int | None = None, rescale_phi: float = 0.0,
                   guide: Guide = cfg_guide, output: str = "np") -> np.ndarray | Tensor:
    """Render many prompts at one guidance scale, in batches, each from its own seed.

    The same loop as :func:`sample_cfg` (so any ``s``, also ``s <= 1``); image ``i`` starts
    from the noise of ``seeds[i]`` (default ``seed + i``), so it does not depend on
    ``batch``, and equals ``sample_cfg(pipe, prompts[i], scale, seed=seeds[i])``.
    ``unet_batch`` None: as many rows as the device's free memory holds, at most 64;
    ``rescale_phi`` and ``guide`` as in :func:`sample_cfg`.

    Returns:
        ``(N, H, W, 3)`` floats in [0, 1] (or the latents with ``output="latents"``).
    """
    if isinstance(prompts, str):
        raise TypeError(f"prompts must be a list of prompts, got the string "
                        f"{checks.shorten(repr(prompts))}; use sample_cfg for one prompt")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty; give at least one prompt")
    if seeds is None:
        seeds = list(range(checks.check_seed(seed, "seed", len(prompts)),
                           seed + len(prompts)))
    seeds = list(seeds)
    if len(seeds) != len(prompts):
        raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts; give one each")
    checks.check_int(batch, "batch", minimum=1)
    _check_args(pipe, prompts, negative_prompt, [scale], seeds, num_steps=num_steps,
                height=None, width=None, unet_batch=unet_batch, rescale_phi=rescale_phi,
                scale_name="scale", prompt_name="prompts")
    guide = build_guide(rescale_phi=rescale_phi, inner=guide)
    neg = encode_prompts(pipe, [negative_prompt])
    if unet_batch is None:
        unet_batch = unet_batch_size(pipe, upper=64)
    parts = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        cond = encode_prompts(pipe, chunk)
        parts.append(_guided_loop(pipe, neg.expand(len(chunk), -1, -1), cond,
                                  initial_latents(pipe, seeds[i:i + batch]),
                                  [float(scale)] * len(chunk), guide, num_steps=num_steps,
                                  unet_batch=unet_batch, output=output))
    return np.concatenate(parts) if output == "np" else torch.cat(parts)


def _guided_loop(pipe, emb_uncond: Tensor, emb_cond: Tensor, latents: Tensor,
                 s_list: Sequence[float], guide: Guide, *, num_steps: int, unet_batch: int,
                 callback: Callable[[GuidedStep], None] | None = None,
                 output: str = "np") -> np.ndarray | Tensor:
    """Steps 3 and 4 of :func:`sample_cfg` for ``K`` rows: row ``k`` denoises ``latents[k]``
    with its own unconditional and conditional embeddings and scale ``s_list[k]``, combined by
    ``guide`` (a :data:`~nbhelpers.guidance.Guide`)."""
    _check_pipeline(pipe)
    if output not in ("np", "latents"):
        raise ValueError(f"output must be 'np' or 'latents', got {output!r}")
    if unet_batch < 1:
        raise ValueError(f"unet_batch must be at least 1, got {unet_batch}")
    unet, sched = pipe.unet, pipe.scheduler
    device, dtype = unet.device, unet.dtype
    emb_uncond, emb_cond = emb_uncond.to(dtype), emb_cond.to(dtype)
    sched.set_timesteps(num_steps, device=device)
    alpha_bar = sched.alphas_cumprod.to(device)

    # 3. the denoising loop (the passes and the step that the guide needs: guide_passes)
    needs = needs_of(guide)
    check_sampler(sched, needs)
    s = torch.tensor(s_list, device=device)
    for i, t in enumerate(sched.timesteps):
        t_int = int(t)
        eps_uncond, eps_cond, more = predict_branches(unet, needs, sched, latents, emb_uncond,
                                                      emb_cond, t, unet_batch)
        eps_guided, s_now = guide(eps_uncond, eps_cond, s, t_int, **more)
        if callback is not None:
            ab = alpha_bar[t_int].to(eps_cond.dtype)
            x0 = [None if e is None else eps_to_x0(latents, e, ab)
                  for e in (eps_uncond, eps_cond, eps_guided)]
            callback(GuidedStep(i, t_int, s_now, latents, eps_uncond, eps_cond, eps_guided, *x0))
        latents = guided_step(sched, needs, eps_guided, eps_uncond, t, latents)

    if output == "latents":
        return latents
    # 4. decode
    return decode_latents(pipe, latents)


@torch.no_grad()
def decode_latents(pipe, latents: Tensor, batch: int | None = None) -> np.ndarray:
    """VAE-decode latents ``(K, 4, h, w)`` to images ``(K, H, W, 3)`` in [0, 1].

    ``batch`` images per decoder call; None: as many as the device's free memory holds, at
    most 16 (:func:`nbhelpers.precision.decode_batch_size`).
    """
    vae = pipe.vae
    vae_factor = vae_scale_factor(vae)
    batch = batch or decode_batch_size(pipe, latents.shape[-2] * vae_factor,
                                       latents.shape[-1] * vae_factor)
    scale = vae.config.scaling_factor
    parts = [vae.decode(latents[j:j + batch].to(vae.dtype) / scale).sample
             for j in range(0, len(latents), batch)]
    images = (torch.cat(parts).float() / 2 + 0.5).clamp(0, 1)
    return images.permute(0, 2, 3, 1).cpu().numpy()
