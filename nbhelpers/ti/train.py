"""The textual-inversion training loop (Gal et al. 2022), built to avoid what users of existing
trainers complain about: slow steps, out-of-memory, NaN losses, lost runs, drifting vocabularies.

What is trained: only the rows of the text encoder's token-embedding table that belong to the
placeholder token (1 to N vectors), or to an existing word in overwrite mode. They live in a
separate fp32 parameter (:class:`~nbhelpers.ti.rows.TrainableRows`) spliced into the
frozen table, so

* no other row can change (no weight-decay drift, no masking of a 49408-row gradient);
* the UNet, VAE and text encoder are frozen and compute no weight gradients at all;
* the frozen UNet and text encoder are stored in the compute dtype of the precision
  (:mod:`nbhelpers.precision`: bf16 only on GPUs with native bf16, fp16 with a GradScaler on
  older ones, float32 on the CPU), while the trainable rows stay fp32 (no "attempting to
  unscale FP16 gradients"); both models get their own dtype back at the end;
* the VAE never runs in the step: latents are encoded once and cached (:mod:`.latents`).

The step, as numbered in notebook 05:
    1. draw a batch of cached latents (one posterior sample each), templates and captions;
    2. tokenise the prompts; embed them with the placeholder rows spliced in; run the text
       encoder;
    3. draw noise and timesteps, noise the latents (``q_sample``, DDPM eq. 4);
    4. predict the noise with the frozen UNet, conditioned on the text;
    5. loss = MSE to the noise (or to ``v`` for v-prediction models); backward reaches only
       the placeholder rows; AdamW step with the learning rate of the schedule (``cfg.lr``).

Safety: checkpoints (:mod:`.checkpoints`: vectors, optimizer, step, RNG) every N steps and at
the end, written atomically and flushed to the disk, the two newest kept; ``resume`` verifies
them, skips a damaged one with a warning that names it, and continues to the same result as an
uninterrupted run, also after the process was killed (SIGKILL); Ctrl-C saves and re-raises; a
non-finite loss stops the run with the last good vectors saved and advice.
Built on Accelerate: ``accelerate launch`` spreads the batch over several processes (GPUs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nbhelpers.diffusion import q_sample, schedule_at, velocity
from nbhelpers.precision import compute_dtype, resolve_precision
from nbhelpers.quiet import quiet_loading
from nbhelpers.ti.captions import draw_prompts
from nbhelpers.ti.checkpoints import remove_checkpoint_files, restore_checkpoint, save_checkpoint
from nbhelpers.ti.config import TIConfig
from nbhelpers.ti.embeddings import Embedding
from nbhelpers.ti.latents import LatentSet
from nbhelpers.ti.lr_schedule import lr_at, parse_lr_schedule
from nbhelpers.ti.pipeline import add_embedding_to_pipeline
from nbhelpers.ti.rows import Conditioner, TrainableRows

# --------------------------------------------------------------------------------------------
# Configuration, state, results
# --------------------------------------------------------------------------------------------


@dataclass
class TIState:
    """What the trainer hands its callback after each optimisation step."""

    step: int                       #: steps done (1-based)
    loss: float
    lr: float
    vectors: Tensor                 #: a detached copy, (n_vectors, width)
    preview: np.ndarray | None = None  #: (H, W, 3) uint8 grid, on preview steps


@dataclass
class TIResult:
    token: str
    token_strings: list[str]        #: what the token expands to in a prompt
    vectors: Tensor                 #: (n_vectors, width), fp32, CPU
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    interrupted: bool = False


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good vectors were kept."""


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------


