"""A classroom install without Wi-Fi: every wheel the project needs, in one folder.

    python tools/wheelhouse.py build --out DIR [--platform NAME] [--python-version 3.11] ...
    python tools/wheelhouse.py install DIR [--project .] [--extras dev] ...

``make wheelhouse`` and ``make install WHEELHOUSE=DIR`` call these (README, "Classroom install
without Wi-Fi"). The script needs only the standard library and pip, so it runs in a new
virtual environment before anything is installed; ``build`` also needs uv.

build, on a machine with internet, for one named platform (:data:`PLATFORMS`):

1. torch, a CPU build: a local CPU wheel when pip already sees one, else PyTorch's CPU index
   (Linux) or PyPI (macOS and Windows, whose PyPI wheels are CPU builds);
2. the project's dependencies with all its extras, plus uv, pip and the build requirements of
   ``pyproject.toml`` (an editable install builds the project offline too), resolved by
   ``uv pip compile`` for that platform: pip's ``--platform`` picks wheels for another
   platform but reads environment markers for this one (it would leave out colorama and
   pywinpty for Windows);
3. those pins downloaded by pip as wheels for the platform, and open-clip-torch without its
   dependencies (only its tokenizer file is used);
4. ``manifest.json``: platform, Python, every wheel's size and SHA-256, the total.

Everything is written into ``.NAME.partial-PID`` beside the target and renamed to it at the end,
so an interrupted build leaves no folder that looks finished. Downloaded wheels are also kept in
a cache (``$NBHELPERS_CACHE/wheels``, by default ``~/.cache/nbhelpers/wheels``) and a later
build takes them from there without the network: the package index here sends no caching
headers, so pip's own cache keeps nothing.

install, with no network: checks the folder against its manifest (a half-copied USB stick is
named file by file), then installs uv, the project (editable, from the repository) with its
extras and open-clip-torch from the folder alone (``--no-index --find-links``). A package the
folder lacks is named, with the command that builds a new wheelhouse.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: pip vendors tomli
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
BUILD_HINT = "make wheelhouse WHEELHOUSE={dir}{platform}"


class WheelhouseError(Exception):
    """A problem the user can fix; the message says how."""


@dataclass(frozen=True)
class Platform:
    """A target of ``make wheelhouse``: how uv resolves for it and which wheels pip takes."""

    name: str
    uv: str                       # uv's --python-platform
    pip: tuple[str, ...]          # pip's --platform values, most preferred first
    torch_from_pypi: bool         # PyPI's torch wheels are CPU builds here
    env: tuple[tuple[str, str], ...] = ()   # extra environment for uv


def _manylinux(arch: str) -> tuple[str, ...]:
    """manylinux tags from glibc 2.28 down: pip's --platform takes each tag literally."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(28, 4, -1)]
    return (*tags, f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}")


PLATFORMS = {
    p.name: p
    for p in (
        Platform("linux-x86_64", "x86_64-manylinux_2_28", _manylinux("x86_64"), False),
        Platform("linux-aarch64", "aarch64-manylinux_2_28", _manylinux("aarch64"), False),
        # torch's macOS wheels need macOS 14; pip expands the tag to older versions itself
        Platform("macos-arm64", "aarch64-apple-darwin", ("macosx_14_0_arm64",), True,
                 (("MACOSX_DEPLOYMENT_TARGET", "14.0"),)),
        Platform("windows-x86_64", "x86_64-pc-windows-msvc", ("win_amd64",), True),
    )
}
#: other spellings, as pip and sysconfig write them
ALIASES = {
    "manylinux_2_28_x86_64": "linux-x86_64",
    "manylinux_2_28_aarch64": "linux-aarch64",
    "macosx_14_0_arm64": "macos-arm64",
    "macosx_arm64": "macos-arm64",
    "win_amd64": "windows-x86_64",
    "win-amd64": "windows-x86_64",
}


def this_machine() -> str:
    """The name in :data:`PLATFORMS` of the machine this runs on, as sysconfig reports it."""
    plat = sysconfig.get_platform()          # linux-x86_64, macosx-14.0-arm64, win-amd64
    if plat.startswith("macosx-"):
        plat = "macos-" + plat.rsplit("-", 1)[1]
    return ALIASES.get(plat, plat)


