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
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubectl_gitops import exitcodes, git
from kubectl_gitops.errors import GitError, GitOpsError, UsageError
from kubectl_gitops.source import Source

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
class Plan:
    """What a rollback would do; :func:`perform` carries it out."""

    root: Path
    path: str  # "" = the repo root
    branch: str  # short name, e.g. "main"
    head: str  # full sha of HEAD, the state replaced
    target: str  # full sha of the restored revision
    changes: tuple[Change, ...]

    @property
    def label(self) -> str:
        return self.path or "the repo root"

    def message(self) -> str:
        """Subject, body and trailers of the rollback commit."""
        target, head = describe(self.root, self.target), describe(self.root, self.head)
        files = "\n".join(f"  {c}" for c in self.changes)
        return (f"Roll back {self.label} to {target}\n\n"
                f"Restore {self.label} as it was at {target},\n"
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


def refuse_dirty(root: Path, path: str) -> None:
    """Refuse staged, unstaged or untracked (not ignored) changes under PATH.

    Untracked files count too: restoring PATH may need to write a file where
    one lies, and a new manifest not yet committed is work in progress.
    """
    # No optional locks: a plain status may rewrite the index, and --dry-run
    # promises to leave it alone.
    proc = git.run(["status", "--porcelain=v1", "-z", "--untracked-files=all",
                    "--", _pathspec(path)], cwd=root, env={"GIT_OPTIONAL_LOCKS": "0"})
    entries = _status_paths(git.zsplit(proc.stdout))
    if entries:
        first = entries[0]
        more = f" and {len(entries) - 1} more" if len(entries) > 1 else ""
        raise GitError(f"uncommitted changes under {path or 'the repo root'} ({first}{more}); "
                       "commit, stash (git stash -u) or remove them first")


# --- targets --------------------------------------------------------------------


def tree_at(root: Path, sha: str, path: str) -> str | None:
    """The object id of PATH at ``sha`` (None when PATH does not exist there)."""
    return _object(root, f"{sha}^{{tree}}" if not path else f"{sha}:{path}")


def newest_change(root: Path, start: str, path: str) -> tuple[str, str] | None:
    """``(sha, Rollback-To value)`` of the newest first-parent change to PATH."""
    fmt = f"%H%x00%(trailers:key={TRAILER_TO},valueonly,separator=%x20)"
    line = git.out(["log", "-1", "--first-parent", f"--format={fmt}", start, "--",
                    _pathspec(path)], cwd=root)
    if not line:
        return None
    sha, _, restored = line.partition("\0")
    return sha, (restored.split() or [""])[-1]


def position(root: Path, start: str, path: str) -> str | None:
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


def default_target(root: Path, head: str, path: str, steps: int = 1) -> str:
    """The state ``steps`` changes back from HEAD under PATH (undo-like)."""
    if steps < 1:
        raise UsageError(f"--steps {steps}: give a number of 1 or more")
    start = head
    for step in range(steps):
        change = position(root, start, path)
        if change is None and step == 0:
            raise NothingToRollBack(f"no commit on this branch changes {path or 'the repo'}; "
                                    "nothing to roll back")
        parent = _first_parent(root, change) if change else None
        if parent is None:
            if step == 0:
                raise NothingToRollBack(f"{path or 'the repo root'} has no state before "
                                        f"{describe(root, change or head)}; nothing to roll back")
            raise UsageError(f"--steps {steps}: {path or 'the repo root'} has only {step} "
                             "earlier state(s) on this branch")
        start = parent
    return start


def last_synced_target(root: Path, head: str, path: str, revisions: Iterable[str]) -> str:
    """The newest successfully synced revision whose PATH differs from HEAD's.

    Records are newest first; the revision in the cluster now is usually HEAD
    itself, so "previous" means the newest one that would change something.
    """
    current = tree_at(root, head, path)
    for revision in revisions:
        sha = _object(root, f"{revision}^{{commit}}")
        if sha is None:
            raise GitError(f"synced revision {revision[:12]} is not in this repository; "
                           "fetch it first (git fetch)")
        if tree_at(root, sha, path) != current:
            return sha
    raise NothingToRollBack("the sync history holds no earlier successful sync that differs "
                            f"from HEAD under {path or 'the repo root'}; nothing to roll back")


def synced_revisions(src: Source, *, name: str | None, kubeconfig: str | None,
                     context: str | None, namespace: str | None) -> list[str]:
    """Revisions of the successful syncs recorded in the cluster, newest first."""
    # Imported here: the Kubernetes client is only needed for --last-synced.
    from kubectl_gitops import app, desired, history  # noqa: PLC0415

    kube = app.connect(kubeconfig, context)
    ns = desired.default_namespace(src, namespace, kube)
    records = history.records(kube, app.name_in_cluster(src, kube, name, ns), ns)
    return [r["revision"] for r in records
            if r.get("result") == "succeeded" and r.get("revision")]


# --- plan and perform -----------------------------------------------------------


def make_plan(src: Source, *, rev: str | None = None, steps: int | None = None,
              synced: Callable[[], Iterable[str]] | None = None) -> Plan:
    """Check the repository, choose the target, compute what restoring it changes.

    The target is ``rev``, else the newest revision ``synced()`` returns that
    differs from HEAD (the cluster is asked only once git is known to be fit),
    else ``steps`` changes back (default 1).
    """
    root, path = src.root, src.path
    branch = current_branch(root)
    refuse_dirty(root, path)
    head = git.rev_parse(root, "HEAD")
    if rev is not None:
        target = git.rev_parse(root, rev)
    elif synced is not None:
        target = last_synced_target(root, head, path, synced())
    else:
        target = default_target(root, head, path, steps or 1)
    if tree_at(root, target, path) == tree_at(root, head, path):
        raise NothingToRollBack(f"{path or 'the repo root'} at {describe(root, target)} "
                                "is the same as at HEAD; nothing to roll back")
    return Plan(root=root, path=path, branch=branch, head=head, target=target,
                changes=tuple(changes(root, head, target, path)))


def changes(root: Path, old: str, new: str, path: str) -> list[Change]:
    """Name-status from ``old`` to ``new`` under PATH, renames detected."""
    raw = git.zsplit(git.run(["diff", "--no-ext-diff", "--name-status", "-z", "-M", old, new,
                              "--", _pathspec(path)], cwd=root).stdout)
    out: list[Change] = []
    while raw:
        status = raw.pop(0)
        if status[0] in "RC":
            old_path, new_path = raw.pop(0), raw.pop(0)
            out.append(Change(status[0], new_path, old_path))
        else:
            out.append(Change(status[0], raw.pop(0)))
    return out


def diff(plan: Plan, *, color: bool = False) -> str:
    """The unified diff the rollback commit would have."""
    return git.out(["diff", "--no-ext-diff", "-M", f"--color={'always' if color else 'never'}",
                    plan.head, plan.target, "--", _pathspec(plan.path)], cwd=plan.root)


def perform(plan: Plan) -> str:
    """Commit the rollback on the branch; return the new commit's sha."""
    tree = _restored_tree(plan)
    proc = git.run(["commit-tree", tree, "-p", plan.head, "-F", "-"], cwd=plan.root,
                   check=False, input=plan.message().encode())
    if proc.returncode != 0:
        last = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise GitError(f"git commit-tree: {last[0].removeprefix('fatal: ')} "
                       "(set user.name and user.email with git config)")
    new = proc.stdout.decode().strip()
    # Refresh stat data so that files merely touched do not block read-tree.
    git.run(["update-index", "-q", "--refresh"], cwd=plan.root, check=False)
    git.run(["read-tree", "-m", "-u", plan.head, new], cwd=plan.root)
    ref = f"refs/heads/{plan.branch}"
    reflog = f"gitops rollback: {plan.label} to {plan.target[:12]}"
    try:
        git.run(["update-ref", "-m", reflog, ref, new, plan.head], cwd=plan.root)
    except GitError:
        # The branch moved under us: put the index and files back as they were.
        git.run(["read-tree", "-m", "-u", new, plan.head], cwd=plan.root, check=False)
        raise
    return new


def _restored_tree(plan: Plan) -> str:
    """HEAD's tree with PATH replaced by the target's, via a private index."""
    if not plan.path:
        return git.out(["rev-parse", f"{plan.target}^{{tree}}"], cwd=plan.root)
    with tempfile.TemporaryDirectory(prefix="gitops-rollback-") as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        git.run(["read-tree", plan.head], cwd=plan.root, env=env)
        drop = git.run(["ls-files", "-z", "--", _pathspec(plan.path)], cwd=plan.root,
                       env=env).stdout
        keep = git.run(["ls-tree", "-r", "-z", "--full-tree", plan.target, "--", plan.path],
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


def sync_args(executable: str, plan: Plan, sha: str, *, prune: bool, name: str | None,
              cluster: Mapping[str, str | None]) -> list[str]:
    """The sync command line for the rollback commit, cluster options passed on."""
    # The branch name reads best in the sync history; the sha when the name
    # is ambiguous (a tag of the same name would win).
    ref = plan.branch if _object(plan.root, f"{plan.branch}^{{commit}}") == sha else sha
    args = [executable, "--repo", str(plan.root), "--ref", ref, "--path", plan.path or "."]
    if prune:
        args.append("--prune")
    if name:
        args += ["--name", name]
    for option in ("kubeconfig", "context", "namespace"):
        if cluster.get(option):
            args += [f"--{option}", str(cluster[option])]
    return args


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


def _is_rollback_to(root: Path, sha: str, restored: str, path: str) -> bool:
    """Whether ``sha`` restored PATH to ``restored``: the trailer and the content agree.

    Checking content keeps a rollback of another directory (in a monorepo,
    seen from the repo root) from being taken for a rollback of this one.
    """
    target = _object(root, f"{restored}^{{commit}}") if restored else None
    return target is not None and tree_at(root, sha, path) == tree_at(root, target, path)
