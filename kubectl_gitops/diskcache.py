"""The cache directory, ``$XDG_CACHE_HOME/kubectl-gitops/`` (default
``~/.cache/...``), worked out in one place (:func:`directory`) for every
cache: discovery (kube/client.py), parsed manifests (source/manifests.py),
stripped schemas (kube/schema.py), the agent's git mirrors; and private
JSON files in it.

Files are 0600 in 0700 directories owned by the user, opened without
following symlinks, and written whole (write, then rename). Anything
unreadable, foreign or corrupt counts as absent, and failing to write only
costs the next run the work the entry would have saved: a cache never
turns into an error.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from contextlib import suppress
from typing import Any


def directory(*parts: str) -> str | None:
    """``$XDG_CACHE_HOME/kubectl-gitops/<parts>``, or None when there is no
    usable (absolute) cache home: then nothing is cached (a relative one
    would put files wherever the command runs)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        return None
    return os.path.join(base, "kubectl-gitops", *parts)


def private(path: str) -> bool:
    """Ours, a real directory, 0700 (tightened when it is ours)."""
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            return False
        if st.st_mode & 0o077:
            os.chmod(path, 0o700)
        return True
    except OSError:
        return False


def read_json(path: str) -> Any:
    """The document in ``path``, or None (absent, foreign, a link, corrupt)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if os.fstat(fd).st_uid != os.getuid():
                return None
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def write_json(path: str, doc: Any) -> None:
    """Write ``doc`` to ``path`` whole, in a private directory (made if
    missing); any failure leaves no file behind and is ignored."""
    try:
        data = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    except (ValueError, TypeError):
        return
    write_bytes(path, data)


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` whole (write, then rename), in a private
    directory (made if missing); any failure leaves no file and is ignored."""
    folder = os.path.dirname(path)
    try:
        _makedirs(folder)
        if not private(folder):
            return
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        pass


def _makedirs(folder: str) -> None:
    """``os.makedirs``, but every directory it makes is 0700 (``makedirs``
    gives only the last one its mode)."""
    missing = []
    while not os.path.isdir(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for made in reversed(missing):
        with suppress(FileExistsError):
            os.mkdir(made, 0o700)
