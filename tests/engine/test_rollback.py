"""``git gitops rollback``: a new commit restoring PATH, on real repositories.

Every test runs the installed executables (``git-gitops-rollback``, or
``git gitops rollback`` through git's own dispatcher) in a subprocess and
asserts on exit status, stderr and what git holds afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testing.git import commit, git, make_repo, status, write

BIN = Path(sys.executable).parent


def cm(name: str, value: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: {value}\n"


@pytest.fixture
def env(git_env: dict[str, str]) -> dict[str, str]:
    """The isolated git environment with this package's executables first on PATH."""
    return {**git_env, "PATH": os.pathsep.join([str(BIN), git_env.get("PATH", "")])}


@pytest.fixture
def repo(env: dict[str, str], tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def rollback(repo: Path, *args: str, env: dict[str, str], via_git: bool = False,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["git", "gitops", "rollback"] if via_git else ["git-gitops-rollback"]
    return subprocess.run([*cmd, *args], cwd=cwd or repo, env=env, capture_output=True,
                          text=True)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc


def error_line(proc: subprocess.CompletedProcess[str], status: int = 2) -> str:
    """The one stderr line of a refusal; no traceback."""
    assert proc.returncode == status, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD")


def value(repo: Path, relpath: str, rev: str | None = None) -> str:
    """``data.key`` of a ConfigMap file in the working tree (or at ``rev``)."""
    text = git(repo, "show", f"{rev}:{relpath}") if rev else (repo / relpath).read_text()
    return text.rsplit("key: ", 1)[1].strip()


def trailers(repo: Path, rev: str = "HEAD") -> dict[str, str]:
    out = git(repo, "log", "-1", "--format=%(trailers:only,unfold)", rev)
    return dict(line.split(": ", 1) for line in out.splitlines() if line)


def clean(repo: Path) -> None:
    """Index and working tree both equal HEAD."""
    assert status(repo) == ""
    assert git(repo, "diff", "--cached", "--name-only") == ""


def app_history(repo: Path, values: list[str], path: str = "deploy") -> list[str]:
    """One commit per value changing ``path/web.yaml``; returns the shas."""
    shas = []
    for v in values:
        write(repo, f"{path}/web.yaml", cm("web", v))
        shas.append(commit(repo, f"web {v}"))
    return shas


def configured(repo: Path, path: str = "deploy") -> str:
    write(repo, ".gitops.yaml", f"path: {path}\n")
    return commit(repo, "configure gitops")


# --- default target and stepping -------------------------------------------------


def test_linear_history_restores_the_state_before_the_newest_change(repo: Path, env) -> None:
    a, b, c = app_history(repo, ["one", "two", "three"])
    proc = ok(rollback(repo, "--path", "deploy", env=env))
    assert value(repo, "deploy/web.yaml") == "two"
    assert git(repo, "rev-parse", "HEAD^") == c  # a new commit on top: history kept
    assert git(repo, "rev-parse", "HEAD:deploy") == git(repo, "rev-parse", f"{b}:deploy")
    short = git(repo, "rev-parse", "--short", b)
    assert proc.stdout.splitlines()[0] == (
        f"[main {head(repo)[:7]}] Roll back deploy to {short} (web two)")
    assert proc.stdout.splitlines()[1] == " M  deploy/web.yaml"
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "main"
    clean(repo)


def test_three_rollbacks_in_a_row_step_back_three_states(repo: Path, env) -> None:
    a, b, c, d = app_history(repo, ["one", "two", "three", "four"])
    configured(repo)
    for expected, restored in (("three", c), ("two", b), ("one", a)):
        ok(rollback(repo, env=env))
        assert value(repo, "deploy/web.yaml") == expected
        assert trailers(repo)["Rollback-To"] == restored
        clean(repo)
    before = head(repo)
    proc = rollback(repo, env=env)
    line = error_line(proc, status=1)
    assert "nothing to roll back" in line
    assert line.startswith("deploy has no state before")
    assert head(repo) == before


def test_steps_goes_several_changes_back_and_too_many_is_an_error(repo: Path, env) -> None:
    a, b, c = app_history(repo, ["one", "two", "three"])
    before = configured(repo)
    line = error_line(rollback(repo, "--steps", "3", env=env))
    assert line == "error: --steps 3: deploy has only 2 earlier state(s) on this branch"
    assert head(repo) == before
    ok(rollback(repo, "--steps", "2", env=env))
    assert value(repo, "deploy/web.yaml") == "one"
    assert trailers(repo)["Rollback-To"] == a


def test_a_new_change_after_a_rollback_is_undone_first(repo: Path, env) -> None:
    a, b, c = app_history(repo, ["one", "two", "three"])
    configured(repo)
    ok(rollback(repo, env=env))                        # -> two
    rolled = head(repo)
    (d,) = app_history(repo, ["four"])
    ok(rollback(repo, env=env))                        # undo "four" -> two again
    assert value(repo, "deploy/web.yaml") == "two"
    assert trailers(repo)["Rollback-To"] == rolled
    ok(rollback(repo, env=env))                        # a rollback stands for what it restored
    assert value(repo, "deploy/web.yaml") == "one"
    assert trailers(repo)["Rollback-To"] == a


def test_rollback_of_a_rollback_with_to(repo: Path, env) -> None:
    a, b, c = app_history(repo, ["one", "two", "three"])
    configured(repo)
    ok(rollback(repo, env=env))
    first = head(repo)
    assert value(repo, "deploy/web.yaml") == "two"
    # Undo the rollback: restore what it replaced.
    ok(rollback(repo, "--to", f"{first}^", env=env))
    assert value(repo, "deploy/web.yaml") == "three"
    assert trailers(repo) == {"Rollback-To": git(repo, "rev-parse", f"{first}^"),
                              "Rollback-Of": first}
    # Back at "three" (seen through the rollback), the next default step is "two".
    ok(rollback(repo, env=env))
    assert value(repo, "deploy/web.yaml") == "two"
    # A positional REV works as --to does.
    ok(rollback(repo, a, env=env))
    assert value(repo, "deploy/web.yaml") == "one"
    assert git(repo, "rev-list", "--count", "HEAD") == "8"


# --- what is restored -------------------------------------------------------------


def test_monorepo_code_outside_path_stays_as_it_is(repo: Path, env) -> None:
    write(repo, "src/app.py", "print('v1')\n")
    write(repo, "deploy/web.yaml", cm("web", "one"))
    first = commit(repo, "one")
    write(repo, "src/app.py", "print('v2')\n")
    write(repo, "src/new.py", "new = True\n")
    write(repo, "deploy/web.yaml", cm("web", "two"))
    write(repo, "deploy2/other.yaml", cm("other", "two"))  # a sibling whose name starts alike
    commit(repo, "two")
    write(repo, "src/app.py", "print('v3')\n")
    commit(repo, "code only")
    configured(repo)
    # Unrelated uncommitted work outside PATH: staged and unstaged.
    write(repo, "src/app.py", "print('editing')\n")
    write(repo, "src/staged.py", "staged = True\n")
    git(repo, "add", "src/staged.py")
    write(repo, "notes.txt", "untracked\n")

    ok(rollback(repo, env=env))

    assert value(repo, "deploy/web.yaml") == "one"
    assert trailers(repo)["Rollback-To"] == first
    # The commit changes PATH only; code stays at its newest state.
    assert git(repo, "diff", "--name-only", "HEAD^", "HEAD") == "deploy/web.yaml"
    assert git(repo, "show", "HEAD:src/app.py") == "print('v3')"
    assert git(repo, "show", "HEAD:src/new.py") == "new = True"
    assert value(repo, "deploy2/other.yaml", "HEAD") == "two"
    # The user's own work is still there, staged and unstaged as before.
    assert (repo / "src/app.py").read_text() == "print('editing')\n"
    assert git(repo, "diff", "--cached", "--name-status") == "A\tsrc/staged.py"
    assert (repo / "notes.txt").read_text() == "untracked\n"
    assert git(repo, "diff", "--name-only") == "src/app.py"


def test_a_rollback_of_another_directory_is_an_ordinary_change_seen_from_the_root(
        repo: Path, env) -> None:
    app_history(repo, ["one", "two"], path="apps/one")
    app_history(repo, ["one", "two"], path="apps/two")
    ok(rollback(repo, "--path", "apps/one", env=env))
    rolled = head(repo)
    assert value(repo, "apps/one/web.yaml") == "one"
    # From the repo root, that rollback restored nothing as a whole: undoing it
    # is the step back, not following its Rollback-To to before apps/two changed.
    ok(rollback(repo, env=env))
    assert trailers(repo)["Rollback-To"] == git(repo, "rev-parse", f"{rolled}^")
    assert value(repo, "apps/one/web.yaml") == "two"
    assert value(repo, "apps/two/web.yaml") == "two"


def test_added_deleted_and_renamed_files_are_restored(repo: Path, env) -> None:
    # Distinct contents, so that git's rename detection pairs only b and renamed.
    write(repo, "deploy/a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n")
    write(repo, "deploy/b.yaml", cm("b", "one"))
    write(repo, "deploy/sub/c.yaml", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: c\n"
                                     "stringData:\n  key: one\n")
    old = commit(repo, "one")
    git(repo, "rm", "-q", "deploy/a.yaml")
    git(repo, "mv", "deploy/b.yaml", "deploy/renamed.yaml")
    git(repo, "rm", "-q", "-r", "deploy/sub")
    write(repo, "deploy/d.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n"
                                 "  name: d\nspec: {}\n")
    commit(repo, "reshape")
    configured(repo)

    proc = ok(rollback(repo, env=env))

    files = sorted(git(repo, "ls-files", "deploy").splitlines())
    assert files == ["deploy/a.yaml", "deploy/b.yaml", "deploy/sub/c.yaml"]
    assert not (repo / "deploy/d.yaml").exists()
    assert not (repo / "deploy/renamed.yaml").exists()
    assert value(repo, "deploy/sub/c.yaml") == "one"
    assert git(repo, "rev-parse", "HEAD:deploy") == git(repo, "rev-parse", f"{old}:deploy")
    lines = proc.stdout.splitlines()[1:]
    assert sorted(lines) == [" A  deploy/a.yaml", " A  deploy/sub/c.yaml", " D  deploy/d.yaml",
                             " R  deploy/renamed.yaml -> deploy/b.yaml"]
    clean(repo)


def test_the_repo_root_by_default_restores_the_whole_tree(repo: Path, env) -> None:
    write(repo, "web.yaml", cm("web", "one"))
    first = commit(repo, "one")
    write(repo, "web.yaml", cm("web", "two"))
    write(repo, "db.yaml", cm("db", "two"))
    commit(repo, "two")
    proc = ok(rollback(repo, env=env))
    assert "Roll back the repo root to" in proc.stdout
    assert git(repo, "rev-parse", "HEAD^{tree}") == git(repo, "rev-parse", f"{first}^{{tree}}")
    assert not (repo / "db.yaml").exists()
    clean(repo)


def test_merges_count_as_one_change_along_first_parents(repo: Path, env) -> None:
    (a,) = app_history(repo, ["one"])
    configured(repo)
    git(repo, "switch", "-q", "-c", "feature")
    app_history(repo, ["f1", "f2"])
    git(repo, "switch", "-q", "main")
    write(repo, "src/code.py", "x = 1\n")
    before_merge = commit(repo, "code on main")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge feature", "feature")
    merge = head(repo)
    # A later merge touching only code is not a change to PATH.
    git(repo, "switch", "-q", "-c", "code", "HEAD~0")
    write(repo, "src/code.py", "x = 2\n")
    commit(repo, "more code")
    git(repo, "switch", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge code", "code")

    proc = ok(rollback(repo, "--dry-run", env=env))
    assert f"replacing {git(repo, 'rev-parse', '--short', head(repo))} (merge code)" \
        in proc.stdout.splitlines()[0]
    ok(rollback(repo, env=env))
    # The state before the merge, not the feature branch's "f1".
    assert value(repo, "deploy/web.yaml") == "one"
    assert trailers(repo) == {"Rollback-To": before_merge, "Rollback-Of": git(
        repo, "rev-parse", "HEAD^")}
    assert git(repo, "show", "HEAD:src/code.py") == "x = 2"
    assert git(repo, "rev-parse", "HEAD^:deploy") == git(repo, "rev-parse", f"{merge}:deploy")


# --- refusals ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["unstaged", "staged", "untracked", "deleted"])
def test_uncommitted_changes_under_path_are_refused(repo: Path, env, kind: str) -> None:
    app_history(repo, ["one", "two"])
    configured(repo)
    if kind == "unstaged":
        write(repo, "deploy/web.yaml", cm("web", "edited"))
    elif kind == "staged":
        write(repo, "deploy/web.yaml", cm("web", "edited"))
        git(repo, "add", "deploy/web.yaml")
    elif kind == "untracked":
        write(repo, "deploy/new.yaml", cm("new", "x"))
    else:
        (repo / "deploy/web.yaml").unlink()
    before, before_status = head(repo), status(repo)
    line = error_line(rollback(repo, env=env))
    assert line.startswith("error: uncommitted changes under deploy (deploy/")
    assert "commit, stash (git stash -u) or remove them first" in line
    assert head(repo) == before
    assert status(repo) == before_status


def test_ignored_files_under_path_do_not_count_as_changes(repo: Path, env) -> None:
    write(repo, ".gitignore", "*.swp\n")
    app_history(repo, ["one", "two"])
    configured(repo)
    write(repo, "deploy/.web.yaml.swp", "editor state\n")
    ok(rollback(repo, env=env))
    assert value(repo, "deploy/web.yaml") == "one"
    assert (repo / "deploy/.web.yaml.swp").read_text() == "editor state\n"


def test_detached_head_is_refused(repo: Path, env) -> None:
    app_history(repo, ["one", "two"])
    configured(repo)
    git(repo, "checkout", "-q", "--detach", "HEAD")
    before = head(repo)
    line = error_line(rollback(repo, env=env))
    assert line == ("error: HEAD is detached; check out the branch to roll back first "
                    "(git switch BRANCH)")
    assert head(repo) == before


def test_merge_in_progress_is_refused(repo: Path, env) -> None:
    app_history(repo, ["one", "two"])
    configured(repo)
    write(repo, "src/x.py", "base\n")
    commit(repo, "base")
    git(repo, "switch", "-q", "-c", "other")
    write(repo, "src/x.py", "other\n")
    commit(repo, "other")
    git(repo, "switch", "-q", "main")
    write(repo, "src/x.py", "main\n")
    commit(repo, "main")
    proc = subprocess.run(["git", "merge", "other"], cwd=repo, capture_output=True)
    assert proc.returncode == 1  # a conflict outside PATH: the merge waits
    before = head(repo)
    line = error_line(rollback(repo, env=env))
    assert line == f"error: a merge is in progress in {repo}; finish or abort it first"
    assert head(repo) == before


def test_a_revision_that_does_not_exist_is_an_error(repo: Path, env) -> None:
    app_history(repo, ["one", "two"])
    configured(repo)
    line = error_line(rollback(repo, "no-such-rev", env=env))
    assert line == f"error: no-such-rev: no such revision in {repo}"
    line = error_line(rollback(repo, "--to", "0123456789abcdef", env=env))
    assert "0123456789abcdef: no such revision" in line


def test_nothing_to_roll_back_exits_1(repo: Path, env) -> None:
    app_history(repo, ["one"])
    configured(repo)
    line = error_line(rollback(repo, env=env), status=1)
    assert line.startswith("deploy has no state before ")
    assert line.endswith("(web one); nothing to roll back")
    # A revision whose PATH equals HEAD's: the config commit changed no manifest.
    line = error_line(rollback(repo, "HEAD~1", env=env), status=1)
    assert line.endswith("is the same as at HEAD; nothing to roll back")
    # A path no commit ever changed.
    line = error_line(rollback(repo, "--path", "elsewhere", env=env), status=1)
    assert line == "no commit on this branch changes elsewhere; nothing to roll back"
    assert git(repo, "rev-list", "--count", "HEAD") == "2"


def test_conflicting_options_are_usage_errors(repo: Path, env) -> None:
    app_history(repo, ["one", "two"])
    for args, words in ((["HEAD~1", "--steps", "1"], "exclude each other"),
                        (["--to", "HEAD~1", "--last-synced"], "exclude each other"),
                        (["HEAD~1", "--to", "HEAD"], "either as an argument or as --to"),
                        (["--prune"], "--prune only applies with --sync"),
                        (["--dry-run", "--push"], "cannot --sync or --push"),
                        (["--steps", "0"], "--steps")):
        proc = rollback(repo, "--path", "deploy", *args, env=env)
        assert proc.returncode == 2, args
        assert words in proc.stderr
        assert "Traceback" not in proc.stderr
    assert git(repo, "rev-list", "--count", "HEAD") == "2"


# --- dry run, message, entry points ------------------------------------------------


def test_dry_run_writes_nothing(repo: Path, env) -> None:
    write(repo, "deploy/gone.yaml", cm("gone", "one"))
    app_history(repo, ["one", "two"])
    configured(repo)
    write(repo, "src/edit.py", "dirty outside PATH\n")
    index = repo / ".git" / "index"
    before = (head(repo), hashlib.sha256(index.read_bytes()).hexdigest(),
              index.stat().st_mtime_ns, status(repo), (repo / "deploy/web.yaml").read_text())
    refs = git(repo, "for-each-ref")

    proc = ok(rollback(repo, "--dry-run", env=env))

    after = (head(repo), hashlib.sha256(index.read_bytes()).hexdigest(),
             index.stat().st_mtime_ns, status(repo), (repo / "deploy/web.yaml").read_text())
    assert after == before
    assert git(repo, "for-each-ref") == refs
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Would roll back deploy to ")
    assert lines[1] == " M  deploy/web.yaml"
    assert "-  key: two" in lines and "+  key: one" in lines
    assert "diff --git a/deploy/web.yaml b/deploy/web.yaml" in lines


def test_message_and_trailers_name_both_states(repo: Path, env) -> None:
    a, b = app_history(repo, ["one", "two"])
    old_head = configured(repo)
    ok(rollback(repo, env=env))
    short = git(repo, "rev-parse", "--short", a)
    assert git(repo, "log", "-1", "--format=%s") == f"Roll back deploy to {short} (web one)"
    body = git(repo, "log", "-1", "--format=%b")
    assert f"Restore deploy as it was at {short} (web one)," in body
    assert f"replacing its state at {old_head[:len(short)]} (configure gitops)." in body
    assert "  M  deploy/web.yaml" in body
    assert trailers(repo) == {"Rollback-To": a, "Rollback-Of": old_head}
    who = git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>")
    assert who == "Test User <test@example.com>|Test User <test@example.com>"
    assert "gitops rollback: deploy to" in git(repo, "reflog", "-1", "--format=%gs", "main")


def test_git_dispatcher_and_relative_path_from_a_subdirectory(repo: Path, env) -> None:
    app_history(repo, ["one", "two"], path="apps/web")
    write(repo, "apps/db/db.yaml", cm("db", "one"))
    commit(repo, "db")
    proc = ok(rollback(repo, "--path", "web", env=env, via_git=True, cwd=repo / "apps"))
    assert "Roll back apps/web to" in proc.stdout
    assert value(repo, "apps/web/web.yaml") == "one"
    assert (repo / "apps/db/db.yaml").exists()
    # And help arrives through git's dispatcher too.
    help_out = subprocess.run(["git", "gitops", "rollback", "-h"], env=env,
                              capture_output=True, text=True, cwd=repo).stdout
    assert "Exit status: 0 done, 1 nothing to roll back, 2 error." in help_out


def test_repo_option_from_outside_the_repository(repo: Path, env, tmp_path: Path) -> None:
    app_history(repo, ["one", "two"])
    configured(repo)
    ok(rollback(repo, "--repo", str(repo), env=env, cwd=tmp_path))
    assert value(repo, "deploy/web.yaml") == "one"


def test_push_sends_the_branch_to_its_upstream(repo: Path, env, tmp_path: Path) -> None:
    app_history(repo, ["one", "two"])
    configured(repo)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "-u", "origin", "main")
    proc = ok(rollback(repo, "--push", env=env))
    assert proc.stdout.splitlines()[-1] == "pushed main to origin main"
    assert git(remote, "rev-parse", "main") == head(repo)


def test_push_without_upstream_is_refused_before_committing(repo: Path, env) -> None:
    app_history(repo, ["one", "two"])
    before = configured(repo)
    line = error_line(rollback(repo, "--push", env=env))
    assert line.startswith("error: branch main has no upstream to push to")
    assert head(repo) == before
    clean(repo)


def test_a_failed_sync_keeps_the_commit_and_says_so(repo: Path, env, tmp_path: Path) -> None:
    app_history(repo, ["one", "two"])
    before = configured(repo)
    missing = tmp_path / "no-such-kubeconfig"
    proc = rollback(repo, "--sync", "--kubeconfig", str(missing), env=env)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and "Traceback" not in proc.stderr
    assert str(missing) in lines[0]  # the sync's own error, passed through
    assert lines[1] == (f"error: the rollback is committed as {head(repo)[:7]} but the sync "
                        "failed; fix the cause and run kubectl gitops sync again")
    assert git(repo, "rev-parse", "HEAD^") == before
    assert value(repo, "deploy/web.yaml") == "one"


# --- with the cluster ---------------------------------------------------------------


def gitops(*args: str, repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "gitops", *args], cwd=repo, env=env,
                          capture_output=True, text=True)


def live_value(name: str, namespace: str, env: dict[str, str]) -> str | None:
    proc = subprocess.run(["kubectl", "get", "configmap", name, "-n", namespace, "-o", "json"],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr, proc.stderr
        return None
    return json.loads(proc.stdout)["data"]["key"]


@pytest.mark.cluster
def test_sync_after_rollback_leaves_the_cluster_equal_to_the_restored_revision(
        repo: Path, env, kube_env: dict[str, str], namespace: str) -> None:
    env = {**env, "KUBECONFIG": kube_env["KUBECONFIG"]}
    write(repo, "deploy/web.yaml", cm("web", "one"))
    configured(repo)
    write(repo, "deploy/web.yaml", cm("web", "two"))
    write(repo, "deploy/extra.yaml", cm("extra", "two"))
    commit(repo, "two")
    sync = gitops("sync", "-n", namespace, "--prune", repo=repo, env=env)
    assert sync.returncode == 0, sync.stderr
    assert live_value("extra", namespace, env) == "two"

    proc = rollback(repo, "--sync", "--prune", "-n", namespace, env=env)

    assert proc.returncode == 0, proc.stderr
    assert value(repo, "deploy/web.yaml") == "one"
    assert live_value("web", namespace, env) == "one"
    assert live_value("extra", namespace, env) is None  # pruned: the old revision lacks it
    diff = gitops("diff", "--prune", "-n", namespace, repo=repo, env=env)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    history = gitops("history", "-n", namespace, "-o", "json", repo=repo, env=env)
    newest = json.loads(history.stdout)[0]
    assert (newest["revision"], newest["ref"], newest["result"]) == (head(repo), "main",
                                                                    "succeeded")


@pytest.mark.cluster
def test_last_synced_restores_the_previous_successful_sync(
        repo: Path, env, kube_env: dict[str, str], namespace: str) -> None:
    env = {**env, "KUBECONFIG": kube_env["KUBECONFIG"]}
    write(repo, "deploy/web.yaml", cm("web", "one"))
    first = configured(repo)
    assert gitops("sync", "-n", namespace, repo=repo, env=env).returncode == 0
    write(repo, "deploy/web.yaml", cm("web", "two"))
    commit(repo, "two")
    write(repo, "deploy/web.yaml", cm("web", "three"))
    commit(repo, "three, never synced on its own")
    write(repo, "deploy/web.yaml", cm("web", "four"))
    commit(repo, "four")
    assert gitops("sync", "-n", namespace, repo=repo, env=env).returncode == 0
    assert live_value("web", namespace, env) == "four"

    proc = rollback(repo, "--last-synced", "--sync", "-n", namespace, env=env)

    assert proc.returncode == 0, proc.stderr
    # Not "three" (the default step back): the revision synced before "four".
    assert trailers(repo)["Rollback-To"] == first
    assert value(repo, "deploy/web.yaml") == "one"
    assert live_value("web", namespace, env) == "one"
    assert gitops("diff", "-n", namespace, repo=repo, env=env).returncode == 0
