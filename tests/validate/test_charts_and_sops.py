"""``git gitops validate`` and the pre-commit hook with Helm charts and SOPS
files: no cluster, no decryption key; the real helm, sops and age."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from testing.cli import BIN, run
from testing.git import commit, git, make_repo, write
from testing.sources import age_key, sops_encrypt, tool_path, upstream_chart

SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
          "stringData": {"password": "plain-text-pw-31337"}}
BAD_TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replica: {{ .Values.replicas }}
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec: {containers: [{name: c, image: nginx}]}
"""


@pytest.fixture
def env(git_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) \
        -> dict[str, str]:
    """helm and sops on PATH, for the hook that commit() runs too."""
    monkeypatch.setenv("PATH", tool_path(git_env.get("PATH", "")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return dict(os.environ)


@pytest.fixture
def repo(env: dict[str, str], tmp_path: Path) -> Path:
    r = make_repo(tmp_path / "repo")
    assert run(["git", "gitops", "install-hooks"], r, env).returncode == 0
    return r


def encrypted_secret(tmp_path: Path, env: dict[str, str]) -> tuple[bytes, str]:
    recipient = age_key(tmp_path / "age.key", env)
    plain = tmp_path / "secret.yaml"
    plain.write_text(yaml.safe_dump(SECRET))
    data = sops_encrypt(plain, recipient, env, encrypted_regex="^(data|stringData)$")
    plain.unlink()
    return data, recipient


def commit_unchecked(repo: Path, msg: str) -> None:
    """Commit past the hook: what validate is then asked about."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--no-verify", "-m", msg)


def validate(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run(["git", "gitops", "validate", "-o", "json", *args], repo, env)


def test_an_encrypted_secret_validates_without_its_key(repo: Path, env: dict[str, str],
                                                       tmp_path: Path) -> None:
    data, _ = encrypted_secret(tmp_path, env)
    write(repo, "db.enc.yaml", data)
    commit(repo, "encrypted")
    proc = validate(repo, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["valid"] and doc["objects"] == 1
    assert "plain-text-pw-31337" not in proc.stdout + proc.stderr


def test_a_damaged_encrypted_value_is_invalid(repo: Path, env: dict[str, str],
                                             tmp_path: Path) -> None:
    data, _ = encrypted_secret(tmp_path, env)
    write(repo, "db.enc.yaml", data.replace(b",iv:", b",iv=", 1))
    commit_unchecked(repo, "damaged")
    proc = validate(repo, env)
    assert proc.returncode == 1
    problems = json.loads(proc.stdout)["problems"]
    assert [(p["path"], p["message"]) for p in problems] == [
        ("db.enc.yaml", "SOPS: the encrypted value at stringData.password is malformed")]


def test_the_hook_refuses_a_plaintext_secret_where_sops_yaml_requires_encryption(
        repo: Path, env: dict[str, str], tmp_path: Path) -> None:
    data, recipient = encrypted_secret(tmp_path, env)
    write(repo, ".sops.yaml", yaml.safe_dump({"creation_rules": [
        {"path_regex": r"secrets/.*\.yaml$", "age": recipient}]}))
    write(repo, "secrets/db.yaml", yaml.safe_dump(SECRET))
    write(repo, "app/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n")
    git(repo, "add", "-A")
    proc = run(["git", "commit", "-q", "-m", "plaintext"], repo, env)
    assert proc.returncode != 0
    assert ("secrets/db.yaml:1: a plaintext Secret where .sops.yaml requires encryption; "
            "encrypt it with sops --encrypt --in-place") in proc.stderr.splitlines()
    assert "plain-text-pw-31337" not in proc.stderr + proc.stdout
    # Encrypted, the same commit goes through.
    write(repo, "secrets/db.yaml", data)
    git(repo, "add", "-A")
    ok = run(["git", "commit", "-q", "-m", "encrypted"], repo, env)
    assert ok.returncode == 0, ok.stderr


def test_a_plaintext_secret_outside_every_rule_is_not_refused(repo: Path, env: dict[str, str],
                                                              tmp_path: Path) -> None:
    _, recipient = encrypted_secret(tmp_path, env)
    write(repo, ".sops.yaml", yaml.safe_dump({"creation_rules": [
        {"path_regex": r"secrets/.*", "age": recipient}]}))
    write(repo, "app/db.yaml", yaml.safe_dump(SECRET))
    commit(repo, "a Secret no rule covers")
    assert validate(repo, env).returncode == 0


def chart_repo_with_bad_template(repo: Path) -> None:
    write(repo, "charts/api/Chart.yaml", "apiVersion: v2\nname: api\nversion: 0.1.0\n")
    write(repo, "charts/api/values.yaml", "replicas: 2\n")
    write(repo, "charts/api/templates/deploy.yaml", BAD_TEMPLATE)
    write(repo, "app/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n")


def test_the_hook_renders_a_changed_chart_and_blocks_its_invalid_output(
        repo: Path, env: dict[str, str]) -> None:
    chart_repo_with_bad_template(repo)
    git(repo, "add", "-A")
    proc = run(["git", "commit", "-q", "-m", "chart"], repo, env)
    assert proc.returncode != 0
    assert any(line.startswith("charts/api: api/templates/deploy.yaml: Deployment default/api: ")
               and "replica" in line for line in proc.stderr.splitlines()), proc.stderr


def test_the_hook_renders_no_chart_when_the_commit_touches_none(
        repo: Path, env: dict[str, str]) -> None:
    """Without helm on PATH: a commit that changes no chart never needs it;
    one that changes the chart says helm is missing."""
    write(repo, "charts/api/Chart.yaml", "apiVersion: v2\nname: api\nversion: 0.1.0\n")
    write(repo, "charts/api/templates/cm.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n")
    commit(repo, "a chart", add=True)
    no_helm = {**env, "PATH": os.pathsep.join([str(BIN), "/usr/bin", "/bin"])}
    write(repo, "app/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n")
    git(repo, "add", "-A")
    ok = run(["git", "commit", "-q", "-m", "plain"], repo, no_helm)
    assert ok.returncode == 0, ok.stderr
    write(repo, "charts/api/templates/cm2.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n")
    git(repo, "add", "-A")
    blocked = run(["git", "commit", "-q", "-m", "chart"], repo, no_helm)
    assert blocked.returncode != 0
    assert "charts/api/Chart.yaml: helm is needed to render charts/api and was not found on " \
        "PATH" in blocked.stderr.splitlines()


def test_validate_renders_an_upstream_chart_with_values_from_git(
        repo: Path, env: dict[str, str]) -> None:
    import shutil

    shutil.copytree(upstream_chart("podinfo", "6.9.2"), repo / "charts" / "podinfo")
    write(repo, ".gitops.yaml", yaml.safe_dump({"path": "deploy", "helm": {
        "chart": "charts/podinfo", "releaseName": "web", "valuesFiles": ["deploy/values.yaml"]}}))
    write(repo, "deploy/values.yaml", "replicaCount: 3\nhpa:\n  enabled: true\n")
    commit(repo, "podinfo")
    proc = validate(repo, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["objects"] == 3  # Deployment, Service, HPA
    write(repo, "deploy/values.yaml", "replicaCount: three\n")
    commit_unchecked(repo, "a bad value")
    bad = validate(repo, env)
    assert bad.returncode == 1
    messages = [p["message"] for p in json.loads(bad.stdout)["problems"]]
    assert any("replicas" in m for m in messages), messages
