"""Connecting and authenticating as kubectl does, against the real control
plane: every identity is compared with what the real ``kubectl auth whoami``
reports for the same kubeconfig."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides
from testing.git import commit, make_repo, write
from testing.kube import configmap, docs, get, gitops, kubectl
from testing.net import ConnectProxy, FreezingRelay, ThrottlingReverseProxy, silent_listener


# --- kubeconfigs and identities ------------------------------------------------------


@pytest.fixture(scope="module")
def admin(control_plane: Any) -> dict[str, Any]:
    """The admin kubeconfig's cluster and user entries."""
    doc = yaml.safe_load(Path(control_plane.kubeconfig).read_text())
    return {"cluster": doc["clusters"][0]["cluster"], "user": doc["users"][0]["user"],
            "path": Path(control_plane.kubeconfig)}


def kubeconfig(path: Path, admin: dict[str, Any], user: dict[str, Any], *,
               cluster: dict[str, Any] | None = None, namespace: str = "default") -> Path:
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "c", "cluster": cluster or admin["cluster"]}],
           "users": [{"name": "u", "user": user}],
           "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u",
                                                   "namespace": namespace}}],
           "current-context": "x"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def kubectl_whoami(env: dict[str, str], *args: str) -> str:
    out = kubectl("auth", "whoami", "-o", "json", *args, env=env).stdout
    return json.loads(out)["status"]["userInfo"]["username"]


def env_with(kube_env: dict[str, str], path: Path) -> dict[str, str]:
    return {**kube_env, "KUBECONFIG": str(path)}


def service_account(env: dict[str, str], ns: str, name: str, role: str | None = None) -> str:
    """A ServiceAccount (bound to ``role`` in ``ns``) and a token for it from
    the TokenRequest API."""
    kubectl("create", "serviceaccount", name, "-n", ns, env=env)
    if role:
        kubectl("create", "rolebinding", f"{name}-{role}", f"--clusterrole={role}",
                f"--serviceaccount={ns}:{name}", "-n", ns, env=env)
    return kubectl("create", "token", name, "-n", ns, "--duration=1h", env=env).stdout.strip()