def resolve_platform(name: str | None) -> Platform:
    """``PLATFORM=`` as given (empty: this machine) -> a :class:`Platform`, or a clear error."""
    given = name.strip() if name else ""
    key = ALIASES.get(given, given) if given else this_machine()
    if key not in PLATFORMS:
        what = f"PLATFORM={given!r}" if given else f"this machine ({key})"
        raise WheelhouseError(
            f"{what} is not a platform a wheelhouse can be built for; choose one of "
            f"{', '.join(PLATFORMS)} (e.g. make wheelhouse PLATFORM=windows-x86_64)")
    return PLATFORMS[key]


def parse_python_version(text: str | None) -> str:
    """``PYTHON_VERSION=`` (empty: the running Python) -> ``"3.11"``, or a clear error."""
    if not text:
        return f"{sys.version_info.major}.{sys.version_info.minor}"
    m = re.fullmatch(r"3\.(\d+)", text.strip())
    if not m or int(m.group(1)) < 10:
        raise WheelhouseError(
            f"PYTHON_VERSION={text!r}: give the laptops' Python as 3.MINOR, 3.10 or newer "
            "(e.g. PYTHON_VERSION=3.12)")
    return text.strip()


# ---------------------------------------------------------------------------------------------
# the manifest: written last, checked first


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path, platform: str, python: str, torch_wheel: str,
                   torch_build: str) -> dict:
    """List every wheel in ``folder`` with size and SHA-256 in ``folder/manifest.json``."""
    wheels = [{"file": p.name, "bytes": p.stat().st_size, "sha256": sha256(p)}
              for p in sorted(folder.glob("*.whl"))]
    manifest = {
        "format": MANIFEST_FORMAT,
        "platform": platform,
        "python": python,
        "torch": {"wheel": torch_wheel, "build": torch_build},
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wheels": wheels,
        "total_bytes": sum(w["bytes"] for w in wheels),
    }
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, folder / MANIFEST)
    return manifest


def read_manifest(folder: Path) -> dict:
    """The manifest of a finished wheelhouse, after checking each wheel it lists."""
    hint = BUILD_HINT.format(dir=folder, platform="")
    if not folder.is_dir():
        raise WheelhouseError(
            f"WHEELHOUSE={folder}: no such folder. Build one on a machine with internet: {hint}")
    path = folder / MANIFEST
    if not path.is_file():
        raise WheelhouseError(
            f"WHEELHOUSE={folder} has no {MANIFEST}, so it is not a finished wheelhouse (an "
            f"interrupted make wheelhouse leaves none). Build it again: {hint}")
    try:
        manifest = json.loads(path.read_text())
        wheels = manifest["wheels"]
        manifest["platform"], manifest["python"]  # noqa: B018 - required keys
    except (ValueError, KeyError, TypeError) as e:
        raise WheelhouseError(f"{path} is not a wheelhouse manifest ({e}); {hint}") from e
    bad = []
    for w in wheels:
        p = folder / w["file"]
        if not p.is_file():
            bad.append(f"{w['file']} is missing")
        elif p.stat().st_size != w["bytes"]:
            bad.append(f"{w['file']} has {p.stat().st_size} of its {w['bytes']} bytes")
        elif sha256(p) != w["sha256"]:
            bad.append(f"{w['file']} is damaged (its SHA-256 is not the manifest's)")
    if bad:
        raise WheelhouseError(
            f"WHEELHOUSE={folder} is incomplete: " + "; ".join(bad)
            + ". Copy the folder again from where it was built.")
    return manifest


