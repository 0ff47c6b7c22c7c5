"""tools/wheelhouse.py, the parts that need no network: platforms, the wheel tags and the
cache, the manifest and its checks, the folder that appears only when finished, and the
message for a wheel the folder lacks (from uv's and pip's own output).

The whole path (a wheelhouse built, a fresh venv installed from it with the network cut off)
is ``make test-wheelhouse``, run by .ci/run after make test.
"""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("wheelhouse", ROOT / "tools" / "wheelhouse.py")
wh = importlib.util.module_from_spec(_spec)
sys.modules["wheelhouse"] = wh
_spec.loader.exec_module(wh)


def test_platform_names_aliases_and_a_bad_one():
    assert wh.resolve_platform("").name == wh.this_machine()
    assert wh.resolve_platform("win_amd64").name == "windows-x86_64"
    assert wh.resolve_platform(" macos-arm64 ").uv == "aarch64-apple-darwin"
    with pytest.raises(wh.WheelhouseError, match=r"PLATFORM='amiga'.*windows-x86_64"):
        wh.resolve_platform("amiga")


def test_python_version():
    assert wh.parse_python_version("") == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert wh.parse_python_version("3.12") == "3.12"
    for bad in ("3.9", "311", "python3.11"):
        with pytest.raises(wh.WheelhouseError, match="3.MINOR"):
            wh.parse_python_version(bad)


def test_supported_tags_are_the_target_platforms():
    win = {str(t) for t in wh.supported_tags(wh.PLATFORMS["windows-x86_64"], "3.12")}
    assert {"cp312-cp312-win_amd64", "cp310-abi3-win_amd64", "py3-none-any"} <= win
    assert not any("linux" in t or "cp311-cp311" in t for t in win)
    mac = [str(t) for t in wh.supported_tags(wh.PLATFORMS["macos-arm64"], "3.11")]
    assert "cp311-cp311-macosx_11_0_arm64" in mac and "cp311-cp311-macosx_15_0_arm64" not in mac
    linux = [str(t) for t in wh.supported_tags(wh.PLATFORMS["linux-x86_64"], "3.11")]
    assert linux.index("cp311-cp311-manylinux_2_28_x86_64") < linux.index(
        "cp311-cp311-manylinux_2_17_x86_64")
    assert "cp311-cp311-manylinux_2_31_x86_64" not in linux


def test_cache_gives_the_wheel_pip_would_pick_and_names_the_rest(tmp_path):
    cache, dest = tmp_path / "cache", tmp_path / "dest"
    cache.mkdir(), dest.mkdir()
    names = ["numpy-2.4.6-cp311-cp311-win_amd64.whl",
             "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
             "numpy-2.4.5-cp311-cp311-manylinux_2_17_x86_64.whl",
             "six-1.17.0-py2.py3-none-any.whl", "not-a-wheel.whl"]
    for n in names:
        (cache / n).write_bytes(n.encode())
    pins = ["numpy==2.4.6", "six==1.17.0", "tqdm==4.70.1"]
    tags = wh.supported_tags(wh.PLATFORMS["linux-x86_64"], "3.11")
    assert wh.take_from_cache(dest, pins, tags, cache) == ["tqdm==4.70.1"]
    assert sorted(p.name for p in dest.iterdir()) == [names[1], names[3]]
    assert (dest / names[1]).read_bytes() == names[1].encode()


