"""Quiet output: the command line prints no loading bars or library notices unless asked.

One fresh process (what a person's terminal gets: nothing imported yet, no notice said yet,
no TQDM_DISABLE) runs ``nbhelpers generate``, ``sweep`` and ``ti inspect`` on the toy model,
each through the command line's ``main``, and marks on stderr where each begins. Each one's
stderr must be empty or on :data:`CLI_STDERR_ALLOWED`. Then a prompt with a placeholder the
model has not learned must still warn (quiet is not silent), and ``--verbose`` must bring the
loading bars back. The notebooks get the same check in ``tests/nbval_harness.py``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nbhelpers import quiet

ROOT = Path(__file__).resolve().parents[1]

#: What a command may write to stderr, one pattern per line, each with why it is not noise.
CLI_STDERR_ALLOWED: tuple[tuple[str, str], ...] = (
    (r"sweep \d+ scales: *\d+%\|[^\n]*\| *\d+/\d+ \[[^\n]*\]",
     "the sweep's own progress bar (issue 20: sweeps and training keep theirs); a terminal "
     "redraws it in place"),
)
MARK = "@@ nbhelpers "

#: Runs each command of argv lists (JSON in sys.argv[1]) through the CLI's main, in one fresh
#: process; first writes an embedding of the toy model's width for ti inspect.
DRIVER = """
import json, sys
import torch
from nbhelpers.cli import main
from nbhelpers.ti.embeddings import Embedding
from nbhelpers.ti.formats import save_embedding

commands, embedding = json.loads(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
save_embedding(Embedding("<quiet>", torch.randn(2, 128)), embedding)
for argv in commands:
    print("@@ nbhelpers " + " ".join(argv), file=sys.stderr, flush=True)
    rc = main(argv)
    sys.stderr.flush()
    print(f"rc {rc}", flush=True)
"""


def _stray(text: str) -> list[str]:
    allowed = [re.compile(p) for p, _ in CLI_STDERR_ALLOWED]
    return [line for line in re.split(r"[\r\n]+", text)
            if line.strip() and not any(p.fullmatch(line.strip()) for p in allowed)]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """``{command: its stderr}`` and the return codes of one fresh process's commands."""
    work = tmp_path_factory.mktemp("quiet-cli")
    emb = work / "quiet.safetensors"
    toy = ["--model", "toy", "--steps", "2"]
    commands = {
        "generate": ["generate", *toy, "--prompt", "a red circle", "--out", str(work / "x.png")],
        "sweep": ["sweep", *toy, "--prompt", "a red circle", "--scales", "0,1,7",
                  "--out", str(work / "s.gif")],
        "ti inspect": ["ti", "inspect", str(emb), "--model", "toy", "--k", "2"],
        "unknown word": ["generate", *toy, "--prompt", "a star, <never-learned>",
                         "--out", str(work / "y.png")],
        "verbose": ["generate", *toy, "--prompt", "a red circle", "--out",
                    str(work / "v.png"), "--verbose"],
    }
    env = {k: v for k, v in os.environ.items()
           if k not in ("TQDM_DISABLE", quiet.VERBOSE_ENV, "NBHELPERS_PROFILE",
                        "NBHELPERS_TOY_MODEL", "TRANSFORMERS_VERBOSITY")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), NBHELPERS_CACHE=str(work / "cache"))
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(list(commands.values())),
                           str(emb)], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    parts = done.stderr.split(MARK)
    assert parts[0].strip() == "", f"stderr before the first command: {parts[0]!r}"
    by_name = dict(zip(commands, (p.split("\n", 1)[1] if "\n" in p else "" for p in parts[1:]),
                       strict=True))
    return by_name, re.findall(r"^rc (\d+)$", done.stdout, re.M)


