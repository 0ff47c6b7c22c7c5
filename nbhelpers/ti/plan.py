"""A textual-inversion run, step 1: every check that needs no model, before anything loads.

:func:`plan_run` checks the configuration, the templates (the one rule of
:func:`~nbhelpers.ti.captions.check_templates`), the images (the folder exists and at least one
image in it opens), the token (one word, no path characters, no key of another format's
files), the output (a file name whose ending fits the format, in a folder that can be written,
whose run folder no other live run holds) and the resume point, and returns a
:class:`TIPlan`. Given the model's tokenizer (a file, loaded in a second without the model),
it also checks the 77-token budget (:func:`check_prompt_budget`): the token must fit in every
prompt a template and a caption make, or the run would train nothing. Step 2,
:func:`~nbhelpers.ti.engine.run_plan`, runs the plan with a pipeline and repeats none of this.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nbhelpers.ti.captions import caption_for, caption_from_filename, fill_template, load_templates
from nbhelpers.ti.config import TIConfig, TIData

__all__ = ["NoCheckpointError", "TIPlan", "check_prompt_budget", "plan_run", "work_dir_for"]

#: Characters a token may not hold: the default file name is made from it.
_PATH_CHARACTERS = ("/", "\\", "\0")


class NoCheckpointError(FileNotFoundError):
    """``resume`` asked, and the run folder holds no checkpoint (``folder``, ``out``)."""

    def __init__(self, folder: Path, out: Path) -> None:
        super().__init__(f"resume=True: no checkpoint in {folder} (the run that writes {out} "
                         "keeps it there); run without resume to start")
        self.folder, self.out = folder, out


@dataclass(frozen=True)
class TIPlan:
    """A checked run: what :func:`~nbhelpers.ti.engine.run_plan` needs besides a pipeline."""

    cfg: TIConfig                   #: validated; ``out_dir`` is the run folder
    data: TIData
    templates: tuple[str, ...]      #: checked by the one rule
    out: Path                       #: the embedding file, replaced only when the run finishes
    work: Path                      #: the run folder (checkpoints, previews, lock)
    folder: Path | None             #: the image folder (None: ``items`` given)
    items: tuple[Any, ...] | None   #: :class:`~nbhelpers.ti.images.LoadedImage` s, or None
    captions: tuple[tuple[str, str], ...]  #: (caption, where it came from), known beforehand
    resume_step: int | None         #: the checkpoint ``resume`` continues from
    budget_checked: bool            #: the 77-token budget was checked (a tokenizer was given)


def work_dir_for(out: str | Path) -> Path:
    """The folder for checkpoints and previews of the run that writes ``out``."""
    out = Path(out)
    return out.parent / f"{out.stem}-run"


def _check_token(cfg: TIConfig, data: TIData) -> None:
    import torch

    from nbhelpers.ti.embeddings import Embedding, check_token
    from nbhelpers.ti.formats import FORMATS

    check_token(cfg.token)
    cfg.validate()
    if any(c in cfg.token for c in _PATH_CHARACTERS) or cfg.token.strip(".") == "":
        raise ValueError(f"token {cfg.token!r} holds a path character (/ or \\) or is only "
                         "dots; the file is named after it, so use a plain word such as "
                         "'<my-style>'")
    # the format's own refusals (a diffusers file of token 'emb_params' reads as kohya's)
    FORMATS[data.format].check(Embedding(cfg.token, torch.zeros(cfg.n_vectors, 1)))


def _check_out(out: Path, data: TIData) -> Path:
    """The output file's name and folder; returns the run folder."""
    from nbhelpers.files import check_writable
    from nbhelpers.ti import formats
    from nbhelpers.ti.run_folder import LOCK_NAME, RunLock

    if out.is_dir():
        raise ValueError(f"output {str(out)!r} is a folder; name the embedding file, "
                         f"such as {str(out / 'my-style.safetensors')!r}")
    if not out.suffix:
        raise ValueError(f"output {str(out)!r} has no file ending; name it .safetensors "
                         "(diffusers, kohya) or .pt (a1111, kohya)")
    formats.save_format(out, data.format)   # the ending fits the format: the saver's own rule
    check_writable(out)   # a read-only folder fails now, not after the training
    work = work_dir_for(out)
    if work.exists():
        if not work.is_dir():
            raise NotADirectoryError(f"{work} is a file, and the run keeps its checkpoints in "
                                     "a folder of that name; move the file away")
        check_writable(work / LOCK_NAME)
        RunLock(work).check_free()
    return work


def _image_files(folder: Path, recursive: bool):
    """The regular files with an image ending (a FIFO named .png is never opened), sorted."""
    from nbhelpers.ti.images import IMAGE_EXTENSIONS

    for p in sorted(folder.iterdir(), key=lambda q: q.name):
        if p.name.startswith("."):
            continue
        if p.is_dir() and not p.is_symlink():
            if recursive:
                yield from _image_files(p, recursive)
        elif p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            yield p


