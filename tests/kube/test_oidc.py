"""OIDC and tls-server-name against a control plane of their own: the API
server trusts a real small OIDC issuer this module serves over HTTPS
(discovery, JWKS, token endpoint) and serves a second certificate, for one
SNI name only. Each identity is compared with the real ``kubectl auth whoami``."""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kubectl_gitops.errors import ClusterError
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides
from testing import controlplane
from testing.controlplane import ControlPlane, free_ports
from testing.kube import kubectl

AUDIENCE = "kubectl-gitops-test"
SNI_NAME = "sni.gitops.test"

pytestmark = pytest.mark.cluster


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    """A minimal OpenID provider: discovery, JWKS and a refresh-token grant."""

    def __init__(self, directory: Path) -> None:
        ca = controlplane.make_ca(directory, "oidc-test-ca")
        self.ca_pem = ca[0].read_text()
        crt, key = controlplane.issue_serving_cert(*ca, directory, "issuer", ["IP:127.0.0.1"])
        self.port = free_ports(1)[0]
        self.url = f"https://127.0.0.1:{self.port}"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.refresh_token = "refresh-1"
        self.refreshes: list[dict[str, str]] = []
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, doc: dict[str, Any], status: int = 200) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    self._json({"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks",
                                "token_endpoint": f"{issuer.url}/token",
                                "authorization_endpoint": f"{issuer.url}/auth",
                                "response_types_supported": ["id_token"],
                                "subject_types_supported": ["public"],
                                "id_token_signing_alg_values_supported": ["RS256"]})
                elif self.path == "/jwks":
                    self._json({"keys": [issuer.jwk()]})
                else:
                    self._json({"error": "not_found"}, 404)

            def do_POST(self) -> None:
                form = dict(urllib.parse.parse_qsl(self.rfile.read(
                    int(self.headers.get("Content-Length") or 0)).decode()))
                client = base64.b64decode(self.headers.get("Authorization", "Basic ")[6:] or b"")
                ok = (self.path == "/token" and form.get("grant_type") == "refresh_token"
                      and form.get("refresh_token") == issuer.refresh_token
                      and client == b"gitops:s3cret")
                issuer.refreshes.append(form)
                if not ok:
                    self._json({"error": "invalid_grant"}, 400)
                    return
                issuer.refresh_token = f"refresh-{len(issuer.refreshes) + 1}"
                self._json({"id_token": issuer.token("alice"), "token_type": "Bearer",
                            "refresh_token": issuer.refresh_token, "expires_in": 600})

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(crt, key)
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def jwk(self) -> dict[str, str]:
        numbers = self.key.public_key().public_numbers()
        size = (numbers.n.bit_length() + 7) // 8
        return {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k1",
                "n": _b64url(numbers.n.to_bytes(size, "big")),
                "e": _b64url(numbers.e.to_bytes(3, "big"))}

    def token(self, subject: str, lifetime: float = 600) -> str:
        now = int(time.time())
        head = _b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "k1"}).encode())
        claims = _b64url(json.dumps({"iss": self.url, "aud": AUDIENCE, "sub": subject,
                                     "iat": now - 60, "nbf": now - 60,
                                     "exp": int(now + lifetime)}).encode())
        signature = self.key.sign(f"{head}.{claims}".encode(), padding.PKCS1v15(),
                                  hashes.SHA256())
        return f"{head}.{claims}.{_b64url(signature)}"

    def authentication_config(self) -> str:
        return yaml.safe_dump({
            "apiVersion": "apiserver.config.k8s.io/v1", "kind": "AuthenticationConfiguration",
            "jwt": [{"issuer": {"url": self.url, "audiences": [AUDIENCE],
                                "certificateAuthority": self.ca_pem},
                     "claimMappings": {"username": {"claim": "sub", "prefix": "oidc:"}}}]})

    def __enter__(self) -> Issuer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Issuer,
                                                                      Path]]:
    """(control plane, issuer, the CA of the SNI certificate)."""
    d = tmp_path_factory.mktemp("oidc-plane")
    with Issuer(d / "issuer") as issuer:
        (d / "authn.yaml").write_text(issuer.authentication_config())
        sni_ca = controlplane.make_ca(d / "sni", "sni-test-ca")
        crt, key = controlplane.issue_serving_cert(*sni_ca, d / "sni", "sni",
                                                   [f"DNS:{SNI_NAME}"])
        with ControlPlane(apiserver_args=[f"--authentication-config={d / 'authn.yaml'}",
                                          f"--tls-sni-cert-key={crt},{key}"]) as cp:
            yield cp, issuer, sni_ca[0]


