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
uninterrupted run, also after the process was killed (SIGKILL). Ctrl-C saves the state from
before the step it interrupted (so that Ctrl-C and ``resume`` equal an uninterrupted run
exactly) and raises :class:`TrainingInterrupted`, which carries the step and the vectors; a
non-finite loss stops the run with the last good vectors saved and advice.

:func:`train_textual_inversion` is the loop in one screen: setup, then ``for step``; the five
steps of one micro-batch are :func:`_micro_batch_loss`.
Built on Accelerate: ``accelerate launch`` spreads the batch over several processes (GPUs).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nbhelpers.diffusion import q_sample, schedule_at, velocity
from nbhelpers.images import float_to_uint8
from nbhelpers.precision import compute_dtype, resolve_precision
from nbhelpers.quiet import quiet_loading
from nbhelpers.ti.captions import check_templates, draw_prompts
from nbhelpers.ti.checkpoints import remove_checkpoint_files, restore_checkpoint, save_checkpoint
from nbhelpers.ti.config import TIConfig
from nbhelpers.ti.embeddings import Embedding
from nbhelpers.ti.latents import LatentSet
from nbhelpers.ti.lr_schedule import lr_at, parse_lr_schedule
from nbhelpers.ti.pipeline import add_embedding_to_pipeline
from nbhelpers.ti.rows import Conditioner, TrainableRows

# --------------------------------------------------------------------------------------------
# What a run hands out: its progress, its result, its two ways to stop early
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
class TIRun:
    """What a finished run produced: from the trainer, and (through
    :func:`~nbhelpers.ti.engine.run_plan`) the file it wrote and the images it read."""

    embedding: Embedding            #: as saved: the token's rows of the model's table
    vectors: Tensor                 #: the trained vectors, (n_vectors, width), fp32, CPU
    losses: list[float] = field(default_factory=list)
    n_examples: int = 0             #: framed training images
    seconds: float = 0.0
    path: Path | None = None        #: the embedding file (None: the trainer alone saves none)
    report: Any = None              #: the folder's :class:`~nbhelpers.ti.images.LoadReport`

    @property
    def token(self) -> str:
        return self.embedding.token

    @property
    def token_strings(self) -> list[str]:
        """What the token expands to in a prompt."""
        return self.embedding.token_strings

    @property
    def steps(self) -> int:
        return self.embedding.step

    @property
    def result(self) -> TIRun:
        """The run itself (``run.result.vectors`` is ``run.vectors``), for code written when
        the trainer's result was a separate object."""
        return self


