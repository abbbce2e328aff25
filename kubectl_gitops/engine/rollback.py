"""Roll the manifests back by moving git forward: a new commit restoring PATH.

The commit is built with plumbing on a temporary index (``read-tree``,
``update-index``, ``write-tree``, ``commit-tree``), so nothing outside PATH
is touched: not the user's staged changes, not their unrelated edits. The
real index and working tree are then moved from the old HEAD to the new
commit with a two-tree ``read-tree -m -u``, which changes only the paths
that differ (all under PATH) and refuses to overwrite anything it would lose.

Default targets step back like undo. Each rollback records what it restored
(``Rollback-To:``) and what it replaced (``Rollback-Of:``); a rollback is
never a position in history of its own: the next step goes back from the
revision it restored.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kubectl_gitops import exitcodes
from kubectl_gitops.errors import GitError, GitOpsError, UsageError
from kubectl_gitops.source import config, git, tree
from kubectl_gitops.source.tree import Source

if TYPE_CHECKING:
    from kubectl_gitops.kube.kubeconfig import Overrides

TRAILER_TO = "Rollback-To"
TRAILER_OF = "Rollback-Of"
SYNC_EXECUTABLE = "kubectl-gitops-sync"

# Files git leaves while an operation waits for the user (see git-status).
_IN_PROGRESS = {
    "MERGE_HEAD": "a merge",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or git am",
}


class NothingToRollBack(GitOpsError):
    """No earlier state to restore, or the target equals HEAD under PATH."""

    exit_code = exitcodes.NOTHING_TO_DO


@dataclass(frozen=True)
class Change:
    """One line of ``git diff --name-status`` between HEAD and the target."""

    status: str  # A, M, D, R, T (type change)
    path: str
    old_path: str = ""

    def __str__(self) -> str:
        if self.old_path:
            return f"{self.status}  {self.old_path} -> {self.path}"
        return f"{self.status}  {self.path}"


@dataclass(frozen=True)
class Restore:
    """What a rollback would restore (:func:`make_plan`); :func:`perform` carries it out."""

    root: Path
    path: str  # "" = the repo root
    branch: str  # short name, e.g. "main"
    head: str  # full sha of HEAD, the state replaced
    target: str  # full sha of the restored revision
    changes: tuple[Change, ...]
    # What else is restored with PATH: the directories and files inside the
    # repo that its kustomizations render from.
    renders_from: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.path or "the repo root"

    @property
    def scope(self) -> tuple[str, ...]:
        return (self.path, *self.renders_from)

    def also(self) -> str:
        """What is restored with PATH, for messages."""
        return f" (with {', '.join(self.renders_from)}, which it renders from)" \
            if self.renders_from else ""

    def message(self) -> str:
        """Subject, body and trailers of the rollback commit."""
        target, head = describe(self.root, self.target), describe(self.root, self.head)
        files = "\n".join(f"  {c}" for c in self.changes)
        return (f"Roll back {self.label} to {target}\n\n"
                f"Restore {self.label}{self.also()} as it was at {target},\n"
                f"replacing its state at {head}.\n\n{files}\n\n"
                f"{TRAILER_TO}: {self.target}\n{TRAILER_OF}: {self.head}\n")


# --- state checks ---------------------------------------------------------------


def current_branch(root: Path) -> str:
    """The checked-out branch; refuses an operation in progress or a detached HEAD."""
    gitdir = Path(git.out(["rev-parse", "--absolute-git-dir"], cwd=root))
    for marker, what in _IN_PROGRESS.items():
        if (gitdir / marker).exists():
            raise GitError(f"{what} is in progress in {root}; finish or abort it first")
    proc = git.run(["symbolic-ref", "-q", "--short", "HEAD"], cwd=root, check=False)
    if proc.returncode != 0:
        raise GitError("HEAD is detached; check out the branch to roll back first "
                       "(git switch BRANCH)")
    return proc.stdout.decode().strip()


def refuse_dirty(root: Path, paths: Sequence[str]) -> None:
    """Refuse staged, unstaged or untracked (not ignored) changes under PATH.

    Untracked files count too: restoring PATH may need to write a file where
    one lies, and a new manifest not yet committed is work in progress.
    """
    # No optional locks: a plain status may rewrite the index, and --dry-run
    # promises to leave it alone.
    proc = git.run(["status", "--porcelain=v1", "-z", "--untracked-files=all",
                    "--", *_pathspecs(paths)], cwd=root, env={"GIT_OPTIONAL_LOCKS": "0"})
    entries = _status_paths(git.zsplit(proc.stdout))
    if entries:
        first = entries[0]
        more = f" and {len(entries) - 1} more" if len(entries) > 1 else ""
        raise GitError(f"uncommitted changes under {_names(paths)} ({first}{more}); "
                       "commit, stash (git stash -u) or remove them first")


def refuse_ignored(root: Path, paths: Sequence[str], written: Sequence[str]) -> None:
    """Refuse when restoring would overwrite git-ignored files (a local
    ``secret.yaml`` kept out of git on purpose): git would replace them
    without a word, since ignored files count as expendable."""
    proc = git.run(["ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--",
                    *_pathspecs(paths)], cwd=root)
    ignored = git.zsplit(proc.stdout)
    hit = sorted(i for i in ignored for w in written
                 if i == w or i.startswith(w + "/") or w.startswith(i + "/"))
    if hit:
        raise GitError(f"the rollback would overwrite ignored files: {', '.join(dict.fromkeys(hit))}"
                       "; move them out of the way first")


# --- targets --------------------------------------------------------------------


def tree_at(root: Path, sha: str, path: str) -> str | None:
    """The object id of PATH at ``sha`` (None when PATH does not exist there)."""
    return _object(root, f"{sha}^{{tree}}" if not path else f"{sha}:{path}")


def trees_at(root: Path, sha: str, paths: Sequence[str]) -> tuple[str | None, ...]:
    return tuple(tree_at(root, sha, p) for p in paths)


def newest_change(root: Path, start: str, paths: Sequence[str]) -> tuple[str, str] | None:
    """``(sha, Rollback-To value)`` of the newest first-parent change to PATH."""
    fmt = f"%H%x00%(trailers:key={TRAILER_TO},valueonly,separator=%x20)"
    line = git.out(["log", "-1", "--first-parent", f"--format={fmt}", start, "--",
                    *_pathspecs(paths)], cwd=root)
    if not line:
        return None
    sha, _, restored = line.partition("\0")
    return sha, (restored.split() or [""])[-1]


def position(root: Path, start: str, path: Sequence[str]) -> str | None:
    """The newest change to PATH at or before ``start``, seen through rollbacks.

    A rollback that restored T stands for T's own position, so stepping back
    from it continues from T (and from what T restored, if T is a rollback).
    """
    seen: set[str] = set()
    while (found := newest_change(root, start, path)) is not None:
        sha, restored = found
        if sha in seen or not _is_rollback_to(root, sha, restored, path):
            return sha
        seen.add(sha)
        start = restored
    return None


def default_target(root: Path, head: str, paths: Sequence[str], steps: int = 1) -> str:
    """The state ``steps`` changes back from HEAD under PATH (undo-like)."""
    path = _names(paths)
    if steps < 1:
        raise UsageError(f"--steps {steps}: give a number of 1 or more")
    start = head
    for step in range(steps):
        change = position(root, start, paths)
        if change is None and step == 0:
            raise NothingToRollBack(f"no commit on this branch changes {path or 'the repo'}; "
                                    "nothing to roll back")
        parent = _first_parent(root, change) if change else None
        if parent is None:
            if step == 0:
                raise NothingToRollBack(f"{path} has no state before "
                                        f"{describe(root, change or head)}; nothing to roll back")
            raise UsageError(f"--steps {steps}: {path} has only {step} "
                             "earlier state(s) on this branch")
        start = parent
    return start


def last_synced_target(root: Path, head: str, path: Sequence[str],
                       revisions: Iterable[str]) -> str:
    """The newest successfully synced revision whose PATH differs from HEAD's.

    Records are newest first; the revision in the cluster now is usually HEAD
    itself, so "previous" means the newest one that would change something.
    """
    current = trees_at(root, head, path)
    for revision in revisions:
        sha = _object(root, f"{revision}^{{commit}}")
        if sha is None:
            raise GitError(f"synced revision {revision[:12]} is not in this repository; "
                           "fetch it first (git fetch)")
        if trees_at(root, sha, path) != current:
            return sha
    raise NothingToRollBack("the sync history holds no earlier successful sync that differs "
                            f"from HEAD under {_names(path)}; nothing to roll back")


def synced_revisions(src: Source, *, name: str | None, cluster: Overrides,
                     namespace: str | None) -> list[str]:
    """Revisions of the successful syncs recorded in the cluster, newest first."""
    # Imported here: the Kubernetes client is only needed for --last-synced.
    from kubectl_gitops.engine import app, desired, history  # noqa: PLC0415

    kube = app.connect(cluster)
    ns = desired.default_namespace(src, namespace, kube)
    records = history.records(kube, app.name_in_cluster(src, kube, name, ns), ns)
    return [r["revision"] for r in records
            if r.get("result") == "succeeded" and r.get("revision")]


# --- plan and perform -----------------------------------------------------------


def make_plan(src: Source, *, rev: str | None = None, steps: int | None = None,
              synced: Callable[[], Iterable[str]] | None = None) -> Restore:
    """Check the repository, choose the target, compute what restoring it changes.

    The target is ``rev``, else the newest revision ``synced()`` returns that
    differs from HEAD (the cluster is asked only once git is known to be fit),
    else ``steps`` changes back (default 1). A kustomize PATH brings the
    directories it renders from: changes to them count as changes of PATH,
    and they are restored with it.
    """
    root, path = src.root, src.path
    branch = current_branch(root)
    head = git.rev_parse(root, "HEAD")
    scope = (path, *renders_from(root, head, path))
    refuse_dirty(root, scope)
    if rev is not None:
        target = git.rev_parse(root, rev)
    elif synced is not None:
        target = last_synced_target(root, head, scope, synced())
    else:
        target = default_target(root, head, scope, steps or 1)
    refuse_renamed(root, head, target, path)
    extra = _outermost(set(scope[1:]) | set(renders_from(root, target, path)), path)
    scope = (path, *extra)
    refuse_dirty(root, scope)
    if trees_at(root, target, scope) == trees_at(root, head, scope):
        raise NothingToRollBack(f"{_names(scope)} at {describe(root, target)} "
                                "is the same as at HEAD; nothing to roll back")
    found = changes(root, head, target, scope)
    refuse_ignored(root, scope, [c.path for c in found if c.status != "D"])
    return Restore(root=root, path=path, branch=branch, head=head, target=target,
                   changes=tuple(found), renders_from=tuple(extra))


def renders_from(root: Path, sha: str, path: str) -> list[str]:
    """Directories and files outside PATH, inside the repo, that the
    kustomizations under PATH read at ``sha`` (outermost first, sorted)."""
    from kubectl_gitops.source import kustomize, manifests  # noqa: PLC0415 - only for kustomize trees

    charted = _helm_inputs(root, sha)
    entries = tree.tree_entries(root, sha)
    kfiles = manifests.top_kustomizations(p for _, _, p in entries
                                          if not path or p.startswith(path + "/"))
    if not kfiles:
        return _outermost(charted, path)
    reader = kustomize.git_reader(root, entries)
    walk = kustomize.Walk()
    for kfile in kfiles:
        kustomize.walk(reader, posixpath.dirname(kfile), walk)
    return _outermost(walk.dirs | walk.files | set(charted), path)


def _helm_inputs(root: Path, sha: str) -> list[str]:
    """A Helm app's inputs in git besides PATH: ``.gitops.yaml`` (which names
    the chart and its version), a local chart and the values files."""
    try:
        spec = config.at(root, "commit", sha).helm
    except GitOpsError:
        return []
    if spec is None:
        return []
    return [config.CONFIG_FILE, *spec.values_files, *([spec.chart] if spec.kind == "local"
                                                      else [])]


def _outermost(paths: Iterable[str], path: str) -> list[str]:
    """``paths`` outside PATH, without those inside another of them."""
    outside = {p for p in paths if path and p != path and not p.startswith(path + "/")}
    return sorted(p for p in outside
                  if not any(p.startswith(q + "/") for q in outside if q != p))


def refuse_renamed(root: Path, head: str, target: str, path: str) -> None:
    """PATH missing at the target would commit its deletion: refuse, and name
    the directory it was renamed from when it was."""
    if not path or tree_at(root, target, path) is not None:
        return
    made = git.out(["log", "--first-parent", "--format=%H", f"{target}..{head}", "--",
                    _pathspec(path)], cwd=root).split()
    origin = _renamed_from(root, made[-1], path) if made else None
    where = describe(root, target)
    if origin:
        raise GitError(f"{path} did not exist at {where}: it was renamed from {origin} in "
                       f"{describe(root, made[-1])}; roll back with --path {origin} on a "
                       f"checkout of that name, or restore {origin}'s files under {path} "
                       "yourself")
    raise GitError(f"{path} did not exist at {where}; rolling back would delete it "
                   f"(git rm -r {path} does that, if it is what you want)")


def _renamed_from(root: Path, sha: str, path: str) -> str | None:
    """The directory the files of PATH came from in ``sha``, if they were renamed."""
    raw = git.zsplit(git.run(["diff", "--no-ext-diff", "--name-status", "-z", "-M",
                              f"{sha}^", sha], cwd=root).stdout)
    while raw:
        status = raw.pop(0)
        if status[0] not in "RC":
            raw.pop(0)
            continue
        old, new = raw.pop(0), raw.pop(0)
        rest = new[len(path) + 1:] if new.startswith(path + "/") else None
        if rest and old.endswith("/" + rest):
            return old[:-len(rest) - 1]
    return None


def changes(root: Path, old: str, new: str, paths: Sequence[str]) -> list[Change]:
    """Name-status from ``old`` to ``new`` under PATH, renames detected."""
    raw = git.zsplit(git.run(["diff", "--no-ext-diff", "--name-status", "-z", "-M", old, new,
                              "--", *_pathspecs(paths)], cwd=root).stdout)
    out: list[Change] = []
    while raw:
        status = raw.pop(0)
        if status[0] in "RC":
            old_path, new_path = raw.pop(0), raw.pop(0)
            out.append(Change(status[0], new_path, old_path))
        else:
            out.append(Change(status[0], raw.pop(0)))
    return out


def diff(plan: Restore, *, color: bool = False) -> str:
    """The unified diff the rollback commit would have."""
    return git.out(["diff", "--no-ext-diff", "-M", f"--color={'always' if color else 'never'}",
                    plan.head, plan.target, "--", *_pathspecs(plan.scope)], cwd=plan.root)


def perform(plan: Restore) -> str:
    """Commit the rollback on the branch; return the new commit's sha.

    The branch moves first (one atomic ref update), then the index and files
    follow. A marker in the git dir says so in between: killed there, the
    next rollback finishes the checkout before anything else
    (:func:`finish_interrupted`), so the branch is either where it was or at
    the rollback commit, never half-way.
    """
    new = _commit(plan, _restored_tree(plan))
    marker = _marker(plan.root)
    marker.write_text(f"{plan.head} {new} {plan.branch}\n" + "\0".join(plan.scope) + "\n")
    ref = f"refs/heads/{plan.branch}"
    reflog = f"gitops rollback: {plan.label} to {plan.target[:12]}"
    try:
        git.run(["update-ref", "-m", reflog, ref, new, plan.head], cwd=plan.root)
    except GitError:
        marker.unlink()  # the branch moved under us; nothing changed here
        raise
    # Refresh stat data so that files merely touched do not block read-tree.
    git.run(["update-index", "-q", "--refresh"], cwd=plan.root, check=False)
    try:
        git.run(["read-tree", "-m", "-u", plan.head, new], cwd=plan.root)
    except GitError:
        # Files in the way that the checks did not foresee: back to the old state.
        git.run(["update-ref", "-m", f"{reflog} (undone)", ref, plan.head, new], cwd=plan.root)
        marker.unlink()
        raise
    marker.unlink()
    return new


def _commit(plan: Restore, tree: str) -> str:
    """``git commit-tree``, signed when ``git commit`` would sign: commit-tree
    itself ignores ``commit.gpgSign`` but honours ``gpg.format``,
    ``user.signingKey`` and the signing programs with ``-S``."""
    sign = git.run(["config", "--type=bool", "commit.gpgSign"], cwd=plan.root,
                   check=False).stdout.strip() == b"true"
    proc = git.run(["commit-tree", tree, "-p", plan.head, *(["-S"] if sign else []),
                    "-F", "-"], cwd=plan.root, check=False, input=plan.message().encode())
    if proc.returncode == 0:
        return proc.stdout.decode().strip()
    lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    if sign:
        why = next((line for line in lines if "sign" in line.lower()), lines[0] if lines else "")
        raise GitError(f"signing the rollback commit failed (commit.gpgSign is set): "
                       f"{why.removeprefix('error: ').removeprefix('fatal: ')}; nothing was "
                       "committed")
    last = lines[-1] if lines else ""
    raise GitError(f"git commit-tree: {last.removeprefix('fatal: ')} "
                   "(set user.name and user.email with git config)")


def _marker(root: Path) -> Path:
    return Path(git.out(["rev-parse", "--absolute-git-dir"], cwd=root)) / "GITOPS_ROLLBACK"


def finish_interrupted(root: Path) -> str | None:
    """After a rollback killed between moving the branch and checking out,
    bring the index and files under its paths to the branch's commit; say so.
    Killed before the branch moved, nothing had changed: the marker just goes."""
    marker = _marker(root)
    if not marker.exists():
        return None
    first, _, rest = marker.read_text().partition("\n")
    _, new, branch = first.split()
    paths = rest.rstrip("\n").split("\0")
    done = None
    if git.rev_parse(root, f"refs/heads/{branch}") == new:
        git.run(["restore", "--source", new, "--staged", "--worktree", "--",
                 *_pathspecs(paths)], cwd=root)
        done = f"finished the interrupted rollback {describe(root, new)}: checked out " \
            f"{_names(paths)}"
    marker.unlink()
    return done


def _restored_tree(plan: Restore) -> str:
    """HEAD's tree with PATH replaced by the target's, via a private index."""
    if not plan.path:
        return git.out(["rev-parse", f"{plan.target}^{{tree}}"], cwd=plan.root)
    with tempfile.TemporaryDirectory(prefix="gitops-rollback-") as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        git.run(["read-tree", plan.head], cwd=plan.root, env=env)
        drop = git.run(["ls-files", "-z", "--", *_pathspecs(plan.scope)], cwd=plan.root,
                       env=env).stdout
        keep = git.run(["ls-tree", "-r", "-z", "--full-tree", plan.target, "--", *plan.scope],
                       cwd=plan.root).stdout
        # Mode 0 removes an entry; later lines win, so removals go first.
        removals = b"".join(b"0 " + b"0" * 40 + b"\t" + p + b"\0"
                            for p in drop.split(b"\0") if p)
        git.run(["update-index", "-z", "--index-info"], cwd=plan.root, env=env,
                input=removals + keep)
        return git.out(["write-tree"], cwd=plan.root, env=env)


# --- after the commit -----------------------------------------------------------


def upstream(root: Path, branch: str) -> tuple[str, str]:
    """``(remote, remote ref)`` the branch pushes to; an error when there is none."""
    remote = git.run(["config", f"branch.{branch}.remote"], cwd=root, check=False)
    merge = git.run(["config", f"branch.{branch}.merge"], cwd=root, check=False)
    if remote.returncode != 0 or merge.returncode != 0:
        raise GitError(f"branch {branch} has no upstream to push to; set one "
                       f"(git branch --set-upstream-to REMOTE/{branch}) or push yourself")
    return remote.stdout.decode().strip(), merge.stdout.decode().strip()


def push(root: Path, branch: str, target: tuple[str, str]) -> None:
    remote, merge = target
    git.run(["push", "--quiet", remote, f"refs/heads/{branch}:{merge}"], cwd=root)


def sync_executable() -> str:
    """``kubectl-gitops-sync`` from this installation, else from PATH."""
    sibling = Path(sys.executable).parent / SYNC_EXECUTABLE
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return str(sibling)
    found = shutil.which(SYNC_EXECUTABLE)
    if not found:
        raise GitOpsError(f"{SYNC_EXECUTABLE} not found on PATH; reinstall kubectl-gitops "
                          "or leave out --sync")
    return found


def sync_args(executable: str, plan: Restore, sha: str, *, prune: bool, name: str | None,
              cluster: Sequence[str]) -> list[str]:
    """The sync command line for the rollback commit, with the connection flags
    (``cluster``, e.g. ``Overrides.argv()``) passed on."""
    # The branch name reads best in the sync history; the sha when the name
    # is ambiguous (a tag of the same name would win).
    ref = plan.branch if _object(plan.root, f"{plan.branch}^{{commit}}") == sha else sha
    args = [executable, "--repo", str(plan.root), "--ref", ref, "--path", plan.path or "."]
    if prune:
        args.append("--prune")
    if name:
        args += ["--name", name]
    return args + list(cluster)


def run_sync(args: Sequence[str]) -> int:
    """Run the sync as its own process; its output and errors go straight through.

    A process keeps rollback free of sync's internals: it only needs the
    documented command line and exit status.
    """
    return subprocess.run(list(args), check=False).returncode


# --- helpers --------------------------------------------------------------------


def describe(root: Path, sha: str) -> str:
    """``<short sha> (<subject>)`` of a commit."""
    return git.out(["log", "-1", "--format=%h (%s)", sha, "--"], cwd=root)


def _pathspec(path: str) -> str:
    # "." rather than no pathspec: it skips commits that change nothing.
    # Literal: a directory named "app[1]" is not a glob.
    return f":(literal){path}" if path else "."


def _pathspecs(paths: Sequence[str]) -> list[str]:
    return [_pathspec(p) for p in paths]


def _names(paths: Sequence[str]) -> str:
    """PATH, and what it renders from, for messages."""
    first = paths[0] or "the repo root"
    return first if len(paths) == 1 else f"{first} and {', '.join(paths[1:])}"


def _status_paths(records: list[str]) -> list[str]:
    """Paths of ``status --porcelain -z`` records (a rename's source follows it)."""
    paths = []
    while records:
        record = records.pop(0)
        paths.append(record[3:])
        if record[0] in "RC" and records:
            records.pop(0)
    return paths


def _object(root: Path, spec: str) -> str | None:
    """The object id ``spec`` names, or None when it names nothing."""
    proc = git.run(["rev-parse", "--verify", "--quiet", "--end-of-options", spec], cwd=root,
                   check=False)
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def _first_parent(root: Path, sha: str) -> str | None:
    return _object(root, f"{sha}^1")


def _is_rollback_to(root: Path, sha: str, restored: str, path: Sequence[str]) -> bool:
    """Whether ``sha`` restored PATH to ``restored``: the trailer and the content agree.

    Checking content keeps a rollback of another directory (in a monorepo,
    seen from the repo root) from being taken for a rollback of this one.
    """
    target = _object(root, f"{restored}^{{commit}}") if restored else None
    return target is not None and trees_at(root, sha, path) == trees_at(root, target, path)