def human_size(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


# ---------------------------------------------------------------------------------------------
# building


def _run(argv: list[str], what: str, env: dict | None = None) -> str:
    """Run a tool; on failure raise with the last lines it printed. Returns its stdout."""
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise WheelhouseError(f"{what} failed:\n{tail}")
    return proc.stdout


def _pip_target(platform: Platform, python: str) -> list[str]:
    """pip options that pick wheels for ``platform`` and CPython ``python``, never an sdist."""
    opts = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for tag in platform.pip:
        opts += ["--platform", tag]
    return opts


def torch_build(wheel: Path) -> str:
    """``"cpu"``, or ``"cuda 12.6"`` (or hip, xpu): what ``torch/version.py`` in the wheel says."""
    with zipfile.ZipFile(wheel) as z:
        text = z.read("torch/version.py").decode()
    for backend in ("cuda", "hip", "xpu"):
        m = re.search(rf"^{backend}\s*(?::\s*\S+)?\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
        if m:
            return f"{backend} {m.group(1)}"
    return "cpu"


def _download_torch(dest: Path, platform: Platform, python: str, version: str,
                    index: str, cache: Path | None) -> Path:
    """The CPU wheel of torch ``version`` for the platform, into ``dest``."""
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(dest),
           *_pip_target(platform, python)]
    spec = f"torch=={version}"
    tried = []
    # 1. a CPU wheel in the cache, or one pip already sees without an index (a local wheelhouse)
    cached = cached_torch(cache, version, supported_tags(platform, python)) if cache else None
    if cached:
        _link_or_copy(cached, dest / cached.name)
        print(f"wheelhouse: torch from the cache ({cached.name})")
        return dest / cached.name
    try:
        _run([*pip, "--no-index", spec], "pip download torch (local)")
        wheel = next(dest.glob("torch-*.whl"))
        if torch_build(wheel) == "cpu":
            print(f"wheelhouse: torch from a local CPU wheel ({wheel.name})")
            return wheel
        tried.append(f"the local {wheel.name} is a {torch_build(wheel)} build")
        wheel.unlink()
    except WheelhouseError:
        tried.append("no local wheel")
    # 2. PyTorch's CPU index (Linux) or PyPI (macOS, Windows: CPU builds there)
    source = "PyPI" if platform.torch_from_pypi else index
    print(f"wheelhouse: torch {version} from {source}")
    try:
        _run([*pip, *([] if platform.torch_from_pypi else ["--index-url", index]), spec],
             f"pip download {spec} from {source}")
    except WheelhouseError as e:
        raise WheelhouseError(
            f"torch: no wheel of torch {version} for {platform.name} / CPython {python} "
            f"({'; '.join(tried)}; {source} has none or cannot be reached). Another version: "
            f"TORCH_VERSION=..., another index: TORCH_INDEX=...\n{e}") from e
    wheel = next(dest.glob("torch-*.whl"))
    build = torch_build(wheel)
    if build != "cpu":
        raise WheelhouseError(
            f"torch: {wheel.name} from {source} is a {build} build; a classroom wheelhouse "
            "is for CPU laptops: set TORCH_INDEX to PyTorch's CPU index")
    return wheel


def build_requirements(pyproject: Path) -> list[str]:
    return list(tomllib.loads(pyproject.read_text())["build-system"]["requires"])


def _resolve(pyproject: Path, torch_wheel: Path, platform: Platform, python: str,
             uv: str, work: Path) -> list[str]:
    """Pinned ``name==version`` lines for the platform: the project with all its extras, the
    torch wheel's own dependencies, uv, pip and the build requirements (torch itself left out:
    it is in the folder already)."""
    extra = work / "extra.in"
    extra.write_text("\n".join([f"torch @ {torch_wheel.as_uri()}", "uv", "pip",
                                *build_requirements(pyproject)]) + "\n")
    env = {**os.environ, **dict(platform.env)}
    out = _run([uv, "pip", "compile", "--quiet", "--no-header", "--no-annotate",
                "--all-extras", "--only-binary", ":all:", "--python-platform", platform.uv,
                "--python-version", python, str(pyproject), str(extra)],
               f"uv pip compile for {platform.name} / Python {python}", env=env)
    return [line.strip() for line in out.splitlines()
            if line.strip() and not line.startswith("#") and " @ " not in line]


def supported_tags(platform: Platform, python: str) -> list:
    """The wheel tags pip accepts for the platform and CPython ``python``, best first."""
    from pip._vendor.packaging import tags

    version = tuple(int(x) for x in python.split("."))
    plats = []
    for tag in platform.pip:
        m = re.fullmatch(r"macosx_(\d+)_(\d+)_(\w+)", tag)
        plats += list(tags.mac_platforms((int(m[1]), int(m[2])), m[3])) if m else [tag]
    interpreter = f"cp{version[0]}{version[1]}"
    return [*tags.cpython_tags(version, platforms=plats),
            *tags.compatible_tags(version, interpreter, plats)]


def take_from_cache(dest: Path, pins: list[str], tags: list, cache: Path) -> list[str]:
    """Link (or copy) into ``dest`` the cached wheel that pip would pick for each
    ``name==version`` pin; returns the pins the cache has no fitting wheel of."""
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

    best: dict[tuple, tuple[int, Path]] = {}
    for r, name, version, path in _fitting_wheels(cache, "*.whl", tags):
        if (name, version) not in best or r < best[name, version][0]:
            best[name, version] = (r, path)
    missing = []
    for pin in pins:
        name, _, version = pin.partition("==")
        hit = best.get((canonicalize_name(name), Version(version)))
        if hit is None:
            missing.append(pin)
            continue
        _link_or_copy(hit[1], dest / hit[1].name)
    return missing


def cached_torch(cache: Path, version: str, tags: list) -> Path | None:
    """A CPU wheel of torch ``version`` (any local label, such as +cpu) in the cache that fits
    ``tags``, the best fit first; None if there is none."""
    fits = [(r, path) for r, name, v, path in _fitting_wheels(cache, "torch-*.whl", tags)
            if name == "torch" and v.public == version]
    return next((p for _, p in sorted(fits) if torch_build(p) == "cpu"), None)


def _fitting_wheels(cache: Path, pattern: str, tags: list):
    """``(rank, name, version, path)`` of each wheel in ``cache`` matching ``pattern`` that
    fits one of ``tags``; rank is the position of its best tag (0: what pip prefers most)."""
    from pip._vendor.packaging.utils import InvalidWheelFilename, parse_wheel_filename

    rank = {t: i for i, t in enumerate(tags)}
    for path in cache.glob(pattern) if cache.is_dir() else ():
        try:
            name, version, _, wheel_tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename:
            continue
        r = min((rank[t] for t in wheel_tags if t in rank), default=None)
        if r is not None:
            yield r, name, version, path


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _download_pins(dest: Path, pins: list[str], platform: Platform, python: str,
                   cache: Path | None, work: Path) -> None:
    """Every pin as a wheel for the platform: those the cache holds from there, the rest
    downloaded by pip."""
    missing = take_from_cache(dest, pins, supported_tags(platform, python), cache) \
        if cache else pins
    print(f"wheelhouse: {len(pins) - len(missing)} of {len(pins)} wheels from the cache "
          f"{cache}" if cache else f"wheelhouse: {len(pins)} wheels to download")
    if not missing:
        return
    print(f"wheelhouse: downloading {len(missing)} wheels for {platform.name}")
    req = work / "pins.txt"
    req.write_text("\n".join(missing) + "\n")
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(dest),
          *_pip_target(platform, python), "-r", str(req)],
         f"pip download for {platform.name} / Python {python}")