class TrainingInterrupted(KeyboardInterrupt):  # noqa: N818 - a KeyboardInterrupt, named so
    """Ctrl-C during training: the run saved the state of ``step`` (from before the step it
    interrupted) and stopped. A ``KeyboardInterrupt``, so whatever stops on Ctrl-C still does.

    Attributes:
        step: the steps done and saved; ``resume`` continues from here.
        vectors: the vectors of that step, fp32, CPU.
        checkpoint: the checkpoint folder (None: the run had no ``out_dir``).
        embedding: the file the unfinished embedding was written to, when one was.
    """

    def __init__(self, step: int, vectors: Tensor, checkpoint: Path | None,
                 embedding: Path | None = None) -> None:
        super().__init__(f"interrupted after step {step}")
        self.step, self.vectors, self.checkpoint = step, vectors, checkpoint
        self.embedding = embedding


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good vectors were kept (``step``, ``vectors``
    as in :class:`TrainingInterrupted`)."""

    def __init__(self, message: str, step: int = 0, vectors: Tensor | None = None,
                 checkpoint: Path | None = None) -> None:
        super().__init__(message)
        self.step, self.vectors, self.checkpoint = step, vectors, checkpoint


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
                            accelerator=None) -> TIRun:
    """Learn the embedding of ``cfg.token`` from cached latents and their captions.

    ``pipe`` is changed in place: the token added, its trained rows written in at the end.
    ``data``: cached posteriors and captions (:meth:`.latents.LatentSet.encode`);
    ``templates``: each with ``[name]`` (:func:`~nbhelpers.ti.captions.check_templates`).
    Returns a :class:`TIRun` (no file: :func:`~nbhelpers.ti.engine.run_plan` writes one).

    Raises:
        TrainingInterrupted: Ctrl-C; the state before the interrupted step was saved.
        NonFiniteLossError: a NaN or infinite loss; the last good vectors were saved.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from nbhelpers import threads
    threads.apply()  # decided afresh: a neighbour may have started since (nbhelpers.threads)
    cfg.validate()
    templates = check_templates(templates, overwrite=cfg.overwrite)
    start, schedule = time.perf_counter(), parse_lr_schedule(cfg.lr)
    # precision is ours (models stored in the compute dtype, a GradScaler for fp16), not
    # Accelerate's: its mixed-precision setting is process-wide and cannot change between runs
    acc = accelerator or Accelerator(cpu=pipe.device.type == "cpu")
    m = _set_up(pipe, cfg, acc, resolve_precision(cfg.mixed_precision, pipe.device))
    done, losses = _start_or_resume(m, cfg)
    before = None   # the state at the start of the step under way: what Ctrl-C saves
    try:
        with tqdm(total=cfg.steps, initial=done, desc=f"textual inversion {cfg.token}",
                  disable=not acc.is_main_process) as bar:
            for step in range(done, cfg.steps):
                before, lr = _snapshot(m, step), lr_at(schedule, step)
                for group in m.opt.param_groups:
                    group["lr"] = lr
                loss = 0.0
                for _ in range(cfg.grad_accum):
                    micro = _micro_batch_loss(m, data, templates, cfg.batch_size, step)
                    scaled = micro / cfg.grad_accum
                    acc.backward(m.scaler.scale(scaled) if m.scaler is not None else scaled)
                    loss += float(micro.detach()) / cfg.grad_accum
                _optimiser_step(m.opt, m.scaler)
                losses.append(loss)
                done = step + 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.1e}", refresh=False)
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                    _save(m, cfg, done, losses)
                preview = (_preview(pipe, cfg, m.names, done)
                           if _preview_due(cfg, done) and acc.is_main_process else None)
                if callback is not None and acc.is_main_process:
                    callback(TIState(done, loss, lr, m.rows.vectors.detach().cpu().clone(),
                                     preview))
    except (KeyboardInterrupt, NonFiniteLossError) as stop:
        raise _stopped(m, cfg, stop, before, done, losses[:done], schedule) from None
    _save(m, cfg, cfg.steps, losses)
    _finish(m)
    vectors = m.rows.vectors.detach().float().cpu().clone()
    return TIRun(Embedding(cfg.token, vectors, step=cfg.steps), vectors, losses, len(data),
                 time.perf_counter() - start)


@dataclass(frozen=True)
class _Model:
    """The parts the loop trains with, made once by :func:`_set_up`; no counters (the loop's
    locals hold those)."""

    pipe: Any
    acc: Any                        #: the ``accelerate.Accelerator``
    precision: str                  #: resolved: "no", "bf16" or "fp16"
    scaler: Any                     #: a ``torch.amp.GradScaler`` for fp16, else None
    emb: Embedding
    text_encoder: nn.Module
    rows: TrainableRows
    conditioner: nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    dtypes: tuple[torch.dtype, torch.dtype]  #: the UNet's and text encoder's own, given back
    alpha_bar: Tensor               #: the scheduler's ``alphas_cumprod``, ``(T,)``
    v_pred: bool                    #: the UNet predicts ``v``, not the noise

    @property
    def names(self) -> str:
        """What ``[name]`` becomes in a prompt: every vector's token."""
        return " ".join(self.emb.token_strings)

    @property
    def frozen_dtype(self) -> torch.dtype:
        return compute_dtype(self.precision)


def _ckpt_dir(cfg: TIConfig) -> Path | None:
    return Path(cfg.out_dir) / "checkpoint" if cfg.out_dir else None


def _save(m: _Model, cfg: TIConfig, step: int, losses: list[float]) -> None:
    """A checkpoint of ``step``, when the run has an ``out_dir``."""
    if (folder := _ckpt_dir(cfg)) is not None:
        save_checkpoint(folder, m.rows, m.opt, step, losses, m.gen, m.acc.process_index, cfg,
                        m.scaler, barrier=m.acc.wait_for_everyone)


