"""The textual-inversion training loop (Gal et al. 2022), built to avoid what users of existing
trainers complain about: slow steps, out-of-memory, NaN losses, lost runs, drifting vocabularies.

What is trained: only the rows of the text encoder's token-embedding table that belong to the
placeholder token (1 to N vectors), or to an existing word in overwrite mode. They live in a
separate fp32 parameter (:class:`TrainableRows`) spliced into the frozen table, so

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
       the placeholder rows; AdamW step with the learning rate of the schedule.

Safety: checkpoints (vectors, optimizer, step, RNG) every N steps and at the end, written
atomically and flushed to the disk, the two newest kept; ``resume`` verifies them, skips a
damaged one with a warning that names it, and continues to the same result as an
uninterrupted run, also after the process was killed (SIGKILL); Ctrl-C saves and re-raises; a
non-finite loss stops the run with the last good vectors saved and advice.
Built on Accelerate: ``accelerate launch`` spreads the batch over several processes (GPUs).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from nbhelpers.files import torch_bytes, write_bytes
from nbhelpers.precision import compute_dtype, resolve_precision
from nbhelpers.quiet import quiet_loading
from nbhelpers.ti.embeddings import Embedding, add_embedding_to_pipeline
from nbhelpers.ti.latents import LatentSet

Precision = Literal["auto", "no", "bf16", "fp16"]


# --------------------------------------------------------------------------------------------
# Learning-rate schedule in AUTOMATIC1111's syntax
# --------------------------------------------------------------------------------------------


def parse_lr_schedule(spec: str | float) -> list[tuple[float, int | None]]:
    """Parse ``"0.005:100, 1e-3:1000, 1e-5"``: 0.005 until step 100, 1e-3 until 1000, then 1e-5.

    Returns:
        ``[(lr, until_step or None), ...]``; the last entry has ``None`` (to the end).
    """
    if isinstance(spec, (int, float)):
        spec = str(spec)
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    out: list[tuple[float, int | None]] = []
    try:
        for k, part in enumerate(parts):
            lr_s, _, until_s = part.partition(":")
            lr = float(lr_s)
            until = int(until_s) if until_s.strip() else None
            if lr <= 0 or not math.isfinite(lr) or (until is not None and until < 1):
                raise ValueError
            if until is None and k != len(parts) - 1:
                raise ValueError
            if out and until is not None and out[-1][1] is not None and until <= out[-1][1]:
                raise ValueError
            out.append((lr, until))
    except ValueError:
        out = []
    if not out:
        raise ValueError(f"cannot read learning-rate schedule {spec!r}: write 'LR' or "
                         "'LR:UNTIL_STEP, LR:UNTIL_STEP, LR' with positive rates and increasing "
                         "steps, e.g. '0.005:100, 1e-3:1000, 1e-5'")
    if out[-1][1] is not None:
        out.append((out[-1][0], None))  # the last rate holds after its step too
    return out


def lr_at(schedule: Sequence[tuple[float, int | None]], step: int) -> float:
    """The learning rate for (zero-based) ``step`` under a parsed schedule."""
    for lr, until in schedule:
        if until is None or step < until:
            return lr
    return schedule[-1][0]


# --------------------------------------------------------------------------------------------
# The trainable rows
# --------------------------------------------------------------------------------------------


class TrainableRows(nn.Module):
    """A frozen ``nn.Embedding`` with the rows of ``ids`` replaced by a trainable fp32 tensor.

    ``forward(input_ids)`` is the table lookup; a position holding ``ids[j]`` gets
    ``vectors[j]``. Gradients reach ``vectors`` only.
    """

    def __init__(self, base: nn.Embedding, ids: Sequence[int], init: Tensor) -> None:
        super().__init__()
        if init.shape != (len(ids), base.embedding_dim):
            raise ValueError(f"init must have shape ({len(ids)}, {base.embedding_dim}), "
                             f"got {tuple(init.shape)}")
        self.base = base
        self.base.weight.requires_grad_(False)
        self.register_buffer("ids", torch.tensor(list(ids), dtype=torch.long), persistent=False)
        self.vectors = nn.Parameter(init.detach().float().clone())

    @property
    def weight(self) -> Tensor:
        return self.base.weight

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    def forward(self, input_ids: Tensor) -> Tensor:
        emb = self.base(input_ids)
        hit = input_ids[..., None] == self.ids.to(input_ids.device)       # (B, L, n)
        spliced = hit.to(self.vectors.dtype) @ self.vectors                # (B, L, width)
        return torch.where(hit.any(-1, keepdim=True), spliced.to(emb.dtype), emb)

    @torch.no_grad()
    def write_back(self) -> nn.Embedding:
        """Copy the trained vectors into the base table and return it."""
        self.base.weight[self.ids] = self.vectors.to(self.base.weight.dtype)
        return self.base


class Conditioner(nn.Module):
    """Text encoder with the trainable rows spliced in: ``ids -> hidden states (B, 77, width)``.

    The module Accelerate wraps (for several processes), so gradient sync covers the rows.
    """

    def __init__(self, text_encoder: nn.Module, rows: TrainableRows) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.rows = rows

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.text_encoder(input_ids)[0]


# --------------------------------------------------------------------------------------------
# Configuration, state, results
# --------------------------------------------------------------------------------------------


@dataclass
class TIConfig:
    """Everything a run needs besides the model and the images.

    Attributes:
        token: the placeholder, e.g. ``"<my-style>"``; or, with ``overwrite``, an existing word.
        init_word: one-token word whose embedding starts every vector.
        n_vectors: vectors per token (1 to 75; the prompt budget is 77 tokens).
        lr: a rate or an AUTOMATIC1111 schedule string (``"0.005:100, 1e-3"``).
        batch_size, grad_accum: images per micro-batch, micro-batches per step.
        mixed_precision: ``"auto"`` (the device's: :func:`nbhelpers.precision.pick_precision`),
            ``"no"``, ``"bf16"`` or ``"fp16"``: the dtype the frozen models compute in.
        checkpoint_every, preview_every: 0 disables the periodic ones (a final checkpoint is
            always written when ``out_dir`` is set).
    """

    token: str
    init_word: str = "style"
    n_vectors: int = 1
    overwrite: bool = False
    steps: int = 300
    batch_size: int = 4
    grad_accum: int = 1
    lr: str = "5e-3"
    weight_decay: float = 0.0
    mixed_precision: Precision = "auto"
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = 0
    preview_every: int = 0
    preview_prompts: tuple[str, ...] = ()
    preview_scale: float = 7.5
    preview_steps: int = 20
    out_dir: str | None = None
    resume: bool = False

    def validate(self) -> None:
        if not self.token.strip() or any(c.isspace() for c in self.token):
            raise ValueError(f"token must be one word without spaces, got {self.token!r}")
        if not 1 <= self.n_vectors <= 75:
            raise ValueError(f"n_vectors must be between 1 and 75, got {self.n_vectors}")
        if self.overwrite and self.n_vectors != 1:
            raise ValueError("overwrite mode trains the word's own row(s); leave n_vectors at 1")
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'auto', 'no', 'bf16' or 'fp16', got "
                             f"{self.mixed_precision!r}")
        parse_lr_schedule(self.lr)


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
    normalisation) are those of :func:`~nbhelpers.ti.embeddings.add_embedding_to_pipeline`.

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


# A checkpoint is one file per step for the shared state (vectors, optimizer, losses) and one
# per process for its random generator, named by the step. The newest CHECKPOINTS_KEPT steps are
# kept, so a file damaged after its rename (a machine that lost power before the disk caught up,
# a copy cut short) costs the steps since the one before it, never the run. The state file is
# written after every process's RNG file, so a state file names a complete checkpoint.
CHECKPOINTS_KEPT = 2
_STEP_FILE = re.compile(r"^state-(\d{6,})\.pt$")


def _state_file(folder: Path, step: int) -> Path:
    return folder / f"state-{step:06d}.pt"


def _rng_file(folder: Path, step: int, rank: int) -> Path:
    return folder / f"rng-{rank}-{step:06d}.pt"


def checkpoint_steps(folder: str | Path) -> list[int]:
    """The steps that have a checkpoint (state file) in ``folder``, newest first; unverified."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    steps = [int(m.group(1)) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return sorted(steps, reverse=True)


class _Damaged(Exception):
    """Internal: a checkpoint file that cannot be used, and why."""


def _read_verified(path: Path, step: int, keys: Sequence[str]) -> dict:
    """``torch.load`` a checkpoint file and check that it is whole and of ``step``."""
    if not path.exists():
        raise _Damaged(f"{path} is missing")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated or garbled files fail in many ways
        raise _Damaged(f"{path} is damaged ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise _Damaged(f"{path} is not a checkpoint of this trainer (missing "
                       f"{[k for k in keys if not isinstance(data, dict) or k not in data]})")
    if data["step"] != step:
        raise _Damaged(f"{path} holds step {data['step']}, not {step}")
    return data


def find_checkpoint(folder: str | Path, rank: int = 0, *, shape: tuple[int, int] | None = None,
                    max_step: int | None = None) -> tuple[int, dict, dict] | None:
    """The newest usable checkpoint in ``folder``: ``(step, state, rng)``, or None if none.

    Every file is verified (it loads, holds the step its name says, the vectors are finite and,
    with ``shape``, of that shape, and the losses number the steps); a damaged one is skipped
    with a warning that names it, and the checkpoint before it is used.

    Raises:
        ValueError: checkpoints exist but none is usable; the message lists why.
    """
    folder = Path(folder)
    reasons = []
    for step in checkpoint_steps(folder):
        if max_step is not None and step > max_step:
            continue
        try:
            state = _read_verified(_state_file(folder, step), step,
                                   ("vectors", "optimizer", "step", "losses"))
            rng = _read_verified(_rng_file(folder, step, rank), step, ("generator", "step"))
            vectors = state["vectors"]
            if not isinstance(vectors, Tensor) or vectors.ndim != 2:
                raise _Damaged(f"{_state_file(folder, step)} holds no (n_vectors, width) tensor")
            if shape is not None and tuple(vectors.shape) != tuple(shape):
                raise _Damaged(f"{_state_file(folder, step)} holds vectors of shape "
                               f"{tuple(vectors.shape)}, and this run trains {tuple(shape)} "
                               "(another --vectors or another model)")
            if not bool(torch.isfinite(vectors).all()):
                raise _Damaged(f"{_state_file(folder, step)} holds NaN or infinite vectors")
            if len(state["losses"]) != step:
                raise _Damaged(f"{_state_file(folder, step)} holds {len(state['losses'])} "
                               f"losses for {step} steps")
        except _Damaged as e:
            reasons.append(str(e))
            continue
        for reason in reasons:
            warnings.warn(f"checkpoint skipped: {reason}; resuming from the one of step {step} "
                          "instead", stacklevel=2)
        return step, state, rng
    if reasons:
        raise ValueError(f"no usable checkpoint in {folder}: " + "; ".join(reasons)
                         + ". Delete the folder and run without resume to start again")
    return None


def _save_checkpoint(folder: Path, rows: TrainableRows, opt, step: int, losses: list[float],
                     gen: torch.Generator, rank: int, cfg: TIConfig, scaler=None,
                     barrier: Callable[[], None] | None = None) -> None:
    """Write this process's RNG file and (rank 0) the state file of ``step``, then keep the
    newest :data:`CHECKPOINTS_KEPT` steps up to ``step`` and remove the rest (each process only
    its own files), with any temporary file a killed run left behind."""
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes(_rng_file(folder, step, rank),
                torch_bytes({"generator": gen.get_state(), "step": step}), durable=True)
    if barrier is not None:
        barrier()   # every RNG file first: a state file then names a complete checkpoint
    if rank == 0:
        state = {"vectors": rows.vectors.detach().cpu().clone(),
                 "optimizer": opt.state_dict(), "step": step,
                 "losses": torch.tensor(losses, dtype=torch.float64),
                 "config": json.dumps(asdict(cfg)),
                 **({"scaler": scaler.state_dict()} if scaler is not None else {})}
        write_bytes(_state_file(folder, step), torch_bytes(state), durable=True)
    # steps after this one are of an abandoned past (a damaged checkpoint resumed around)
    keep = set(sorted({s for s in checkpoint_steps(folder) if s < step} | {step},
                      reverse=True)[:CHECKPOINTS_KEPT])
    _remove_checkpoint_files(folder, rank, keep)


def _remove_checkpoint_files(folder: Path, rank: int, keep: set[int]) -> None:
    """Remove this process's checkpoint files (rank 0: the state files too) of the steps not in
    ``keep``, and the temporary files of its writes that a kill interrupted."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        hidden = p.name.startswith(".")   # atomic_path's temporary name: a killed write
        base = p.name[1:] if hidden else p.name
        if not (base.startswith(f"rng-{rank}-") or (rank == 0 and base.startswith("state-"))):
            continue
        m = re.search(r"-(\d{6,})\.pt$", p.name)
        if hidden or (m is not None and int(m.group(1)) not in keep):
            p.unlink(missing_ok=True)


def _load_checkpoint(folder: Path, rows: TrainableRows, opt, gen: torch.Generator,
                     rank: int, scaler=None, max_step: int | None = None
                     ) -> tuple[int, list[float]]:
    found = find_checkpoint(folder, rank, shape=tuple(rows.vectors.shape), max_step=max_step)
    if found is None:
        raise FileNotFoundError(f"resume asked, but no checkpoint in {folder}; run without "
                                "resume to start")
    step, state, rng = found
    try:
        opt.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as e:
        raise ValueError(f"the checkpoint of step {step} in {folder} does not fit this run "
                         f"({e}); resume with the settings it was made with, or delete the "
                         "folder to start again") from e
    with torch.no_grad():
        rows.vectors.copy_(state["vectors"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    gen.set_state(rng["generator"])
    return step, state["losses"].tolist()


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
    from diffusers.models.attention_processor import AttnProcessor2_0
    from tqdm.auto import tqdm

    from nbhelpers.ti.captions import fill_template

    cfg.validate()
    if not templates:
        raise ValueError("no templates; give at least one, e.g. 'a painting in the style of "
                         "[name]'")
    for t in templates:
        # overwriting an existing word: captions that already use the word ("a red toy")
        # are the natural prompts, so a bare "[filewords]" template is allowed then
        if "[name]" not in t and not (cfg.overwrite and "[filewords]" in t):
            raise ValueError(f"template {t!r} has no [name] slot; every template needs one "
                             f"(or, when overwriting a word, [filewords] with captions that "
                             f"use the word)")
    precision = resolve_precision(cfg.mixed_precision, pipe.device)
    # precision is ours (models stored in the compute dtype, a GradScaler for fp16), not
    # Accelerate's: its mixed-precision setting is process-wide and cannot change between runs
    acc = accelerator or Accelerator(cpu=pipe.device.type == "cpu")
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    schedule = parse_lr_schedule(cfg.lr)
    tok, text_encoder, unet, sched = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.scheduler
    device = acc.device

    # frozen models: no weight gradients anywhere; SDPA attention; optional checkpointing
    for module in (text_encoder, unet, pipe.vae):
        module.requires_grad_(False)
        module.eval()
    unet.set_attn_processor(AttnProcessor2_0())
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
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
    opt = torch.optim.AdamW([rows.vectors], lr=lr_at(schedule, 0), weight_decay=cfg.weight_decay)
    conditioner, opt = acc.prepare(conditioner, opt)

    gen = torch.Generator().manual_seed(cfg.seed * 1000 + acc.process_index)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else None
    ckpt_dir = out_dir / "checkpoint" if out_dir else None
    start, losses = 0, []
    if ckpt_dir is not None and not cfg.resume:
        _remove_checkpoint_files(ckpt_dir, acc.process_index, set())   # a run starts anew
    if cfg.resume:
        if ckpt_dir is None:
            raise FileNotFoundError("resume asked, but the config has no out_dir to find the "
                                    "checkpoint in; give the out_dir of the run to continue")
        start, losses = _load_checkpoint(ckpt_dir, rows, opt, gen, acc.process_index, scaler)
        if acc.num_processes > 1:
            # a process whose own RNG file of that step is damaged fell back further: all
            # continue from the oldest step any of them could read
            agreed = int(acc.gather(torch.tensor([start], device=device)).min())
            if agreed != start:
                start, losses = _load_checkpoint(ckpt_dir, rows, opt, gen, acc.process_index,
                                                 scaler, max_step=agreed)

    alphas = sched.alphas_cumprod
    T = len(alphas)
    v_pred = sched.config.get("prediction_type", "epsilon") == "v_prediction"
    names = " ".join(emb.token_strings)  # what [name] becomes: every vector's token
    last_good = rows.vectors.detach().clone()

    def save_state(step: int) -> None:
        if ckpt_dir is not None:
            _save_checkpoint(ckpt_dir, rows, opt, step, losses, gen, acc.process_index, cfg,
                             scaler, barrier=acc.wait_for_everyone)

    bar = tqdm(total=cfg.steps, initial=start, desc=f"textual inversion {cfg.token}",
               disable=not acc.is_main_process)
    completed = start  # optimiser steps applied so far
    try:
        for step in range(start, cfg.steps):
            lr = lr_at(schedule, step)
            for group in opt.param_groups:
                group["lr"] = lr
            step_loss = 0.0
            for _ in range(cfg.grad_accum):
                # 1. a batch: cached latents (one posterior draw), templates and captions
                x0, caps = data.draw(cfg.batch_size, gen)
                pick = torch.randint(0, len(templates), (cfg.batch_size,), generator=gen)
                prompts = [fill_template(templates[int(p)], names, c)
                           for c, p in zip(caps, pick, strict=True)]
                # 2. tokens -> text encoder with the placeholder rows spliced in
                input_ids = tok(prompts, padding="max_length", max_length=tok.model_max_length,
                                truncation=True, return_tensors="pt").input_ids
                # 3. noise the latents at random timesteps (DDPM eq. 4)
                noise = torch.randn(x0.shape, generator=gen)
                t = torch.randint(0, T, (cfg.batch_size,), generator=gen)
                ab = alphas[t].view(-1, 1, 1, 1)
                x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
                target = ab.sqrt() * noise - (1 - ab).sqrt() * x0 if v_pred else noise
                with acc.autocast():
                    hidden = conditioner(input_ids.to(device))
                    # 4. the frozen UNet predicts the noise
                    pred = unet(x_t.to(device, frozen_dtype), t.to(device),
                                encoder_hidden_states=hidden.to(frozen_dtype)).sample
                # 5. the loss, and a backward that reaches only the placeholder rows
                loss = nn.functional.mse_loss(pred.float(), target.to(device).float())
                bad = acc.reduce(torch.tensor(float(not torch.isfinite(loss)), device=device),
                                 "max")  # every process stops together
                if float(bad) > 0:
                    raise NonFiniteLossError(step)
                scaled = loss / cfg.grad_accum
                acc.backward(scaler.scale(scaled) if scaler is not None else scaled)
                step_loss += float(loss.detach()) / cfg.grad_accum
            last_good = rows.vectors.detach().clone()
            if scaler is not None:   # fp16: unscale, skip the step on overflow, adapt the scale
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            completed = step + 1
            losses.append(step_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.1e}", refresh=False)
            done = completed
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                save_state(done)
            preview = None
            if (cfg.preview_every and done % cfg.preview_every == 0 and cfg.preview_prompts
                    and acc.is_main_process):
                preview = _preview(pipe, cfg, names, out_dir, done)
            if callback is not None and acc.is_main_process:
                callback(TIState(done, step_loss, lr, rows.vectors.detach().cpu().clone(),
                                 preview))
    except KeyboardInterrupt:
        save_state(completed)
        _finish(pipe, text_encoder, rows, dtypes)
        bar.close()
        raise
    except NonFiniteLossError:
        # the vectors that produced the last finite loss; a resume continues from them
        with torch.no_grad():
            rows.vectors.copy_(last_good)
        save_state(completed)
        _finish(pipe, text_encoder, rows, dtypes)
        bar.close()
        raise NonFiniteLossError(
            f"the loss became NaN or infinite at step {completed + 1} (learning rate "
            f"{lr_at(schedule, completed):g}, mixed precision {precision!r}); the last "
            "good vectors were kept. Lower the learning rate (for example by 10x), or use bf16 "
            "instead of fp16, and resume.") from None
    bar.close()
    save_state(cfg.steps)
    _finish(pipe, text_encoder, rows, dtypes)
    return TIResult(cfg.token, emb.token_strings, rows.vectors.detach().float().cpu().clone(),
                    losses, cfg.steps)


def _finish(pipe, text_encoder, rows: TrainableRows,
            dtypes: tuple[torch.dtype, torch.dtype]) -> None:
    """Give the UNet and the text encoder their dtypes from before training, and write the fp32
    rows into the real table (rounded once, to the table's own dtype)."""
    text_encoder.set_input_embeddings(rows.base)   # unspliced first: the cast must not touch
    with quiet_loading():                          # the trained fp32 vectors
        text_encoder.to(dtype=dtypes[1])
        pipe.unet.to(dtype=dtypes[0])
    rows.write_back()
    pipe.text_encoder = text_encoder


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