def prepare_tokens(pipe, cfg: TIConfig) -> tuple[Embedding, list[int]]:
    """Put the token to train into the pipeline, initialised, and return it with its ids.

    A new placeholder gets ``n_vectors`` copies of the init word's row; in overwrite mode the
    word keeps its own row as the starting point. The checks (collisions, widths, tokenizer
    normalisation) are those of :func:`~nbhelpers.ti.pipeline.add_embedding_to_pipeline`.

    Raises:
        ValueError: an init word that is several tokens, an overwrite target that is not one
            vocabulary word, a placeholder that already exists (without overwrite).
    """
    tok = pipe.tokenizer
    table = pipe.text_encoder.get_input_embeddings().weight
    if cfg.overwrite:
        ids = tok(cfg.token, add_special_tokens=False).input_ids
        if len(ids) != 1 or ids[0] == tok.unk_token_id:
            raise ValueError(f"overwrite mode needs an existing one-token word; {cfg.token!r} "
                             f"is {tok.convert_ids_to_tokens(ids)}")
        init = table[ids].detach().float().clone()
    else:
        init_ids = tok(cfg.init_word, add_special_tokens=False).input_ids
        if len(init_ids) != 1:
            raise ValueError(f"init word {cfg.init_word!r} is {len(init_ids)} tokens "
                             f"{tok.convert_ids_to_tokens(init_ids)}; choose a word the "
                             "tokenizer knows as one token (for a painter's style, 'painting' "
                             "or 'style' usually are)")
        init = table[init_ids].detach().float().clone().repeat(cfg.n_vectors, 1)
    emb = Embedding(cfg.token, init)
    ids = add_embedding_to_pipeline(pipe, emb, overwrite=cfg.overwrite)
    return emb, ids


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def train_textual_inversion(pipe, data: LatentSet, templates: Sequence[str], cfg: TIConfig, *,
                            callback: Callable[[TIState], None] | None = None,
                            accelerator=None) -> TIResult:
    """Learn the embedding of ``cfg.token`` from cached latents and their captions.

    Args:
        pipe: a ``StableDiffusionPipeline`` (tokenizer, text_encoder, unet, scheduler); it is
            changed in place: the token is added and, at the end, its trained rows written in.
        data: cached posteriors of the framed images and their captions (``[filewords]``),
            from :meth:`.latents.LatentSet.encode`.
        templates: prompt templates with ``[name]`` and optional ``[filewords]``.
        accelerator: an ``accelerate.Accelerator``; one is made from ``cfg`` when None.

    Returns:
        a :class:`TIResult`. On Ctrl-C the state is saved and ``KeyboardInterrupt`` re-raised;
        on a non-finite loss the last good vectors are saved and
        :class:`NonFiniteLossError` raised.
    """
    from accelerate import Accelerator

    from nbhelpers import threads

    threads.apply()  # decided afresh: a neighbour may have started since (nbhelpers.threads)
    cfg.validate()
    _check_templates(templates, cfg.overwrite)
    precision = resolve_precision(cfg.mixed_precision, pipe.device)
    # precision is ours (models stored in the compute dtype, a GradScaler for fp16), not
    # Accelerate's: its mixed-precision setting is process-wide and cannot change between runs
    acc = accelerator or Accelerator(cpu=pipe.device.type == "cpu")
    run = _set_up(pipe, cfg, acc, precision)
    _start_or_resume(run)
    try:
        _train_steps(run, data, templates, callback)
    except KeyboardInterrupt:
        run.save(run.completed)
        _finish(run)
        raise
    except NonFiniteLossError:
        raise _keep_last_good(run) from None
    run.save(cfg.steps)
    _finish(run)
    return TIResult(cfg.token, run.emb.token_strings,
                    run.rows.vectors.detach().float().cpu().clone(), run.losses, cfg.steps)


def _check_templates(templates: Sequence[str], overwrite: bool) -> None:
    if not templates:
        raise ValueError("no templates; give at least one, e.g. 'a painting in the style of "
                         "[name]'")
    for t in templates:
        # overwriting an existing word: captions that already use the word ("a red toy")
        # are the natural prompts, so a bare "[filewords]" template is allowed then
        if "[name]" not in t and not (overwrite and "[filewords]" in t):
            raise ValueError(f"template {t!r} has no [name] slot; every template needs one "
                             f"(or, when overwriting a word, [filewords] with captions that "
                             f"use the word)")


@dataclass
class _Run:
    """The moving parts of one run, made by :func:`_set_up`; the steps advance ``completed``."""

    pipe: Any
    cfg: TIConfig
    acc: Any                        #: the ``accelerate.Accelerator``
    precision: str                  #: resolved: "no", "bf16" or "fp16"
    scaler: Any                     #: a ``torch.amp.GradScaler`` for fp16, else None
    lr_schedule: list[tuple[float, int | None]]  #: parsed from ``cfg.lr``
    emb: Embedding
    text_encoder: nn.Module
    rows: TrainableRows
    conditioner: nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    dtypes: tuple[torch.dtype, torch.dtype]  #: the UNet's and text encoder's own, given back
    alpha_bar: Tensor               #: the scheduler's ``alphas_cumprod``, ``(T,)``
    v_pred: bool                    #: the UNet predicts ``v``, not the noise
    losses: list[float] = field(default_factory=list)
    completed: int = 0              #: optimiser steps applied so far
    last_good: Tensor | None = None  #: the vectors before the last optimiser step

    @property
    def names(self) -> str:
        """What ``[name]`` becomes in a prompt: every vector's token."""
        return " ".join(self.emb.token_strings)

    @property
    def frozen_dtype(self) -> torch.dtype:
        return compute_dtype(self.precision)

    @property
    def out_dir(self) -> Path | None:
        return Path(self.cfg.out_dir) if self.cfg.out_dir else None

    @property
    def ckpt_dir(self) -> Path | None:
        return self.out_dir / "checkpoint" if self.out_dir else None

    def save(self, step: int) -> None:
        """A checkpoint of ``step``, when the run has an ``out_dir``."""
        if self.ckpt_dir is not None:
            save_checkpoint(self.ckpt_dir, self.rows, self.opt, step, self.losses, self.gen,
                            self.acc.process_index, self.cfg, self.scaler,
                            barrier=self.acc.wait_for_everyone)


