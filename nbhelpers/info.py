"""What a workshop checks first: versions, device, torch threads, profile, and where the
models are.

Used by ``nbhelpers info`` in a terminal and by notebook 00; both print the same report.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Container, Mapping
from importlib import metadata

#: Distributions whose versions the report lists, in this order.
PACKAGES: tuple[str, ...] = (
    "nbhelpers", "torch", "diffusers", "transformers", "accelerate", "safetensors",
    "numpy", "matplotlib", "ipywidgets", "jupyterlab", "nbval",
)


def package_versions() -> dict[str, str]:
    """Installed version of each package in :data:`PACKAGES` (``"not installed"`` if absent)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def hosted_kernel(environ: Mapping[str, str] | None = None,
                  modules: Container[str] | None = None) -> str | None:
    """Which hosted service runs this kernel: ``"Colab"``, ``"JupyterHub"``, or None (a
    machine of one's own).

    Colab: its ``google.colab`` module is loaded in every Colab kernel, and its runtimes set
    ``COLAB_*`` variables. A JupyterHub: the hub gives each user's server ``JUPYTERHUB_*``
    variables (``JUPYTERHUB_USER``, ``JUPYTERHUB_API_URL``, ...). Notebook 00's first cell
    decides the same way without importing nbhelpers, which may not be installed yet there.

    Args:
        environ: the environment variables (default ``os.environ``).
        modules: the names of the loaded modules (default ``sys.modules``).
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if "google.colab" in modules or any(k.startswith("COLAB_") for k in environ):
        return "Colab"
    if any(k.startswith("JUPYTERHUB_") for k in environ):
        return "JupyterHub"
    return None


def device_summary() -> str:
    """The compute device in words: GPU names and memory, or the CPU thread count."""
    import torch

    if torch.cuda.is_available():
        gpus = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append(f"cuda:{i} {p.name} ({p.total_memory / 2**30:.0f} GiB)")
        return ", ".join(gpus)
    build = "CPU build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
    return f"cpu ({torch.get_num_threads()} threads; torch {build}, no CUDA device)"


def collect_info() -> dict[str, object]:
    """Everything the setup check reports, as a dict of plain values."""
    from nbhelpers import threads
    from nbhelpers.locations import SD_ENV_VAR, find_sd_weights, is_pipeline_folder, toy_model_dir
    from nbhelpers.profile import get_profile

    try:  # applied before torch loads (device_summary), described after it did
        threads.ensure_applied()
        device = device_summary()
        thread_line = threads.describe()
    except ValueError as err:  # a bad NBHELPERS_THREADS
        device, thread_line = device_summary(), f"ERROR: {err}"

    try:
        prof = get_profile()
        profile = f"{prof.name} ({prof.reason}); model: {prof.model}"
    except ValueError as err:
        profile = f"ERROR: {err}"
    sd = find_sd_weights()
    toy = toy_model_dir()
    return {
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "hosted": hosted_kernel() or "no (a machine of its own)",
        "versions": package_versions(),
        "device": device,
        "threads": thread_line,
        "profile": profile,
        "sd_weights": str(sd) if sd is not None else
        f"not found locally (download SD 1.x once, or set {SD_ENV_VAR} to a local folder)",
        "toy_model": f"{toy} ({'present' if is_pipeline_folder(toy) else 'not built yet'})",
    }


def format_info(info: dict[str, object] | None = None) -> str:
    """The report as aligned text lines."""
    info = collect_info() if info is None else info
    rows = [("python", info["python"]), ("platform", info["platform"]),
            ("hosted", info["hosted"])]
    rows += [(name, ver) for name, ver in info["versions"].items()]  # type: ignore[union-attr]
    rows += [("device", info["device"]), ("threads", info.get("threads", "")),
             ("profile", info["profile"]),
             ("SD 1.x weights", info["sd_weights"]), ("toy model", info["toy_model"])]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
