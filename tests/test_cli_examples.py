"""Every ``nbhelpers ...`` command shown to a user parses, and the cheap ones run.

Commands come from README.md, docs/*.md, the notebooks (markdown cells, and strings that code
cells print) and every subcommand's ``--help`` example. Each is parsed by the real parser. The
README's first command-line block runs top to bottom, in order, in an empty folder, exactly
as printed, with one exception that keeps the test fast: step counts become a few steps and a
sweep three frames (``_quick``, which only appends or replaces ``--steps`` and ``--scales``).
Then every other cheap command runs in that folder, and the README's Python snippets run
there as printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from nbhelpers.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COMMAND = re.compile(r"^(?:[A-Z_]+=\S+\s+)*nbhelpers(?:\s|$)")
INLINE = re.compile(r"`(nbhelpers [^`]+)`")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
#: Subcommands cheap enough to run on the toy model in a test.
CHEAP = {("info",), ("generate",), ("sweep",), ("ti", "train"), ("ti", "convert"),
         ("ti", "inspect"), ("toy", "pictures")}


def _logical_lines(text: str) -> list[str]:
    """Lines of a shell block with ``\\`` continuations joined."""
    out, cur = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        out.append(cur + line)
        cur = ""
    return out + ([cur] if cur else [])


def _argv(line: str) -> list[str] | None:
    """The arguments after ``nbhelpers`` of a shell line (comments and VAR=x prefixes off)."""
    if not COMMAND.match(line.strip()):
        return None
    words = shlex.split(line, comments=True)
    while words and "=" in words[0] and words[0] != "nbhelpers":
        words.pop(0)
    return words[1:]


def _shell_blocks(markdown: str) -> list[str]:
    return [body for lang, body in FENCE.findall(markdown) if lang in ("", "bash", "sh")]


def commands_in_markdown(markdown: str) -> list[list[str]]:
    cmds = []
    for body in _shell_blocks(markdown):
        cmds += [a for a in map(_argv, _logical_lines(body)) if a is not None]
    outside = FENCE.sub("", markdown)
    for span in INLINE.findall(outside):
        argv = shlex.split(span)[1:]
        # "`nbhelpers sd rehearsal-model` writes ..." names a command: it must exist
        names = all(re.fullmatch(r"[a-z][a-z-]*", w) for w in argv)
        cmds.append(argv + ["--help"] if names else argv)
    return cmds


def _notebook_commands(path: Path) -> list[list[str]]:
    cmds = []
    for cell in json.loads(path.read_text())["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            cmds += commands_in_markdown(src)
        else:  # a command a code cell prints for the reader to type
            for literal in re.findall(r"""["'](nbhelpers [a-z][^"'\n]*)["']""", src):
                cmds.append(shlex.split(literal)[1:])
    return cmds


def _subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """``(path, parser)`` for the top parser and every subcommand, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, (*path, name))


def epilog_commands() -> list[list[str]]:
    out = []
    for path, p in _subparsers(build_parser()):
        m = re.match(r"Example: nbhelpers (.*)", p.epilog or "")
        assert m, f"nbhelpers {' '.join(path)} --help has no example"
        out.append(shlex.split(m.group(1)))
    return out


def all_commands() -> list[tuple[str, list[str]]]:
    found = [("README.md", a) for a in commands_in_markdown(README.read_text())]
    for doc in sorted((ROOT / "docs").glob("*.md")):
        found += [(f"docs/{doc.name}", a) for a in commands_in_markdown(doc.read_text())]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        found += [(f"notebooks/{nb.name}", a) for a in _notebook_commands(nb)]
    found += [("--help", a) for a in epilog_commands()]
    return found


def _command_path(argv: list[str]) -> tuple[str, ...]:
    names = {p for path, _ in _subparsers(build_parser()) for p in path}
    return tuple(w for w in argv[:2] if w in names)


