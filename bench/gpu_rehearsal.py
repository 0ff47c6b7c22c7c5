"""Dress rehearsal of the notebooks in the gpu profile, on SD 1.4's structure with random weights.

    python bench/gpu_rehearsal.py OUTDIR                 # on a CUDA machine: full size, bf16 + fp16
    python bench/gpu_rehearsal.py OUTDIR --cpu-small     # the same on the CPU: mini, sd-cpu

Writes the ``full`` rehearsal model (:mod:`nbhelpers.rehearsal`) once, points
``NBHELPERS_SD_MODEL`` at it, and runs every notebook top to bottom in a fresh kernel in the
``gpu`` profile, once per precision (``NBHELPERS_PRECISION=bf16`` and ``fp16``: fp16 with a
GradScaler is what a T4 gets), recording each notebook's wall time and the peak GPU memory
seen by ``nvidia-smi`` while it ran (every process on the GPU, the kernel's included). The table
goes to ``OUTDIR/rehearsal.md`` and, unless ``--no-doc``, to the section "GPU dress rehearsal"
of docs/benchmarks.md. A notebook that fails is reported with its error, and the run goes on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from report import emit, markdown_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class PeakMemory:
    """Highest ``memory.used`` (MiB) that ``nvidia-smi`` reports while the block runs."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.peak, self._proc = enabled, 0, None

    def __enter__(self) -> PeakMemory:
        if self.enabled:
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                 "-lms", "200"], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            if line.strip().isdigit():
                self.peak = max(self.peak, int(line.strip()))

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)


def run_notebook(path: Path, env: dict[str, str], timeout: int) -> tuple[float, str]:
    """Execute ``path`` in a fresh kernel with ``env`` added; (seconds, "" or the error)."""
    nb = nbformat.read(path, as_version=4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    start = time.perf_counter()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        error = ""
    except Exception as err:  # noqa: BLE001 - reported in the table, the run goes on
        error = f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:160]}"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return time.perf_counter() - start, error


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outdir")
    p.add_argument("--cpu-small", action="store_true",
                   help="rehearse this script on the CPU: the mini model in the sd-cpu profile")
    p.add_argument("--precisions", nargs="+", default=["bf16", "fp16"])
    p.add_argument("--notebooks", nargs="*", help="default: every notebook")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    p.add_argument("--no-doc", action="store_true")
    args = p.parse_args(argv)

    from nbhelpers.rehearsal import write_rehearsal_model

    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    size = "mini" if args.cpu_small else "full"
    model = out / f"sd14-rehearsal-{size}"
    if not model.exists():
        start = time.perf_counter()
        write_rehearsal_model(model, size=size, seed=0,
                              dtype="float32" if args.cpu_small else "float16")
        print(f"wrote the {size} rehearsal model in {time.perf_counter() - start:.0f} s")
    notebooks = ([ROOT / n for n in args.notebooks] if args.notebooks
                 else sorted((ROOT / "notebooks").glob("*.ipynb")))
    profile = "sd-cpu" if args.cpu_small else "gpu"
    precisions = ["no"] if args.cpu_small else args.precisions
    rows = []
    for precision in precisions:
        env = {"NBHELPERS_PROFILE": profile, "NBHELPERS_SD_MODEL": str(model),
               "NBHELPERS_PRECISION": precision, "TQDM_DISABLE": "1",
               "NBHELPERS_CACHE": str(out / "cache")}
        for path in notebooks:
            with PeakMemory(enabled=not args.cpu_small) as mem:
                seconds, error = run_notebook(path, env, args.timeout)
            peak = f"{mem.peak / 1024:.1f} GiB" if not args.cpu_small else "-"
            rows.append([path.name, precision, f"{seconds:.0f} s", peak, error or "ok"])
            print(" | ".join(rows[-1]), flush=True)
    text = (f"Every notebook in the `{profile}` profile on the `{size}` rehearsal model (SD 1.4's "
            "structure, random weights: it draws noise, so this measures time, memory and "
            "that every cell runs), one fresh kernel each; peak memory is nvidia-smi's "
            "`memory.used` while the notebook ran.\n\n"
            + markdown_table(["notebook", "precision", "wall time", "peak GPU memory",
                              "result"], rows))
    emit(text, "GPU dress rehearsal", out=str(out / "rehearsal.md"),
         doc=not args.no_doc and not args.cpu_small)
    return 0 if all(r[-1] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
