"""The pre-commit hook through real ``git commit``: installing, chaining,
blocking, and the index git hands to the hook; and the pre-commit framework
using this repository's ``.pre-commit-hooks.yaml``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testing.cli import BIN, cm, run
from testing.git import commit, git, make_repo, write

PROJECT = Path(__file__).resolve().parents[2]
BYPASS = "commit blocked; fix and `git add` the files, or bypass with git commit --no-verify"
CRD = (PROJECT / "tests" / "validate" / "data" / "valid" / "crd.yaml").read_text()
CR = (PROJECT / "tests" / "validate" / "data" / "valid" / "crontab.yaml").read_text()




@pytest.fixture
def repo(env: dict[str, str], tmp_path: Path) -> Path:
    r = make_repo(tmp_path / "repo")
    out = run(["git", "gitops", "install-hooks"], r, env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "installed the kubectl-gitops pre-commit hook at .git/hooks/pre-commit\n"
    return r



def try_commit(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run(["git", "commit", "-q", "-m", "change", *args], repo, env)


def commits(repo: Path) -> int:
    proc = subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=repo, capture_output=True,
                          text=True)
    return int(proc.stdout) if proc.returncode == 0 else 0


def blocked(proc: subprocess.CompletedProcess[str], *lines: str) -> None:
    assert proc.returncode != 0, proc.stderr
    err = proc.stderr.splitlines()
    assert err[-1] == BYPASS
    for line in lines:
        assert line in err, proc.stderr


# --- blocking and passing ----------------------------------------------------------


def test_a_bad_staged_file_blocks_the_commit(repo: Path, env: dict[str, str]) -> None:
    write(repo, "app.yaml", cm("App"))
    git(repo, "add", "app.yaml")
    proc = try_commit(repo, env)
    blocked(proc, 'app.yaml:4: ConfigMap default/App: metadata.name: "App" is not a valid '
            "DNS-1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending "
            "with a letter or digit)",
            "kubectl-gitops: 1 problem in the staged manifests")
    assert commits(repo) == 0


def test_fixing_the_work_tree_without_staging_still_blocks(repo: Path,
                                                           env: dict[str, str]) -> None:
    write(repo, "app.yaml", cm("App"))
    git(repo, "add", "app.yaml")
    write(repo, "app.yaml", cm("app"))  # fixed here, but the index still holds "App"
    blocked(try_commit(repo, env))
    git(repo, "add", "app.yaml")
    assert try_commit(repo, env).returncode == 0
    assert commits(repo) == 1


def test_a_good_commit_passes_quietly_and_no_verify_bypasses(repo: Path,
                                                             env: dict[str, str]) -> None:
    write(repo, "app.yaml", cm("app"))
    git(repo, "add", "app.yaml")
    proc = try_commit(repo, env)
    assert (proc.returncode, proc.stderr) == (0, "")
    write(repo, "bad.yaml", "kind: [\n")
    git(repo, "add", "bad.yaml")
    blocked(try_commit(repo, env))
    assert try_commit(repo, env, "--no-verify").returncode == 0
    assert commits(repo) == 2


def test_commit_all_and_commit_paths_validate_the_index_git_hands_the_hook(
        repo: Path, env: dict[str, str]) -> None:
    write(repo, "app.yaml", cm("app"))
    commit(repo, "good")
    write(repo, "app.yaml", cm("App"))  # a bad change left in the work tree
    # `commit -a` and `commit <path>` validate a temporary index (GIT_INDEX_FILE).
    blocked(try_commit(repo, env, "-a"))
    blocked(try_commit(repo, env, "app.yaml"))
    assert commits(repo) == 1
    # The other way round: bad in .git/index, good in the temporary index.
    git(repo, "add", "app.yaml")
    write(repo, "app.yaml", cm("app-two"))
    proc = try_commit(repo, env, "-a")
    assert proc.returncode == 0, proc.stderr
    assert git(repo, "show", "HEAD:app.yaml") == cm("app-two").strip()


def test_commits_that_touch_no_manifest_are_not_held_up(repo: Path, env: dict[str, str]) -> None:
    write(repo, "old.yaml", cm("Old"))
    git(repo, "add", "old.yaml")
    assert try_commit(repo, env, "--no-verify").returncode == 0
    write(repo, "README.md", "docs\n")
    git(repo, "add", "README.md")
    assert try_commit(repo, env).returncode == 0  # old.yaml is not part of this change
    write(repo, "new.yaml", cm("new"))
    git(repo, "add", "new.yaml")
    blocked(try_commit(repo, env), 'old.yaml:4: ConfigMap default/Old: metadata.name: "Old" '
            "is not a valid DNS-1123 subdomain (lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit)")


def test_only_the_configured_path_is_validated(repo: Path, env: dict[str, str]) -> None:
    write(repo, ".gitops.yaml", "path: deploy\n")
    write(repo, ".github/workflows/ci.yml", "on: push\njobs: {}\n")  # not a manifest
    git(repo, "add", "-A")
    proc = try_commit(repo, env)  # deploy/ does not exist yet: nothing to validate
    assert (proc.returncode, proc.stderr) == (0, "")
    write(repo, "deploy/app.yaml", cm("app"))
    git(repo, "add", "-A")
    assert try_commit(repo, env).returncode == 0
    write(repo, "deploy/app.yaml", cm("App"))
    git(repo, "add", "-A")
    blocked(try_commit(repo, env), "kubectl-gitops: 1 problem in the staged manifests under "
            "deploy/")


def test_the_hook_runs_when_committing_from_a_subdirectory(repo: Path,
                                                           env: dict[str, str]) -> None:
    write(repo, "sub/dir/app.yaml", cm("App"))
    git(repo, "add", "-A")
    proc = run(["git", "commit", "-q", "-m", "x"], repo / "sub" / "dir", env)
    blocked(proc)
    assert any(line.startswith("sub/dir/app.yaml:4:") for line in proc.stderr.splitlines())


# --- odd names, deletions, renames ------------------------------------------------------


def test_names_with_spaces_quotes_unicode_and_newlines(repo: Path, env: dict[str, str]) -> None:
    odd = ["dir with space/it's \"quoted\".yaml", "ünïcödé/☸.yml", "new\nline.yaml"]
    for i, name in enumerate(odd):
        write(repo, name, cm(f"Bad{i}"))
    git(repo, "add", "-A")
    proc = try_commit(repo, env)
    blocked(proc, "kubectl-gitops: 3 problems in the staged manifests")
    starts = sorted(line.split(":4:")[0] for line in proc.stderr.splitlines() if ":4:" in line)
    assert starts == ['"new\\nline.yaml"', "dir with space/it's \"quoted\".yaml",
                      "ünïcödé/☸.yml"]
    for i, name in enumerate(odd):
        (repo / name).rename(repo / name.replace(".y", "-2.y"))  # a rename, as well
        write(repo, name.replace(".y", "-2.y"), cm(f"good-{i}"))
    git(repo, "add", "-A")
    proc = try_commit(repo, env)
    assert proc.returncode == 0, proc.stderr
    assert "new\nline-2.yaml" in git(repo, "ls-files", "-z").split("\0")


def test_deleted_files_and_renames(repo: Path, env: dict[str, str]) -> None:
    write(repo, "crd.yaml", CRD)
    write(repo, "cr.yaml", CR)
    write(repo, "ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n")
    git(repo, "add", "-A")
    assert try_commit(repo, env).returncode == 0
    (repo / "crontabs").mkdir()
    git(repo, "mv", "cr.yaml", "crontabs/nightly.yaml")
    assert try_commit(repo, env).returncode == 0
    git(repo, "rm", "-q", "crd.yaml")  # the custom resource loses its CRD
    proc = try_commit(repo, env)
    blocked(proc)
    assert "crontabs/nightly.yaml:1: CronTab shop/nightly: no schema for CronTab in " \
           "stable.example.com/v1: not a built-in kind of Kubernetes 1.37 and no " \
           "CustomResourceDefinition for it in the index (add the CRD, or pass " \
           "--ignore-missing-schemas)" in proc.stderr.splitlines()
    git(repo, "rm", "-q", "crontabs/nightly.yaml")
    assert try_commit(repo, env).returncode == 0
    assert git(repo, "ls-files") == "ns.yaml"


# --- installing ----------------------------------------------------------------------


def test_install_twice_is_idempotent(repo: Path, env: dict[str, str]) -> None:
    hooks = repo / ".git" / "hooks"
    before = (hooks / "pre-commit").read_bytes()
    again = run(["git", "gitops", "install-hooks"], repo, env)
    assert again.returncode == 0
    assert again.stdout == ("the kubectl-gitops pre-commit hook is already installed at "
                            ".git/hooks/pre-commit\n")
    assert (hooks / "pre-commit").read_bytes() == before
    assert not (hooks / "pre-commit.kubectl-gitops-chained").exists()
    assert os.access(hooks / "pre-commit", os.X_OK)
    write(repo, "a.yaml", cm("A"))
    git(repo, "add", "a.yaml")
    proc = try_commit(repo, env)
    assert proc.stderr.count(BYPASS) == 1  # ran once, not chained to itself


def test_an_existing_hook_still_runs_first_and_uninstall_restores_it(
        env: dict[str, str], tmp_path: Path) -> None:
    r = make_repo(tmp_path / "repo")
    old = r / ".git" / "hooks" / "pre-commit"
    script = ('#!/bin/sh\necho "previous hook ran" >> "$(git rev-parse --git-dir)/ran"\n'
              'exit "${PREVIOUS_HOOK_STATUS:-0}"\n')
    old.write_text(script)
    old.chmod(0o755)
    out = run(["git", "gitops", "install-hooks"], r, env)
    assert out.stdout == ("installed the kubectl-gitops pre-commit hook at "
                          ".git/hooks/pre-commit; the previous hook still runs first, kept "
                          "as .git/hooks/pre-commit.kubectl-gitops-chained\n")
    write(r, "a.yaml", cm("a"))
    git(r, "add", "a.yaml")
    assert try_commit(r, env).returncode == 0
    assert (r / ".git" / "ran").read_text() == "previous hook ran\n"
    # Its failure blocks the commit, with its own exit status.
    write(r, "b.yaml", cm("b"))
    git(r, "add", "b.yaml")
    failing = {**env, "PREVIOUS_HOOK_STATUS": "3"}
    assert try_commit(r, failing).returncode != 0
    assert run([str(old)], r, failing).returncode == 3
    assert commits(r) == 1
    out = run(["git", "gitops", "install-hooks", "--uninstall"], r, env)
    assert out.stdout == ("removed the kubectl-gitops pre-commit hook; restored the previous "
                          "one at .git/hooks/pre-commit\n")
    assert old.read_text() == script and os.access(old, os.X_OK)
    assert not (r / ".git" / "hooks" / "pre-commit.kubectl-gitops-chained").exists()
    again = run(["git", "gitops", "install-hooks", "--uninstall"], r, env)
    assert again.stdout == "no kubectl-gitops pre-commit hook at .git/hooks/pre-commit; " \
                           "nothing to do\n"
    assert old.read_text() == script


def test_uninstall_without_a_previous_hook_removes_ours(repo: Path, env: dict[str, str]) -> None:
    out = run(["git", "gitops", "install-hooks", "--uninstall"], repo, env)
    assert out.stdout == "removed the kubectl-gitops pre-commit hook from .git/hooks/pre-commit\n"
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    write(repo, "a.yaml", cm("A"))
    git(repo, "add", "a.yaml")
    assert try_commit(repo, env).returncode == 0


def test_core_hooks_path_is_respected(env: dict[str, str], tmp_path: Path) -> None:
    r = make_repo(tmp_path / "repo")
    git(r, "config", "core.hooksPath", ".githooks")
    out = run(["git", "gitops", "install-hooks"], r, env)
    assert out.stdout == "installed the kubectl-gitops pre-commit hook at .githooks/pre-commit\n"
    assert (r / ".githooks" / "pre-commit").is_file()
    assert not (r / ".git" / "hooks" / "pre-commit").exists()
    write(r, "a.yaml", cm("A"))
    git(r, "add", "a.yaml")
    blocked(try_commit(r, env))


def test_the_installed_hook_says_what_to_do_when_the_tool_is_gone(repo: Path,
                                                                  env: dict[str, str]) -> None:
    hook = repo / ".git" / "hooks" / "pre-commit"
    text = hook.read_text()
    assert f"exe={BIN / 'gitops-pre-commit'}\n" in text
    hook.write_text(text.replace(str(BIN), "/nonexistent"))
    proc = run([str(hook)], repo, {**env, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert proc.stderr.startswith("kubectl-gitops: gitops-pre-commit not found")
    assert proc.stderr.rstrip().endswith("commit blocked; bypass with git commit --no-verify")


def test_the_hook_template_in_git_hooks_is_the_installed_script() -> None:
    template_path = PROJECT / "kubectl_gitops" / "validate" / "git_hooks" / "pre-commit"
    template = template_path.read_text()
    assert template.startswith("#!/bin/sh\n# kubectl-gitops pre-commit hook")
    assert "\nexe=''\n" in template
    assert os.access(template_path, os.X_OK)
    assert subprocess.run(["sh", "-n", str(template_path)]).returncode == 0


# --- the pre-commit framework ---------------------------------------------------------


def test_the_pre_commit_framework_uses_our_hooks_manifest(env: dict[str, str],
                                                          tmp_path: Path) -> None:
    """The real `pre-commit` reads .pre-commit-hooks.yaml from a hook repository
    (a commit of this project's files as they are now), builds our package
    into its own virtualenv (language: python) and runs the hook on a commit.

    Only our runtime dependencies come from this test's environment
    (PIP_NO_DEPS + PYTHONPATH): installing kubernetes & co. from PyPI into
    a fresh virtualenv takes minutes. pip still fetches the build backend.
    """
    hook_repo = make_repo(tmp_path / "hook-repo")
    for name in ("setup.cfg", "setup.py", "pyproject.toml", ".pre-commit-hooks.yaml"):
        shutil.copy(PROJECT / name, hook_repo / name)
    for name in ("kubectl_gitops",):
        shutil.copytree(PROJECT / name, hook_repo / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    readme = PROJECT / "README.md"
    write(hook_repo, "README.md", readme.read_text() if readme.exists() else "kubectl-gitops\n")
    rev = commit(hook_repo, "hooks")

    work = make_repo(tmp_path / "work")
    write(work, ".pre-commit-config.yaml", f"repos:\n- repo: {hook_repo}\n  rev: {rev}\n"
          "  hooks:\n  - id: kubectl-gitops-validate\n")
    site = subprocess.run([sys.executable, "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    pc_env = {**env, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
              "PIP_NO_DEPS": "1", "PYTHONPATH": site}
    out = run(["pre-commit", "install"], work, pc_env)
    assert out.returncode == 0, out.stderr
    write(work, "deploy/app.yaml", cm("App"))
    write(work, "deploy/ok.yaml", cm("ok"))
    write(work, "notes.txt", "not yaml: [\n")  # not matched by the hook's files pattern
    git(work, "add", "-A")
    proc = run(["git", "commit", "-q", "-m", "bad"], work, pc_env)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    assert "validate Kubernetes manifests (kubectl-gitops)" in output
    assert 'deploy/app.yaml:4: ConfigMap default/App: metadata.name: "App" is not a valid ' \
           "DNS-1123 subdomain" in output
    # .pre-commit-config.yaml is YAML too, but the manifest excludes it.
    assert "invalid: 1 problem in 2 objects in 2 files" in output
    assert commits(work) == 0
    # The installed entry point is the one pip built from the hook repository.
    envs = list((tmp_path / "pre-commit-home").glob("repo*/py_env-*/bin/git-gitops-validate"))
    assert len(envs) == 1
    write(work, "deploy/app.yaml", cm("app"))
    git(work, "add", "-A")
    proc = run(["git", "commit", "-q", "-m", "good"], work, pc_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert commits(work) == 1
