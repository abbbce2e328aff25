"""SOPS-encrypted Secrets and Helm values files, decrypted in memory by the
real sops with age keys made in the test, against the real control plane.

The plaintext must appear nowhere but in the cluster's Secrets: not in any
output, log, Event, history record, cache file or temp file, even when the
sync is killed (SIGKILL) in the middle; a wrong key or a tampered file is one
line naming the file, exit status 2, and nothing written.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from testing.git import commit, make_repo, write
from testing.kube import get, gitops, kubectl
from testing.sources import age_key, sops_encrypt, tool_path

PASSWORD = "correct-horse-battery-staple-7f3a"
TOKEN = "values-token-9d41c2e8b7"
DATA_ONLY = "^(data|stringData)$"

SECRET_TEMPLATE = """\
apiVersion: v1
kind: Secret
metadata:
  name: {{ .Release.Name }}-api
stringData:
  token: {{ .Values.token | quote }}
"""


@pytest.fixture
def env(git_env: dict[str, str], kube_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """helm and sops on PATH; this test's own cache and temp directories, so
    that everything the tool could have written can be searched."""
    (tmp_path / "tmp").mkdir()
    return {**kube_env, "PATH": tool_path(kube_env["PATH"]),
            "XDG_CACHE_HOME": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp")}


def encrypted_repo(tmp_path: Path, env: dict[str, str], ns: str) -> tuple[Path, Path]:
    """A repository with an encrypted Secret manifest and a local chart whose
    encrypted values file feeds a Secret; the age key file (not in git)."""
    key = tmp_path / "age.key"
    recipient = age_key(key, env)
    repo = make_repo(tmp_path / "git")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "db.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
        "stringData": {"password": PASSWORD}}))
    (plain / "values.yaml").write_text(yaml.safe_dump({"token": TOKEN}))
    write(repo, "deploy/db.enc.yaml", sops_encrypt(plain / "db.yaml", recipient, env,
                                                   encrypted_regex=DATA_ONLY))
    write(repo, "deploy/values.enc.yaml", sops_encrypt(plain / "values.yaml", recipient, env))
    write(repo, "charts/api/Chart.yaml", "apiVersion: v2\nname: api\nversion: 0.1.0\n")
    write(repo, "charts/api/values.yaml", "token: unset\n")
    write(repo, "charts/api/templates/secret.yaml", SECRET_TEMPLATE)
    write(repo, ".gitops.yaml", yaml.safe_dump({
        "name": "vault", "namespace": ns, "path": "deploy",
        "helm": {"chart": "charts/api", "releaseName": "shop",
                 "valuesFiles": ["deploy/values.enc.yaml"]}}))
    write(repo, ".sops.yaml", yaml.safe_dump({"creation_rules": [
        {"path_regex": r"\.enc\.yaml$", "age": recipient}]}))
    for f in plain.iterdir():
        f.unlink()
    commit(repo, "encrypted secrets")
    return repo, key


def secret_value(env: dict[str, str], ns: str, name: str, key: str) -> str | None:
    obj = get("secret", name, env, ns)
    return None if obj is None else base64.b64decode(obj["data"][key]).decode()


def leaks(tmp_path: Path, env: dict[str, str], ns: str, outputs: list[str]) -> list[str]:
    """Everywhere the plaintext must not be: every output, the cache and
    temp directories, the ApplySet parent with its history, Events."""
    found = [f"output {i}" for i, text in enumerate(outputs)
             if PASSWORD in text or TOKEN in text]
    for folder in (tmp_path / "cache", tmp_path / "tmp"):
        for f in folder.rglob("*"):
            if f.is_file() and not f.is_symlink():
                data = f.read_bytes()
                if PASSWORD.encode() in data or TOKEN.encode() in data:
                    found.append(str(f))
    for what in (["get", "configmap", "vault", "-n", ns, "-o", "yaml"],
                 ["get", "events", "-n", ns, "-o", "yaml"]):
        out = kubectl(*what, env=env, check=False).stdout
        if PASSWORD in out or TOKEN in out:
            found.append(" ".join(what))
    history = gitops("history", "--name", "vault", "-n", ns, "-o", "json", cwd=tmp_path, env=env)
    if PASSWORD in history.stdout + history.stderr or TOKEN in history.stdout + history.stderr:
        found.append("history")
    return found


def run(args: list[str], repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=180)


def test_encrypted_secret_and_values_sync_and_the_plaintext_shows_nowhere(
        tmp_path: Path, env: dict[str, str], namespace: str) -> None:
    repo, key = encrypted_repo(tmp_path, env, namespace)
    keyed = {**env, "SOPS_AGE_KEY_FILE": str(key)}
    outputs: list[str] = []

    def step(*args: str, status: int = 0) -> subprocess.CompletedProcess[str]:
        proc = gitops(*args, cwd=repo, env=keyed)
        outputs.extend([proc.stdout, proc.stderr])
        assert proc.returncode == status, proc.stderr
        return proc

    step("diff", status=1)
    step("diff", "-o", "json", status=1)
    step("sync", "--dry-run")
    synced = json.loads(step("sync", "-o", "json").stdout)
    assert synced["counts"]["created"] == 2
    assert secret_value(env, namespace, "db", "password") == PASSWORD
    assert secret_value(env, namespace, "shop-api", "token") == TOKEN
    again = json.loads(step("sync", "-o", "json").stdout)
    assert again["counts"]["unchanged"] == 2
    step("diff")
    step("status", "vault", "-n", namespace)
    # The key file given as an option instead of the environment.
    via_option = run(["kubectl-gitops-sync", "--decryption-key-file", str(key)], repo, env)
    outputs += [via_option.stdout, via_option.stderr]
    assert via_option.returncode == 0, via_option.stderr
    assert leaks(tmp_path, env, namespace, outputs) == []


def test_a_sync_killed_midway_leaves_the_plaintext_nowhere(
        tmp_path: Path, env: dict[str, str], namespace: str) -> None:
    """SIGKILL once sops or helm runs (the decrypted values are in flight):
    no temp file, cache file or partial record holds them."""
    repo, key = encrypted_repo(tmp_path, env, namespace)
    keyed = {**env, "SOPS_AGE_KEY_FILE": str(key)}
    killed_at = set()
    for child in ("sops", "helm"):
        proc = subprocess.Popen(["kubectl-gitops-sync"], cwd=repo, env=keyed,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = _wait_for_child(proc, child)
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        if seen:
            killed_at.add(child)
        assert PASSWORD not in out + err and TOKEN not in out + err
        assert leaks(tmp_path, env, namespace, []) == []
    assert killed_at, "the sync ended before sops or helm ran"
    # A later sync finishes the job.
    done = run(["kubectl-gitops-sync"], repo, keyed)
    assert done.returncode == 0, done.stderr
    assert secret_value(env, namespace, "db", "password") == PASSWORD
    assert leaks(tmp_path, env, namespace, [done.stdout, done.stderr]) == []


def _wait_for_child(proc: subprocess.Popen[str], name: str) -> bool:
    """Poll /proc until ``proc`` has a child running ``name`` (True), or ends."""
    while proc.poll() is None:
        for pid in _children(proc.pid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(os.path.basename(a.decode(errors="replace")) == name for a in argv[:2]):
                return True
        time.sleep(0.001)
    return False


def _children(pid: int) -> list[int]:
    """Descendants of ``pid`` (any of them may end while this looks)."""
    out = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out + [g for c in out for g in _children(c)]


@pytest.mark.parametrize("case", ["wrong key", "no key", "tampered"])
def test_a_file_that_does_not_decrypt_is_one_line_exit_2_nothing_written(
        case: str, tmp_path: Path, env: dict[str, str], namespace: str) -> None:
    repo, key = encrypted_repo(tmp_path, env, namespace)
    run_env = dict(env)
    if case == "wrong key":
        other = tmp_path / "other.key"
        age_key(other, env)
        run_env["SOPS_AGE_KEY_FILE"] = str(other)
    elif case == "tampered":
        run_env["SOPS_AGE_KEY_FILE"] = str(key)
        text = (repo / "deploy" / "db.enc.yaml").read_text()
        write(repo, "deploy/db.enc.yaml", text.replace("name: db", "name: db2"))
        commit(repo, "rename the secret without sops")
    proc = run(["kubectl-gitops-sync"], repo, run_env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    # One line per file that does not decrypt, naming it.
    lines = sorted(proc.stderr.splitlines())
    if case == "tampered":
        assert lines == ["error: deploy/db.enc.yaml: SOPS MAC does not verify: the file was "
                         "changed after it was encrypted (edit it with sops, or encrypt it "
                         "again)"], proc.stderr
    else:
        assert lines == [f"error: deploy/{f}: cannot decrypt with SOPS: no key given fits its "
                         "recipients (set SOPS_AGE_KEY_FILE or --decryption-key-file)"
                         for f in ("db.enc.yaml", "values.enc.yaml")], proc.stderr
    assert get("secret", "db", env, namespace) is None
    assert get("secret", "shop-api", env, namespace) is None
    assert get("configmap", "vault", env, namespace) is None
    assert leaks(tmp_path, env, namespace, [proc.stdout, proc.stderr]) == []


def test_the_agent_decrypts_with_a_key_from_a_secret(tmp_path: Path, env: dict[str, str],
                                                     namespace: str) -> None:
    """The agent syncs the same repository (a Helm app with encrypted values
    and an encrypted Secret) with the age key from a Secret; nothing on disk
    or in its log holds the plaintext."""
    from testing.agent import AgentProc, status, wait_for

    repo, key = encrypted_repo(tmp_path, env, namespace)
    kubectl("create", "secret", "generic", "sops-age", "-n", namespace,
            f"--from-file=age.agekey={key}", env=env)
    key.unlink()  # the agent has only the Secret
    a = AgentProc(tmp_path, env, "--repo", f"file://{repo}", "--ref", "main",
                  "--decryption-secret", "sops-age", "--interval", "1s")
    try:
        a.wait_ready()
        wait_for(lambda: status("vault", namespace, env).get("sync") == "Synced", 60,
                 "the agent's first sync")
    finally:
        a.stop()
    assert secret_value(env, namespace, "db", "password") == PASSWORD
    assert secret_value(env, namespace, "shop-api", "token") == TOKEN
    assert leaks(tmp_path, env, namespace, [a.text()]) == []
    for f in tmp_path.glob("cache-*/**/*"):
        if f.is_file() and not f.is_symlink():
            assert PASSWORD.encode() not in f.read_bytes() and TOKEN.encode() not in \
                f.read_bytes(), f


def test_kustomize_renders_an_encrypted_secret_it_never_sees_in_plaintext(
        tmp_path: Path, env: dict[str, str], namespace: str) -> None:
    """kustomize renders the encrypted file (namePrefix, labels); the values
    come back in memory; the export it renders from holds no plaintext."""
    key = tmp_path / "age.key"
    recipient = age_key(key, env)
    plain = tmp_path / "db.yaml"
    plain.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Secret",
                                     "metadata": {"name": "db"},
                                     "stringData": {"password": PASSWORD}}))
    repo = make_repo(tmp_path / "git")
    write(repo, "deploy/db.enc.yaml", sops_encrypt(plain, recipient, env,
                                                   encrypted_regex=DATA_ONLY))
    plain.unlink()
    write(repo, "deploy/kustomization.yaml", yaml.safe_dump({
        "namePrefix": "k-", "labels": [{"pairs": {"team": "shop"}}],
        "resources": ["db.enc.yaml"]}))
    commit(repo, "kustomize + sops")
    keyed = {**env, "SOPS_AGE_KEY_FILE": str(key)}
    proc = run(["kubectl-gitops-sync", "deploy", "-n", namespace, "--name", "vault"], repo, keyed)
    assert proc.returncode == 0, proc.stderr
    assert secret_value(env, namespace, "k-db", "password") == PASSWORD
    assert get("secret", "k-db", env, namespace)["metadata"]["labels"]["team"] == "shop"
    assert leaks(tmp_path, env, namespace, [proc.stdout, proc.stderr]) == []
    valid = run(["git", "gitops", "validate", "deploy"], repo, env)  # no key: structure only
    assert valid.returncode == 0, valid.stderr