def test_generate_sweep_and_inspect_write_nothing_else_to_stderr(cli_run):
    stderr, codes = cli_run
    assert codes == ["0"] * 5, stderr
    for name in ("generate", "sweep", "ti inspect"):
        stray = _stray(stderr[name])
        assert not stray, (f"nbhelpers {name} wrote to stderr what CLI_STDERR_ALLOWED does not "
                           "allow:\n" + "\n".join(stray))
    assert "sweep 3 scales" in stderr["sweep"]  # its own bar stays


def test_quiet_is_not_silent(cli_run):
    """A mistake of the user's still warns: the placeholder the model has not learned."""
    stderr, _ = cli_run
    lines = [line for line in stderr["unknown word"].splitlines() if line.strip()]
    assert lines and all(line.startswith("warning: ") for line in lines), lines
    assert "warning: <never-learned> is not a learned token" in lines[0]


def test_verbose_brings_the_loading_output_back(cli_run):
    stderr, _ = cli_run
    assert "Loading pipeline components" in stderr["verbose"]


def test_verbose_switch(monkeypatch):
    for value, expected in (("1", True), ("yes", True), (" ON ", True), ("0", False),
                            ("", False), ("off", False)):
        monkeypatch.setenv(quiet.VERBOSE_ENV, value)
        assert quiet.verbose() is expected
    monkeypatch.delenv(quiet.VERBOSE_ENV)
    assert quiet.verbose() is False
    monkeypatch.setenv(quiet.VERBOSE_ENV, "loud")
    with pytest.raises(ValueError, match=r"NBHELPERS_VERBOSE='loud' is neither on nor off; set "
                                         r"it to 1"):
        quiet.verbose()


def test_cli_verbose_is_accepted_before_and_after_the_subcommand_and_undone(monkeypatch):
    from nbhelpers.cli import build_parser, main

    parser = build_parser()
    assert parser.parse_args(["--verbose", "info"]).verbose
    assert parser.parse_args(["info", "--verbose"]).verbose
    assert not parser.parse_args(["info"]).verbose
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    assert main(["toy", "pictures", "--out", "/dev/null/x", "--n", "1", "--verbose"]) in (1, 2)
    assert quiet.VERBOSE_ENV not in os.environ


@pytest.fixture
def library_log():
    """What diffusers' and transformers' loggers emit at warning level, read from a handler of
    this test's own: their stderr handlers may hold a stream of an earlier test's capture."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.WARNING)
    yield stream
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


def test_hidden_notices_are_only_those_listed(monkeypatch, library_log):
    """The filters drop the listed texts of their logger and nothing else; verbose keeps all."""
    from transformers.utils import logging as transformers_logging

    quiet.hide_notices()
    quiet.hide_notices()  # once is enough: no second filter
    notice = next(n for n in quiet.NOTICES if n.logger.startswith("transformers."))
    assert sum(isinstance(f, quiet._HideNotices)
               for f in logging.getLogger(notice.logger).filters) == 1
    log = transformers_logging.get_logger(notice.logger)
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    log.warning(f"... {notice.text} ...")
    log.warning("a warning of the same library about something else")
    monkeypatch.setenv(quiet.VERBOSE_ENV, "1")
    log.warning(f"verbose: {notice.text}")
    err = library_log.getvalue()
    assert notice.text not in err.split("verbose:")[0]
    assert "about something else" in err and f"verbose: {notice.text}" in err
    assert all(n.why for n in quiet.NOTICES)


def test_casting_a_model_is_quiet(monkeypatch, library_log):
    """diffusers' notice on every cast (an empty list of float32 modules) is hidden; verbose
    shows it."""
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, layers_per_block=1,
                        latent_channels=4, sample_size=8)
    quiet.hide_notices()
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    vae.to(torch.float64)
    assert "kept in float32" not in library_log.getvalue()
    monkeypatch.setenv(quiet.VERBOSE_ENV, "1")
    vae.to(torch.float32)
    assert "should be kept in float32: []" in library_log.getvalue()