def write_kubeconfig(path: Path, cp: ControlPlane, user: dict[str, Any],
                     cluster: dict[str, Any] | None = None) -> Path:
    admin = yaml.safe_load(cp.kubeconfig.read_text())
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "c", "cluster": cluster or admin["clusters"][0]["cluster"]}],
           "users": [{"name": "u", "user": user or admin["users"][0]["user"]}],
           "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
           "current-context": "x"}
    path.write_text(yaml.safe_dump(doc))
    return path


def whoami_kubectl(path: Path, env: dict[str, str]) -> str:
    out = kubectl("auth", "whoami", "-o", "json", env={**env, "KUBECONFIG": str(path)}).stdout
    return json.loads(out)["status"]["userInfo"]["username"]


def oidc_user(issuer: Issuer, id_token: str) -> dict[str, Any]:
    return {"auth-provider": {"name": "oidc", "config": {
        "client-id": "gitops", "client-secret": "s3cret", "id-token": id_token,
        "refresh-token": issuer.refresh_token, "idp-issuer-url": issuer.url,
        "idp-certificate-authority-data": base64.b64encode(issuer.ca_pem.encode()).decode()}}}


def eventually_authenticated(kube: Kube, timeout: float = 30) -> str:
    # The API server fetches the issuer's keys in the background after start.
    deadline = time.monotonic() + timeout
    while True:
        who = kube.whoami()
        if who or time.monotonic() > deadline:
            return who
        time.sleep(0.5)


def test_oidc_id_token_and_refresh(tmp_path: Path, plane: Any, kube_env: dict) -> None:
    cp, issuer, _ = plane
    valid = write_kubeconfig(tmp_path / "valid", cp, oidc_user(issuer, issuer.token("alice")))
    assert eventually_authenticated(Kube(Overrides(kubeconfig=str(valid)))) == "oidc:alice"
    assert whoami_kubectl(valid, kube_env) == "oidc:alice"
    assert issuer.refreshes == []

    expired = write_kubeconfig(tmp_path / "expired", cp,
                               oidc_user(issuer, issuer.token("alice", lifetime=-120)))
    assert Kube(Overrides(kubeconfig=str(expired))).whoami() == "oidc:alice"
    assert len(issuer.refreshes) == 1
    # The refreshed tokens are written back, as client-go does, so kubectl
    # (reading the same file) needs no refresh of its own.
    saved = yaml.safe_load(expired.read_text())["users"][0]["user"]["auth-provider"]["config"]
    assert saved["refresh-token"] == issuer.refresh_token == "refresh-2"
    assert whoami_kubectl(expired, kube_env) == "oidc:alice"
    assert len(issuer.refreshes) == 1

    revoked = write_kubeconfig(tmp_path / "revoked", cp,
                               oidc_user(issuer, issuer.token("alice", lifetime=-120)))
    issuer.refresh_token = "something-else"
    with pytest.raises(ClusterError, match=r"oidc refresh at .*/token failed: HTTP 400"):
        Kube(Overrides(kubeconfig=str(revoked))).whoami()  # whoami swallows refusals, not a failed login
    del revoked


def test_tls_server_name_against_an_sni_certificate(tmp_path: Path, plane: Any,
                                                    kube_env: dict) -> None:
    cp, _, sni_ca = plane
    admin = yaml.safe_load(cp.kubeconfig.read_text())
    cluster = {"server": cp.server,
               "certificate-authority-data": base64.b64encode(sni_ca.read_bytes()).decode()}
    named = write_kubeconfig(tmp_path / "named", cp, admin["users"][0]["user"],
                             {**cluster, "tls-server-name": SNI_NAME})
    assert whoami_kubectl(named, kube_env) == "admin"
    assert Kube(Overrides(kubeconfig=str(named))).whoami() == "admin"
    # Without the name the server presents its default certificate, which
    # the SNI certificate's CA did not sign.
    plain = write_kubeconfig(tmp_path / "plain", cp, admin["users"][0]["user"], cluster)
    with pytest.raises(ClusterError, match="certificate verify failed"):
        Kube(Overrides(kubeconfig=str(plain))).request("GET", "/version")
