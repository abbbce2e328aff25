"""Reading kubeconfigs as kubectl does, without a cluster: merging, paths,
flags, impersonation headers, exec plugins, proxies, and key material that
never touches the disk."""

from __future__ import annotations

import base64
import os
import ssl
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kubectl_gitops.errors import ClusterError
from kubectl_gitops.kube import credentials, transport
from kubectl_gitops.kube.kubeconfig import Overrides, load
from testing import controlplane


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def kubeconfig(path: Path, *, cluster: str = "c", server: str = "https://one:6443",
               user: str = "u", user_body: str = "token: t1", context: str = "ctx",
               current: str | None = "ctx", extra: str = "") -> Path:
    body = textwrap.indent(textwrap.dedent(user_body), "      ")
    return write(path, f"""\
apiVersion: v1
kind: Config
clusters:
- name: {cluster}
  cluster:
    server: {server}
users:
- name: {user}
  user:
{body}
contexts:
- name: {context}
  context: {{cluster: {cluster}, user: {user}, namespace: ns-{context}}}
{f"current-context: {current}" if current else ""}
{extra}""")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "HTTPS_PROXY", "https_proxy",
                "NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_merged_kubeconfig_first_file_wins_and_missing_files_are_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = kubeconfig(tmp_path / "a" / "config", server="https://from-a:1", context="only-a",
                   current=None)
    b = kubeconfig(tmp_path / "b" / "config", server="https://from-b:1", context="in-b",
                   current="in-b", user="ub", user_body="tokenFile: ../tokens/t")
    write(tmp_path / "tokens" / "t", "token-from-file\n")
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(
        [str(tmp_path / "missing"), str(a), str(b)]))
    conn = load()
    # The context and current-context come from b; the cluster named "c"
    # from a, the first file to define it.
    assert (conn.context, conn.server, conn.namespace) == ("in-b", "https://from-a:1", "ns-in-b")
    # tokenFile is relative to b, the file that names it.
    assert conn.authorization() == "Bearer token-from-file"


def test_explicit_missing_kubeconfig_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"--kubeconfig .*nope: no such file"):
        load(str(tmp_path / "nope"))


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "config", "apiVersion: v1\nclusters:\n- name: c\n  cluster: [\n")
    with pytest.raises(ClusterError) as e:
        load(str(bad))
    assert str(e.value).startswith(f"{bad}:5: not a valid kubeconfig")
    assert "\n" not in str(e.value)


