"""From a folder of images (or images in memory) to an embedding file: a run in two steps.

1. :func:`~nbhelpers.ti.plan.plan_run` checks everything that needs no model and returns a
   :class:`~nbhelpers.ti.plan.TIPlan`;
2. :func:`run_plan` runs it with a pipeline: it takes the run folder's lock
   (:mod:`.run_folder`), loads and reports the images, frames them, encodes their latents once
   (cached), sets the previous run's checkpoints aside, trains, and writes the embedding in
   the chosen format, replacing the earlier file only when the run has finished.

:func:`train_from_folder` and :func:`train_from_items` do both in one call. The run folder
beside the output (``NAME-run/``) holds checkpoints and previews, so an interrupted run resumes
with ``resume=True``; an interrupted one leaves its embedding so far there
(``NAME-unfinished.safetensors``), never over the output.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from nbhelpers.images import vae_scale_factor
from nbhelpers.ti.config import TIConfig, TIData
from nbhelpers.ti.embeddings import Embedding
from nbhelpers.ti.formats import save_embedding
from nbhelpers.ti.framing import frame
from nbhelpers.ti.images import LoadedImage, load_folder
from nbhelpers.ti.latents import LatentSet
from nbhelpers.ti.plan import TIPlan, check_prompt_budget, plan_run, work_dir_for
from nbhelpers.ti.run_folder import RunLock, discard_previous, set_aside
from nbhelpers.ti.train import (
    NonFiniteLossError,
    TIRun,
    TIState,
    TrainingInterrupted,
    train_textual_inversion,
)

__all__ = ["TIRun", "image_size", "model_name", "run_plan", "train_from_folder",
           "train_from_items", "unfinished_path", "work_dir_for"]


def image_size(pipe) -> int:
    """The pipeline's native image side: UNet sample size times the VAE's downsampling."""
    return int(pipe.unet.config.sample_size) * vae_scale_factor(pipe.vae)


def model_name(pipe) -> str | None:
    """A name for the model behind ``pipe`` that is fit to share: never a local path.

    ``"toy"`` for the embedded model; a hub id as it is (``"CompVis/stable-diffusion-v1-4"``),
    also when the pipeline was loaded from its cache folder (``.../models--CompVis--stable-
    diffusion-v1-4/snapshots/<rev>``); for any other folder, the folder's name. None if the
    pipeline does not say where it came from.
    """
    source = str(getattr(pipe, "name_or_path", "") or "").strip()
    if not source:
        return None
    from nbhelpers.locations import toy_model_dir

    path = Path(source).expanduser()
    if path.is_dir() and path.resolve() == toy_model_dir().resolve():
        return "toy"
    parts = path.parts
    for i, part in enumerate(parts[:-1]):
        if part.startswith("models--") and parts[i + 1] == "snapshots":
            return part[len("models--"):].replace("--", "/")  # hub ids never hold "--"
    looks_like_hub_id = (source.count("/") == 1 and not source.startswith((".", "/", "~"))
                         and "\\" not in source)
    if looks_like_hub_id and not path.exists():
        return source
    return path.name or None


def _current_embedding(pipe, cfg: TIConfig, step: int, meta: dict) -> Embedding:
    """The token's rows as they are in the pipeline now (after training or a stop)."""
    tok = pipe.tokenizer
    names = [cfg.token] if cfg.overwrite else [cfg.token] + [
        f"{cfg.token}_{k}" for k in range(1, cfg.n_vectors)]
    if cfg.overwrite:
        ids = tok(cfg.token, add_special_tokens=False).input_ids
    else:
        ids = tok.convert_tokens_to_ids(names)
    vectors = pipe.text_encoder.get_input_embeddings().weight[ids].detach().float().cpu()
    return Embedding(cfg.token, vectors.clone(), step=step, meta=meta)


def unfinished_path(plan: TIPlan) -> Path:
    """Where an interrupted or stopped run leaves its embedding so far: in its run folder,
    never over the output, which only a finished run replaces."""
    return plan.work / f"{plan.out.stem}-unfinished{plan.out.suffix}"


def _main_process() -> bool:
    """Under ``accelerate launch`` only the first process holds the lock and sets aside."""
    return os.environ.get("RANK", "0") == "0"


def _framed(items: Sequence[LoadedImage], size: int, data: TIData):
    # one image read, framed and handed to the encoder at a time: the encoder keeps a batch
    # of pixels and then only latents, so the memory never holds the whole folder
    for item in items:
        for framed in frame(item.image, size, data.framing, flip=data.flip,
                            source=str(item.path)):
            yield framed.tensor(), item.caption