def _fill_cache(folder: Path, cache: Path) -> None:
    """Keep each new wheel in the cache: a hard link where the file system allows."""
    cache.mkdir(parents=True, exist_ok=True)
    for wheel in folder.glob("*.whl"):
        target = cache / wheel.name
        if target.exists():
            continue
        tmp = cache / f".{wheel.name}.{os.getpid()}.tmp"
        _link_or_copy(wheel, tmp)
        os.replace(tmp, target)


def partial_name(out: Path) -> Path:
    return out.parent / f".{out.name}.partial-{os.getpid()}"


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove the ``.NAME.partial-PID`` folders of builds whose process is gone."""
    removed = []
    for p in out.parent.glob(f".{out.name}.partial-*"):
        pid = p.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def publish(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` folder to ``out``, replacing an older wheelhouse there."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def check_target(out: Path) -> None:
    """``out`` may be new, empty or an older wheelhouse; nothing else is replaced."""
    if out.exists() and (not out.is_dir()
                         or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise WheelhouseError(
            f"WHEELHOUSE={out} exists and is not a wheelhouse (no {MANIFEST}); it is left as it "
            "is: choose another folder, or remove it first")


def build(out: Path, platform: Platform, python: str, torch_version: str, torch_index: str,
          open_clip_version: str, uv: str, cache: Path | None) -> dict:
    """Build the wheelhouse ``out`` (see the module docstring); returns its manifest."""
    out = out.resolve()
    check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for p in remove_stale_partials(out):
        print(f"wheelhouse: removed {p.name}, left by an interrupted build")
    tmp = partial_name(out)
    tmp.mkdir()
    try:
        with tempfile.TemporaryDirectory() as work:
            torch_wheel = _download_torch(tmp, platform, python, torch_version, torch_index,
                                          cache)
            pins = _resolve(ROOT / "pyproject.toml", torch_wheel, platform, python, uv,
                            Path(work))
            pins.append(f"open-clip-torch=={open_clip_version}")
            _download_pins(tmp, pins, platform, python, cache, Path(work))
        if cache:
            _fill_cache(tmp, cache)
        manifest = write_manifest(tmp, platform.name, python, torch_wheel.name,
                                  torch_build(torch_wheel))
        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


# ---------------------------------------------------------------------------------------------
# installing, with no network


MISSING = (
    re.compile(r"Because (\S+?)(?:\[\S+\])? was not found in the provided package locations"),
    re.compile(r"No matching distribution found for ([A-Za-z0-9._-]+)"),
)


def missing_package(output: str) -> str | None:
    """The package an offline installer (uv or pip) found no wheel of, from what it printed."""
    for pattern in MISSING:
        m = pattern.search(output)
        if m:
            return m.group(1)
    return None


def check_fits_this_machine(manifest: dict, folder: Path) -> None:
    """The wheelhouse was built for this Python and platform, or a clear error."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    python_fits = manifest["python"] == here
    torch = manifest.get("torch", {}).get("wheel")
    platform_fits = True
    try:
        from pip._vendor.packaging.tags import sys_tags
        from pip._vendor.packaging.utils import parse_wheel_filename
    except ImportError:     # no pip to ask: the installer will say
        pass
    else:
        if torch:
            platform_fits = bool(set(parse_wheel_filename(torch)[3]) & set(sys_tags()))
    if python_fits and platform_fits:
        return
    fix = BUILD_HINT.format(dir=folder, platform=f" PLATFORM={this_machine()}")
    msg = (f"WHEELHOUSE={folder} is for {manifest['platform']} / Python {manifest['python']}, "
           f"and this is {this_machine()} / Python {here}"
           + ("" if platform_fits else f", which cannot install its {torch}")
           + f". Build one for this machine: {fix} PYTHON_VERSION={here}")
    if platform_fits:
        msg += (f"; or make the environment with Python {manifest['python']}: "
                f"make install PYTHON=python{manifest['python']} WHEELHOUSE={folder}")
    raise WheelhouseError(msg)