def test_client_key_data_that_is_not_base64(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", user_body="""\
        client-certificate-data: aGVsbG8=
        client-key-data: "not base64!"
        """)
    with pytest.raises(ClusterError, match=r"^user 'u': client-key-data is not valid base64$"):
        load(str(path))


def test_flags_override_context_fields(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config")
    path.write_text(path.read_text().replace("users:", (
        "- name: other\n"
        "  cluster: {server: 'https://other:2', tls-server-name: x.example}\nusers:")))
    conn = load(overrides=Overrides(kubeconfig=str(path), cluster="other", token="flag"))
    assert (conn.server, conn.tls_server_name) == ("https://other:2", "x.example")
    assert conn.authorization() == "Bearer flag"
    # client-go: --server drops the kubeconfig's tls-server-name.
    conn = load(overrides=Overrides(kubeconfig=str(path), cluster="other",
                                    server="https://elsewhere:3"))
    assert (conn.server, conn.tls_server_name) == ("https://elsewhere:3", None)
    with pytest.raises(ClusterError, match="context 'nope' not found"):
        load(overrides=Overrides(kubeconfig=str(path), context="nope"))


def test_impersonation_headers_from_kubeconfig_and_flags(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", user_body="""\
        token: t
        as: jane
        as-groups: [devs, ops]
        as-uid: "42"
        as-user-extra: {scopes.example.com/x: [a, b]}
        """)
    conn = load(str(path))
    assert conn.impersonate == [
        ("Impersonate-User", "jane"), ("Impersonate-Group", "devs"),
        ("Impersonate-Group", "ops"), ("Impersonate-Uid", "42"),
        ("Impersonate-Extra-scopes.example.com%2Fx", "a"),
        ("Impersonate-Extra-scopes.example.com%2Fx", "b")]
    flags = Overrides(kubeconfig=str(path), as_user="bob", as_groups=("g",))
    assert load(overrides=flags).impersonate[:2] == [("Impersonate-User", "bob"),
                                                      ("Impersonate-Group", "g")]
    with pytest.raises(ClusterError, match="needs a user to impersonate"):
        load(overrides=Overrides(kubeconfig=str(kubeconfig(tmp_path / "c3")),
                                 as_groups=("g",)))


def plugin(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "plugin.py"
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return script


def exec_user(command: str, api: str = "client.authentication.k8s.io/v1",
              extra: str = "interactiveMode: Never") -> str:
    return f"""\
        exec:
          apiVersion: {api}
          command: {command}
          installHint: |
            Install it with
            brew install the-plugin
          {extra}
        """


def test_missing_exec_command_shows_install_hint(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", user_body=exec_user("no-such-plugin-xyz"))
    conn = load(str(path))
    with pytest.raises(ClusterError) as e:
        conn.authorization()
    assert str(e.value) == ("user 'u': exec plugin 'no-such-plugin-xyz' not found; "
                            "Install it with brew install the-plugin")


def test_exec_plugin_is_cached_until_expiry_and_sees_exec_info(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    script = plugin(tmp_path, f"""\
        import datetime, json, os
        info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
        with open({str(calls)!r}, "a") as f:
            f.write(info["spec"]["cluster"]["server"] + " " + os.environ["EXTRA"] + "\\n")
        exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
        print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                           "status": {{"token": "tok",
                                       "expirationTimestamp": exp.strftime("%Y-%m-%dT%H:%M:%SZ")}}}}))
        """)
    path = kubeconfig(tmp_path / "config", user_body=exec_user(
        "./plugin.py", extra="provideClusterInfo: true\n  env: [{name: EXTRA, value: x}]\n"
        "  interactiveMode: Never").replace("\n  env", "\n          env").replace(
        "\n  interactiveMode", "\n          interactiveMode"))
    conn = load(str(path))
    assert conn.authorization() == "Bearer tok"
    assert conn.authorization() == "Bearer tok"
    assert calls.read_text().splitlines() == ["https://one:6443 x"]
    time.sleep(2.1)  # past the second-resolution expiry
    conn.authorization()
    assert len(calls.read_text().splitlines()) == 2
    assert conn.credentials.after_unauthorized()  # a 401 drops the cache
    conn.authorization()
    assert len(calls.read_text().splitlines()) == 3


def test_hanging_exec_plugin_is_bounded_by_request_timeout(tmp_path: Path) -> None:
    script = plugin(tmp_path, "import time\ntime.sleep(60)\n")
    path = kubeconfig(tmp_path / "config", user_body=exec_user(str(script)))
    conn = load(overrides=Overrides(kubeconfig=str(path), request_timeout=1))
    start = time.monotonic()
    with pytest.raises(ClusterError, match="did not finish within 1 s"):
        conn.authorization()
    assert time.monotonic() - start < 30


def test_failing_exec_plugin_names_its_last_stderr_line(tmp_path: Path) -> None:
    script = plugin(tmp_path, "import sys\nprint('first', file=sys.stderr)\n"
                              "print('token expired, run login', file=sys.stderr)\nsys.exit(3)\n")
    conn = load(str(kubeconfig(tmp_path / "config", user_body=exec_user(str(script)))))
    with pytest.raises(ClusterError, match="exited with status 3: token expired, run login$"):
        conn.authorization()


def test_v1_exec_needs_interactive_mode(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", user_body=exec_user("x", extra=""))
    with pytest.raises(ClusterError, match=r"interactiveMode must be .*\(required for v1\)"):
        load(str(path))


@pytest.mark.parametrize(("no_proxy", "host", "proxied"), [
    ("", "api.example.com", True),
    ("example.com", "api.example.com", False),
    (".example.com", "example.com", True),
    (".example.com", "api.example.com", False),
    ("10.0.0.0/8", "10.1.2.3", False),
    ("10.0.0.0/8", "11.1.2.3", True),
    ("api.example.com:443", "api.example.com", True),  # port 6443 asked
    ("api.example.com:6443", "api.example.com", False),
    ("*", "anything", False),
    ("", "127.0.0.1", False),  # loopback never goes through a proxy (Go's rule)
    ("", "localhost", False),
])
def test_no_proxy_matching(monkeypatch: pytest.MonkeyPatch, no_proxy: str, host: str,
                           proxied: bool) -> None:
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert transport.proxied(host, 6443) is proxied


def test_client_key_is_loaded_without_any_file(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ca = controlplane.make_ca(tmp_path / "pki", "test")
    crt, key = controlplane.issue_serving_cert(*ca, tmp_path / "pki", "client", ["DNS:x"])
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    ctx = ssl.create_default_context()
    credentials.load_cert_chain(ctx, crt.read_bytes(), key.read_bytes(), "user 'u'")
    assert list(private_tmp.iterdir()) == []
    with pytest.raises(ClusterError, match="cannot use the client certificate and key"):
        credentials.load_cert_chain(ctx, b"junk", b"junk", "user 'u'")


def test_kubeconfig_key_data_round_trip(tmp_path: Path) -> None:
    ca = controlplane.make_ca(tmp_path / "pki", "test")
    crt, key = controlplane.issue_serving_cert(*ca, tmp_path / "pki", "client", ["DNS:x"])
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    path = kubeconfig(tmp_path / "config", user_body=f"""\
        client-certificate-data: {b64(crt)}
        client-key-data: {b64(key)}
        """)
    conn = load(str(path))
    assert conn.credentials.client_cert() == (crt.read_bytes(), key.read_bytes())
    assert stat.S_IMODE(path.stat().st_mode)  # the kubeconfig itself is untouched


def test_cluster_options_hand_every_flag_to_the_command() -> None:
    import click
    from click.testing import CliRunner

    from kubectl_gitops.cli.common import cluster_options

    seen: list[object] = []

    @click.command()
    @cluster_options
    def command(cluster: Overrides, namespace: str | None) -> None:
        seen.append(cluster)

    args = ["--as", "bob", "--as-group", "a", "--as-group", "b", "--request-timeout", "1m30s",
            "-s", "https://x:1", "-v", "6"]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    assert seen == [Overrides(server="https://x:1", as_user="bob", as_groups=("a", "b"),
                              request_timeout=90, verbosity=6)]
    assert seen[0].argv() == ["--server", "https://x:1", "--as", "bob", "--as-group", "a",
                              "--as-group", "b", "--request-timeout", "90s", "-v", "6"]