def _freeze(pipe, cfg: TIConfig) -> None:
    """Frozen models: no weight gradients anywhere; SDPA attention; optional checkpointing."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    for module in (pipe.text_encoder, pipe.unet, pipe.vae):
        module.requires_grad_(False)
        module.eval()
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    if cfg.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()


def _set_up(pipe, cfg: TIConfig, acc, precision: str) -> _Run:
    """Freeze the models, add the token, splice its trainable rows in, make the optimiser."""
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    lr_schedule = parse_lr_schedule(cfg.lr)
    text_encoder, unet, device = pipe.text_encoder, pipe.unet, acc.device
    _freeze(pipe, cfg)
    # the token first, so its starting rows come from the table in its own dtype; then the frozen
    # models are stored in the compute dtype (not autocast over fp32 weights)
    emb, ids = prepare_tokens(pipe, cfg)
    frozen_dtype = compute_dtype(precision)
    dtypes = (unet.dtype, text_encoder.dtype)
    with quiet_loading():  # diffusers' notice on every cast of a model
        unet.to(device, dtype=frozen_dtype)
        text_encoder.to(device, dtype=frozen_dtype)
    rows = TrainableRows(text_encoder.get_input_embeddings(), ids, emb.vectors).to(device)
    text_encoder.set_input_embeddings(rows)
    conditioner = Conditioner(text_encoder, rows)
    opt = torch.optim.AdamW([rows.vectors], lr=lr_at(lr_schedule, 0),
                            weight_decay=cfg.weight_decay)
    conditioner, opt = acc.prepare(conditioner, opt)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + acc.process_index)
    sched = pipe.scheduler
    v_pred = sched.config.get("prediction_type", "epsilon") == "v_prediction"
    return _Run(pipe, cfg, acc, precision, scaler, lr_schedule, emb, text_encoder, rows,
                conditioner, opt, gen, dtypes, sched.alphas_cumprod, v_pred)


def _start_or_resume(run: _Run) -> None:
    """A run starts anew (its old checkpoint files removed) or from its newest checkpoint."""
    cfg, acc, ckpt_dir = run.cfg, run.acc, run.ckpt_dir
    if ckpt_dir is not None and not cfg.resume:
        remove_checkpoint_files(ckpt_dir, acc.process_index, set())
    if cfg.resume:
        if ckpt_dir is None:
            raise FileNotFoundError("resume asked, but the config has no out_dir to find the "
                                    "checkpoint in; give the out_dir of the run to continue")
        restore = (ckpt_dir, run.rows, run.opt, run.gen, acc.process_index, run.scaler)
        run.completed, run.losses = restore_checkpoint(*restore)
        if acc.num_processes > 1:
            # a process whose own RNG file of that step is damaged fell back further: all
            # continue from the oldest step any of them could read
            agreed = int(acc.gather(torch.tensor([run.completed], device=acc.device)).min())
            if agreed != run.completed:
                run.completed, run.losses = restore_checkpoint(*restore, max_step=agreed)
    run.last_good = run.rows.vectors.detach().clone()


def _train_steps(run: _Run, data: LatentSet, templates: Sequence[str],
                 callback: Callable[[TIState], None] | None) -> None:
    """The optimiser steps from ``run.completed`` to ``cfg.steps``, with a progress bar."""
    from tqdm.auto import tqdm

    cfg, acc = run.cfg, run.acc
    with tqdm(total=cfg.steps, initial=run.completed, desc=f"textual inversion {cfg.token}",
              disable=not acc.is_main_process) as bar:
        for step in range(run.completed, cfg.steps):
            lr = lr_at(run.lr_schedule, step)
            step_loss = _optimizer_step(run, data, templates, step, lr)
            run.losses.append(step_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.1e}", refresh=False)
            _after_step(run, step_loss, lr, callback)


def _optimizer_step(run: _Run, data: LatentSet, templates: Sequence[str], step: int,
                    lr: float) -> float:
    """One optimiser step over ``cfg.grad_accum`` micro-batches; returns the mean loss."""
    cfg, opt, scaler = run.cfg, run.opt, run.scaler
    for group in opt.param_groups:
        group["lr"] = lr
    step_loss = 0.0
    for _ in range(cfg.grad_accum):
        loss = _micro_batch_loss(run, data, templates, step)
        scaled = loss / cfg.grad_accum
        run.acc.backward(scaler.scale(scaled) if scaler is not None else scaled)
        step_loss += float(loss.detach()) / cfg.grad_accum
    run.last_good = run.rows.vectors.detach().clone()
    if scaler is not None:   # fp16: unscale, skip the step on overflow, adapt the scale
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
    run.completed = step + 1
    return step_loss


def _micro_batch_loss(run: _Run, data: LatentSet, templates: Sequence[str],
                      step: int) -> Tensor:
    """Steps 1 to 5 of the training step (notebook 05) for one micro-batch: the loss."""
    cfg, acc, tok, device = run.cfg, run.acc, run.pipe.tokenizer, run.acc.device
    # 1. a batch: cached latents (one posterior draw), templates and captions
    x0, caps = data.draw(cfg.batch_size, run.gen)
    prompts = draw_prompts(caps, templates, run.names, run.gen)
    # 2. tokens -> text encoder with the placeholder rows spliced in
    input_ids = tok(prompts, padding="max_length", max_length=tok.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    # 3. noise the latents at random timesteps (DDPM eq. 4)
    alpha_bar = run.alpha_bar
    noise = torch.randn(x0.shape, generator=run.gen)
    t = torch.randint(0, len(alpha_bar), (cfg.batch_size,), generator=run.gen)
    x_t = q_sample(x0, t, alpha_bar, noise)
    target = velocity(x0, noise, schedule_at(alpha_bar, t, x0)) if run.v_pred else noise
    with acc.autocast():
        hidden = run.conditioner(input_ids.to(device))
        # 4. the frozen UNet predicts the noise
        pred = run.pipe.unet(x_t.to(device, run.frozen_dtype), t.to(device),
                             encoder_hidden_states=hidden.to(run.frozen_dtype)).sample
    # 5. the loss, and a backward (by the caller) that reaches only the placeholder rows
    loss = nn.functional.mse_loss(pred.float(), target.to(device).float())
    bad = acc.reduce(torch.tensor(float(not torch.isfinite(loss)), device=device),
                     "max")  # every process stops together
    if float(bad) > 0:
        raise NonFiniteLossError(step)
    return loss


def _after_step(run: _Run, step_loss: float, lr: float,
                callback: Callable[[TIState], None] | None) -> None:
    """The periodic checkpoint and preview, and the callback, after an optimiser step."""
    cfg, acc, done = run.cfg, run.acc, run.completed
    if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
        run.save(done)
    preview = None
    if (cfg.preview_every and done % cfg.preview_every == 0 and cfg.preview_prompts
            and acc.is_main_process):
        preview = _preview(run.pipe, cfg, run.names, run.out_dir, done)
    if callback is not None and acc.is_main_process:
        callback(TIState(done, step_loss, lr, run.rows.vectors.detach().cpu().clone(),
                         preview))


def _keep_last_good(run: _Run) -> NonFiniteLossError:
    """After a non-finite loss: save the vectors that produced the last finite loss (a resume
    continues from them), end the run, and return the error that says what to change."""
    with torch.no_grad():
        run.rows.vectors.copy_(run.last_good)
    run.save(run.completed)
    _finish(run)
    return NonFiniteLossError(
        f"the loss became NaN or infinite at step {run.completed + 1} (learning rate "
        f"{lr_at(run.lr_schedule, run.completed):g}, mixed precision {run.precision!r}); the last "
        "good vectors were kept. Lower the learning rate (for example by 10x), or use bf16 "
        "instead of fp16, and resume.")


def _finish(run: _Run) -> None:
    """Give the UNet and the text encoder their dtypes from before training, and write the fp32
    rows into the real table (rounded once, to the table's own dtype)."""
    text_encoder, rows = run.text_encoder, run.rows
    text_encoder.set_input_embeddings(rows.base)   # unspliced first: the cast must not touch
    with quiet_loading():                          # the trained fp32 vectors
        text_encoder.to(dtype=run.dtypes[1])
        run.pipe.unet.to(dtype=run.dtypes[0])
    rows.write_back()
    run.pipe.text_encoder = text_encoder


@torch.no_grad()
def _preview(pipe, cfg: TIConfig, names: str, out_dir: Path | None, step: int) -> np.ndarray:
    from nbhelpers.files import save_png
    from nbhelpers.images import hstack
    from nbhelpers.sampling import sample_cfg

    images = []
    for prompt in cfg.preview_prompts:
        prompt = prompt.replace("[name]", names)
        img = sample_cfg(pipe, prompt, cfg.preview_scale, seed=cfg.seed,
                         num_steps=cfg.preview_steps)[0]
        images.append((img * 255).round().astype(np.uint8))
    grid = hstack(images)
    if out_dir is not None:
        save_png(grid, out_dir / "previews" / f"step-{step:06d}.png")
    return grid