def install(folder: Path, project: Path, extras: str, open_clip_version: str,
            uv: str | None) -> None:
    """Install uv, the project (editable) and open-clip-torch from ``folder`` alone."""
    folder = folder.resolve()
    manifest = read_manifest(folder)
    check_fits_this_machine(manifest, folder)
    print(f"install: from the wheelhouse {folder} ({len(manifest['wheels'])} wheels for "
          f"{manifest['platform']} / Python {manifest['python']}, built "
          f"{manifest.get('created_utc', '?')}); no network is used")
    offline = ["--no-index", "--find-links", str(folder)]
    python = sys.executable
    if not (uv and Path(uv).is_file()):
        uv = str(Path(python).parent / ("uv.exe" if os.name == "nt" else "uv"))
    if not Path(uv).is_file():
        try:
            _run([python, "-m", "pip", "install", "--quiet", *offline, "uv"], "pip install uv")
        except WheelhouseError:
            print("install: the wheelhouse has no uv for this machine, so pip does the "
                  "installing (slower)")
    if Path(uv).is_file():
        installer = [uv, "pip", "install", "--quiet", "--python", python]
    else:
        installer = [python, "-m", "pip", "install", "--quiet"]
    torch = manifest.get("torch", {})
    print(f"install: torch from the wheelhouse ({torch.get('wheel')}, {torch.get('build')} "
          "build), nbhelpers and what it needs")
    steps = [
        ([*installer, *offline, "-e", f"{project}[{extras}]"], "nbhelpers"),
        ([*installer, *offline, "--no-deps", f"open-clip-torch=={open_clip_version}"],
         "open-clip-torch, without its dependencies (for SD 1.4's tokenizer file)"),
    ]
    for argv, what in steps:
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode == 0:
            continue
        output = proc.stdout + proc.stderr
        name = missing_package(output)
        tail = "\n".join(output.strip().splitlines()[-12:])
        hint = BUILD_HINT.format(dir=folder, platform=f" PLATFORM={manifest['platform']}")
        if name:
            raise WheelhouseError(
                f"install: the wheelhouse {folder} has no wheel of {name}, which {what} needs "
                f"(built for an older version of the project?). On a machine with internet, "
                f"build it again: {hint}\n{tail}")
        raise WheelhouseError(f"install: installing {what} from {folder} failed:\n{tail}")