def run_plan(plan: TIPlan, pipe, *, callback: Callable[[TIState], None] | None = None,
             accelerator=None) -> TIRun:
    """Run a checked :class:`~nbhelpers.ti.plan.TIPlan` with ``pipe``; see the module.

    Raises:
        TrainingInterrupted: Ctrl-C; ``embedding`` names the file of the embedding so far.
        NonFiniteLossError: the last good vectors were saved to the same file.
        RunLockedError: another run took the run folder since the plan was made.
    """
    start, cfg, data = time.perf_counter(), plan.cfg, plan.data
    if not plan.budget_checked:   # first thing once the tokenizer is here: before encoding
        check_prompt_budget(pipe.tokenizer, plan.templates, plan.captions, cfg)
    size = data.size or image_size(pipe)
    meta = {"init_word": cfg.init_word, "framing": data.framing, "size": size,
            "model_name": model_name(pipe), "trainer": "nbhelpers"}
    lock = RunLock(plan.work) if _main_process() else None
    with lock or contextlib.nullcontext():
        report = None if plan.folder is None else load_folder(
            plan.folder, size=size, refuse_small=data.refuse_small, recursive=data.recursive)
        items = plan.items if report is None else report.loaded
        latents = LatentSet.encode_stream(pipe.vae, _framed(items, size, data),
                                          cache_dir=data.cache_dir)
        if not cfg.resume and lock is not None:
            set_aside(plan.work)   # kept until this run has finished
        try:
            run = train_textual_inversion(pipe, latents, plan.templates, cfg,
                                          callback=callback, accelerator=accelerator)
        except (TrainingInterrupted, NonFiniteLossError) as stop:
            path = save_embedding(_current_embedding(pipe, cfg, stop.step, meta),
                                  unfinished_path(plan), format=data.format)
            if isinstance(stop, TrainingInterrupted):
                raise TrainingInterrupted(stop.step, stop.vectors, stop.checkpoint,
                                          path) from None
            raise NonFiniteLossError(f"{stop} The last good embedding is in {path}; "
                                     f"{plan.out} was left as it was.", stop.step,
                                     stop.vectors, stop.checkpoint) from None
        emb = _current_embedding(pipe, cfg, run.steps, meta)
        path = save_embedding(emb, plan.out, format=data.format)
        if lock is not None:
            discard_previous(plan.work)
            unfinished_path(plan).unlink(missing_ok=True)
    return replace(run, embedding=emb, path=Path(path), report=report,
                   seconds=time.perf_counter() - start)


def train_from_items(pipe, items: Sequence[LoadedImage], cfg: TIConfig, out: str | Path, *,
                     template: str | Sequence[str] = "style", framing: str = "center",
                     flip: bool = False, size: int | None = None, format: str = "diffusers",
                     cache_dir: str | Path | None = None,
                     callback: Callable[[TIState], None] | None = None,
                     accelerator=None) -> TIRun:
    """Frame, encode (cached), train and save images in memory; see
    :func:`train_from_folder` (``items``: :func:`~nbhelpers.ti.dataset.items_from_images`)."""
    data = TIData(template=template, framing=framing, flip=flip, size=size, format=format,
                  cache_dir=None if cache_dir is None else str(cache_dir))
    plan = plan_run(cfg, out, data, items=items, tokenizer=pipe.tokenizer)
    return run_plan(plan, pipe, callback=callback, accelerator=accelerator)


def train_from_folder(data_dir: str | Path, pipe, cfg: TIConfig, out: str | Path, *,
                      template: str | Sequence[str] = "style", framing: str = "center",
                      flip: bool = False, size: int | None = None, format: str = "diffusers",
                      refuse_small: bool = False, recursive: bool = False,
                      cache_dir: str | Path | None = None,
                      callback: Callable[[TIState], None] | None = None,
                      accelerator=None) -> TIRun:
    """Learn ``cfg.token`` from the images in ``data_dir`` and save it to ``out``.

    Args:
        data_dir: a folder of images; captions from ``.txt`` files beside them or from their
            names. Unreadable files are skipped and listed in the returned ``report``.
        pipe: the model (:func:`nbhelpers.models.load_pipeline`).
        template, framing, flip, size, format, refuse_small, recursive, cache_dir: the fields
            of :class:`~nbhelpers.ti.config.TIData`.
        callback: called with a :class:`~nbhelpers.ti.train.TIState` after each step.

    The checks of :func:`~nbhelpers.ti.plan.plan_run` come first, then :func:`run_plan`.
    """
    data = TIData(template=template, framing=framing, flip=flip, size=size, format=format,
                  refuse_small=refuse_small, recursive=recursive,
                  cache_dir=None if cache_dir is None else str(cache_dir))
    plan = plan_run(cfg, out, data, folder=data_dir, tokenizer=pipe.tokenizer)
    return run_plan(plan, pipe, callback=callback, accelerator=accelerator)
