"""Symlinks in a manifest tree: followed when they stay inside the repo, an
error at their path when they leave it; never silently skipped.

kubectl reads a linked file from a checkout as if it lay at the link, so the
sources do the same in every mode. In git objects a link is a blob of mode
120000 holding its target; it is resolved one path component at a time
within the same tree (links in the middle of a path and chains too, at most
40 hops as Linux allows), so ``..`` means what it would in a checkout.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from kubectl_gitops.errors import ManifestError

MAX_HOPS = 40  # Linux's MAXSYMLINKS
MAX_DEPTH = 8  # directory links inside directory links
_LINK = "120000"


class LinkError(Exception):
    """A link that cannot be followed; ``outside`` when it leaves the repo."""

    def __init__(self, message: str, *, outside: bool = False) -> None:
        super().__init__(message)
        self.outside = outside


class Tree(Protocol):
    root: Path

    def kind(self, path: str) -> str | None:
        """"file", "dir", "link", or None when nothing is there."""

    def target(self, path: str) -> str:
        """What the link at ``path`` holds."""

    def below(self, directory: str) -> list[str]:
        """Every file and link under ``directory``, recursively, sorted."""


class GitTree:
    """A tree of git objects, from ``(mode, sha, path)`` of every entry."""

    def __init__(self, entries: Sequence[tuple[str, str, str]],
                 cat: Callable[[list[str]], list[bytes]], root: Path) -> None:
        self.root = root
        self.entries = {path: (mode, sha) for mode, sha, path in entries}
        self.dirs = {posixpath.dirname(p) for p in self.entries}
        for d in list(self.dirs):
            while d:
                d = posixpath.dirname(d)
                self.dirs.add(d)
        self._cat = cat
        self._targets: dict[str, str] = {}

    def kind(self, path: str) -> str | None:
        mode = self.entries.get(path, ("", ""))[0]
        if mode == _LINK:
            return "link"
        if mode.startswith("100"):
            return "file"
        return "dir" if path in self.dirs else None

    def target(self, path: str) -> str:
        if path not in self._targets:
            data = self._cat([self.entries[path][1]])[0]
            self._targets[path] = data.decode("utf-8", "surrogateescape")
        return self._targets[path]

    def below(self, directory: str) -> list[str]:
        prefix = directory + "/" if directory else ""
        return sorted(p for p, (mode, _) in self.entries.items()
                      if p.startswith(prefix) and (mode.startswith("100") or mode == _LINK))

    def sha(self, path: str) -> str:
        return self.entries[path][1]


class WorkTree:
    """The files on disk under a repo's work tree."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def kind(self, path: str) -> str | None:
        full = self.root / path
        if full.is_symlink():
            return "link"
        return "dir" if full.is_dir() else "file" if full.is_file() else None

    def target(self, path: str) -> str:
        return os.readlink(self.root / path)

    def below(self, directory: str) -> list[str]:
        found = []
        for parent, dirs, files in os.walk(self.root / directory):
            dirs[:] = [d for d in dirs if d != ".git"]
            rel = Path(parent).relative_to(self.root).as_posix()
            for name in files + [d for d in dirs if os.path.islink(os.path.join(parent, d))]:
                found.append(name if rel == "." else f"{rel}/{name}")
        return sorted(found)


def resolve(tree: Tree, path: str) -> str:
    """The link-free path, relative to the repo root, that ``path`` leads to."""
    pending = path.split("/")
    current: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not current:
                raise LinkError("leads outside the repository", outside=True)
            current.pop()
            continue
        candidate = "/".join(current + [part])
        kind = tree.kind(candidate)
        if kind == "link":
            hops += 1
            if hops > MAX_HOPS:
                raise LinkError(f"more than {MAX_HOPS} links in a row (a symlink loop?)")
            pending = _relative_target(tree, tree.target(candidate)).split("/") + pending
            if tree.target(candidate).startswith("/"):
                current = []
            continue
        if kind is None or (kind == "file" and pending):
            raise LinkError(f"{candidate}: no such file or directory in the repository")
        current.append(part)
    return "/".join(current)


def _relative_target(tree: Tree, target: str) -> str:
    """An absolute target inside the repo's checkout, made relative to its root."""
    if not target.startswith("/"):
        return target
    for root in (str(tree.root), str(tree.root.resolve())):
        if target == root or target.startswith(root + "/"):
            return target[len(root):].lstrip("/")
    raise LinkError("leads outside the repository", outside=True)


def follow(tree: Tree, linked: list[str], reads: Callable[[str], bool],
           wanted: Callable[[str], bool], seen: set[str],
           errors: list[ManifestError]) -> list[tuple[str, str]]:
    """``(path as read, real path)`` of each manifest the links lead to.

    A file already read at its own path (``seen``) is not read twice. Every
    link that cannot be followed and may hold manifests adds an error at its
    path to ``errors``.
    """
    out: list[tuple[str, str]] = []
    for link in linked:
        if wanted(link):
            _follow(tree, link, link, reads, seen, out, errors, 0)
    return out


def _follow(tree: Tree, shown: str, link: str, reads: Callable[[str], bool], seen: set[str],
            out: list[tuple[str, str]], errors: list[ManifestError], depth: int) -> None:
    try:
        real = resolve(tree, link)
    except LinkError as e:
        if reads(shown) or "." not in posixpath.basename(shown):  # a manifest, or a directory
            errors.append(_error(tree, shown, link, e))
        return
    if tree.kind(real) == "file":
        if reads(shown) and real not in seen:
            seen.add(real)
            out.append((shown, real))
        return
    if not real or link.startswith(real + "/") or depth >= MAX_DEPTH:
        errors.append(ManifestError(shown, None, f"symlink to {tree.target(link)!s} leads to "
                                    "a directory that contains it (a symlink loop)"))
        return
    for entry in tree.below(real):
        inner = f"{shown}/{entry[len(real) + 1:]}"
        if tree.kind(entry) == "link":
            _follow(tree, inner, entry, reads, seen, out, errors, depth + 1)
        elif reads(inner) and entry not in seen:
            seen.add(entry)
            out.append((inner, entry))


def _error(tree: Tree, shown: str, link: str, e: LinkError) -> ManifestError:
    target = tree.target(link) if tree.kind(link) == "link" else link
    if e.outside:
        return ManifestError(shown, None, f"symlink to {target} points outside the repository; "
                             "copy the file into the repository or point the link inside it")
    return ManifestError(shown, None, f"symlink to {target} cannot be followed: {e}")


def export(tree: Tree, linked: list[str], dest: Path) -> dict[str, str]:
    """Make each link that stays inside the tree a link under ``dest`` to the
    same place; return the others (path -> target), which are left out."""
    outside: dict[str, str] = {}
    for link in linked:
        try:
            real = resolve(tree, link)
        except LinkError:
            outside[link] = tree.target(link)
            continue
        where = dest / link
        where.parent.mkdir(parents=True, exist_ok=True)
        where.symlink_to(os.path.relpath(dest / real, where.parent))
    return outside