def parse(argv: list[str]) -> argparse.Namespace | None:
    """Parse as the command line would; a failure raises AssertionError with argparse's text.
    ``--help`` (which exits 0) returns None."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(argv)
    except SystemExit as exit_:
        assert exit_.code == 0, f"nbhelpers {shlex.join(argv)}: {err.getvalue().strip()}"
        return None


def _quick(argv: list[str]) -> list[str]:
    """The same command with a few steps (``ti train``: steps / 100, at least 2; sampling: 2)
    and a sweep of three frames (first, middle, last scale)."""
    from nbhelpers.sweep import parse_scales

    args = parse(argv)
    argv = list(argv)
    if "steps" in vars(args) and args.command != "toy":
        steps = max(2, args.steps // 100) if args.command == "ti" else 2
        argv += ["--steps", str(steps)]
    if args.command == "sweep":
        s = parse_scales(args.scales)
        argv += ["--scales", f"{s[0]},{s[len(s) // 2]},{s[-1]}"]
    return argv


def outputs(argv: list[str]) -> list[str]:
    """The files and folders a command promises to write."""
    from nbhelpers.ti.engine import work_dir_for

    args = parse(argv)
    path = _command_path(argv)
    if path == ("ti", "convert"):
        return [args.dst]
    if path == ("ti", "train"):
        out = args.out or f"{args.token.strip('<>')}.safetensors"
        return [out, str(work_dir_for(out) / "checkpoint")]
    if path == ("sweep",):
        return [args.out, args.sheet or str(Path(args.out).with_suffix(".png"))]
    return [args.out] if getattr(args, "out", None) else []


def _readme_blocks() -> tuple[str, list[str]]:
    """The first shell block of README's command-line section, and its Python blocks."""
    text = README.read_text()
    section = text[text.index("## Command line"):]
    section = section[:section.index("\n## ", 1)]
    shell = [body for lang, body in FENCE.findall(section) if lang == "bash"]
    python = [body for lang, body in FENCE.findall(section) if lang == "python"]
    return shell[0], python


@pytest.mark.parametrize("source, argv", all_commands(),
                         ids=lambda v: v if isinstance(v, str) else shlex.join(v)[:60])
def test_every_shown_command_parses(source, argv):
    parse(argv)


def test_commands_are_found_everywhere():
    sources = {s for s, _ in all_commands()}
    assert {"README.md", "--help", "docs/toy_model.md",
            "notebooks/06_textual_inversion_on_your_pictures.ipynb"} <= sources
    assert ["ti", "train", "--help"] in [a for _, a in all_commands()]
    # the stale form of issue 21 is gone: the folder is positional
    assert not any("--data" in a for _, a in all_commands())


def test_parse_rejects_what_the_cli_rejects():
    with pytest.raises(AssertionError, match="unrecognized arguments: --data"):
        parse(["ti", "train", "--model", "toy", "--data", "my-folder", "--token", "<x>"])


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """Run README's first command-line block in order in an empty folder; returns the folder
    and the commands run."""
    import torch

    work = tmp_path_factory.mktemp("readme")
    cache = tmp_path_factory.mktemp("latents")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("NBHELPERS_CACHE", str(cache))
        mp.delenv("NBHELPERS_PROFILE", raising=False)
        mp.delenv("NBHELPERS_TOY_MODEL", raising=False)
        shell, _ = _readme_blocks()
        ran, printed = [], []
        for line in _logical_lines(shell):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            argv = _argv(line)
            if argv is None:  # a plain shell line, such as the echo into a template file
                subprocess.run(["bash", "-c", line], check=True, cwd=work)
                continue
            err, said = io.StringIO(), io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(said):
                rc = main(_quick(argv))
            assert rc == 0, f"nbhelpers {shlex.join(argv)}: {err.getvalue()}"
            for out in outputs(argv):
                assert (work / out).exists(), f"nbhelpers {shlex.join(argv)} wrote no {out}"
            ran.append(argv)
            printed.append(said.getvalue())
    torch.set_num_threads(threads)
    return work, ran, printed


