"""Issue 13 items 4, 5, 8, 9: symlinks, the kustomize sandbox, rollback's
safety, and Secret values kept out of every output and file."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from kubectl_gitops import secrets
from kubectl_gitops.errors import ManifestErrors
from kubectl_gitops.source import kustomize, manifests, tree
from testing.cli import BIN, run
from testing.git import commit, git, make_repo, write

PIN = "48213579"
PASSWORD = "correct-horse-battery-staple-9321"
TOKEN = "tok3n-Zq81vXw0p4LmN7yRs2Kd5"


def secret(name: str, body: str) -> str:
    return f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n{body}"


# --- the redaction helper ------------------------------------------------------

def test_redact_masks_every_spelling_of_a_value() -> None:
    obj = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
           "data": {"p": base64.b64encode(PASSWORD.encode()).decode()},
           "stringData": {"pin": int(PIN), "t": TOKEN}}
    message = (f'.stringData.pin: expected string, got &value.valueUnstructured{{Value:{PIN}}}; '
               f'password {PASSWORD!r}; "{TOKEN[:20]}…"; {obj["data"]["p"]}')
    out = secrets.redact(message, obj)
    for value in (PIN, PASSWORD, TOKEN[:20], obj["data"]["p"]):
        assert value not in out
    assert out.startswith(".stringData.pin: expected string")


def test_redact_leaves_other_objects_and_short_values_in_words_alone() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "visible"}}
    assert secrets.redact("value visible", cm) == "value visible"
    s = {"apiVersion": "v1", "kind": "Secret", "stringData": {"a": "1"}}
    assert secrets.redact("line 1 of version 1.21", s) == "line *** of version 1.21"
    assert secrets.redact_field_message("expected string, got integer 42") \
        == "expected string, got integer (value hidden)"


# --- symlinks (item 4) ----------------------------------------------------------

def cm(name: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"


MODES = ({}, {"working_tree": True}, {"staged": True})


@pytest.fixture
def repo(git_env: dict[str, str], tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def names(src: tree.Source) -> list[str]:
    return sorted(m.name for m in manifests.load(src))


def test_in_repo_symlinks_are_followed_in_every_mode(repo: Path) -> None:
    """A file turned into a link (to outside PATH), a link to a directory, a
    chain of links, and a link through a linked directory all read as kubectl
    reads a checkout; a file reached twice is read once."""
    write(repo, "shared/web.yaml", cm("web"))
    write(repo, "shared/more/db.yaml", cm("db"))
    write(repo, "deploy/own.yaml", cm("own"))
    os.symlink("../shared/web.yaml", repo / "deploy/web.yaml")
    os.symlink("../shared/more", repo / "deploy/more")
    os.symlink("web.yaml", repo / "deploy/chain.yaml")          # a chain: chain -> web -> shared
    os.symlink("own.yaml", repo / "deploy/again.yaml")          # the same file twice
    os.symlink("../deploy/more/db.yaml", repo / "shared/through.yaml")  # through a dir link
    os.symlink("../shared/through.yaml", repo / "deploy/through.yaml")
    commit(repo)
    for kw in MODES:
        src = tree.resolve(repo=repo, path="deploy", **kw)
        assert names(src) == ["db", "own", "web"], kw
        # Links in name order: chain.yaml reaches shared/web.yaml before web.yaml does.
        assert sorted(f.path for f in src.files()) == \
            ["deploy/chain.yaml", "deploy/more/db.yaml", "deploy/own.yaml"], kw


@pytest.mark.parametrize(("target", "problem"), [
    ("/etc/hostname", "symlink to /etc/hostname points outside the repository"),
    ("../../outside.yaml", "symlink to ../../outside.yaml points outside the repository"),
    ("missing.yaml", "symlink to missing.yaml cannot be followed: deploy/missing.yaml: no such"),
    ("loop.yaml", "symlink to loop.yaml cannot be followed: more than 40 links"),
    ("..", "symlink to .. leads to a directory that contains it"),
])
def test_a_symlink_that_cannot_be_followed_is_an_error_at_its_path(
        repo: Path, tmp_path: Path, target: str, problem: str) -> None:
    write(tmp_path / "outside.yaml", "", cm("outside"))
    write(repo, "deploy/ok.yaml", cm("ok"))
    link = "deploy/loop.yaml" if target in ("loop.yaml", "..") else "deploy/bad.yaml"
    os.symlink(target, repo / link)
    commit(repo)
    for kw in MODES:
        src = tree.resolve(repo=repo, path="deploy", **kw)
        with pytest.raises(ManifestErrors) as e:
            src.files()
        assert [line.split(": ", 1)[0] for line in e.value.lines()] == [link], kw
        assert problem in e.value.lines()[0], (kw, e.value.lines())


def test_validate_and_the_hook_report_a_link_outside_by_its_path(repo: Path, env: dict) -> None:
    write(repo, "deploy/ok.yaml", cm("ok"))
    os.symlink("/etc/passwd", repo / "deploy/passwd.yaml")
    git(repo, "add", "-A")
    for args in (["--staged"], ["--working-tree"]):
        proc = run([str(BIN / "git-gitops-validate"), *args, "deploy"], repo, env)
        assert proc.returncode == 1
        assert proc.stderr.startswith("deploy/passwd.yaml: symlink to /etc/passwd points "
                                      "outside the repository"), proc.stderr
    proc = run([str(BIN / "git-gitops-validate"), "--staged", "deploy", "-o", "json"], repo, env)
    assert [(p["path"], p["check"]) for p in json.loads(proc.stdout)["problems"]] == \
        [("deploy/passwd.yaml", "symlink")]
    run([str(BIN / "git-gitops"), "install-hooks"], repo, env)
    hook = run(["git", "commit", "-m", "link out"], repo, env)
    assert hook.returncode != 0 and "deploy/passwd.yaml: symlink to /etc/passwd" in hook.stderr


# --- the kustomize sandbox (item 5) ----------------------------------------------

def plant(where: Path) -> None:
    """A kustomization another local user could leave in the shared temp dir."""
    write(where / "planted", "kustomization.yaml", "resources: [evil.yaml]\n")
    write(where / "planted", "evil.yaml", cm("planted-by-a-neighbour"))


@pytest.mark.parametrize(("ref", "refused"), [
    ("../../planted", "../../planted: outside the repository"),
    ("../../../../../../../../../tmp", "outside the repository"),
    ("https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.0.0",
     "remote resources are refused"),
    ("git@github.com:org/repo.git", "remote resources are refused"),
])
def test_kustomize_never_reads_outside_the_repo(repo: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                ref: str, refused: str) -> None:
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    plant(shared)
    monkeypatch.setenv("TMPDIR", str(shared))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    write(repo, "deploy/kustomization.yaml", f"resources:\n- ../base\n- {ref}\n")
    write(repo, "base/kustomization.yaml", "resources: [cm.yaml]\n")
    write(repo, "base/cm.yaml", cm("base"))
    commit(repo)
    for kw in MODES:
        src = tree.resolve(repo=repo, path="deploy", **kw)
        ms, errors = manifests.read(src)
        assert ms == [], kw
        assert [e.path for e in errors] == ["deploy/kustomization.yaml"], kw
        assert refused in errors[0].message and ref in errors[0].message, kw


def test_every_kind_of_kustomize_file_reference_is_checked(repo: Path) -> None:
    outside = "../../etc/hostname"
    write(repo, "deploy/kustomization.yaml", "\n".join([
        "resources: [../base]",
        f"components: [{outside}]",
        f"patches: [{{path: {outside}}}]",
        f"patchesStrategicMerge: [{outside}]",
        f"configMapGenerator: [{{name: a, files: [k={outside}], envs: [{outside}]}}]",
        f"secretGenerator: [{{name: b, files: [{outside}]}}]",
        f"transformers: [{outside}]",
        f"crds: [{outside}]", ""]))
    write(repo, "base/kustomization.yaml", f"resources: [cm.yaml]\nbases: [{outside}]\n")
    write(repo, "base/cm.yaml", cm("base"))
    os.symlink("/etc", repo / "base/linked-out")
    write(repo, "base/kustomization.yaml",
          f"resources: [cm.yaml, linked-out/hostname]\nbases: [{outside}]\n")
    commit(repo)
    for kw in MODES:
        _, errors = manifests.read(tree.resolve(repo=repo, path="deploy", **kw))
        where = [e.path for e in errors]
        assert where.count("deploy/kustomization.yaml") == 8, (kw, errors)
        assert where.count("base/kustomization.yaml") == 2, (kw, errors)
        assert all("outside the repository" in e.message for e in errors)


def test_kustomize_renders_bases_and_in_repo_links_from_a_private_export(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    monkeypatch.setenv("TMPDIR", str(shared))
    monkeypatch.setattr(tempfile, "tempdir", None)
    write(repo, "deploy/overlay/kustomization.yaml", "resources: [../../base, linked]\n"
          "namePrefix: dev-\n")
    write(repo, "base/kustomization.yaml", "resources: [cm.yaml]\n")
    write(repo, "base/cm.yaml", cm("base"))
    write(repo, "other/kustomization.yaml", "resources: [o.yaml]\n")
    write(repo, "other/o.yaml", cm("other"))
    os.symlink("../../other", repo / "deploy/overlay/linked")
    commit(repo)
    seen: list[int] = []
    real_render = kustomize._render_one

    def spy(base: Path, kfile: str, *rest: object) -> object:
        # The export: private, unpredictable, one level below the temp dir's entry.
        seen.append(stat.S_IMODE(base.parent.stat().st_mode))
        assert base.parent.parent == shared or kw.get("working_tree")
        return real_render(base, kfile, *rest)

    monkeypatch.setattr(kustomize, "_render_one", spy)
    for kw in MODES:
        assert names(tree.resolve(repo=repo, path="deploy", **kw)) == \
            ["dev-base", "dev-other"], kw
    assert seen[0] == 0o700 and seen[2] == 0o700
    assert list(shared.iterdir()) == []  # nothing left behind


# --- rollback (item 8) ------------------------------------------------------------

def cmv(name: str, value: str) -> str:
    return cm(name) + f"data:\n  key: {value}\n"


def rollback(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "git-gitops-rollback"), *args], repo, env)


def history(repo: Path, values: list[str], path: str = "deploy/web.yaml") -> list[str]:
    shas = []
    for v in values:
        write(repo, path, cmv("web", v))
        shas.append(commit(repo, f"web {v}"))
    return shas


def clean(repo: Path) -> None:
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_rollback_refuses_to_overwrite_ignored_files_and_lists_them(repo: Path, env: dict) -> None:
    write(repo, "deploy/secret.yaml", cmv("placeholder", "x"))
    history(repo, ["one"])
    git(repo, "rm", "-q", "--cached", "deploy/secret.yaml")
    write(repo, ".gitignore", "secret.yaml\nlocal/\n")
    write(repo, "deploy/web.yaml", cmv("web", "two"))
    before = commit(repo, "keep the secret out of git")
    write(repo, "deploy/secret.yaml", secret("local", f"stringData:\n  password: {PASSWORD}\n"))
    proc = rollback(repo, env, "--path", "deploy")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "error: the rollback would overwrite ignored files: " \
        "deploy/secret.yaml; move them out of the way first\n"
    assert git(repo, "rev-parse", "HEAD") == before
    assert PASSWORD in (repo / "deploy/secret.yaml").read_text()


def test_rollback_signs_as_git_commit_would_and_fails_when_signing_fails(
        repo: Path, env: dict, tmp_path: Path) -> None:
    _, b = history(repo, ["one", "two"])
    failing = tmp_path / "failing-signer"
    failing.write_text("#!/bin/sh\necho 'signer: no key available' >&2\nexit 1\n")
    failing.chmod(0o755)
    git(repo, "config", "commit.gpgSign", "true")
    git(repo, "config", "gpg.program", str(failing))
    proc = rollback(repo, env, "--path", "deploy")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: signing the rollback commit failed "
                                  "(commit.gpgSign is set): "), proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert git(repo, "rev-parse", "HEAD") == b
    clean(repo)

    key = tmp_path / "signing-key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test@example.com",
                    "-f", str(key)], check=True)
    git(repo, "config", "gpg.format", "ssh")
    git(repo, "config", "user.signingKey", f"{key}.pub")
    proc = rollback(repo, env, "--path", "deploy")
    assert proc.returncode == 0, proc.stderr
    assert "gpgsig -----BEGIN SSH SIGNATURE-----" in git(repo, "cat-file", "commit", "HEAD")
    allowed = tmp_path / "allowed"
    allowed.write_text(f"test@example.com {(tmp_path / 'signing-key.pub').read_text()}")
    assert "Good \"git\" signature" in subprocess.run(
        ["git", "-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-commit", "HEAD"],
        cwd=repo, capture_output=True, text=True, env=env).stderr


def test_rollback_across_a_rename_of_path_refuses_naming_the_old_path(
        repo: Path, env: dict) -> None:
    history(repo, ["one", "two"], path="k8s/web.yaml")
    git(repo, "mv", "k8s", "deploy")
    renamed = commit(repo, "rename k8s to deploy")
    for args in ([], ["--to", "HEAD~1"]):
        proc = rollback(repo, env, "--path", "deploy", *args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: deploy did not exist at ") and \
            "it was renamed from k8s in " in proc.stderr, proc.stderr
        assert git(repo, "rev-parse", "HEAD") == renamed
        assert (repo / "deploy/web.yaml").exists()


def test_rollback_of_a_kustomize_overlay_restores_the_bases_it_renders_from(
        repo: Path, env: dict) -> None:
    write(repo, ".gitops.yaml", "path: deploy/overlays/dev\n")
    write(repo, "deploy/overlays/dev/kustomization.yaml",
          "resources: [../../bases]\nnamePrefix: dev-\n")
    write(repo, "deploy/bases/kustomization.yaml", "resources: [web.yaml]\n")
    write(repo, "deploy/bases/web.yaml", cmv("web", "good-image"))
    commit(repo, "overlay on a good base")
    write(repo, "src/app.py", "print('unrelated')\n")
    good = commit(repo, "code")  # still the good base: the state before the bad change
    write(repo, "deploy/bases/web.yaml", cmv("web", "bad-image"))
    commit(repo, "bad image in the base")

    dry = rollback(repo, env, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"Would roll back deploy/overlays/dev (with deploy/bases, "
                                 f"which it renders from) to {good[:7]}")
    assert " M  deploy/bases/web.yaml" in dry.stdout
    proc = rollback(repo, env)
    assert proc.returncode == 0, proc.stderr
    assert "deploy/bases" in git(repo, "log", "-1", "--format=%B")
    rendered = manifests.load(tree.resolve(repo=repo))
    assert [(m.name, m.obj["data"]["key"]) for m in rendered] == [("dev-web", "good-image")]
    assert (repo / "src/app.py").exists()
    clean(repo)


KILL_WRAPPER = """#!/bin/sh
# git, except that at one step it SIGKILLs the process that called it.
case "$*" in
  "$KILL_AT"*) kill -9 $PPID; exit 1 ;;