def _freeze(pipe, cfg: TIConfig) -> None:
    """Frozen models: no weight gradients anywhere; SDPA attention; optional checkpointing."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    for module in (pipe.text_encoder, pipe.unet, pipe.vae):
        module.requires_grad_(False)
        module.eval()
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    if cfg.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()


def _set_up(pipe, cfg: TIConfig, acc, precision: str) -> _Model:
    """Freeze the models, add the token, splice its trainable rows in, make the optimiser."""
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    text_encoder, unet, device = pipe.text_encoder, pipe.unet, acc.device
    _freeze(pipe, cfg)
    # the token first, so its starting rows come from the table in its own dtype; then the frozen
    # models are stored in the compute dtype (not autocast over fp32 weights)
    emb, ids = prepare_tokens(pipe, cfg)
    dtypes = (unet.dtype, text_encoder.dtype)
    with quiet_loading():  # diffusers' notice on every cast of a model
        unet.to(device, dtype=compute_dtype(precision))
        text_encoder.to(device, dtype=compute_dtype(precision))
    rows = TrainableRows(text_encoder.get_input_embeddings(), ids, emb.vectors).to(device)
    text_encoder.set_input_embeddings(rows)
    conditioner = Conditioner(text_encoder, rows)
    opt = torch.optim.AdamW([rows.vectors], lr=lr_at(parse_lr_schedule(cfg.lr), 0),
                            weight_decay=cfg.weight_decay)
    conditioner, opt = acc.prepare(conditioner, opt)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + acc.process_index)
    sched = pipe.scheduler
    v_pred = sched.config.get("prediction_type", "epsilon") == "v_prediction"
    return _Model(pipe, acc, precision, scaler, emb, text_encoder, rows, conditioner, opt, gen,
                  dtypes, sched.alphas_cumprod, v_pred)


def _start_or_resume(m: _Model, cfg: TIConfig) -> tuple[int, list[float]]:
    """A run starts anew (its old checkpoint files removed) or from its newest checkpoint:
    the steps done and their losses."""
    acc, folder = m.acc, _ckpt_dir(cfg)
    if not cfg.resume:
        if folder is not None:
            remove_checkpoint_files(folder, acc.process_index, set())
        return 0, []
    if folder is None:
        raise FileNotFoundError("resume asked, but the config has no out_dir to find the "
                                "checkpoint in; give the out_dir of the run to continue")
    restore = (folder, m.rows, m.opt, m.gen, acc.process_index, m.scaler)
    done, losses = restore_checkpoint(*restore)
    if acc.num_processes > 1:
        # a process whose own RNG file of that step is damaged fell back further: all
        # continue from the oldest step any of them could read
        agreed = int(acc.gather(torch.tensor([done], device=acc.device)).min())
        if agreed != done:
            done, losses = restore_checkpoint(*restore, max_step=agreed)
    return done, losses


def _snapshot(m: _Model, step: int) -> dict:
    """The state at the start of ``step`` that a step changes: vectors, optimiser, RNG, scaler
    (a few KB: the vectors are the only parameter)."""
    return {"step": step, "vectors": m.rows.vectors.detach().clone(),
            "optimizer": copy.deepcopy(m.opt.state_dict()), "generator": m.gen.get_state(),
            "scaler": m.scaler.state_dict() if m.scaler is not None else None}


def _optimiser_step(opt: torch.optim.Optimizer, scaler) -> None:
    if scaler is not None:   # fp16: unscale, skip the step on overflow, adapt the scale
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)


def _micro_batch_loss(m: _Model, data: LatentSet, templates: Sequence[str], batch_size: int,
                      step: int) -> Tensor:
    """Steps 1 to 5 of the training step (notebook 05) for one micro-batch: the loss."""
    acc, tok, device = m.acc, m.pipe.tokenizer, m.acc.device
    # 1. a batch: cached latents (one posterior draw), templates and captions
    x0, caps = data.draw(batch_size, m.gen)
    prompts = draw_prompts(caps, templates, m.names, m.gen)
    # 2. tokens -> text encoder with the placeholder rows spliced in
    input_ids = tok(prompts, padding="max_length", max_length=tok.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    # 3. noise the latents at random timesteps (DDPM eq. 4)
    alpha_bar = m.alpha_bar
    noise = torch.randn(x0.shape, generator=m.gen)
    t = torch.randint(0, len(alpha_bar), (batch_size,), generator=m.gen)
    x_t = q_sample(x0, t, alpha_bar, noise)
    target = velocity(x0, noise, schedule_at(alpha_bar, t, x0)) if m.v_pred else noise
    with acc.autocast():
        hidden = m.conditioner(input_ids.to(device))
        # 4. the frozen UNet predicts the noise
        pred = m.pipe.unet(x_t.to(device, m.frozen_dtype), t.to(device),
                           encoder_hidden_states=hidden.to(m.frozen_dtype)).sample
    # 5. the loss, and a backward (by the caller) that reaches only the placeholder rows
    loss = nn.functional.mse_loss(pred.float(), target.to(device).float())
    bad = acc.reduce(torch.tensor(float(not torch.isfinite(loss)), device=device),
                     "max")  # every process stops together
    if float(bad) > 0:
        raise NonFiniteLossError(f"non-finite loss at step {step + 1}", step)
    return loss


def _stopped(m: _Model, cfg: TIConfig, stop: BaseException, before: dict | None, done: int,
             losses: list[float], schedule) -> BaseException:
    """After Ctrl-C or a non-finite loss: put back the state of step ``done`` where the step
    under way had changed it (the vectors that gave the last finite loss, the generator before
    that step's draws), save it, end the run, and return the exception to raise."""
    if before is not None and before["step"] == done:   # the step under way never finished
        with torch.no_grad():
            m.rows.vectors.copy_(before["vectors"])
        m.opt.load_state_dict(before["optimizer"])
        m.gen.set_state(before["generator"])
        if m.scaler is not None:
            m.scaler.load_state_dict(before["scaler"])
    m.opt.zero_grad(set_to_none=True)
    _save(m, cfg, done, losses)
    _finish(m)
    vectors = m.rows.vectors.detach().float().cpu().clone()
    if isinstance(stop, KeyboardInterrupt):
        return TrainingInterrupted(done, vectors, _ckpt_dir(cfg))
    return NonFiniteLossError(
        f"the loss became NaN or infinite at step {done + 1} (learning rate "
        f"{lr_at(schedule, done):g}, mixed precision {m.precision!r}); the last "
        "good vectors were kept. Lower the learning rate (for example by 10x), or use bf16 "
        "instead of fp16, and resume.", done, vectors, _ckpt_dir(cfg))


def _finish(m: _Model) -> None:
    """Give the UNet and the text encoder their dtypes from before training, and write the fp32
    rows into the real table (rounded once, to the table's own dtype)."""
    text_encoder, rows = m.text_encoder, m.rows
    text_encoder.set_input_embeddings(rows.base)   # unspliced first: the cast must not touch
    with quiet_loading():                          # the trained fp32 vectors
        text_encoder.to(dtype=m.dtypes[1])
        m.pipe.unet.to(dtype=m.dtypes[0])
    rows.write_back()
    m.pipe.text_encoder = text_encoder


def _preview_due(cfg: TIConfig, done: int) -> bool:
    return bool(cfg.preview_every and cfg.preview_prompts and done % cfg.preview_every == 0)


@torch.no_grad()
def _preview(pipe, cfg: TIConfig, names: str, step: int) -> np.ndarray:
    from nbhelpers.files import save_png
    from nbhelpers.images import hstack
    from nbhelpers.sampling import sample_cfg

    images = []
    for prompt in cfg.preview_prompts:
        prompt = prompt.replace("[name]", names)
        img = sample_cfg(pipe, prompt, cfg.preview_scale, seed=cfg.seed,
                         num_steps=cfg.preview_steps)[0]
        images.append(float_to_uint8(img))
    grid = hstack(images)
    if cfg.out_dir:
        save_png(grid, Path(cfg.out_dir) / "previews" / f"step-{step:06d}.png")
    return grid