# ---------------------------------------------------------------------------------------------


def default_cache() -> Path:
    root = os.environ.get("NBHELPERS_CACHE") or Path.home() / ".cache" / "nbhelpers"
    return Path(root) / "wheels"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tools/wheelhouse.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="collect the wheels for one platform into a folder")
    b.add_argument("--out", type=Path, default=ROOT / "wheelhouse",
                   help="the wheelhouse folder (default: wheelhouse/ in the repository)")
    b.add_argument("--platform", default="",
                   help=f"one of {', '.join(PLATFORMS)} (default: this machine's)")
    b.add_argument("--python-version", default="",
                   help="the laptops' Python, 3.MINOR (default: the Python running this)")
    b.add_argument("--torch-version", required=True)
    b.add_argument("--torch-index", required=True, help="PyTorch's CPU index (Linux targets)")
    b.add_argument("--open-clip-version", required=True)
    b.add_argument("--uv", default=shutil.which("uv"), help="the uv program (default: on PATH)")
    b.add_argument("--cache", type=Path, default=default_cache(),
                   help="wheels kept between builds (default: %(default)s)")
    b.add_argument("--no-cache", action="store_true", help="neither read nor fill the cache")
    i = sub.add_parser("install", help="install from a wheelhouse with no network")
    i.add_argument("folder", type=Path)
    i.add_argument("--project", type=Path, default=ROOT)
    i.add_argument("--extras", default="dev")
    i.add_argument("--open-clip-version", required=True)
    i.add_argument("--uv", default=None, help="the uv program (default: installed from the folder)")
    args = ap.parse_args(argv)
    start = time.monotonic()
    try:
        if args.command == "build":
            if not args.uv or not Path(args.uv).is_file():
                raise WheelhouseError(
                    "wheelhouse: uv resolves the packages for the named platform and none was "
                    f"found (--uv {args.uv}); install it: pip install uv")
            platform = resolve_platform(args.platform)
            python = parse_python_version(args.python_version)
            print(f"wheelhouse: for {platform.name} / CPython {python}, into {args.out}")
            m = build(args.out, platform, python, args.torch_version, args.torch_index,
                      args.open_clip_version, args.uv, None if args.no_cache else args.cache)
            print(f"wheelhouse: {len(m['wheels'])} wheels, {human_size(m['total_bytes'])} "
                  f"({m['total_bytes']} bytes), for {m['platform']} / CPython {m['python']}, "
                  f"torch {m['torch']['build']}, in {args.out.resolve()} "
                  f"({time.monotonic() - start:.0f} s); list: {MANIFEST} there")
        else:
            install(args.folder, args.project.resolve(), args.extras, args.open_clip_version,
                    args.uv)
            print(f"install: done from the wheelhouse ({time.monotonic() - start:.0f} s)")
    except WheelhouseError as e:
        print(e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wheelhouse: interrupted; nothing was left that looks finished", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
