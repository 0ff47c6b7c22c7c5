"""Checkpoints of a textual-inversion run: written atomically, verified when read.

What :func:`~nbhelpers.ti.train.train_textual_inversion` saves every N steps and at the end
(vectors, optimizer, losses, each process's random generator) so that ``resume`` continues to
the same result as an uninterrupted run, also after the process was killed: the files of one
step (:func:`save_checkpoint`), the steps a folder holds (:func:`checkpoint_steps`), the newest
usable one (:func:`find_checkpoint`, which skips a damaged one with a warning that names it),
and putting one back into a run (:func:`restore_checkpoint`).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from nbhelpers.files import torch_bytes, write_bytes
from nbhelpers.ti.config import TIConfig
from nbhelpers.ti.rows import TrainableRows

__all__ = [
    "CHECKPOINTS_KEPT",
    "checkpoint_steps",
    "find_checkpoint",
    "remove_checkpoint_files",
    "restore_checkpoint",
    "save_checkpoint",
]

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


def save_checkpoint(folder: Path, rows: TrainableRows, opt, step: int, losses: list[float],
                    gen: torch.Generator, rank: int, cfg: TIConfig, scaler=None,
                    barrier: Callable[[], None] | None = None) -> None:
    """Write this process's RNG file and (rank 0) the state file of ``step``, then keep the
    newest :data:`CHECKPOINTS_KEPT` steps up to ``step`` and remove the rest (each process only
    its own files), with any temporary file a killed run left behind.

    ``cfg``: the run's :class:`~nbhelpers.ti.config.TIConfig`, stored as JSON.
    """
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
    remove_checkpoint_files(folder, rank, keep)


def remove_checkpoint_files(folder: Path, rank: int, keep: set[int]) -> None:
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


def restore_checkpoint(folder: Path, rows: TrainableRows, opt, gen: torch.Generator,
                       rank: int, scaler=None, max_step: int | None = None
                       ) -> tuple[int, list[float]]:
    """Put the newest usable checkpoint (:func:`find_checkpoint`) into the run: the vectors of
    ``rows``, the optimizer, the fp16 scaler and this process's generator. Returns the step and
    the losses up to it."""
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
