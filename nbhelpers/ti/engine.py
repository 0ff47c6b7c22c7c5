"""From a folder of images (or images in memory) to an embedding file, in one call.

:func:`train_from_folder` is what ``nbhelpers ti train`` runs: load and report the images,
frame them, encode their latents once (cached), train, and save the embedding in the chosen
format. The working folder beside the output holds checkpoints and previews, so an interrupted
run resumes with ``resume=True``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from nbhelpers.images import vae_scale_factor
from nbhelpers.ti.captions import load_templates
from nbhelpers.ti.checkpoints import checkpoint_steps
from nbhelpers.ti.config import TIConfig
from nbhelpers.ti.embeddings import Embedding
from nbhelpers.ti.formats import save_embedding
from nbhelpers.ti.framing import frame
from nbhelpers.ti.images import LoadedImage, LoadReport, load_folder
from nbhelpers.ti.latents import LatentSet
from nbhelpers.ti.train import (
    NonFiniteLossError,
    TIResult,
    TIState,
    train_textual_inversion,
)


@dataclass
class TIRun:
    """What a finished (or stopped) run produced."""

    result: TIResult | None
    embedding: Embedding
    path: Path
    n_examples: int
    seconds: float
    report: LoadReport | None = None


def work_dir_for(out: str | Path) -> Path:
    """The folder for checkpoints and previews of the run that writes ``out``."""
    out = Path(out)
    return out.parent / f"{out.stem}-run"


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


def train_from_items(pipe, items: Sequence[LoadedImage], cfg: TIConfig, out: str | Path, *,
                     template: str | Sequence[str] = "style", framing: str = "center",
                     flip: bool = False, size: int | None = None, format: str = "diffusers",
                     cache_dir: str | Path | None = None,
                     callback: Callable[[TIState], None] | None = None,
                     accelerator=None) -> TIRun:
    """Frame, encode (cached), train and save; see :func:`train_from_folder`."""
    start = time.perf_counter()
    size = size or image_size(pipe)
    templates = load_templates(template, require_name=not cfg.overwrite)
    if not items:
        raise ValueError("no training images; give at least one")

    def framed_examples():
        # one image read, framed and handed to the encoder at a time: the encoder keeps a
        # batch of pixels and then only latents, so the memory never holds the whole folder
        for item in items:
            for framed in frame(item.image, size, framing, flip=flip, source=str(item.path)):
                yield framed.tensor(), item.caption

    data = LatentSet.encode_stream(pipe.vae, framed_examples(), cache_dir=cache_dir)
    out = Path(out)
    cfg = replace(cfg, out_dir=str(work_dir_for(out)))
    meta = {"init_word": cfg.init_word, "framing": framing, "size": size,
            "model_name": model_name(pipe), "trainer": "nbhelpers"}
    result = None
    try:
        result = train_textual_inversion(pipe, data, templates, cfg, callback=callback,
                                         accelerator=accelerator)
        step = result.steps
    except (KeyboardInterrupt, NonFiniteLossError):
        # the trainer saved its checkpoint; keep the embedding as it stands, then re-raise
        steps = checkpoint_steps(Path(cfg.out_dir) / "checkpoint")
        step = steps[0] if steps else 0
        save_embedding(_current_embedding(pipe, cfg, step, meta), out, format=format)
        raise
    emb = _current_embedding(pipe, cfg, step, meta)
    path = save_embedding(emb, out, format=format)
    return TIRun(result, emb, Path(path), len(data), time.perf_counter() - start)


def train_from_folder(data_dir: str | Path, pipe, cfg: TIConfig, out: str | Path, *,
                      refuse_small: bool = False, recursive: bool = False,
                      **kwargs) -> TIRun:
    """Learn ``cfg.token`` from the images in ``data_dir`` and save it to ``out``.

    Args:
        data_dir: a folder of images; captions from ``.txt`` files beside them or from their
            names. Unreadable files are skipped and listed in the returned report.
        pipe: the model (:func:`nbhelpers.models.load_pipeline`).
        kwargs: ``template``, ``framing``, ``flip``, ``size``, ``format``, ``cache_dir``,
            ``callback``, ``accelerator`` (see :func:`train_from_items`).
    """
    size = kwargs.get("size") or image_size(pipe)
    report = load_folder(data_dir, size=size, refuse_small=refuse_small, recursive=recursive)
    run = train_from_items(pipe, report.loaded, cfg, out, **kwargs)
    run.report = report
    return run