def exec_plugin(tmp_path: Path, status: str, *, api: str = "client.authentication.k8s.io/v1",
                name: str = "plugin.py") -> tuple[Path, Path]:
    """A plugin printing an ExecCredential whose status is the Python
    expression ``status`` (``n`` is the call number); returns (script, calls)."""
    calls = tmp_path / f"{name}.calls"
    script = tmp_path / name
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""\
        import json, os, pathlib
        info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
        assert info["apiVersion"] == {api!r}, info
        calls = pathlib.Path({str(calls)!r})
        n = len(calls.read_text().splitlines()) + 1 if calls.exists() else 1
        calls.write_text("x\\n" * n)
        print(json.dumps({{"apiVersion": {api!r}, "kind": "ExecCredential",
                           "status": {status}}}))
        """))
    script.chmod(0o755)
    return script, calls


def exec_user(script: Path, api: str = "client.authentication.k8s.io/v1") -> dict[str, Any]:
    return {"exec": {"apiVersion": api, "command": str(script), "interactiveMode": "Never",
                     "installHint": "install the test plugin"}}


def ours(path: Path, **flags: Any) -> str:
    return Kube(Overrides(kubeconfig=str(path), **flags)).whoami()


# --- exec plugins ------------------------------------------------------------------


@pytest.mark.parametrize("api", ["client.authentication.k8s.io/v1",
                                 "client.authentication.k8s.io/v1beta1"])
def test_exec_plugin_token_from_token_request(tmp_path: Path, kube_env: dict, namespace: str,
                                              admin: dict, api: str) -> None:
    token = service_account(kube_env, namespace, "deployer")
    script, calls = exec_plugin(tmp_path, f"{{'token': {token!r}}}", api=api)
    path = kubeconfig(tmp_path / "config", admin, exec_user(script, api))
    expected = f"system:serviceaccount:{namespace}:deployer"
    assert kubectl_whoami(env_with(kube_env, path)) == expected
    assert ours(path) == expected
    # One process, many requests: the plugin ran once.
    kube = Kube(Overrides(kubeconfig=str(path)))
    calls.unlink()
    for _ in range(3):
        assert kube.whoami() == expected
    assert len(calls.read_text().splitlines()) == 1


def test_exec_plugin_client_certificate(tmp_path: Path, kube_env: dict, admin: dict) -> None:
    key, crt = signed_client_cert(tmp_path, kube_env, "exec-cert-user")
    status = {"clientCertificateData": crt.decode(), "clientKeyData": key.decode()}
    script, _ = exec_plugin(tmp_path, repr(status))
    path = kubeconfig(tmp_path / "config", admin, exec_user(script))
    assert kubectl_whoami(env_with(kube_env, path)) == "exec-cert-user"
    assert ours(path) == "exec-cert-user"


def signed_client_cert(tmp_path: Path, env: dict[str, str], user: str) -> tuple[bytes, bytes]:
    """(key, certificate) PEM for ``user``, signed by the cluster through the
    CertificateSigningRequest API."""
    key, csr = tmp_path / f"{user}.key", tmp_path / f"{user}.csr"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-subj", f"/CN={user}",
                    "-out", csr], check=True, capture_output=True)
    name = f"{user}-{os.getpid()}-{time.monotonic_ns()}"
    request = {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
               "metadata": {"name": name},
               "spec": {"request": base64.b64encode(csr.read_bytes()).decode(),
                        "signerName": "kubernetes.io/kube-apiserver-client",
                        "expirationSeconds": 3600, "usages": ["client auth"]}}
    manifest = tmp_path / f"{user}-csr.yaml"
    manifest.write_text(json.dumps(request))
    kubectl("create", "-f", str(manifest), env=env)
    kubectl("certificate", "approve", name, env=env)
    for _ in range(100):
        out = kubectl("get", "csr", name, "-o", "jsonpath={.status.certificate}", env=env).stdout
        if out:
            kubectl("delete", "csr", name, env=env)
            return key.read_bytes(), base64.b64decode(out)
        time.sleep(0.2)
    raise AssertionError(f"the CSR {name} was not signed")


def test_exec_plugin_reruns_once_on_401(tmp_path: Path, kube_env: dict, namespace: str,
                                        admin: dict) -> None:
    token = service_account(kube_env, namespace, "rerun")
    # The first call hands out a token the server rejects (as a revoked one).
    script, calls = exec_plugin(tmp_path, f"{{'token': 'revoked' if n == 1 else {token!r}}}")
    path = kubeconfig(tmp_path / "config", admin, exec_user(script))
    assert ours(path) == f"system:serviceaccount:{namespace}:rerun"
    assert len(calls.read_text().splitlines()) == 2
    # A plugin that keeps handing out a bad token is run once more, not forever.
    script, calls = exec_plugin(tmp_path, "{'token': 'revoked'}", name="bad.py")
    path = kubeconfig(tmp_path / "bad", admin, exec_user(script))
    assert ours(path) == ""  # SelfSubjectReview refused: whoami is empty
    assert len(calls.read_text().splitlines()) == 2


def test_exec_plugin_expiry_reruns_the_plugin(tmp_path: Path, kube_env: dict, namespace: str,
                                              admin: dict) -> None:
    first = service_account(kube_env, namespace, "first")
    second = service_account(kube_env, namespace, "second")
    # The first credential expires at once; the next one is another account's.
    script, calls = exec_plugin(tmp_path, (
        f"{{'token': {first!r}, 'expirationTimestamp': '2000-01-01T00:00:00Z'}} if n == 1 "
        f"else {{'token': {second!r}}}"))
    kube = Kube(Overrides(kubeconfig=str(kubeconfig(tmp_path / "config", admin, exec_user(script)))))
    assert kube.whoami() == f"system:serviceaccount:{namespace}:first"
    assert kube.whoami() == f"system:serviceaccount:{namespace}:second"
    assert kube.whoami() == f"system:serviceaccount:{namespace}:second"
    assert len(calls.read_text().splitlines()) == 2


# --- bad kubeconfigs through the CLI ----------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path, git_env: dict) -> Path:
    repo = make_repo(tmp_path / "repo")
    write(repo, "deploy/cm.yaml", docs(configmap("auth-cm")))
    commit(repo, "a ConfigMap")
    return repo


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_bad_kubeconfigs_are_one_line_and_exit_2(tmp_path: Path, repo: Path, kube_env: dict,
                                                 admin: dict) -> None:
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing exec"] = (kubeconfig(tmp_path / "k1", admin, {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "gke-auth-nowhere",
        "installHint": "Install gke-auth-nowhere:\n  gcloud components install it"}}),
        "error: user 'u': exec plugin 'gke-auth-nowhere' not found; Install "
        "gke-auth-nowhere: gcloud components install it")
    cases["bad base64"] = (kubeconfig(tmp_path / "k2", admin, {
        **admin["user"], "client-key-data": "%%%not-base64%%%"}),
        "error: user 'u': client-key-data is not valid base64")
    bad_yaml = tmp_path / "k3"
    bad_yaml.write_text("apiVersion: v1\nclusters:\n  - name: c\n   cluster: {}\n")
    cases["malformed"] = (bad_yaml, f"error: {bad_yaml}:4: not a valid kubeconfig")
    hang, _ = exec_plugin(tmp_path, "__import__('time').sleep(120)", name="hang.py")
    cases["hanging exec"] = (kubeconfig(tmp_path / "k4", admin, exec_user(hang)),
                             "error: user 'u': exec plugin")
    for what, (path, expected) in cases.items():
        extra = ["--request-timeout", "1s"] if what == "hanging exec" else []
        proc = gitops("diff", "deploy", "--kubeconfig", str(path), *extra, cwd=repo,
                      env=kube_env)
        line = one_error_line(proc)
        assert line.startswith(expected), (what, line)
    assert "did not finish within 1 s" in line
    # (KUBECONFIG=missing:good: see test_merged_kubeconfig_files_with_relative_paths.)


def test_a_hanging_exec_plugin_runs_once_per_command(tmp_path: Path, repo: Path,
                                                     kube_env: dict, admin: dict) -> None:
    """Discovery, the main thread and who-am-I all need the credentials: a
    hanging plugin is waited out once per command, not once per thread."""
    from testing.kube import run

    hang, calls = exec_plugin(tmp_path, "__import__('time').sleep(120)", name="hang.py")
    path = kubeconfig(tmp_path / "k", admin, exec_user(hang))
    timeout = 2
    for cmd in ("diff", "sync"):
        if calls.exists():
            calls.unlink()
        # The plugin timeout + 5 s bounds the whole command (raises when exceeded).
        proc = run(["kubectl", "gitops", cmd, "deploy", "--kubeconfig", str(path),
                    "--request-timeout", f"{timeout}s"], cwd=repo, env=kube_env,
                   timeout=timeout + 5)
        line = one_error_line(proc)
        assert f"did not finish within {timeout} s" in line, line
        assert calls.read_text().splitlines() == ["x"], cmd  # one run


def test_certificate_name_mismatch_names_the_names(tmp_path: Path, repo: Path,
                                                   kube_env: dict, admin: dict) -> None:
    path = kubeconfig(tmp_path / "config", admin, admin["user"],
                      cluster={**admin["cluster"], "tls-server-name": "wrong.example"})
    line = one_error_line(gitops("diff", "deploy", "--kubeconfig", str(path), cwd=repo,
                                 env=kube_env))
    assert "its certificate does not name 'wrong.example' (valid for 127.0.0.1, localhost, " \
        in line, line
    assert kubectl("auth", "whoami", env=env_with(kube_env, path), check=False).returncode != 0


# --- impersonation ------------------------------------------------------------------


def test_impersonating_a_viewer_writes_nothing(tmp_path: Path, repo: Path, kube_env: dict,
                                               namespace: str, admin: dict) -> None:
    viewer = f"viewer-{namespace}"
    kubectl("create", "rolebinding", "viewer", "--clusterrole=view", f"--user={viewer}",
            "-n", namespace, env=kube_env)
    as_viewer = kubeconfig(tmp_path / "config", admin, {**admin["user"], "as": viewer},
                           namespace=namespace)
    assert kubectl_whoami(env_with(kube_env, as_viewer)) == viewer
    assert ours(as_viewer) == viewer
    # kubectl diff cannot diff as a viewer either: its dry-run is authorized as a write.
    theirs = kubectl("diff", "--server-side", "-f", str(repo / "deploy" / "cm.yaml"), "-n",
                     namespace, env=env_with(kube_env, as_viewer), check=False)
    assert theirs.returncode == 2 and "forbidden" in theirs.stderr, theirs.stderr
    for args, env in (([], env_with(kube_env, as_viewer)), (["--as", viewer], kube_env)):
        # kubectl diff needs patch for its server-side dry-run; so do we.
        diff = gitops("diff", "deploy", "-n", namespace, "--name", "app", *args, cwd=repo,
                      env=env)
        assert diff.returncode == 2
        assert f'User "{viewer}" cannot patch resource "configmaps"' in diff.stderr \
            or f'User "{viewer}" cannot create resource "configmaps"' in diff.stderr, diff.stderr
        sync = gitops("sync", "deploy", "-n", namespace, "--name", "app", *args, cwd=repo,
                      env=env)
        assert sync.returncode == 2
        assert "forbidden" in sync.stderr
        assert get("configmap", "auth-cm", kube_env, namespace) is None
        assert get("configmap", "app", kube_env, namespace) is None  # no parent either


def test_history_records_the_identity_the_server_saw(tmp_path: Path, repo: Path,
                                                     kube_env: dict, namespace: str) -> None:
    editor = f"editor-{namespace}"
    kubectl("create", "rolebinding", "editor", "--clusterrole=edit", f"--user={editor}",
            "-n", namespace, env=kube_env)
    sync = gitops("sync", "deploy", "-n", namespace, "--name", "app", "--as", editor,
                  cwd=repo, env=kube_env)
    assert sync.returncode == 0, sync.stderr
    hist = gitops("history", "--name", "app", "-n", namespace, "-o", "json", cwd=repo,
                  env=kube_env)
    assert json.loads(hist.stdout)[0]["clusterUser"] == kubectl_whoami(kube_env, "--as",
                                                                       editor) == editor


# --- KUBECONFIG merging -----------------------------------------------------------------


def test_merged_kubeconfig_files_with_relative_paths(tmp_path: Path, repo: Path,
                                                     kube_env: dict, admin: dict) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "pki").mkdir(parents=True)
    (b / "creds").mkdir(parents=True)
    (a / "pki" / "ca.crt").write_bytes(base64.b64decode(admin["cluster"]
                                                        ["certificate-authority-data"]))
    (b / "creds" / "me.crt").write_bytes(base64.b64decode(admin["user"]
                                                          ["client-certificate-data"]))
    (b / "creds" / "me.key").write_bytes(base64.b64decode(admin["user"]["client-key-data"]))
    (a / "config").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "clusters": [
        {"name": "local", "cluster": {"server": admin["cluster"]["server"],
                                      "certificate-authority": "pki/ca.crt"}}]}))
    (b / "config").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "merged",
        "clusters": [{"name": "local", "cluster": {"server": "https://192.0.2.1:1"}}],
        "users": [{"name": "me", "user": {"client-certificate": "creds/me.crt",
                                          "client-key": "creds/me.key"}}],
        "contexts": [{"name": "merged", "context": {"cluster": "local", "user": "me"}}]}))
    env = {**kube_env, "KUBECONFIG": os.pathsep.join(
        [str(tmp_path / "absent"), str(a / "config"), str(b / "config")])}
    # The paths are relative to the files that name them, not to the cwd.
    assert kubectl_whoami(env) == "admin"
    proc = gitops("diff", "deploy", "-n", "default", cwd=repo, env=env)
    assert proc.returncode in (0, 1), proc.stderr
    proc = subprocess.run([sys.executable, "-c", WHOAMI], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "admin", proc.stderr


# --- proxies ------------------------------------------------------------------------------


def test_proxy_url_https_proxy_and_no_proxy(tmp_path: Path, kube_env: dict,
                                            admin: dict) -> None:
    port = int(admin["cluster"]["server"].rsplit(":", 1)[1])
    # The serving certificate names kubernetes.default.svc; only the proxy
    # knows where that is, so a request that bypasses it cannot connect.
    proxy = ConnectProxy(hosts={"kubernetes.default.svc": "127.0.0.1"})
    named = {**admin["cluster"], "server": f"https://kubernetes.default.svc:{port}"}
    with proxy.running():
        via_url = kubeconfig(tmp_path / "k1", admin, admin["user"],
                             cluster={**admin["cluster"], "proxy-url": proxy.url})
        assert ours(via_url) == "admin"
        assert proxy.tunnels == [f"127.0.0.1:{port}"]
        assert kubectl_whoami(env_with(kube_env, via_url)) == "admin"
        assert len(proxy.tunnels) == 2

        path = kubeconfig(tmp_path / "k2", admin, admin["user"], cluster=named)
        env = {**env_with(kube_env, path), "HTTPS_PROXY": proxy.url, "NO_PROXY": "example.com"}
        proxy.tunnels.clear()
        assert kubectl_whoami(env) == "admin"
        kubectl_tunnels = len(proxy.tunnels)
        assert kubectl_tunnels >= 1
        proc = subprocess.run([sys.executable, "-c", WHOAMI], env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.stdout.strip() == "admin", proc.stderr
        assert proxy.tunnels[kubectl_tunnels:] == [f"kubernetes.default.svc:{port}"]

        proxy.tunnels.clear()
        env["NO_PROXY"] = ".svc"
        proc = subprocess.run([sys.executable, "-c", WHOAMI], env=env, capture_output=True,
                              text=True, timeout=60)
        assert "kubernetes.default.svc" in proc.stderr and proxy.tunnels == [], proc.stderr
        assert kubectl("auth", "whoami", env=env, check=False).returncode != 0
        assert proxy.tunnels == []


def test_https_proxy_url(tmp_path: Path, kube_env: dict, admin: dict) -> None:
    import ssl

    from testing import controlplane

    ca = controlplane.make_ca(tmp_path / "pki", "proxy-ca")
    crt, key = controlplane.issue_serving_cert(*ca, tmp_path / "pki", "proxy", ["IP:127.0.0.1"])
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(crt, key)
    # As in Go, the proxy is verified with the cluster's CAs: give both.
    bundle = tmp_path / "cas.pem"
    bundle.write_bytes(base64.b64decode(admin["cluster"]["certificate-authority-data"])
                       + ca[0].read_bytes())
    cluster = {"server": admin["cluster"]["server"], "certificate-authority": str(bundle)}
    proxy = ConnectProxy(tls=server_ctx)
    with proxy.running():
        path = kubeconfig(tmp_path / "config", admin, admin["user"],
                          cluster={**cluster, "proxy-url": proxy.url})
        assert kubectl_whoami(env_with(kube_env, path)) == "admin"
        assert len(proxy.tunnels) == 1
        assert ours(path) == "admin"
        assert len(proxy.tunnels) == 2


# Our identity in a fresh process (proxy variables are read from its environment).
WHOAMI = ("from kubectl_gitops.kube.client import Kube\n"
          "from kubectl_gitops.errors import ClusterError\n"
          "k = Kube()\n"
          "try:\n"
          "    print(k.request('POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews',"
          " body={'apiVersion': 'authentication.k8s.io/v1', 'kind': 'SelfSubjectReview'})"
          "['status']['userInfo']['username'])\n"
          "except ClusterError as e:\n"
          "    raise SystemExit(str(e))\n")


def test_unreachable_proxy_is_one_line(tmp_path: Path, repo: Path, kube_env: dict,
                                       admin: dict) -> None:
    with silent_listener() as port:
        pass  # a port nobody listens on any more
    path = kubeconfig(tmp_path / "config", admin, admin["user"],
                      cluster={**admin["cluster"], "proxy-url": f"http://127.0.0.1:{port}"})
    line = one_error_line(gitops("diff", "deploy", "--kubeconfig", str(path), cwd=repo,
                                 env=kube_env))
    assert f"cannot reach the proxy http://127.0.0.1:{port}: Connection refused" in line


# --- in-cluster -----------------------------------------------------------------------------


def test_in_cluster_service_account_with_token_rotation(tmp_path: Path, kube_env: dict,
                                                        namespace: str, admin: dict,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    first = service_account(kube_env, namespace, "pod-a", role="view")
    second = service_account(kube_env, namespace, "pod-b", role="view")
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "ca.crt").write_bytes(base64.b64decode(admin["cluster"]["certificate-authority-data"]))
    (sa / "namespace").write_text(namespace)
    (sa / "token").write_text(first)
    host, port = admin["cluster"]["server"].removeprefix("https://").rsplit(":", 1)
    for var in ("KUBECONFIG",):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kube/config
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.setenv("KUBECTL_GITOPS_SERVICEACCOUNT_DIR", str(sa))
    kube = Kube()
    assert kube.info.namespace == namespace
    assert kube.whoami() == f"system:serviceaccount:{namespace}:pod-a"
    # The kubelet rotates a projected token by swapping the file.
    (tmp_path / "new-token").write_text(second)
    os.replace(tmp_path / "new-token", sa / "token")
    assert kube.whoami() == f"system:serviceaccount:{namespace}:pod-b"


# --- retries and warnings -------------------------------------------------------------


def _through_proxy(tmp_path: Path, admin: dict, method: str,
                   status: int) -> ThrottlingReverseProxy:
    import ssl

    ctx = ssl.create_default_context(cadata=base64.b64decode(
        admin["cluster"]["certificate-authority-data"]).decode())
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    key.write_bytes(base64.b64decode(admin["user"]["client-key-data"]))
    crt.write_bytes(base64.b64decode(admin["user"]["client-certificate-data"]))
    ctx.load_cert_chain(crt, key)
    return ThrottlingReverseProxy(admin["cluster"]["server"], ctx, throttle_method=method,
                                  status=status)


def test_429_with_retry_after_is_retried(tmp_path: Path, repo: Path, kube_env: dict,
                                         namespace: str, admin: dict) -> None:
    proxy = _through_proxy(tmp_path, admin, "PATCH", 429)
    with proxy.running():
        path = kubeconfig(tmp_path / "config", admin, {}, cluster={"server": proxy.url})
        sync = gitops("sync", "deploy", "-n", namespace, "--kubeconfig", str(path), cwd=repo,
                      env=kube_env)
    assert sync.returncode == 0, sync.stderr
    assert get("configmap", "auth-cm", kube_env, namespace) is not None
    throttled = [i for i, (m, _, s) in enumerate(proxy.log) if s == 429]
    assert len(throttled) == 1
    method, url, _ = proxy.log[throttled[0]]
    # The same request, again (201: the retried apply is the one that creates the object).
    assert any((m, u) == (method, url) and 200 <= s < 300
               for m, u, s in proxy.log[throttled[0] + 1:])


def test_5xx_is_retried_for_reads_only(tmp_path: Path, repo: Path, kube_env: dict,
                                       namespace: str, admin: dict) -> None:
    proxy = _through_proxy(tmp_path, admin, "GET", 503)
    with proxy.running():
        path = kubeconfig(tmp_path / "config", admin, {}, cluster={"server": proxy.url})
        diff = gitops("diff", "deploy", "-n", namespace, "--kubeconfig", str(path), cwd=repo,
                      env=kube_env)
    assert diff.returncode == 1, diff.stderr
    first = proxy.log[0]
    assert first[2] == 503 and (first[0], first[1], 200) in proxy.log[1:]
    proxy = _through_proxy(tmp_path, admin, "PATCH", 500)
    with proxy.running():
        path = kubeconfig(tmp_path / "config", admin, {}, cluster={"server": proxy.url})
        sync = gitops("sync", "deploy", "-n", namespace, "--kubeconfig", str(path), cwd=repo,
                      env=kube_env)
    assert sync.returncode == 2
    failed = [(m, u) for m, u, s in proxy.log if s == 500]
    assert len(failed) == 1
    assert [(m, u) for m, u, _ in proxy.log].count(failed[0]) == 1  # never sent again


def test_server_warnings_are_printed_once(tmp_path: Path, git_env: dict, kube_env: dict,
                                          namespace: str) -> None:
    repo = make_repo(tmp_path / "warn")
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}"},
             "spec": {"containers": [{"name": "c", "image": "nginx:1.27", "resources": {
                 "requests": {"memory": "1m"}}}]}} for i in range(2)]
    write(repo, "deploy/pods.yaml", docs(*pods))
    commit(repo, "pods")
    proc = gitops("diff", "deploy", "-n", namespace, "-v", "6", cwd=repo, env=kube_env)
    assert proc.returncode == 1, proc.stderr
    warning = ('Warning: spec.containers[0].resources.requests[memory]: fractional byte '
               'value "1m" is invalid, must be an integer')
    assert proc.stderr.count(warning) == 1, proc.stderr
    # -v 6 logs requests: method, URL, status, duration; never a credential.
    assert f"/api/v1/namespaces/{namespace}/pods" in proc.stderr
    assert " milliseconds" in proc.stderr and "Bearer" not in proc.stderr


# --- key material and deadlines --------------------------------------------------------


def test_client_key_never_reaches_the_disk_even_after_sigkill(
        tmp_path: Path, repo: Path, kube_env: dict, admin: dict) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    with silent_listener() as port:
        path = kubeconfig(tmp_path / "config", admin, admin["user"], cluster={
            **admin["cluster"], "server": f"https://127.0.0.1:{port}"})
        proc = subprocess.Popen(["kubectl-gitops-diff", "deploy", "--kubeconfig", str(path)],
                                cwd=repo, env={**kube_env, "TMPDIR": str(private_tmp)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(3)  # connected, TLS handshake under way: the key is loaded
        assert proc.poll() is None
        open_files = [os.readlink(f) for f in Path(f"/proc/{proc.pid}/fd").iterdir()]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The process's temp dir was private: whatever it left would be there.
    assert list(private_tmp.rglob("*")) == []
    assert not [f for f in open_files if f.startswith("/") and not f.startswith(
        ("/dev/", "/proc/", "/memfd:")) and "kubectl-gitops" in f], open_files


@pytest.fixture
def big_repo(tmp_path: Path, git_env: dict) -> Path:
    repo = make_repo(tmp_path / "big")
    write(repo, "deploy/cms.yaml", docs(*[configmap(f"cm-{i:03}") for i in range(200)]))
    commit(repo, "200 ConfigMaps")
    return repo


@pytest.mark.parametrize("flags", [["--request-timeout", "2s"], ["--timeout", "5s"]])
def test_sync_against_a_frozen_server_gives_up_in_time(
        tmp_path: Path, big_repo: Path, kube_env: dict, namespace: str, admin: dict,
        flags: list[str]) -> None:
    host, port = admin["cluster"]["server"].removeprefix("https://").rsplit(":", 1)
    relay = FreezingRelay((host, int(port)))
    with relay.running():
        path = kubeconfig(tmp_path / "config", admin, admin["user"], cluster={
            **admin["cluster"], "server": f"https://127.0.0.1:{relay.port}",
            })
        proc = subprocess.Popen(["kubectl-gitops-sync", "deploy", "-n", namespace,
                                 "--kubeconfig", str(path), *flags], cwd=big_repo,
                                env=kube_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        # Freeze once the sync is under way (its applies have started).
        deadline = time.monotonic() + 60
        while relay.connections < 8 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        relay.frozen.set()
        frozen_at = time.monotonic()
        limit = float(flags[1].rstrip("s")) + 10
        try:
            _, err = proc.communicate(timeout=limit + 30)
        finally:
            proc.kill()
        took = time.monotonic() - frozen_at
    assert proc.returncode == 2, err
    assert took < limit, (took, err)
    assert "stopped answering" in err or "ran out" in err, err
