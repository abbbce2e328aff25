"""Who the requests are sent as: tokens, client certificates, exec plugins, OIDC.

Semantics follow client-go: a token, token file, client certificate or
basic login in the kubeconfig is used as is; otherwise an exec credential
plugin (``client.authentication.k8s.io/v1`` or ``v1beta1``) is run and its
result cached until its ``expirationTimestamp`` (and re-run once when the
server answers 401), or the ``oidc`` auth provider's id-token is sent and
refreshed at the issuer's token endpoint once it has expired.

Key material never touches a file system: it is handed to ``ssl`` through
an anonymous in-memory file (``memfd_create``), which the kernel frees with
the process however it ends, SIGKILL included.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubectl_gitops.errors import ClusterError

EXEC_APIS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
# client-go treats an id-token that expires within this many seconds as expired.
OIDC_EXPIRY_SKEW = 10.0


class CredentialError(ClusterError):
    """A credential could not be obtained (a plugin failed, a refresh was refused)."""


@dataclass
class Issued:
    """What a plugin or provider handed out, and until when."""

    token: str | None = None
    cert_pem: bytes | None = field(default=None, repr=False)
    key_pem: bytes | None = field(default=None, repr=False)
    expires: float | None = None  # time.time(); None: for the rest of the run

    def fresh(self) -> bool:
        return self.expires is None or time.time() < self.expires


@dataclass
class Credentials:
    """One user's login. Thread-safe: the workers of one run share it."""

    where: str  # "user 'name'", for messages
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    basic: tuple[str, str] | None = field(default=None, repr=False)
    cert_pem: bytes | None = field(default=None, repr=False)
    key_pem: bytes | None = field(default=None, repr=False)
    provider: ExecPlugin | OidcProvider | None = None
    _file_token: tuple[tuple[int, int, int], str] | None = field(default=None, repr=False)

    def _static(self) -> bool:
        """client-go runs no plugin when the kubeconfig already logs in."""
        return bool(self.token or self.token_file or self.basic or self.cert_pem)

    def authorization(self) -> str | None:
        if self.token_file:
            return f"Bearer {self._read_token_file()}"
        if self.token:
            return f"Bearer {self.token}"
        if self.basic:
            raw = f"{self.basic[0]}:{self.basic[1]}".encode()
            return f"Basic {base64.b64encode(raw).decode()}"
        if self.provider is not None:
            token = self.provider.issued().token
            return f"Bearer {token}" if token else None
        return None

    def client_cert(self) -> tuple[bytes, bytes] | None:
        """(certificate, key) PEM to present, if any."""
        if self.cert_pem and self.key_pem:
            return self.cert_pem, self.key_pem
        if self.provider is not None and not self._static():
            got = self.provider.issued()
            if got.cert_pem and got.key_pem:
                return got.cert_pem, got.key_pem
        return None

    def after_unauthorized(self) -> bool:
        """A 401: drop what is cached; True when asking again may succeed."""
        if self.token_file:
            self._file_token = None  # a rotated token is picked up now
            return True
        if self.provider is not None and not self._static():
            return self.provider.invalidate()
        return False

    def _read_token_file(self) -> str:
        # A projected token is rotated by swapping a symlink: its stat changes.
        path = str(self.token_file)
        try:
            st = os.stat(path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._file_token is None or self._file_token[0] != key:
                self._file_token = (key, Path(path).read_text().strip())
        except OSError as e:
            raise CredentialError(f"{self.where}: cannot read the token file {path}: "
                                  f"{e.strerror or e}") from e
        return self._file_token[1]


def load_cert_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes, where: str) -> None:
    """Give ``ctx`` a certificate and key without writing them to any file system."""
    try:
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("kubectl-gitops-client-cert", os.MFD_CLOEXEC)
            try:
                _write_all(fd, cert_pem.rstrip(b"\n") + b"\n" + key_pem)
                ctx.load_cert_chain(f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)
            return
        # Elsewhere: a private directory, the file gone as soon as ssl has read it.
        import tempfile  # noqa: PLC0415 - rarely needed

        with tempfile.TemporaryDirectory(prefix="kubectl-gitops-") as private:
            path = os.path.join(private, "client.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, cert_pem.rstrip(b"\n") + b"\n" + key_pem)
            finally:
                os.close(fd)
            ctx.load_cert_chain(path)
    except ssl.SSLError as e:
        raise CredentialError(f"{where}: cannot use the client certificate and key: "
                              f"{e.reason or e.strerror or 'not a PEM certificate and key'}"
                              ) from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# --- exec credential plugins ---------------------------------------------------------


class ExecPlugin:
    """A ``users[].user.exec`` credential plugin, run as client-go runs it."""

    def __init__(self, *, command: str, args: list[str], env: dict[str, str],
                 api_version: str, install_hint: str, cluster: dict[str, Any] | None,
                 interactive_mode: str, where: str, timeout: float) -> None:
        self.command = command
        self.args = args
        self.env = env
        self.api_version = api_version
        self.install_hint = install_hint
        self.cluster = cluster
        self.interactive_mode = interactive_mode
        self.where = where
        self.timeout = timeout
        self._cached: Issued | None = None
        self._lock = threading.Lock()
        # A failed run, and until when it stands: the threads of one command
        # (discovery, the main thread, who-am-I) get it at once instead of
        # each running (and waiting out) the plugin again; a long-lived
        # process (the agent) runs it again after that.
        self._failed: tuple[CredentialError, float] | None = None

    @classmethod
    def from_config(cls, cfg: dict[str, Any], *, where: str, base: Path, timeout: float,
                    cluster: dict[str, Any]) -> ExecPlugin:
        api = cfg.get("apiVersion")
        if api not in EXEC_APIS:
            raise CredentialError(f"{where}: exec apiVersion {api!r} is not supported "
                                  f"(use {' or '.join(EXEC_APIS)})")
        command = str(cfg.get("command") or "")
        if not command:
            raise CredentialError(f"{where}: exec has no command")
        if os.sep in command and not os.path.isabs(command):
            command = str(base / command)  # client-go: relative to the kubeconfig
        mode = cfg.get("interactiveMode") or ("" if api.endswith("/v1") else "IfAvailable")
        if mode not in ("Never", "IfAvailable", "Always"):
            raise CredentialError(f"{where}: exec interactiveMode must be Never, IfAvailable "
                                  f"or Always{' (required for v1)' if not mode else ''}")
        env = {}
        for item in cfg.get("env") or []:
            if not isinstance(item, dict) or "name" not in item:
                raise CredentialError(f"{where}: exec env entries need name and value")
            env[str(item["name"])] = str(item.get("value", ""))
        return cls(command=command, args=[str(a) for a in cfg.get("args") or []], env=env,
                   api_version=api, install_hint=str(cfg.get("installHint") or ""),
                   cluster=cluster if cfg.get("provideClusterInfo") else None,
                   interactive_mode=mode, where=where, timeout=timeout)

    def issued(self) -> Issued:
        with self._lock:
            if self._failed is not None and time.monotonic() < self._failed[1]:
                raise self._failed[0]
            if self._cached is None or not self._cached.fresh():
                try:
                    self._cached = self._run()
                except CredentialError as e:
                    self._failed = (e, time.monotonic() + max(self.timeout, 1.0))
                    raise
                self._failed = None
            return self._cached

    def invalidate(self) -> bool:
        with self._lock:
            self._cached = None
        return True

    def _label(self) -> str:
        return f"{self.where}: exec plugin {self.command!r}"

    def _run(self) -> Issued:
        interactive = self.interactive_mode != "Never" and sys.stdin.isatty()
        if self.interactive_mode == "Always" and not interactive:
            raise CredentialError(f"{self._label()} needs an interactive terminal "
                                  "(interactiveMode: Always) and standard input is not one")
        spec: dict[str, Any] = {"interactive": interactive}
        if self.cluster is not None:
            spec["cluster"] = self.cluster
        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(
            {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec})}
        out, err = self._spawn(env, interactive)
        if err:
            sys.stderr.write(err)  # as client-go: the plugin's messages reach the user
        return self._parse(out)

    def _spawn(self, env: dict[str, str], interactive: bool) -> tuple[str, str]:
        try:
            # Its own session (when it need not read the terminal), so that a
            # hanging plugin is killed with everything it started.
            proc = subprocess.Popen([self.command, *self.args], env=env,
                                    stdin=None if interactive else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE,
                                    stderr=None if interactive else subprocess.PIPE,
                                    start_new_session=not interactive, text=True)
        except FileNotFoundError:
            hint = " ".join(self.install_hint.split())
            raise CredentialError(f"{self._label()} not found"
                                  + (f"; {hint}" if hint else "; install it or fix "
                                     "users[].user.exec.command")) from None
        except OSError as e:
            raise CredentialError(f"{self._label()} cannot run: {e.strerror or e}") from None
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill(proc, interactive)
            raise CredentialError(f"{self._label()} did not finish within {self.timeout:g} s "
                                  "(--request-timeout bounds it)") from None
        except BaseException:
            _kill(proc, interactive)
            raise
        if proc.returncode != 0:
            last = (err or "").strip().splitlines()[-1:] or ["(nothing on stderr)"]
            raise CredentialError(f"{self._label()} exited with status {proc.returncode}: "
                                  f"{last[0]}")
        return out, err or ""

    def _parse(self, out: str) -> Issued:
        try:
            doc = json.loads(out)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        except ValueError:
            raise CredentialError(f"{self._label()} printed no ExecCredential JSON") from None
        if doc.get("kind") != "ExecCredential" or doc.get("apiVersion") != self.api_version:
            raise CredentialError(f"{self._label()} returned {doc.get('apiVersion')!r} "
                                  f"{doc.get('kind')!r}; expected an ExecCredential of "
                                  f"{self.api_version}")
        status = doc.get("status") or {}
        token = status.get("token") or None
        cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
        if bool(cert) != bool(key):
            raise CredentialError(f"{self._label()} returned a client certificate without "
                                  "its key, or a key without its certificate")
        if not token and not cert:
            raise CredentialError(f"{self._label()} returned neither a token nor a "
                                  "client certificate")
        expires = None
        if status.get("expirationTimestamp"):
            try:
                expires = dt.datetime.fromisoformat(
                    str(status["expirationTimestamp"]).replace("Z", "+00:00")).timestamp()
            except ValueError:
                raise CredentialError(f"{self._label()}: expirationTimestamp "
                                      f"{status['expirationTimestamp']!r} is not RFC 3339"
                                      ) from None
        return Issued(token=token, cert_pem=cert.encode() if cert else None,
                      key_pem=key.encode() if key else None, expires=expires)


