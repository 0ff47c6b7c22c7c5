"""The torch thread policy (nbhelpers.threads): its choice from the readings, the one setting
that overrides it, the settings that win over it, and the places that apply it (the notebooks'
first call, the command line, the live slider's render, the trainer). No test times anything."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from nbhelpers import threads
from nbhelpers.threads import ENV_VAR, Policy

ROOT = Path(__file__).resolve().parents[1]
#: what a learner's shell has: none of the variables the suite sets for its jobs
CLEARED = (ENV_VAR, *threads.EXPLICIT_VARS, threads.WAIT_VAR)


@pytest.fixture
def clean(monkeypatch):
    """No thread settings in the environment, a fresh decision, torch's count restored."""
    for var in CLEARED:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(threads, "_policy", None)
    monkeypatch.setattr(threads, "_set_count", None)
    monkeypatch.setattr(threads, "_wait_set", False)
    # the count torch has now is the one it "started" with, for this test
    monkeypatch.setattr(threads, "_torch_defaults", lambda: {torch.get_num_threads()})
    before = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# The choice
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cores, busy, expect", [
    (2, 0.0, 2), (2, 0.3, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 3.0, 1), (1, 0.0, 1),
    (8, 2.4, 6), (16, 0.0, 16),
])
def test_threads_are_the_cores_less_the_busy_ones(clean, cores, busy, expect):
    p = threads.choose(cores=cores, busy=busy)
    assert p == Policy(expect, cores, busy, "auto")


def test_the_choice_reads_the_cores_and_the_load(clean):
    clean.setattr(threads, "usable_cores", lambda: 4)
    clean.setattr(threads, "busy_cores", lambda: 1.2)
    assert threads.choose() == Policy(3, 4, 1.2, "auto")


def test_busy_cores_are_the_cpus_busy_time_less_this_process(clean):
    # two CPUs, 10 ticks each over the window; 15 busy ticks, 5 of them this process's
    cpu = iter([(100, 1000, 2), (115, 1020, 2)])
    own = iter([40, 45])
    clean.setattr(threads, "_cpu_ticks", lambda cpus: next(cpu))
    clean.setattr(threads, "_own_ticks", lambda: next(own))
    assert threads.busy_cores(sample_s=0) == pytest.approx(1.0)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc")
def test_busy_cores_reads_this_machine():
    busy = threads.busy_cores(sample_s=0.02)
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 0.5
    assert 1 <= threads.usable_cores() <= (os.cpu_count() or 1)


@pytest.mark.parametrize("cpu_max, expect", [("150000 100000\n", 2), ("max 100000\n", 8),
                                             ("50000 100000\n", 1)])
def test_a_container_quota_caps_the_cores(clean, cpu_max, expect):
    clean.setattr(threads, "_allowed_cpus", lambda: set(range(8)))
    files = {"/sys/fs/cgroup/cpu.max": cpu_max}

    def read(path):
        if path not in files:
            raise OSError(path)
        return files[path]

    clean.setattr(threads, "_read", read)
    assert threads.usable_cores() == expect


def test_without_proc_the_load_average_less_this_process(clean):
    clean.setattr(threads.os.path, "exists", lambda path: False)
    clean.setattr(threads.os, "getloadavg", lambda: (1.5, 0.0, 0.0), raising=False)
    clean.setattr(threads, "_last_own", None)
    assert threads.busy_cores() == pytest.approx(1.5)


def test_the_cpuinfo_core_count(clean, tmp_path):
    text = "".join(f"processor\t: {i}\nphysical id\t: 0\ncore id\t\t: {i // 2}\n\n"
                   for i in range(8))
    clean.setattr(threads, "_read", lambda path: text)
    assert threads._physical_cores() == 4


# --------------------------------------------------------------------------------------------
# The setting, and the settings that win over it
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expect", [("1", 1), (" 3 ", 3), ("auto", None), ("AUTO", None),
                                           ("", None), (None, None)])
def test_the_setting_accepts_a_count_or_auto(value, expect):
    assert threads.parse_setting(value) == expect


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5", "all"])
def test_a_bad_setting_names_the_value_and_the_fix(clean, value):
    clean.setenv(ENV_VAR, value)
    with pytest.raises(ValueError) as err:
        threads.choose(cores=2, busy=0)
    message = str(err.value)
    assert f"NBHELPERS_THREADS={value!r}" in message
    assert "whole number" in message and "export NBHELPERS_THREADS=1" in message
    assert "'auto'" in message


def test_the_setting_overrides_the_policy(clean):
    clean.setenv(ENV_VAR, "3")
    assert threads.choose(cores=2, busy=1.0) == Policy(3, 2, None, ENV_VAR)
    clean.setenv(ENV_VAR, "auto")
    assert threads.choose(cores=2, busy=1.0).source == "auto"


@pytest.mark.parametrize("var", threads.EXPLICIT_VARS)
def test_omp_num_threads_wins_and_torch_is_left_alone(clean, var):
    clean.setenv(var, "1")
    clean.setenv(ENV_VAR, "2")
    calls = []
    clean.setattr(torch, "set_num_threads", calls.append)
    p = threads.apply(cores=2, busy=0)
    assert p == Policy(1, 2, None, var) and calls == []
    assert threads.describe(p).startswith(f"torch threads: {torch.get_num_threads()} of 2 cores "
                                          f"({var}=1 is set; it wins over the policy)")


