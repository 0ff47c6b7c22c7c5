"""Folders the package writes (``toy pictures``, ``toy train``'s model, ``sd rehearsal-model``)
go through one writer, :func:`nbhelpers.files.atomic_folder`: whole or not at all, one
permission rule (the umask's), and a read-only or full disk is a message and exit 1, not a
traceback (issue 34; issue 31's "one atomic folder writer").
"""

import errno
import os
import stat

import pytest

import nbhelpers.files as files
from nbhelpers.cli import main
from nbhelpers.files import WriteError, atomic_folder


def modes(folder):
    return {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode)
            for p in [folder, *folder.rglob("*")]}


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_one_permission_rule_the_umasks(tmp_path, umask_027):
    """Every folder 0o777 and every file 0o666 less the umask, whatever made them (mkdtemp's
    private 0o700 folder, a library's 0o600 file)."""
    out = tmp_path / "made"
    with atomic_folder(out) as tmp:
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "a.bin").write_bytes(b"x")
        (tmp / "b.txt").write_text("y")
        os.chmod(tmp / "b.txt", 0o600)
    assert modes(out) == {".": 0o750, "sub": 0o750, "sub/a.bin": 0o640, "b.txt": 0o640}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made"]


def test_cli_toy_pictures_gets_the_same_rule(tmp_path, umask_027, capsys):
    out = tmp_path / "pics"
    assert main(["toy", "pictures", "--out", str(out), "--n", "2"]) == 0
    got = modes(out)
    assert got.pop(".") == 0o750 and got and set(got.values()) == {0o640}


def test_a_failure_in_the_block_leaves_nothing_and_keeps_the_old_folder(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "weights").write_bytes(b"old weights")
    with pytest.raises(KeyboardInterrupt), atomic_folder(out, replace=True) as tmp:
        (tmp / "weights").write_bytes(b"half")
        raise KeyboardInterrupt
    assert (out / "weights").read_bytes() == b"old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with atomic_folder(out, replace=True) as tmp:
        (tmp / "weights").write_bytes(b"new weights")
    assert (out / "weights").read_bytes() == b"new weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]   # the old one removed


def test_a_folder_that_appears_meanwhile_is_not_overwritten(tmp_path):
    out = tmp_path / "pics"
    with pytest.raises(FileExistsError, match="nothing was overwritten"), \
            atomic_folder(out) as tmp:
        (tmp / "a.png").write_bytes(b"new")
        out.mkdir()
        (out / "theirs.png").write_bytes(b"theirs")
    assert [p.name for p in out.iterdir()] == ["theirs.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pics"]


def _read_only(monkeypatch):
    """The folder refuses new entries as a read-only file system does (EROFS). The tests run
    as root here, where chmod does not stop writes, and an unprivileged user cannot run the
    interpreter (under /root): so the refusal is injected where the folder writer makes its
    first entry, the call a read-only folder fails."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(files.tempfile, "mkdtemp", refuse)
    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)


@pytest.mark.parametrize("argv", [
    ["toy", "pictures", "--n", "2", "--out"],
    ["sd", "rehearsal-model", "--size", "mini", "--out"],
    ["toy", "train", "--quick", "--out"],   # refused before training, not after
])
def test_cli_into_a_read_only_folder_is_a_message(tmp_path, monkeypatch, capsys, argv):
    _read_only(monkeypatch)
    out = tmp_path / "ro" / "new"
    (tmp_path / "ro").mkdir()
    assert main([*argv, str(out)]) == 1
    err = capsys.readouterr().err
    assert "cannot write to" in err and "read-only" in err and str(out.parent) in err
    assert "Traceback" not in err and not out.exists()


def test_cli_toy_pictures_on_a_full_disk(tmp_path, capsys):
    """A file-size limit stops the first picture (EFBIG): message, exit 1, no folder, no
    temporary folder left."""
    import resource

    out = tmp_path / "pics"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100, hard))
    try:
        rc = main(["toy", "pictures", "--n", "2", "--out", str(out)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    err = capsys.readouterr().err
    assert rc == 1 and "larger than this process may write" in err, err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_a_library_error_naming_a_full_disk_is_a_write_error(tmp_path):
    """safetensors (Rust) reports a full disk as its own error with "(os error 28)"; inside
    the folder writer it is a WriteError like any other."""
    class SafetensorError(Exception):
        pass

    with pytest.raises(WriteError, match="no space left") as info, \
            atomic_folder(tmp_path / "m") as tmp:
        (tmp / "x").write_bytes(b"x")
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: "
                              "StorageFull, message: \"No space left on device\" }) "
                              "(os error 28)")
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="a bug"), atomic_folder(tmp_path / "m"):
        raise ValueError("a bug")   # not the disk: passed on as it is
    assert list(tmp_path.iterdir()) == []
