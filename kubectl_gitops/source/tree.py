"""Where manifests come from: a commit, the working tree, or the index (the
settings that come with them, ``.gitops.yaml``, are read by
:mod:`kubectl_gitops.source.config`).

Commits and the index are read from git objects, never from a checkout, so
any revision can be read without touching the working tree or the index.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kubectl_gitops.errors import ConfigError, GitError, ManifestError, ManifestErrors
from kubectl_gitops.source import config, git, links
from kubectl_gitops.source.config import CONFIG_FILE, Dependency, Mode, Target

if TYPE_CHECKING:
    from kubectl_gitops.source.helm import Spec as HelmSpec
    from kubectl_gitops.source.ignore import Rule
    from kubectl_gitops.source.sops import Keys

SOPS_CONFIG = ".sops.yaml"  # sops's own settings, never a manifest
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
LINK_MODE = "120000"

@dataclass(frozen=True)
class SourceFile:
    path: str  # relative to the repo root, POSIX separators
    data: bytes


@dataclass
class Source:
    """A resolved manifest source. ``files()`` yields what lies under ``path``."""

    root: Path
    path: str  # "" means the repo root
    mode: Mode
    ref: str
    sha: str | None  # the commit, in commit mode
    name: str  # --name, else .gitops.yaml's; "" for the default (app.default_name)
    namespace: str | None
    exclude: tuple[str, ...] = ()
    ignore: tuple[Rule, ...] = ()
    force_conflicts: bool = True
    health_checks: tuple[dict[str, str], ...] = ()  # .gitops.yaml's healthCheckExprs
    depends_on: tuple[Dependency, ...] = ()  # .gitops.yaml's dependsOn
    # In index mode: the index to read instead of the repo's own, e.g. the
    # temporary one a pre-commit hook gets from ``git commit -a``.
    index_file: str | None = None
    helm: HelmSpec | None = None
    targets: tuple[Target, ...] = ()  # .gitops.yaml's targets: (a fleet)
    # Where sops finds its key (None: sops's own environment).
    keys: Keys | None = field(default=None, repr=False)
    _tree_cache: dict[str, object] = field(default_factory=dict, repr=False)

    @property
    def revision(self) -> str:
        """A short label: ``git@<short sha>``, or the working tree / index."""
        if self.mode == "commit":
            assert self.sha
            return f"git@{self.sha[:7]}"
        return "working-tree" if self.mode == "worktree" else "index"

    def for_target(self, path: str | None, name: str | None, namespace: str | None) -> Source:
        """This revision as one target of a fleet reads it: its own path,
        app name and namespace where the target sets them (``None``: this
        source's)."""
        import dataclasses  # noqa: PLC0415

        return dataclasses.replace(
            self, path=self.path if path is None else normalize_path(self.root, path),
            name=self.name if name is None else name,
            namespace=self.namespace if namespace is None else namespace, _tree_cache={})

    def files(self) -> list[SourceFile]:
        files, errors = self.read_files()
        if errors:
            raise ManifestErrors(errors)
        return files

    def read_files(self) -> tuple[list[SourceFile], list[ManifestError]]:
        """The files, and an error at the path of each symlink that cannot be
        followed (validate reports them with the other problems)."""
        reader = {"commit": _commit_files, "worktree": _worktree_files,
                  "index": _index_files}[self.mode]
        errors: list[ManifestError] = []
        return list(reader(self, errors)), errors

    def export(self, dest: Path) -> dict[str, str]:
        """Write every blob of the revision's whole tree (or the index) under
        ``dest``, as git stores it: kustomize bases may live outside ``path``
        and generators read files of any kind. No attributes or filters apply
        (``git archive`` would honour ``export-ignore``). Symlinks that stay
        inside the tree become links; the others are left out and returned
        (path -> target), so that a reference to one can be refused by name."""
        if self.mode == "worktree":
            raise ValueError("the working tree needs no export")
        entries = _tree_entries(self, "") if self.mode == "commit" else _index_entries(self, "")
        blobs = [(sha, path) for mode, sha, path in entries if mode.startswith("100")]
        for (_, path), data in zip(blobs, git.cat_blobs(self.root, [s for s, _ in blobs])):
            full = dest / path
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_bytes(data)
        if any(mode == LINK_MODE for mode, _, _ in entries):
            tree = links.GitTree(entries, lambda shas: git.cat_blobs(self.root, shas), self.root)
            return links.export(tree, [p for m, _, p in entries if m == LINK_MODE], dest)
        return {}

    def entries(self, path: str) -> list[tuple[str, str, str]]:
        """``(mode, blob sha, path)`` of everything under ``path`` at the
        commit or in the index (not in the working tree: read the files)."""
        if self.mode == "worktree":
            raise ValueError("the working tree has no blob ids; read its files")
        found = _tree_entries(self, path) if self.mode == "commit" else \
            _index_entries(self, path)
        return [e for e in found if e[2] == path or e[2].startswith(path + "/") or not path]

    def blobs(self, shas: list[str]) -> list[bytes]:
        return git.cat_blobs(self.root, shas)

    def read(self, relpath: str) -> bytes | None:
        """One file at the revision (or in the index, or on disk); None when
        there is no such file."""
        if self.mode == "worktree":
            full = self.root / relpath
            return full.read_bytes() if full.is_file() else None
        spec = f"{self.sha}:{relpath}" if self.mode == "commit" else f":{relpath}"
        proc = git.run(["cat-file", "blob", spec], cwd=self.root, check=False,
                       env=index_env(self))
        return proc.stdout if proc.returncode == 0 else None

    def reads(self, relpath: str) -> bool:
        """Whether ``relpath`` is a manifest or kustomization this source reads."""
        return (is_manifest(relpath) or posixpath.basename(relpath) in KUSTOMIZATION_FILES) \
            and self.wanted(relpath)

    def wanted(self, relpath: str) -> bool:
        inner = relpath[len(self.path) + 1:] if self.path else relpath
        for pattern in self.exclude:
            if fnmatch.fnmatchcase(relpath, pattern) or fnmatch.fnmatchcase(inner, pattern):
                return False
        return True


def normalize_path(root: Path, path: str | None) -> str:
    """``path`` relative to the repo root, POSIX, no leading ``./``; "" = root."""
    if not path:
        return ""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(root.resolve())
        except ValueError:
            raise ConfigError(f"{path}: outside the repository {root}") from None
    rel = posixpath.normpath(p.as_posix())
    if rel.startswith("../") or rel == "..":
        raise ConfigError(f"{path}: outside the repository {root}")
    return "" if rel == "." else rel


def resolve(*, repo: str | Path | None = None, path: str | None = None, ref: str | None = None,
            working_tree: bool = False, staged: bool = False, name: str | None = None,
            namespace: str | None = None, index_file: str | None = None) -> Source:
    """Resolve the common source options (DESIGN.md) into a :class:`Source`.

    ``.gitops.yaml`` is read from the same place as the manifests (the
    commit, the index or the working tree), so a revision carries its own
    settings and rollback or diff of an old commit sees that commit's path.
    """
    if working_tree and staged:
        raise ConfigError("--working-tree and --staged exclude each other")
    if (working_tree or staged) and ref not in (None, "HEAD"):
        raise ConfigError("--ref cannot be combined with --working-tree or --staged")
    mode: Mode = "worktree" if working_tree else "index" if staged else "commit"
    ref = ref or "HEAD"
    sha: str | None = None
    if mode == "commit":
        root, sha = git.toplevel_and_commit(repo, ref)
    else:
        root = git.toplevel(repo)
    cfg = config.at(root, mode, sha, index_file)
    if path is not None and repo is None and not Path(path).is_absolute():
        # A relative --path given on the command line is relative to the cwd,
        # as every git and kubectl path argument is.
        path = os.path.relpath(Path(path).resolve(), root.resolve())
    rel = normalize_path(root, path if path is not None else cfg.path)
    return Source(root=root, path=rel, mode=mode, ref=ref, sha=sha,
                  name=name or cfg.name or "", namespace=namespace or cfg.namespace,
                  exclude=cfg.exclude, ignore=cfg.ignore, force_conflicts=cfg.force_conflicts,
                  health_checks=cfg.health_checks, depends_on=cfg.depends_on,
                  index_file=index_file, helm=cfg.helm, targets=cfg.targets)


def is_manifest(relpath: str) -> bool:
    return relpath.endswith(MANIFEST_SUFFIXES) and \
        posixpath.basename(relpath) not in (CONFIG_FILE, SOPS_CONFIG)


def _under(relpath: str, base: str) -> bool:
    return not base or relpath == base or relpath.startswith(base + "/")


# Paths given to git are file names, never globs: a directory may be called
# "app*" and must not match "apps".
_LITERAL = {"GIT_LITERAL_PATHSPECS": "1"}


def tree_entries(root: Path, sha: str) -> list[tuple[str, str, str]]:
    """``(mode, sha, path)`` of every blob and link of a commit's whole tree."""
    return _tree_entries(Source(root=root, path="", mode="commit", ref=sha, sha=sha, name="",
                                namespace=None), "")


def _tree_entries(src: Source, path: str | None = None) -> list[tuple[str, str, str]]:
    """``(mode, sha, path)`` of every blob and link under ``path`` (default:
    the source's) at the commit, from one ``git ls-tree``: reading git objects
    never needs a checkout, and one process beats a round trip per tree."""
    path = src.path if path is None else path
    args = ["ls-tree", "-r", "-z", "--full-tree", str(src.sha), "--"] + ([path] if path else [])
    entries = []
    for rec in git.zsplit(git.run(args, cwd=src.root, env=_LITERAL).stdout):
        meta, _, name = rec.partition("\t")
        mode, _kind, sha = meta.split()
        entries.append((mode, sha, name))
    _check_directory(path, entries, f"at {src.ref}")
    return entries


def _check_directory(path: str, entries: list[tuple[str, str, str]], where: str) -> None:
    """A mistyped path must not read as an empty desired state."""
    if path and not any(name.startswith(path + "/") for _, _, name in entries):
        what = "not a directory" if entries else "no such directory"
        raise ConfigError(f"{path}: {what} {where}")


def _blob_files(src: Source, entries: list[tuple[str, str, str]],
                whole: Callable[[], list[tuple[str, str, str]]],
                errors: list[ManifestError]) -> Iterator[SourceFile]:
    """Regular files, and what symlinks (120000) under PATH lead to inside the
    repo; ``whole()`` lists the whole tree, asked only when there is a link.
    Submodules (160000) hold no manifests of their own."""
    wanted = [(sha, path) for mode, sha, path in entries
              if mode.startswith("100") and src.reads(path)]
    if any(mode == LINK_MODE for mode, _, _ in entries):
        tree = links.GitTree(whole(), lambda shas: git.cat_blobs(src.root, shas), src.root)
        seen = {path for _, path in wanted}
        wanted += [(tree.sha(real), path) for path, real in
                   links.follow(tree, [p for m, _, p in entries if m == LINK_MODE], src.reads,
                                src.wanted, seen, errors)]
    blobs = git.cat_blobs(src.root, [sha for sha, _ in wanted])
    for (_, path), data in zip(wanted, blobs):
        yield SourceFile(path, data)


def _commit_files(src: Source, errors: list[ManifestError]) -> Iterator[SourceFile]:
    return _blob_files(src, _tree_entries(src), lambda: _tree_entries(src, ""), errors)


def _index_entries(src: Source, path: str | None = None) -> list[tuple[str, str, str]]:
    """``(mode, sha, path)`` of every stage-0 entry under ``path`` (default:
    the source's), NUL-safe."""
    path = src.path if path is None else path
    args = ["ls-files", "-z", "--stage", "--"] + ([path] if path else [])
    entries = []
    env = {**_LITERAL, **(index_env(src) or {})}
    for rec in git.zsplit(git.run(args, cwd=src.root, env=env).stdout):
        meta, _, name = rec.partition("\t")
        mode, sha, stage = meta.split()
        if stage != "0":
            raise GitError(f"{name}: unmerged in the index; resolve the conflict first")
        entries.append((mode, sha, name))
    return entries


def index_env(src: Source) -> dict[str, str] | None:
    return {"GIT_INDEX_FILE": src.index_file} if src.index_file else None


def _index_files(src: Source, errors: list[ManifestError]) -> Iterator[SourceFile]:
    entries = _index_entries(src)
    _check_directory(src.path, entries, "in the index")
    return _blob_files(src, entries, lambda: _index_entries(src, ""), errors)


def _worktree_files(src: Source, errors: list[ManifestError]) -> Iterator[SourceFile]:
    if src.path and not (src.root / src.path).is_dir():
        what = "not a directory" if (src.root / src.path).exists() else "no such directory"
        raise ConfigError(f"{src.path}: {what} in the working tree")
    args = ["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--"]
    paths = sorted(set(git.zsplit(git.run(args + ([src.path] if src.path else []),
                                          cwd=src.root, env=_LITERAL).stdout)))
    found = [(p, p) for p in paths if src.reads(p) and (src.root / p).is_file()
             and not (src.root / p).is_symlink()]  # else deleted but still tracked
    linked = [p for p in paths if (src.root / p).is_symlink()]
    if linked:
        found += links.follow(links.WorkTree(src.root), linked, src.reads, src.wanted,
                              {p for p, _ in found}, errors)
    for path, real in sorted(found):
        yield SourceFile(path, (src.root / real).read_bytes())
