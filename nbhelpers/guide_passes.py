"""What the sampling loop runs for a guide's needs: the UNet passes and the step.

A guide declares what it needs (:class:`~nbhelpers.guidance.GuideNeeds`); the loop of
:mod:`nbhelpers.sampling` asks this module for it, once per step:

* :func:`predict_branches`: the unconditional and conditional passes (batched exactly as plain
  CFG always was, so its results do not change), and, where declared, the weak model's pass at
  the prompt (autoguidance) and the attention-perturbed pass at the prompt (PAG);
* :func:`guided_step`: the scheduler's step, or CFG++'s DDIM step that re-noises with the
  unconditional prediction (:func:`cfgpp_ddim_step`); :func:`check_sampler` says at once when
  the scheduler cannot do what the guide asks.

Perturbed attention (Ahn et al. 2024): in the chosen blocks every self-attention's
map is replaced by the identity, so each token keeps its own value, ``to_out(to_v(x))``
(:class:`IdentitySelfAttention`); :func:`perturbed_self_attention` swaps the processors in for
one pass and always puts the originals back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from nbhelpers.guidance import GuideNeeds


class IdentitySelfAttention:
    """A diffusers attention processor whose attention map is the identity (PAG's perturbation):
    the output is ``to_out(to_v(x))``, with the module's norms, residual and output scale."""

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None,
                 *args, **kwargs) -> Tensor:
        if encoder_hidden_states is not None:
            raise ValueError("IdentitySelfAttention perturbs self-attention only; it was set on "
                             "a cross-attention module")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        shape = hidden_states.shape
        if hidden_states.ndim == 4:
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        out = attn.to_out[1](attn.to_out[0](attn.to_v(hidden_states)))
        if len(shape) == 4:
            out = out.transpose(1, 2).reshape(shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _blocks(unet) -> dict[str, torch.nn.Module]:
    blocks = {"mid": unet.mid_block}
    blocks.update({f"down.{i}": b for i, b in enumerate(unet.down_blocks)})
    blocks.update({f"up.{i}": b for i, b in enumerate(unet.up_blocks)})
    return {name: b for name, b in blocks.items() if b is not None}


def _self_attentions(block: torch.nn.Module) -> list[torch.nn.Module]:
    from diffusers.models.attention_processor import Attention

    return [m for name, m in block.named_modules()
            if name.endswith("attn1") and isinstance(m, Attention)]


def self_attention_modules(unet, layers: Sequence[str]) -> list[torch.nn.Module]:
    """The self-attention modules of the UNet blocks ``layers`` (``"mid"``, ``"down.N"``,
    ``"up.N"``); a block that is not there, or has no self-attention, is an error naming the
    blocks that have one."""
    blocks = _blocks(unet)
    with_attention = [n for n, b in blocks.items() if _self_attentions(b)]
    modules = []
    for layer in layers:
        found = _self_attentions(blocks[layer]) if layer in blocks else []
        if not found:
            raise ValueError(f"UNet block {layer!r} has no self-attention to perturb; this "
                             f"UNet's blocks with one: {', '.join(with_attention)}")
        modules += found
    return modules


@contextlib.contextmanager
def perturbed_self_attention(unet, layers: Sequence[str]) -> Iterator[None]:
    """Within the block, the self-attention of ``layers`` is PAG's identity attention
    (:class:`IdentitySelfAttention`); the original processors are restored on leaving, also
    after an error."""
    modules = self_attention_modules(unet, layers)
    saved = [m.processor for m in modules]
    try:
        for m in modules:
            m.set_processor(IdentitySelfAttention())
        yield
    finally:
        for m, processor in zip(modules, saved, strict=True):
            m.set_processor(processor)


def _run(unet, model_in: Tensor, t, emb: Tensor, unet_batch: int) -> Tensor:
    """The UNet on ``model_in`` with ``emb``, ``unet_batch`` rows per call, in its own device
    and dtype; the result in ``model_in``'s."""
    x, e = model_in.to(unet.device, unet.dtype), emb.to(unet.device, unet.dtype)
    eps = torch.cat([unet(x[j:j + unet_batch], t, encoder_hidden_states=e[j:j + unet_batch]).sample
                     for j in range(0, len(x), unet_batch)])
    return eps.to(model_in.device, model_in.dtype)


def predict_branches(unet, needs: GuideNeeds, sched, latents: Tensor, emb_uncond: Tensor,
                     emb_cond: Tensor, t, unet_batch: int
                     ) -> tuple[Tensor | None, Tensor, dict[str, Tensor]]:
    """``(eps_uncond or None, eps_cond, more)`` for one step of the ``K`` rows of ``latents``;
    ``more`` holds ``eps_weak`` and ``eps_perturbed`` where ``needs`` asks for them."""
    K = len(latents)
    if needs.uncond:
        model_in = sched.scale_model_input(torch.cat([latents, latents]), t)
        eps = _run(unet, model_in, t, torch.cat([emb_uncond, emb_cond]), unet_batch)
        eps_uncond, eps_cond = eps.chunk(2)
        model_cond = model_in[K:]
    else:
        model_cond = sched.scale_model_input(latents, t)
        eps_uncond, eps_cond = None, _run(unet, model_cond, t, emb_cond, unet_batch)
    more = {}
    if needs.weak is not None:
        more["eps_weak"] = _run(needs.weak, model_cond, t, emb_cond, unet_batch)
    if needs.perturbed:
        with perturbed_self_attention(unet, needs.perturbed):
            more["eps_perturbed"] = _run(unet, model_cond, t, emb_cond, unet_batch)
    return eps_uncond, eps_cond, more


def check_sampler(sched, needs: GuideNeeds) -> None:
    """Raise at once when ``sched`` cannot take the step ``needs`` asks for (CFG++: DDIM,
    predicting eps, without clipping or thresholding)."""
    from diffusers import DDIMScheduler

    if not needs.renoise_uncond:
        return
    config = sched.config
    if (not isinstance(sched, DDIMScheduler) or config.prediction_type != "epsilon"
            or config.clip_sample or config.thresholding):
        raise ValueError(
            f"CFG++ re-noises with the unconditional prediction in a DDIM step; "
            f"{type(sched).__name__} (prediction {config.get('prediction_type')!r}) cannot: "
            "use DDIMScheduler.from_config(pipe.scheduler.config) with clip_sample=False")


def cfgpp_ddim_step(sched, eps_guided: Tensor, eps_uncond: Tensor, t, latents: Tensor) -> Tensor:
    """CFG++'s DDIM step (Chung et al. 2024; eta = 0): ``x0`` from the guided
    prediction, re-noised with the unconditional one,
    ``x_prev = sqrt(ab_prev) (x_t - sqrt(1 - ab) eps_guided) / sqrt(ab) + sqrt(1 - ab_prev)
    eps_uncond``, with ``ab_prev`` as diffusers' DDIM takes it."""
    t = int(t)
    prev = t - sched.config.num_train_timesteps // sched.num_inference_steps
    ab = sched.alphas_cumprod[t]
    ab_prev = sched.alphas_cumprod[prev] if prev >= 0 else sched.final_alpha_cumprod
    ab, ab_prev = (a.to(latents.device, latents.dtype) for a in (ab, ab_prev))
    x0 = (latents - (1 - ab).sqrt() * eps_guided) / ab.sqrt()
    return ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps_uncond


def guided_step(sched, needs: GuideNeeds, eps_guided: Tensor, eps_uncond: Tensor | None, t,
                latents: Tensor) -> Tensor:
    """``x_prev``: the scheduler's step with the guided prediction, or CFG++'s
    (:func:`cfgpp_ddim_step`) when the guide re-noises with ``eps_uncond``."""
    if needs.renoise_uncond:
        return cfgpp_ddim_step(sched, eps_guided, eps_uncond, t, latents)
    return sched.step(eps_guided, t, latents).prev_sample
