"""Shared by the benchmarks: machine description and writing a section of docs/benchmarks.md.

Each benchmark owns one section (a ``## `` heading); a rerun replaces that section in place and
leaves the others alone. The history of every figure is in git.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import tempfile
from importlib import metadata
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Figures printed by the scripts in `bench/` and written here by them; rerun with `make bench`.
Each section names the machine, the date and the package versions it was measured with.
Ratios are measured side by side in one run; absolute times vary between machines.
"""


def speed_probe() -> float:
    """GFLOP/s of one torch thread on float32 512x512 matrix products (best of three rounds):
    machines sold under one CPU name differ (and so does one machine under a neighbour's load),
    so every section records this beside its figures to make runs comparable."""
    import time

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(10):
                a @ a
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 10 * 2 * 512 ** 3 / best / 1e9


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in
                     Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    versions = ", ".join(f"{n} {metadata.version(n)}" for n in ("torch", "diffusers"))
    return (f"{_dt.date.today().isoformat()}; {cpu}, {os.cpu_count()} cores "
            f"(one thread: {speed_probe():.0f} GFLOP/s in float32 matrix products), {dev}; "
            f"Python {platform.python_version()}, {versions}")


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(title: str, body: str, doc: Path = DOC) -> None:
    """Replace (or add) the section ``## title`` of ``doc``; written atomically."""
    text = doc.read_text() if doc.exists() else HEADER
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=doc.parent, delete=False, suffix=".tmp") as f:
        f.write(text.rstrip("\n") + "\n")
    os.replace(f.name, doc)


def emit(text: str, title: str, out: str | None = None, doc: bool = True) -> None:
    """Print a benchmark's text, optionally save it to ``out``, and write its doc section."""
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    if doc:
        write_section(title, f"Machine: {machine()}.\n\n{text}")
