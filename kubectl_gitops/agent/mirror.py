"""A bare mirror of a git URL in a cache directory, fetched on demand.

Credentials come from git's own mechanisms (credential helpers, ssh keys and
``GIT_SSH_COMMAND``, or a token file turned into a credential helper); a URL's
user-info is never logged. A failed fetch leaves the mirror as it was, so the
last good revision stays readable.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import threading
import time
from pathlib import Path

from kubectl_gitops.errors import GitError
from kubectl_gitops.source import git

_USERINFO = re.compile(r"(\w+://)[^/@\s]+@")


def redact(text: str) -> str:
    """``https://user:token@host/x`` as ``https://***@host/x``."""
    return _USERINFO.sub(r"\1***@", text)


def _env(token_file: str | None) -> dict[str, str]:
    # A slow or silent server must not hold a fetch for ever.
    env = {"GIT_HTTP_LOW_SPEED_LIMIT": "1000", "GIT_HTTP_LOW_SPEED_TIME": "30"}
    if token_file:
        # The token stays in its file: git asks the helper, the helper reads it.
        helper = f"!f() {{ echo username=x-access-token; printf 'password=%s\\n' " \
                 f"\"$(cat {shlex.quote(token_file)})\"; }}; f"
        env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "credential.helper",
                    "GIT_CONFIG_VALUE_0": helper})
    return env


class Mirror:
    """``url`` mirrored under ``cache``: one per URL in an agent, shared by
    every app that reads the URL, with one lock, so two apps never run git
    in one mirror at once and a fetch one app made serves the others."""

    def __init__(self, url: str, cache: Path, *, token_file: str | None = None) -> None:
        self.url = url
        local = Path(url).expanduser()
        if "://" not in url and ":" not in url.split("/")[0] and local.exists():
            self.url = str(local.resolve())  # a local path, as git takes it
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        tail = re.sub(r"[^A-Za-z0-9.-]+", "-", redact(self.url))[-40:]
        self.dir = cache / f"{tail}-{digest}.git"
        self._env = _env(token_file)
        self._lock = threading.Lock()
        self._tried = float("-inf")  # when (monotonic) the last attempt started
        self._error = ""  # how it failed; "" when it worked
        self._revs: dict[str, str] = {}  # ref -> commit, until the next fetch
        self._tree: tuple[str, dict[str, str]] = ("", {})  # commit, its paths -> object ids

    def fetch(self, since: float | None = None) -> tuple[bool, str]:
        """Clone the first time, fetch afterwards: ``(whether this call ran
        git, the error of the attempt that counts or "")``. With ``since``
        (a ``time.monotonic()``), an attempt started at or after it serves,
        whoever made it: one fetch per URL for all the apps that want one
        since then, and one failure reported to each of them."""
        with self._lock:
            if since is not None and self._tried >= since:
                return False, self._error
            self._tried = time.monotonic()
            self._revs = {}
            try:
                self._fetch()
            except GitError as e:
                self._error = str(e)
            else:
                self._error = ""
            return True, self._error

    def commit(self, ref: str) -> str:
        """The commit ``ref`` names, asked of git once per fetch for all the
        apps that follow it."""
        with self._lock:
            sha = self._revs.get(ref)
            if sha is None:
                sha = self._revs[ref] = git.rev_parse(self.dir, ref)
            return sha

    def objects(self, sha: str) -> dict[str, str]:
        """Every path of commit ``sha`` (directories too) -> its object id,
        with ``""`` for the root tree: one ``git ls-tree`` per new commit,
        for all the apps that read it."""
        with self._lock:
            if self._tree[0] == sha:
                return self._tree[1]
        out = git.run(["ls-tree", "-r", "-t", "-z", "--full-tree", sha], cwd=self.dir).stdout
        found = {"": git.run(["rev-parse", f"{sha}^{{tree}}"], cwd=self.dir).stdout.decode()
                 .strip()}
        for rec in git.zsplit(out):
            meta, _, name = rec.partition("\t")
            found[name] = meta.split()[2]
        with self._lock:
            self._tree = (sha, found)
        return found

    def _fetch(self) -> None:
        try:
            if (self.dir / "HEAD").is_file():
                git.run(["fetch", "--prune", "--quiet", "origin"], cwd=self.dir, env=self._env)
            else:
                self.dir.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.dir.with_suffix(".tmp")
                shutil.rmtree(tmp, ignore_errors=True)  # left by a killed clone
                git.run(["clone", "--mirror", "--quiet", "--", self.url, str(tmp)],
                        cwd=self.dir.parent, env=self._env)
                tmp.rename(self.dir)  # a half-done clone never looks like a mirror
        except GitError as e:
            lines = e.stderr.splitlines()
            why = next((ln for ln in lines if ln.startswith("fatal:")), lines[-1] if lines
                       else str(e)).removeprefix("fatal: ")
            raise GitError(redact(f"git fetch {self.url}: {why}"),
                           cmd=[redact(c) for c in e.cmd], status=e.status,
                           stderr=redact(e.stderr)) from None