esac
exec {git} "$@"
"""


@pytest.mark.parametrize("step", ["commit-tree", "update-ref", "update-index -q", "read-tree -m"])
def test_a_rollback_killed_at_any_step_leaves_the_old_or_the_new_state(
        repo: Path, env: dict, tmp_path: Path, step: str) -> None:
    a, b = history(repo, ["one", "two"])
    write(repo, "src/code.py", "staged outside PATH\n")
    git(repo, "add", "src/code.py")
    wrapper = tmp_path / "wrapped-bin"
    wrapper.mkdir()
    real_git = subprocess.run(["which", "git"], capture_output=True, text=True).stdout.strip()
    (wrapper / "git").write_text(KILL_WRAPPER.format(git=real_git))
    (wrapper / "git").chmod(0o755)
    killed = rollback(repo, {**env, "KILL_AT": step,
                             "PATH": f"{wrapper}{os.pathsep}{env['PATH']}"}, "--path", "deploy")
    assert killed.returncode == -9
    staged = git(repo, "diff", "--cached", "--name-only")
    if git(repo, "rev-parse", "HEAD") == b:  # the old state, untouched
        assert staged == "src/code.py"
        assert (repo / "deploy/web.yaml").read_text() == cmv("web", "two")
    else:  # the branch moved: the next rollback finishes the checkout, and only that
        new = git(repo, "rev-parse", "HEAD")
        assert git(repo, "rev-parse", "HEAD^") == b
        proc = rollback(repo, env, "--path", "deploy")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"finished the interrupted rollback {new[:7]}")
        assert git(repo, "rev-parse", "HEAD") == new
        assert git(repo, "diff", "--cached", "--name-only") == "src/code.py"
        assert (repo / "deploy/web.yaml").read_text() == cmv("web", "one")
    assert git(repo, "status", "--porcelain", "--", "deploy") == ""
    # Either way, a rollback now works and lands on the state before "two".
    again = rollback(repo, env, "--path", "deploy") if git(repo, "rev-parse", "HEAD") == b \
        else None
    if again is not None:
        assert again.returncode == 0, again.stderr
        assert (repo / "deploy/web.yaml").read_text() == cmv("web", "one")


# --- against the real control plane: the planted kustomization, and Secret values -----

def test_a_kustomization_planted_in_the_shared_temp_dir_is_never_synced(
        git_env: dict, kube_env: dict, namespace: str, tmp_path: Path) -> None:
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    plant(shared)
    repo = make_repo(tmp_path / "repo")
    write(repo, "deploy/kustomization.yaml", "resources:\n- cm.yaml\n- ../../planted\n")
    write(repo, "deploy/cm.yaml", cm("ours"))
    commit(repo)
    env = {**git_env, "KUBECONFIG": kube_env["KUBECONFIG"], "PATH": kube_env["PATH"],
           "TMPDIR": str(shared)}
    for extra in ([], ["--working-tree"]):
        proc = run([str(BIN / "kubectl-gitops-sync"), "deploy", "-n", namespace, "--name",
                    "planted", *extra], repo, env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr == "error: deploy/kustomization.yaml: kustomize: ../../planted: " \
            "outside the repository; kustomize may only read files of the repository\n"
    listed = subprocess.run(["kubectl", "get", "configmaps", "-n", namespace, "-o", "name"],
                            env=env, capture_output=True, text=True, check=True).stdout
    assert listed.split() == ["configmap/kube-root-ca.crt"]  # nothing was written


SECRET_VALUES = (PIN, PASSWORD, TOKEN, "hunter2-but-longer", "s3cr3t-n3w-v4lu3")


def test_no_secret_value_reaches_any_output_or_file_left_on_disk(
        git_env: dict, kube_env: dict, namespace: str, tmp_path: Path) -> None:
    """validate, the hook, diff and sync, with bad and good Secrets: every
    output, the temp dir and the log dir are searched for the values."""
    tmp, state = tmp_path / "tmp", tmp_path / "state"
    tmp.mkdir()
    env = {**git_env, "KUBECONFIG": kube_env["KUBECONFIG"], "PATH": kube_env["PATH"],
           "TMPDIR": str(tmp), "XDG_STATE_HOME": str(state)}
    repo = make_repo(tmp_path / "repo")
    outputs: list[str] = []

    def tool(*args: str, expect: int | None = None,
             **more: str) -> subprocess.CompletedProcess[str]:
        proc = run(list(args), repo, {**env, **more})
        outputs.append(proc.stdout + proc.stderr)
        assert "Traceback" not in proc.stderr
        if expect is not None:
            assert proc.returncode == expect, (args, proc.stdout, proc.stderr)
        return proc

    cluster = ["-n", namespace, "--name", "secrets"]
    sync, diff = str(BIN / "kubectl-gitops-sync"), str(BIN / "kubectl-gitops-diff")
    validate = str(BIN / "git-gitops-validate")
    token64 = base64.b64encode(TOKEN.encode()).decode()

    # Good Secrets: created, then changed; diff in every format, sync.
    write(repo, "deploy/s.yaml", secret("creds", f"stringData:\n  password: {PASSWORD}\n"
                                                 f"data:\n  token: {token64}\n"))
    commit(repo, "good secret")
    tool(validate, "deploy", expect=0)
    tool(diff, "deploy", *cluster, expect=1)
    tool(sync, "deploy", *cluster, expect=0)
    write(repo, "deploy/s.yaml", secret("creds", "stringData:\n  password: s3cr3t-n3w-v4lu3\n"))
    commit(repo, "new value")
    for fmt in ("diff", "table", "json"):
        tool(diff, "deploy", *cluster, "-o", fmt, expect=1)
    external = tool(diff, "deploy", *cluster, KUBECTL_EXTERNAL_DIFF="diff -r")
    assert "***" in external.stdout, external.stdout + external.stderr
    tool(sync, "deploy", *cluster, "--dry-run", expect=0)
    tool(sync, "deploy", *cluster, "-o", "json", expect=0)

    # Bad Secrets: a number where a string must be, and an unreadable tagged value.
    write(repo, "deploy/s.yaml", secret("creds", f"stringData:\n  pin: {PIN}\n"
                                                 f"  password: {PASSWORD}\n"))
    write(repo, "deploy/t.yaml", secret("tagged", "stringData:\n  x: !!int hunter2-but-longer\n"))
    tool(str(BIN / "git-gitops"), "install-hooks", expect=0)
    git(repo, "add", "-A")
    tool(validate, "--staged", "deploy", expect=1)
    tool(validate, "--working-tree", "deploy", "-o", "json", expect=1)
    hook = tool("git", "commit", "-m", "bad secrets")
    assert hook.returncode != 0 and "deploy/s.yaml:6: Secret" in hook.stderr
    git(repo, "commit", "-q", "--no-verify", "-m", "bad secrets anyway")
    tool(validate, "deploy", expect=1)
    tool(diff, "deploy", *cluster, expect=2)
    tool(sync, "deploy", *cluster, expect=2)
    # What the API server echoes: the same bad value past our checks, one object alone.
    git(repo, "rm", "-q", "deploy/t.yaml")
    git(repo, "commit", "-q", "--no-verify", "-m", "only the number left")
    served = tool(sync, "deploy", *cluster, expect=2)
    assert "Secret " in served.stderr and "stringData" in served.stderr, served.stderr

    left = [p for p in (*tmp.rglob("*"), *state.rglob("*")) if p.is_file()]
    texts = outputs + [p.read_bytes().decode("utf-8", "replace") for p in left]
    for value in (*SECRET_VALUES, token64):
        assert not [t for t in texts if value in t], value
    log = state / "kubectl-gitops" / "kubectl-gitops.log"
    assert log.is_file()  # the failed syncs wrote their tracebacks there
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700


def test_the_log_is_not_written_through_a_planted_symlink(
        git_env: dict, tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "kubectl-gitops").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (state / "kubectl-gitops" / "kubectl-gitops.log").symlink_to(victim)
    shared = tmp_path / "shared-tmp"  # where the log used to be, at a guessable name
    shared.mkdir()
    (shared / f"kubectl-gitops-{os.getuid()}.log").symlink_to(victim)
    env = {**git_env, "XDG_STATE_HOME": str(state), "TMPDIR": str(shared),
           "PATH": os.pathsep.join([str(BIN), git_env["PATH"]])}
    proc = run([str(BIN / "git-gitops-validate"), "--ref", "no-such-rev"], tmp_path, env)
    assert proc.returncode == 2
    assert victim.read_text() == "precious\n"


def test_a_manifest_turned_into_an_in_repo_symlink_is_not_pruned(
        git_env: dict, kube_env: dict, namespace: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    write(repo, "deploy/web.yaml", cmv("web", "one"))
    write(repo, "deploy/db.yaml", cmv("db", "one"))
    commit(repo)
    env = {**git_env, "KUBECONFIG": kube_env["KUBECONFIG"], "PATH": kube_env["PATH"]}
    sync = [str(BIN / "kubectl-gitops-sync"), "deploy", "-n", namespace, "--name", "links",
            "--prune", "-o", "json"]
    assert run(sync, repo, env).returncode == 0
    git(repo, "mv", "deploy/web.yaml", "shared-web.yaml")
    os.symlink("../shared-web.yaml", repo / "deploy/web.yaml")
    commit(repo, "share web.yaml through a link")
    proc = run(sync, repo, env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"] == \
        {"created": 0, "updated": 0, "pruned": 0, "unchanged": 2, "failed": 0}
