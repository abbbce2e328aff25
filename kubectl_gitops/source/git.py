"""The one module that runs git.

Every git call goes through :func:`run`, which raises :class:`GitError` with
the command, status and stderr. Git's own ``GIT_*`` variables are stripped
from the environment: a ``GIT_INDEX_FILE`` or ``GIT_DIR`` inherited from a
hook would otherwise point our git at another repository's state.
"""

from __future__ import annotations

import os
import subprocess
import zlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from kubectl_gitops.errors import GitError

if TYPE_CHECKING:
    import git as gitpython

# Variables a hook may set that must not leak into git calls we make on
# purpose against a (possibly other) repository. GIT_AUTHOR_* / GIT_COMMITTER_*
# are a user's choice and are kept.
_LEAKY = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
          "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_PREFIX", "GIT_COMMON_DIR",
          "GIT_NAMESPACE", "GIT_QUARANTINE_PATH", "GIT_EXEC_PATH")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.setdefault("LC_ALL", "C")
    if extra:
        env.update(extra)
    return env


def run(args: Sequence[str], *, cwd: str | Path, check: bool = True, input: bytes | None = None,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    cmd = ["git", *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, input=input, capture_output=True,
                              env=clean_env(env))
    except FileNotFoundError as e:
        raise GitError("git is not installed or not on PATH", cmd=cmd) from e
    if check and proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        first = stderr.splitlines()[-1] if stderr else f"exit status {proc.returncode}"
        raise GitError(f"git {args[0]}: {first.removeprefix('fatal: ')}", cmd=cmd,
                       status=proc.returncode, stderr=stderr)
    return proc


def out(args: Sequence[str], *, cwd: str | Path, **kw: object) -> str:
    return run(args, cwd=cwd, **kw).stdout.decode("utf-8", "surrogateescape").strip()  # type: ignore[arg-type]


def cat_blobs(root: str | Path, shas: Sequence[str], *,
              env: Mapping[str, str] | None = None) -> list[bytes]:
    """Contents of many blobs: loose objects read directly, the rest (packed,
    or from alternates) through one ``git cat-file --batch``.

    The hook reads the index this way: no GitPython import (~0.15 s) on the
    path that runs on every commit. Freshly committed or staged blobs are
    loose, and git spends ~80 us of system time on each one it opens for
    ``cat-file``; inflating them here costs a third of that.
    """
    if not shas:
        return []
    objects = _objects_dir(str(root))
    fanout = _fanout_dirs(objects)
    blobs = [_loose_blob(objects, s) if s[:2] in fanout else None for s in shas]
    missing = [s for s, b in zip(shas, blobs) if b is None]
    if missing:
        packed = dict(zip(missing, _cat_file(root, missing, env)))
        blobs = [packed[s] if b is None else b for s, b in zip(shas, blobs)]
    return blobs  # type: ignore[return-value]


# root -> its object store, asked once per run (or learnt by toplevel_and_commit)
_OBJECTS: dict[str, Path] = {}


def _objects_dir(root: str) -> Path:
    known = _OBJECTS.get(root)
    if known is None:
        # --git-path follows linked worktrees to the common object store.
        known = _OBJECTS[root] = Path(root) / out(["rev-parse", "--git-path", "objects"],
                                                  cwd=root)
    return known


def _fanout_dirs(objects: Path) -> frozenset[str]:
    """The ``xx/`` directories that hold loose objects: none after a ``git gc``."""
    try:
        return frozenset(n for n in os.listdir(objects) if len(n) == 2)
    except OSError:
        return frozenset()


def _loose_blob(objects: Path, sha: str) -> bytes | None:
    """A loose blob's content, or None to leave it to git (packed, or odd)."""
    try:
        with open(objects / sha[:2] / sha[2:], "rb") as f:
            raw = zlib.decompress(f.read())
    except (OSError, zlib.error):
        return None
    header, _, body = raw.partition(b"\0")
    if header != b"blob %d" % len(body):
        return None
    return body


def _cat_file(root: str | Path, shas: Sequence[str],
              env: Mapping[str, str] | None) -> list[bytes]:
    data = run(["cat-file", "--batch"], cwd=root, env=env,
               input="".join(f"{s}\n" for s in shas).encode()).stdout
    blobs: list[bytes] = []
    pos = 0
    for sha in shas:
        eol = data.index(b"\n", pos)
        header = data[pos:eol].split()
        if len(header) != 3:
            raise GitError(f"{sha}: object missing from the repository {root}")
        size = int(header[2])
        blobs.append(data[eol + 1:eol + 1 + size])
        pos = eol + 1 + size + 1  # the content is followed by a newline
    return blobs


def zsplit(data: bytes) -> list[str]:
    """Split NUL-separated git output (``-z``) into paths, keeping odd bytes."""
    return [p.decode("utf-8", "surrogateescape") for p in data.split(b"\0") if p]


def toplevel(start: str | Path | None = None) -> Path:
    """The work tree root of the repository containing ``start`` (default:
    cwd); of a bare repository (the agent's mirror), its git directory:
    commits are read from git objects alone, so either serves as the root."""
    where = Path(start or os.getcwd())
    if not where.exists():
        raise GitError(f"{where}: no such directory")
    proc = run(["rev-parse", "--show-toplevel"], cwd=where, check=False)
    if proc.returncode != 0:
        bare = run(["rev-parse", "--is-bare-repository", "--absolute-git-dir"], cwd=where,
                   check=False).stdout.decode("utf-8", "surrogateescape").splitlines()
        if bare[:1] == ["true"] and len(bare) == 2:
            return Path(bare[1])
        raise GitError(f"{where}: not inside a git repository (use --repo DIR)")
    return Path(proc.stdout.decode("utf-8", "surrogateescape").strip())


@lru_cache(maxsize=8)
def repo(root: str) -> gitpython.Repo:
    """A GitPython handle, cached per run. Imported lazily: it costs ~0.1 s."""
    os.environ.pop("GIT_INDEX_FILE", None)  # GitPython reads the index through it
    import git as gitpython  # noqa: PLC0415

    try:
        return gitpython.Repo(root)
    except gitpython.exc.GitError as e:  # type: ignore[attr-defined]
        raise GitError(f"{root}: not a usable git repository ({e})") from e


def toplevel_and_commit(start: str | Path | None, rev: str) -> tuple[Path, str]:
    """:func:`toplevel` and :func:`rev_parse` of ``rev`` in one git call
    (each git start costs a small run a few milliseconds), which also
    learns where the objects :func:`cat_blobs` reads are."""
    where = Path(start or os.getcwd())
    proc = run(["rev-parse", "--show-toplevel", "--git-path", "objects", "--verify", "--quiet",
                "--end-of-options", f"{rev}^{{commit}}"],
               cwd=where, check=False) if where.is_dir() else None
    lines = proc.stdout.decode("utf-8", "surrogateescape").splitlines() if proc else []
    if proc is None or proc.returncode != 0 or len(lines) != 3:
        root = toplevel(start)  # the one-line errors: no directory, no repository
        return root, rev_parse(root, rev)  # or no such revision
    _OBJECTS.setdefault(lines[0], where / lines[1])
    return Path(lines[0]), lines[2].strip()


def rev_parse(root: str | Path, rev: str) -> str:
    """The full commit sha of ``rev``; a one-line error when it does not exist."""
    proc = run(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"],
               cwd=root, check=False)
    if proc.returncode != 0:
        raise GitError(f"{rev}: no such revision in {root}")
    return proc.stdout.decode().strip()
