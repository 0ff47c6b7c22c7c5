"""The room's accounts from a roster file: one local system user per learner, and the shared
read-only folder. Run as root on the workshop server (deploy/jupyterhub/README.md).

    python deploy/jupyterhub/roster.py create ROSTER [--passwords FILE]
    python deploy/jupyterhub/roster.py shared [--path /srv/nbworkshop/shared] [--models DIR]
                                              [--wheels DIR]
    python deploy/jupyterhub/roster.py check ROSTER
    python deploy/jupyterhub/roster.py remove ROSTER        # after the day: accounts and homes

``create`` adds each learner who has no account yet (``useradd``, a home of their own that
only they can open: mode 700) and leaves existing ones as they are, so it can be run again
after a late name is added. The accounts get no password (no shell login) unless
``--passwords FILE`` asks for one each (for ``NBW_AUTH=pam``): then it writes ``name,password``
lines to FILE (mode 600) for the teacher to hand out.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workshop  # noqa: E402


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise SystemExit(f"roster.py {what}: run it as root (sudo python "
                         f"deploy/jupyterhub/roster.py {what} ...): it changes the system's "
                         "accounts and folders")


def create(roster: str, passwords: str | None = None) -> list[str]:
    """Accounts for the learners who have none; the names created."""
    _need_root("create")
    made = []
    for name in workshop.read_roster(roster):
        if not _exists(name):
            subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/bash",
                            name], check=True)
            made.append(name)
        os.chmod(pwd.getpwnam(name).pw_dir, 0o700)
    if passwords:
        _set_passwords(workshop.read_roster(roster), Path(passwords))
    print(f"roster: {len(made)} account(s) created ({', '.join(made) or 'none'}); "
          f"every learner's home is theirs alone (mode 700)")
    return made


def _set_passwords(names: list[str], out: Path) -> None:
    lines = [f"{n},{secrets.token_urlsafe(6)}" for n in names]
    partial = out.with_name(out.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    subprocess.run(["chpasswd"], input="\n".join(ln.replace(",", ":", 1) for ln in lines),
                   text=True, check=True)
    partial.rename(out)
    print(f"roster: a password for each learner, written to {out} (mode 600)")


def remove(roster: str) -> list[str]:
    """The learners' accounts and homes removed; the names removed."""
    _need_root("remove")
    gone = []
    for name in workshop.read_roster(roster):
        if not _exists(name):
            continue
        for _ in range(50):  # their processes first: userdel refuses while one runs
            if subprocess.run(["pkill", "-KILL", "-u", name], check=False).returncode == 1:
                break        # pkill's 1: no process left
            time.sleep(0.1)
        done = subprocess.run(["userdel", "--remove", name], check=False, text=True,
                              capture_output=True)
        if _exists(name):
            print(f"roster: could not remove {name}: {done.stderr.strip()}", file=sys.stderr)
            continue
        gone.append(name)
    print(f"roster: {len(gone)} account(s) removed with their homes")
    return gone


def shared(path: str, models: str | None = None, wheels: str | None = None) -> Path:
    """The shared folder: root's, readable by all, writable by none of the learners, with a
    note saying so; ``models`` and ``wheels`` copied in when given."""
    _need_root("shared")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    for name, src in (("huggingface", models), ("wheels", wheels)):
        if src:
            shutil.copytree(src, root / name, dirs_exist_ok=True)
    (root / "READ-ONLY.txt").write_text(workshop.SHARED_NOTE.format(path=root))
    for dirpath, _dirs, files in os.walk(root):
        os.chown(dirpath, 0, 0)
        os.chmod(dirpath, 0o755)
        for f in files:
            os.chown(os.path.join(dirpath, f), 0, 0)
            os.chmod(os.path.join(dirpath, f), 0o644)
    print(f"roster: shared folder {root}, read-only for learners")
    return root


def check(roster: str) -> int:
    """Each learner and whether their account exists; 1 if any is missing."""
    names = workshop.read_roster(roster)
    missing = [n for n in names if not _exists(n)]
    for n in names:
        print(f"{n}: {'MISSING (roster.py create)' if n in missing else 'ok'}")
    return 1 if missing else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("create", help="an account per learner who has none")
    p.add_argument("roster")
    p.add_argument("--passwords", help="give each a password, written to this file")
    sub.add_parser("check", help="whose account exists").add_argument("roster")
    sub.add_parser("remove", help="remove the accounts and homes").add_argument("roster")
    p = sub.add_parser("shared", help="the shared read-only folder")
    p.add_argument("--path", default=workshop.DEFAULT_SHARED)
    p.add_argument("--models", help="a Hugging Face cache folder to copy in")
    p.add_argument("--wheels", help="a wheelhouse to copy in (make wheelhouse)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "create":
            create(args.roster, args.passwords)
        elif args.cmd == "remove":
            remove(args.roster)
        elif args.cmd == "shared":
            shared(args.path, args.models, args.wheels)
        else:
            return check(args.roster)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
