"""Profiles, the setup report and the command line."""

import json
import subprocess
import sys

import pytest

from nbhelpers import profile as prof
from nbhelpers.cli import main
from nbhelpers.info import collect_info, format_info
from nbhelpers.locations import find_sd_weights, is_pipeline_folder


def test_profile_from_environment(monkeypatch):
    for name in ("smoke", "cpu"):
        monkeypatch.setenv(prof.ENV_VAR, name)
        p = prof.get_profile()
        assert p.name == name and p.model == "toy" and p.device == "cpu"
        assert name in p.reason
    smoke, cpu = prof.get_profile("smoke"), prof.get_profile("cpu")
    assert smoke.n_samples < cpu.n_samples and smoke.sample_steps < cpu.sample_steps


def test_unknown_profile_names_value_and_fix(monkeypatch):
    monkeypatch.setenv(prof.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=r"'fast'.*smoke, cpu, gpu, sd-cpu"):
        prof.get_profile()


def test_gpu_profile_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(prof, "_cuda_available", lambda: False)
    with pytest.raises(ValueError, match="needs CUDA.*sd-cpu"):
        prof.get_profile("gpu")


def test_sd_cpu_profile_runs_the_gpu_path_on_the_rehearsal_model(monkeypatch):
    monkeypatch.setattr(prof, "_cuda_available", lambda: False)
    for name in ("sd-cpu", "SD_CPU"):
        p = prof.get_profile(name)
        assert p.name == "sd-cpu" and p.model == "rehearsal-mini" and not p.toy
        assert p.device == "cpu" and p.dtype == "float32"
    # toy sections keep toy budgets in every profile; the SD budgets are separate
    monkeypatch.setattr(prof, "_cuda_available", lambda: True)
    gpu, cpu, smoke = prof.get_profile("gpu"), prof.get_profile("cpu"), prof.get_profile("smoke")
    assert gpu.ti_steps == cpu.ti_steps and gpu.n_samples == cpu.n_samples
    assert gpu.sd_ti_steps > gpu.ti_steps and gpu.dtype == "auto" and gpu.device == "cuda"
    assert prof.get_profile("sd-cpu").ti_steps == smoke.ti_steps


def test_automatic_profile(monkeypatch, tmp_path):
    monkeypatch.delenv(prof.ENV_VAR, raising=False)
    monkeypatch.setattr(prof, "_cuda_available", lambda: False)
    assert prof.get_profile().name == "cpu"
    # CUDA and a local SD folder: gpu, with the model pointing at that folder
    (tmp_path / "model_index.json").write_text("{}")
    monkeypatch.setenv("NBHELPERS_SD_MODEL", str(tmp_path))
    monkeypatch.setattr(prof, "_cuda_available", lambda: True)
    p = prof.get_profile()
    assert p.name == "gpu" and p.model == str(tmp_path.resolve())
    # CUDA but no weights: cpu, and the reason says so
    monkeypatch.setenv("NBHELPERS_SD_MODEL", str(tmp_path / "missing"))
    p = prof.get_profile()
    assert p.name == "cpu" and "no SD 1.x weights" in p.reason


def test_find_sd_weights_in_a_local_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("NBHELPERS_SD_MODEL", str(tmp_path))
    assert find_sd_weights() is None and not is_pipeline_folder(tmp_path)
    (tmp_path / "model_index.json").write_text("{}")
    assert find_sd_weights() == tmp_path.resolve()


def test_info_report_has_versions_device_profile(monkeypatch):
    monkeypatch.setenv(prof.ENV_VAR, "smoke")
    info = collect_info()
    assert info["versions"]["torch"] != "not installed"
    text = format_info(info)
    for word in ("torch", "diffusers", "device", "profile", "smoke", "toy model",
                 "SD 1.x weights"):
        assert word in text


def test_cli_info_and_help(capsys, monkeypatch):
    monkeypatch.setenv(prof.ENV_VAR, "cpu")
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["profile"].startswith("cpu")
    monkeypatch.setenv(prof.ENV_VAR, "nonsense")
    assert main(["info"]) == 1
    assert "unknown profile 'nonsense'" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "info" in capsys.readouterr().out


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "nbhelpers.cli", "info"], capture_output=True,
                         text=True, check=True, env={"NBHELPERS_PROFILE": "smoke",
                                                     "PATH": "/usr/bin:/bin"})
    assert "profile" in out.stdout and "smoke" in out.stdout


def test_cli_generate_writes_png_atomically(tiny_pipeline_dir, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "sub" / "x.png"
    rc = main(["generate", "--model", str(tiny_pipeline_dir), "--prompt", "a red circle",
               "--steps", "2", "--n", "2", "--seed", "3", "--out", str(out)])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    assert Image.open(out).size == (64 * 2 + 4, 64)
    assert [p.name for p in out.parent.iterdir()] == ["x.png"]  # no temporary left behind


def test_cli_generate_bad_input(tmp_path, capsys):
    assert main(["generate", "--prompt", "x", "--out", str(tmp_path / "x.jpg")]) == 2
    assert ".png" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path), "--prompt", "x",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "model_index.json" in capsys.readouterr().err