def _torch_wheel(path: Path, cuda: str) -> Path:
    """A zip with the one file of a torch wheel that :func:`torch_build` reads."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("torch/version.py", f"__version__ = '2.13.0'\ncuda: Optional[str] = "
                                       f"{cuda}\nhip: Optional[str] = None\n")
    return path


def test_cached_torch_is_a_cpu_build_for_the_platform(tmp_path):
    cpu = _torch_wheel(tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", "None")
    _torch_wheel(tmp_path / "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl", "'12.6'")
    _torch_wheel(tmp_path / "torch-2.12.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", "None")
    assert wh.torch_build(cpu) == "cpu"
    linux = wh.supported_tags(wh.PLATFORMS["linux-x86_64"], "3.11")
    assert wh.cached_torch(tmp_path, "2.13.0", linux) == cpu
    assert wh.cached_torch(tmp_path, "2.14.0", linux) is None
    assert wh.cached_torch(tmp_path, "2.13.0", wh.supported_tags(
        wh.PLATFORMS["windows-x86_64"], "3.11")) is None


def _wheel(folder: Path, name: str, size: int) -> None:
    (folder / name).write_bytes(os.urandom(size))


def test_manifest_lists_every_wheel_and_catches_a_bad_copy(tmp_path):
    _wheel(tmp_path, "a-1.0-py3-none-any.whl", 1000)
    _wheel(tmp_path, "b-2.0-py3-none-any.whl", 3000)
    m = wh.write_manifest(tmp_path, "linux-x86_64", "3.11", "torch-x.whl", "cpu")
    assert [w["file"] for w in m["wheels"]] == ["a-1.0-py3-none-any.whl",
                                                 "b-2.0-py3-none-any.whl"]
    assert m["total_bytes"] == 4000
    assert json.loads((tmp_path / "manifest.json").read_text()) == m
    assert wh.read_manifest(tmp_path) == m

    b = tmp_path / "b-2.0-py3-none-any.whl"
    data = b.read_bytes()
    b.write_bytes(data[:1200])                         # a copy cut short
    with pytest.raises(wh.WheelhouseError, match=r"b-2.0-py3-none-any.whl has 1200 of its 3000"):
        wh.read_manifest(tmp_path)
    b.write_bytes(bytes([data[0] ^ 1]) + data[1:])     # one bit changed
    with pytest.raises(wh.WheelhouseError, match="b-2.0-py3-none-any.whl is damaged"):
        wh.read_manifest(tmp_path)
    b.unlink()
    with pytest.raises(wh.WheelhouseError, match="b-2.0-py3-none-any.whl is missing.*again"):
        wh.read_manifest(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(wh.WheelhouseError, match="not a finished wheelhouse.*make wheelhouse"):
        wh.read_manifest(tmp_path)
    with pytest.raises(wh.WheelhouseError, match="no such folder.*make wheelhouse"):
        wh.read_manifest(tmp_path / "nowhere")


def test_folder_appears_only_when_finished(tmp_path):
    out = tmp_path / "wh"
    # what a killed build leaves: a .partial folder of a process that is gone, no `out`
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale, live = tmp_path / f".wh.partial-{gone}", wh.partial_name(out)
    stale.mkdir(), live.mkdir()
    assert wh.remove_stale_partials(out) == [stale]
    assert live.is_dir() and not out.exists()
    # an older wheelhouse is replaced whole by the finished one
    out.mkdir()
    _wheel(out, "old-1.0-py3-none-any.whl", 10)
    wh.write_manifest(out, "linux-x86_64", "3.11", "t.whl", "cpu")
    wh.check_target(out)                       # a wheelhouse: may be replaced
    _wheel(live, "new-1.0-py3-none-any.whl", 10)
    wh.write_manifest(live, "linux-x86_64", "3.11", "t.whl", "cpu")
    wh.publish(live, out)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "new-1.0-py3-none-any.whl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wh"]
    # a folder of something else is never replaced
    other = tmp_path / "photos"
    other.mkdir()
    (other / "x.jpg").write_bytes(b"x")
    with pytest.raises(wh.WheelhouseError, match="photos exists and is not a wheelhouse"):
        wh.check_target(other)


def test_torch_build_is_read_from_the_wheel(tmp_path):
    for cuda, build in (("None", "cpu"), ("'12.6'", "cuda 12.6")):
        w = _torch_wheel(tmp_path / f"torch-{build.replace(' ', '')}.whl", cuda)
        assert wh.torch_build(w) == build


def test_wheelhouse_for_another_python_or_platform_is_refused(tmp_path):
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    fix = f"PLATFORM={wh.this_machine()} PYTHON_VERSION={here}"
    with pytest.raises(wh.WheelhouseError, match=f"is for x / Python 3.99.*{fix}.*python3.99"):
        wh.check_fits_this_machine({"python": "3.99", "platform": "x"}, tmp_path)
    other = "windows-x86_64" if wh.this_machine() != "windows-x86_64" else "linux-x86_64"
    tag = "win_amd64" if other == "windows-x86_64" else "manylinux_2_28_x86_64"
    cp = "cp" + here.replace(".", "")
    manifest = {"python": here, "platform": other,
                "torch": {"wheel": f"torch-2.13.0-{cp}-{cp}-{tag}.whl"}}
    with pytest.raises(wh.WheelhouseError, match=f"is for {other}.*cannot install.*{fix}$"):
        wh.check_fits_this_machine(manifest, tmp_path)
    wh.check_fits_this_machine({**manifest, "platform": wh.this_machine(), "torch": {}},
                               tmp_path)


def test_missing_wheel_is_named_from_uvs_own_words(tmp_path):
    # uv does the offline install (every wheelhouse holds it); pip only where uv cannot run
    uv = Path(sys.executable).parent / "uv"
    proc = subprocess.run([str(uv), "pip", "install", "--dry-run", "--reinstall", "--python",
                           sys.executable, "--no-index", "--find-links", str(tmp_path),
                           "tqdm>=4.66"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert wh.missing_package(proc.stdout + proc.stderr) == "tqdm"


def test_ci_runs_the_offline_install_after_make_test():
    run = (ROOT / ".ci" / "run").read_text()
    assert run.index("\nmake test\n") < run.index("\nmake test-wheelhouse\n")