def test_readme_command_line_runs_top_to_bottom(readme_run):
    work, ran, _ = readme_run
    assert len(ran) >= 12 and ["info"] in ran
    assert {_command_path(a) for a in ran} >= CHEAP
    # what the commands leave, if run in the repository root, is ignored by git
    left = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", "--stdin"],
                             input="\n".join(left), capture_output=True, text=True).stdout
    assert sorted(ignored.split("\n")[:-1]) == left


def test_readme_run_says_what_it_did(readme_run):
    """The outputs of the first hour: what ti train kept, the resume, the enlarged image,
    the picture sets."""
    from PIL import Image

    work, ran, printed = readme_run
    said = dict(zip((shlex.join(a) for a in ran), printed, strict=True))
    trains = [t for a, t in said.items() if a.startswith("ti train my_paintings/")]
    assert "; checkpoint in my-words/my-style-run/checkpoint" in trains[0]
    assert "previews" not in trains[0]  # none were asked for
    assert ("resuming from step 3 of 6 (checkpoint in my-words/my-style-run/checkpoint)"
            in trains[1])
    assert "after 6 steps (resumed at step 3)" in trains[1]
    # the learned word lands in a named folder, and shows at a size a person can see
    assert {p.name for p in (work / "my-words").iterdir()} >= {"my-style.safetensors",
                                                              "my-style.pt", "my-style-run"}
    for name in ("with-word.png", "without-word.png"):
        width, height = Image.open(work / name).size
        assert height == 256 and width >= 4 * 256, (name, width, height)  # four, enlarged
    assert Image.open(work / "x-big.png").size == (512, 512)
    assert Image.open(work / "x.png").size == (64, 64)
    pictures = sorted((work / "my_paintings").iterdir())
    assert sum(p.suffix in (".png", ".jpg") for p in pictures) == 12
    assert any(p.suffix == ".txt" for p in pictures)
    toys = list((work / "curated_toys").iterdir())
    assert len(toys) == 50 and all(re.search(r"\btoy\b", p.name) for p in toys)


#: sources whose commands are written to run in another folder than the README's: notebook 06's
#: run in the folder of the learner's words (the README's first hour keeps them in my-words/)
RUN_IN = {"notebooks/06_textual_inversion_on_your_pictures.ipynb": "my-words"}


def test_other_cheap_commands_run(readme_run, monkeypatch, capsys, one_torch_thread):
    """The cheap commands of docs, notebooks and --help examples, run after the README's."""
    work, ran, _ = readme_run
    monkeypatch.chdir(work)
    monkeypatch.delenv("NBHELPERS_PROFILE", raising=False)
    monkeypatch.setenv("NBHELPERS_CACHE", str(work.parent / "latents-others"))
    done = [list(a) for a in ran]
    sources = set()
    for source, argv in all_commands():
        args = parse(argv)
        if args is None or argv in done or _command_path(argv) not in CHEAP:
            continue
        if getattr(args, "model", None) not in (None, "toy"):
            continue  # SD 1.x or a folder written by a slow command: parsed only
        here = work / RUN_IN.get(source, ".")
        monkeypatch.chdir(here)
        rc = main(_quick(argv))
        assert rc == 0, f"{source}: nbhelpers {shlex.join(argv)}: {capsys.readouterr().err}"
        for out in outputs(argv):
            assert (here / out).exists(), f"{source}: nbhelpers {shlex.join(argv)}: no {out}"
        if here == work:   # the same command in another folder made other files
            done.append(argv)
        sources.add(source)
    assert "notebooks/04_guidance_in_stable_diffusion.ipynb" in sources  # its sweep


def test_readme_python_snippets_run(readme_run, monkeypatch, capsys, one_torch_thread):
    work, _, _ = readme_run
    monkeypatch.chdir(work)
    _, python = _readme_blocks()
    assert python, "README shows Python"
    for code in python:
        scope: dict = {}
        exec(compile(code, "README.md", "exec"), scope)
    assert scope["images"].shape == (3, 64, 64, 3)
    assert scope["styled"].shape == (1, 64, 64, 3)
    assert "(3, 64, 64, 3)" in capsys.readouterr().out