def test_an_explicit_count_set_after_the_policy_wins(clean):
    threads.apply(cores=2, busy=0)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)                  # what --threads 1 does
    threads.apply(cores=2, busy=0)            # a training run starts: decided afresh
    assert torch.get_num_threads() == 1
    assert "set by torch.set_num_threads or --threads" in threads.describe()


def test_a_new_decision_replaces_the_policys_own(clean):
    threads.apply(cores=2, busy=0)
    assert torch.get_num_threads() == 2
    threads.apply(cores=2, busy=1.0)          # a neighbour started meanwhile
    assert torch.get_num_threads() == 1


def test_the_cli_threads_option_wins(clean, tmp_path):
    from nbhelpers.cli import main

    clean.setenv(ENV_VAR, "2")
    seen = []

    def fake_train(cfg, out, workers, device):
        seen.append(torch.get_num_threads())
        return None, {"seconds": {}, "scaling_factor": 1.0, "vae_roundtrip_accuracy": 1.0}

    clean.setattr("nbhelpers.toy.train.train_toy", fake_train)
    assert main(["toy", "train", "--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    assert seen == [1]


def test_the_description_says_why(clean):
    torch.set_num_threads(1)
    assert threads.describe(Policy(1, 2, 1.0, "auto")).startswith(
        "torch threads: 1 of 2 cores (another process is busy; NBHELPERS_THREADS overrides); ")
    assert "(no other process is busy;" in threads.describe(Policy(1, 1, 0.1, "auto"))
    assert "(other processes keep 3 cores busy;" in threads.describe(Policy(1, 4, 3.0, "auto"))
    assert "(NBHELPERS_THREADS=1)" in threads.describe(Policy(1, 2, None, ENV_VAR))


# --------------------------------------------------------------------------------------------
# Where it is applied
# --------------------------------------------------------------------------------------------


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in CLEARED}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**base, "PYTHONPATH": str(ROOT), "NBHELPERS_PROFILE": "smoke",
                               **env})


FIRST_CALL = """
import os
from nbhelpers import get_profile
get_profile()
import torch
from nbhelpers import threads
print(torch.get_num_threads(), threads._policy.threads, os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.mark.parametrize("setting", ["2", None])
def test_the_notebooks_first_call_applies_the_policy(setting):
    out = _run(FIRST_CALL, **({ENV_VAR: setting} if setting else {}))
    assert out.returncode == 0, out.stderr
    count, chosen, wait = out.stdout.split()
    assert count == chosen == (setting or chosen) and wait == "PASSIVE"


def test_torch_imported_first_gets_the_count_but_not_the_passive_wait():
    out = _run("import os, torch\n" + FIRST_CALL, **{ENV_VAR: "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "None"]


def test_the_command_line_applies_the_policy_before_torch_loads():
    out = _run("from nbhelpers.cli import main; main(['info', '--json'])")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    count = info["threads"].split()[2]
    assert f"({count} threads;" in info["device"]
    assert "waiting OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE)" in info["threads"]


@pytest.mark.parametrize("env, expect", [({ENV_VAR: "1"}, 1), ({ENV_VAR: "2"}, 2),
                                         ({ENV_VAR: "2", "OMP_NUM_THREADS": "1"}, 1)])
def test_the_cli_applies_the_setting(clean, capsys, env, expect):
    from nbhelpers.cli import main

    torch.set_num_threads(1)  # as torch starts under OMP_NUM_THREADS=1
    for var, value in env.items():
        clean.setenv(var, value)
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert f"({expect} threads;" in info["device"]
    assert info["threads"].startswith(f"torch threads: {expect} of ")


def test_the_cli_rejects_a_bad_setting(clean, capsys):
    from nbhelpers.cli import main

    clean.setenv(ENV_VAR, "lots")
    assert main(["info"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: NBHELPERS_THREADS='lots' is not a number of threads")


class _Scheduler:
    config: dict = {}

    @classmethod
    def from_config(cls, config):
        return cls()


@pytest.mark.parametrize("setting, threads_arg, expect", [
    (None, "auto", 1), ("2", "auto", 2), ("1", "auto", 1), ("2", 3, 3)])
def test_the_live_render_applies_the_policy(clean, setting, threads_arg, expect):
    from nbhelpers import widgets

    if setting:
        clean.setenv(ENV_VAR, setting)
    seen = []

    def fake_sample(pipe, prompt, s, seed, num_steps):
        seen.append(torch.get_num_threads())
        return np.zeros((1, 4, 4, 3))

    clean.setattr("nbhelpers.sampling.sample_cfg", fake_sample)
    clean.setattr(threads, "busy_cores", lambda: 0.0)
    pipe = types.SimpleNamespace(scheduler=_Scheduler(), unet=types.SimpleNamespace(
        device=torch.device("cpu")))
    before = torch.get_num_threads()
    image = widgets.render_guided(pipe, "x", 7.5, threads=threads_arg)
    assert image.shape == (4, 4, 3) and seen == [expect]
    assert threads._policy is not None                     # the process's policy was applied
    assert torch.get_num_threads() in (before, threads._policy.threads)


def test_each_training_run_decides_afresh(clean):
    from nbhelpers.ti.train import train_textual_inversion

    class Applied(Exception):
        pass

    def fake_apply(*args, **kwargs):
        raise Applied

    clean.setattr(threads, "apply", fake_apply)
    with pytest.raises(Applied):
        train_textual_inversion(None, None, [], None)
