"""Real git repositories in temp dirs for tests, with git config isolated.

Usage from a test module::

    from testing.git import commit, make_repo, write

    def test_x(git_env, tmp_path):      # git_env: the fixture in tests/conftest.py
        repo = make_repo(tmp_path / "repo")
        write(repo, "app/cm.yaml", "...")
        sha = commit(repo, "add cm")

``git_env`` (:func:`isolate_git`) points ``GIT_CONFIG_GLOBAL`` at a temp file
holding only a user name and e-mail and sets ``GIT_CONFIG_NOSYSTEM=1``, so
neither the machine's nor the developer's git config can change what a test
sees.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

# Variables a surrounding hook or shell may set that would point git
# elsewhere (see kubectl_gitops.source.git._LEAKY).
_LEAKY = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
          "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_PREFIX", "GIT_COMMON_DIR")


def isolate_git(monkeypatch: pytest.MonkeyPatch, home: Path) -> dict[str, str]:
    """Point git at a private global config under ``home``; return the env."""
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "gitconfig"
    cfg.write_text("[user]\n\tname = Test User\n\temail = test@example.com\n"
                   "[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n")
    for var in _LEAKY:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(cfg))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    return dict(os.environ)


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    """Run git in ``repo``; fail loudly with stderr; return stripped stdout."""
    proc = subprocess.run(["git", *args], cwd=repo, input=input, capture_output=True)
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}): "
                             f"{proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode("utf-8", "surrogateescape").strip()


def make_repo(path: Path) -> Path:
    """An empty repository with branch ``main`` at ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    return path


def write(repo: Path, relpath: str, text: str | bytes) -> Path:
    """Write a file (creating directories); bytes are written as they are."""
    full = repo / relpath
    full.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        full.write_bytes(text)
    else:
        full.write_text(text, encoding="utf-8")
    return full


def commit(repo: Path, msg: str = "change", *, add: bool = True) -> str:
    """Stage everything (unless ``add=False``) and commit; return the sha."""
    if add:
        git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", msg)
    return git(repo, "rev-parse", "HEAD")


def status(repo: Path) -> str:
    """``git status --porcelain`` including untracked files, NUL-separated.

    ``--no-optional-locks``: a plain ``git status`` may rewrite the index to
    refresh stat data, which would spoil a test that the index is untouched.
    """
    return git(repo, "--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all")
