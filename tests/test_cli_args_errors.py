"""How the command line sorts failures (nbhelpers.cli.errors): a person's mistake is one
``error:`` line and exit status 2, the environment failing one line and exit 1, a bug its
traceback, a line saying it is one, and exit 1; Ctrl-C one line and exit 130. Messages speak
in the command's options and are cut when long."""

from __future__ import annotations

import errno

import pytest

from nbhelpers import models
from nbhelpers.checks import UsageError
from nbhelpers.cli import build_parser, main
from nbhelpers.cli.errors import MAX_MESSAGE, cut, in_options


def _generate(tmp_path, *more: str) -> list[str]:
    return ["generate", "--prompt", "a red circle", "--steps", "1",
            "--out", str(tmp_path / "x.png"), *more]


def _fail_at_load(monkeypatch, err: BaseException) -> None:
    """The model load (after every check) raises ``err``: an error inside the command."""
    def load(*args, **kwargs):
        raise err

    monkeypatch.setattr(models, "load_pipeline", load)


def test_a_value_error_inside_a_command_is_a_bug_with_its_traceback(monkeypatch, tmp_path,
                                                                   capsys):
    # before: every ValueError became "error: ..." with exit 2, and a bug lost its traceback
    _fail_at_load(monkeypatch, ValueError("shapes (4, 8) and (3, 8) do not match"))
    assert main(_generate(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in load" in err
    assert "ValueError: shapes (4, 8) and (3, 8) do not match" in err
    assert "This is a bug in nbhelpers" in err and "report it" in err
    assert "nbhelpers generate" in err and not err.startswith("error:")


def test_any_other_exception_is_a_bug_too(monkeypatch, tmp_path, capsys):
    _fail_at_load(monkeypatch, IndexError("index 3 is out of bounds"))
    assert main(_generate(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "IndexError: index 3 is out of bounds" in err and "This is a bug" in err


def test_a_usage_error_is_one_line_and_status_2(monkeypatch, tmp_path, capsys):
    _fail_at_load(monkeypatch, UsageError("--prompt names a file that is not there; fix it"))
    assert main(_generate(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err == "error: --prompt names a file that is not there; fix it\n"


@pytest.mark.parametrize("err, says", [
    (OSError(errno.EACCES, "Permission denied", "/models/sd"), "/models/sd: Permission denied"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/gone/unet"),
     "/gone/unet: No such file or directory"),
    (MemoryError(), "out of memory"),
])
def test_the_environment_failing_is_one_line_and_status_1(monkeypatch, tmp_path, capsys, err,
                                                          says):
    _fail_at_load(monkeypatch, err)
    assert main(_generate(tmp_path)) == 1
    text = capsys.readouterr().err
    assert text.startswith("error: ") and says in text and text.count("\n") == 1, text
    assert "Traceback" not in text


def test_a_write_error_is_one_line_and_status_1(monkeypatch, tmp_path, capsys):
    from nbhelpers import files

    def full(*args, **kwargs):
        raise files.WriteError(errno.ENOSPC, "no space left on the disk; free some space")

    monkeypatch.setattr(files, "save_png", full)
    assert main(_generate(tmp_path)) == 1
    text = capsys.readouterr().err
    assert text == "error: no space left on the disk; free some space\n"
    assert not (tmp_path / "x.png").exists()


def test_ctrl_c_is_one_line(monkeypatch, tmp_path, capsys):
    _fail_at_load(monkeypatch, KeyboardInterrupt())
    assert main(_generate(tmp_path)) == 130
    text = capsys.readouterr().err
    assert text.startswith("interrupted (Ctrl-C)") and text.count("\n") == 1
    assert "Traceback" not in text


def test_messages_speak_in_the_commands_options():
    ti = build_parser().parse_args(["ti", "train", "pics", "--token", "<x>"])
    said = in_options("pass overwrite=True to replace it; n_vectors=2 or format='a1111'; "
                      "pass size=... as well; read it with load_embedding(p, token='<a>')", ti)
    assert said == ("pass --overwrite to replace it; --vectors 2 or --format a1111; pass "
                    "--size ... as well; read it with load_embedding(p, token='<a>')")
    generate = build_parser().parse_args(["generate", "--prompt", "x", "--out", "x.png"])
    # not an option of generate: the keyword stays (its owner's message must change)
    assert in_options("pass refuse_small=True", generate) == "pass refuse_small=True"
    assert in_options("pass overwrite=True", generate) == "pass --overwrite"


def test_a_long_message_keeps_its_start_and_its_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    long = "./" + "/".join(["x" * 40] * 70)   # 2,870 characters, each part a legal name
    assert main(["generate", "--prompt", "x", "--model", long, "--out", "x.png"]) == 2
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and len(line) < MAX_MESSAGE + 100
    assert line.startswith("error: no folder at ./xxx") and "characters cut" in line
    assert line.rstrip().endswith("which runs anywhere")   # the fix, at the end, kept
    assert cut("short") == "short"


def test_common_options_come_through_parents_not_argparse_internals():
    import inspect

    import nbhelpers.cli as cli

    assert "_actions" not in inspect.getsource(cli)
    for argv in (["--verbose", "info"], ["info", "--verbose"],
                 ["ti", "inspect", "x.pt", "--verbose"],
                 ["toy", "pictures", "--out", "p", "--verbose"]):
        assert build_parser().parse_args(argv).verbose is True, argv
    assert build_parser().parse_args(["info"]).verbose is False


def test_a_name_too_long_for_the_file_system_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--prompt", "x", "--model", "./" + "x" * 5000,
                 "--out", "x.png"]) == 2
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and "characters cut" in line and "Traceback" not in line
    assert line.rstrip().endswith("File name too long; use a shorter name")