def _folder_captions(folder: Path, recursive: bool) -> tuple[tuple[str, str], ...]:
    """The captions of the images in ``folder``, after checking that one of them opens."""
    import warnings

    from PIL import Image

    from nbhelpers.ti.images import check_image_folder

    check_image_folder(folder, recursive=recursive)
    found, opened = [], False
    for p in _image_files(folder, recursive):
        if not opened:
            try:
                with warnings.catch_warnings():   # a huge image: the loader says so later
                    warnings.simplefilter("ignore")
                    with Image.open(p) as im:
                        opened = im.size[0] > 0 and im.size[1] > 0
            except Exception:  # noqa: BLE001 - unreadable: the loader lists it later
                pass
        try:
            caption = caption_for(p)[0]
        except (OSError, UnicodeDecodeError):
            caption = caption_from_filename(p.name)
        found.append((caption, str(p)))
    if not opened:
        raise ValueError(f"no image in {str(folder)!r} can be read (each is damaged or not an "
                         "image); add readable PNG or JPEG files")
    return tuple(found)


def plan_run(cfg: TIConfig, out: str | os.PathLike, data: TIData | None = None, *,
             folder: str | os.PathLike | None = None, items: Any = None,
             tokenizer: Any = None) -> TIPlan:
    """Check everything a run needs that no model does; return the checked :class:`TIPlan`.

    Args:
        cfg: the run's options (``out_dir`` is set from ``out``).
        out: the embedding file to write.
        data: templates, framing, format, cache (default :class:`TIData`'s).
        folder, items: the images: a folder, or :class:`~nbhelpers.ti.images.LoadedImage` s
            (:func:`~nbhelpers.ti.dataset.items_from_images`); exactly one.
        tokenizer: the model's tokenizer, to check the 77-token budget now; without it,
            :func:`~nbhelpers.ti.engine.run_plan` checks it before encoding any image.

    Raises:
        ValueError, FileNotFoundError, NotADirectoryError: what to fix.
        nbhelpers.files.WriteError: the output folder cannot be written.
        nbhelpers.ti.run_folder.RunLockedError: another run writes the same output.
    """
    from nbhelpers.ti.checkpoints import find_checkpoint

    data = data or TIData()
    if (folder is None) == (items is None):
        raise ValueError("give the images as folder= or as items=, one of the two")
    _check_token(cfg, data)
    templates = tuple(load_templates(data.template, require_name=not cfg.overwrite))
    if folder is not None:
        folder = Path(folder).expanduser()
        captions = _folder_captions(folder, data.recursive)
    else:
        items = tuple(items)
        if not items:
            raise ValueError("no training images; give at least one")
        captions = tuple((it.caption, str(it.path or f"image {k}"))
                         for k, it in enumerate(items))
    out = Path(out)
    work = _check_out(out, data)
    resume_step = None
    if cfg.resume:
        found = find_checkpoint(work / "checkpoint")
        if found is None:
            raise NoCheckpointError(work / "checkpoint", out)
        resume_step = found[0]
    if tokenizer is not None:
        check_prompt_budget(tokenizer, templates, captions, cfg)
    return TIPlan(replace(cfg, out_dir=str(work)), data, templates, out, work, folder, items,
                  captions, resume_step, tokenizer is not None)


def _cut(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[:n] + f"... ({len(text)} characters)"


def check_prompt_budget(tokenizer: Any, templates: tuple[str, ...],
                        captions: tuple[tuple[str, str], ...], cfg: TIConfig) -> None:
    """Refuse a run whose token would be cut off: CLIP reads 77 tokens (75 between the start
    and end marks), and a token pushed past them by a long template or caption is never seen,
    so the run would train nothing. Names the longest offender.

    Each prompt is split at the token (an added token is tokenised on its own, so the counts
    of the pieces add up exactly); the caption that makes the most tokens is the worst for
    every template.
    """
    budget = int(tokenizer.model_max_length) - 2
    width = 1 if cfg.overwrite else cfg.n_vectors   # tokens the placeholder stands for

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids) if text.strip() else 0

    longest = max(captions, key=lambda c: count(c[0]), default=("", ""))
    worst = (0, "", longest)
    for template in templates:
        if "[name]" not in template:
            continue   # overwriting: the word comes with the caption
        pieces = fill_template(template, "[name]", longest[0]).split("[name]")
        needed = sum(count(p) for p in pieces[:-1]) + width * (len(pieces) - 1)
        worst = max(worst, (needed, template, longest))
    needed, template, (caption, source) = worst
    if needed > budget:
        raise ValueError(
            f"the token would not fit in the prompt: template {template!r} with the caption "
            f"{_cut(caption)!r} (from {source}) needs {needed} tokens up to the end of the "
            f"token, and the model reads {budget}; the run would train nothing. Shorten that "
            "caption (or its .txt file) or the template, or put [name] before [filewords]")