def _kill(proc: subprocess.Popen[str], interactive: bool) -> None:
    try:
        if interactive:
            proc.kill()
        else:
            os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# --- the oidc auth provider ----------------------------------------------------------


class OidcProvider:
    """``auth-provider: oidc``: the id-token, refreshed with the refresh token
    at the issuer's token endpoint when it has expired; the new tokens are
    written back to the kubeconfig that holds the user, as client-go does."""

    def __init__(self, config: dict[str, Any], *, where: str, file: Path | None,
                 user_name: str, timeout: float) -> None:
        self.config = config
        self.where = where
        self.file = file
        self.user_name = user_name
        self.timeout = timeout
        self._lock = threading.Lock()

    def issued(self) -> Issued:
        with self._lock:
            token = self.config.get("id-token")
            if token and not _jwt_expired(str(token)):
                return Issued(token=str(token))
            return Issued(token=self._refresh())

    def invalidate(self) -> bool:
        return False  # as client-go: a 401 with a valid-looking id-token is final

    def _refresh(self) -> str:
        c = self.config
        if not c.get("refresh-token"):
            raise CredentialError(f"{self.where}: the oidc id-token has expired (or is "
                                  "missing) and there is no refresh-token; log in again")
        issuer = str(c.get("idp-issuer-url") or "").rstrip("/")
        if not issuer:
            raise CredentialError(f"{self.where}: oidc refresh needs idp-issuer-url")
        discovery = self._http(f"{issuer}/.well-known/openid-configuration", None)
        endpoint = discovery.get("token_endpoint")
        if not endpoint:
            raise CredentialError(f"{self.where}: {issuer} names no token_endpoint")
        reply = self._http(str(endpoint), {"grant_type": "refresh_token",
                                           "refresh_token": str(c["refresh-token"])})
        id_token = reply.get("id_token")
        if not id_token:
            raise CredentialError(f"{self.where}: {endpoint} returned no id_token")
        c["id-token"] = id_token
        if reply.get("refresh_token"):
            c["refresh-token"] = reply["refresh_token"]
        self._persist()
        return str(id_token)

    def _ssl(self) -> ssl.SSLContext:
        data = self.config.get("idp-certificate-authority-data")
        if data:
            return ssl.create_default_context(cadata=base64.b64decode(str(data)).decode())
        return ssl.create_default_context(cafile=self.config.get("idp-certificate-authority"))

    def _http(self, url: str, form: dict[str, str] | None) -> dict[str, Any]:
        import urllib.error  # noqa: PLC0415 - only when a token must be refreshed
        import urllib.parse  # noqa: PLC0415
        import urllib.request  # noqa: PLC0415

        headers = {"Accept": "application/json"}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            ident = ":".join(urllib.parse.quote(str(self.config.get(k) or ""), safe="")
                             for k in ("client-id", "client-secret"))
            headers["Authorization"] = f"Basic {base64.b64encode(ident.encode()).decode()}"
        req = urllib.request.Request(url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl()) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace").strip().splitlines()[:1]
            raise CredentialError(f"{self.where}: oidc refresh at {url} failed: HTTP {e.code}"
                                  + (f": {detail[0][:200]}" if detail else "")) from None
        except (OSError, ValueError) as e:
            raise CredentialError(f"{self.where}: oidc refresh at {url} failed: "
                                  f"{getattr(e, 'reason', None) or e}") from None

    def _persist(self) -> None:
        """Write the new tokens where the user is defined (client-go's persister)."""
        if self.file is None:
            return
        import yaml  # noqa: PLC0415

        path = Path(self.file)
        try:
            doc = yaml.safe_load(path.read_text()) or {}
            for entry in doc.get("users") or []:
                if entry.get("name") == self.user_name:
                    cfg = entry["user"]["auth-provider"].setdefault("config", {})
                    cfg["id-token"] = self.config["id-token"]
                    if self.config.get("refresh-token"):
                        cfg["refresh-token"] = self.config["refresh-token"]
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         path.stat().st_mode & 0o777)
            with os.fdopen(fd, "w") as f:
                yaml.safe_dump(doc, f, sort_keys=False)
            os.replace(tmp, path)
        except (OSError, KeyError, TypeError, AttributeError):
            # client-go carries on with the refreshed token too; only the next
            # run pays for another refresh.
            pass


def _jwt_expired(token: str) -> bool:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return time.time() + OIDC_EXPIRY_SKEW > float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return True  # not a JWT with an expiry: only a refresh can help
