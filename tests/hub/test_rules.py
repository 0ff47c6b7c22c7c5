"""The room's rules without a hub: roster, threads, memory, first-login copy, environment,
and the memory guard's choice of what to kill."""

from __future__ import annotations

import importlib

import pytest

from . import conftest  # noqa: F401  (puts deploy/jupyterhub, not a package, on sys.path)

memguard = importlib.import_module("memguard")
workshop = importlib.import_module("workshop")


def test_roster_reads_names_and_names_a_bad_line(tmp_path):
    good = tmp_path / "r.txt"
    good.write_text("# the room\nlearner-01\n\nlearner-02  # late\n")
    assert workshop.read_roster(good) == ["learner-01", "learner-02"]
    bad = tmp_path / "bad.txt"
    bad.write_text("learner-01\nAnna Smith\n")
    with pytest.raises(ValueError, match=r"line 2: 'Anna Smith' is not a usable login name"):
        workshop.read_roster(bad)
    twice = tmp_path / "twice.txt"
    twice.write_text("a1\na1\n")
    with pytest.raises(ValueError, match="listed twice"):
        workshop.read_roster(twice)
    with pytest.raises(ValueError, match="cannot read it"):
        workshop.read_roster(tmp_path / "missing.txt")


def test_threads_and_memory_are_shared_out():
    assert workshop.threads_per_kernel(16, 30) == 1
    assert workshop.threads_per_kernel(16, 4) == 4
    assert workshop.threads_per_kernel(2, 2) == 1
    assert workshop.memory_per_learner(24 * 1024, 8) == (24 * 1024 - 2048) // 8
    with pytest.raises(ValueError, match="at least 512 MB"):
        workshop.memory_per_learner(8 * 1024, 30)
    with pytest.raises(ValueError, match="NBW_MEM_MB='lots'"):
        workshop.mb("lots", 1)
    with pytest.raises(ValueError, match="NBW_PASSWORD"):
        workshop.check_password("short")


def test_series_is_copied_once_and_never_over_a_learners_edits(tmp_path):
    series = tmp_path / "series"
    (series / ".text").mkdir(parents=True)
    (series / "01.ipynb").write_text("{}")
    home = tmp_path / "home"
    home.mkdir()
    assert workshop.copy_series(series, home) == home / "workshop"
    assert sorted(p.name for p in (home / "workshop").iterdir()) == ["01.ipynb"]
    (home / "workshop" / "01.ipynb").write_text("my edits")
    assert workshop.copy_series(series, home) is None
    assert (home / "workshop" / "01.ipynb").read_text() == "my edits"
    with pytest.raises(FileNotFoundError, match="NBW_SERIES"):
        workshop.copy_series(tmp_path / "nope", tmp_path / "home2")


def test_environment_gives_threads_a_private_tmp_and_the_shared_models(tmp_path):
    (tmp_path / "shared" / "huggingface").mkdir(parents=True)
    env = workshop.learner_environment(tmp_path / "home", 2, tmp_path / "shared")
    assert env["NBHELPERS_THREADS"] == env["OMP_NUM_THREADS"] == "2"
    assert env["TMPDIR"] == str(tmp_path / "home" / ".tmp")
    assert env["HF_HUB_CACHE"] == str(tmp_path / "shared" / "huggingface")
    assert env["HF_HUB_OFFLINE"] == "1" and "PIP_FIND_LINKS" not in env


def test_guard_kills_the_largest_kernel_of_the_learner_over_the_limit_only():
    procs = [memguard.Proc(1, "a", 150, "python jupyterhub-singleuser"),
             memguard.Proc(2, "a", 900, "python -m ipykernel_launcher"),
             memguard.Proc(3, "a", 400, "python -m ipykernel_launcher"),
             memguard.Proc(4, "b", 1400, "python -m ipykernel_launcher"),
             memguard.Proc(5, "c", 2000, "python jupyterhub-singleuser")]
    chosen = memguard.victims(procs, limit_mb=1000)
    assert [(p.pid, total) for p, total in chosen] == [(2, 1450), (4, 1400)]
