"""HTTP to one API server: keep-alive HTTP/1.1 connections over TLS, through
an HTTP CONNECT proxy when the environment or the kubeconfig says so (Go's
transport rules, ``NO_PROXY`` included). What a request means, and whether
to ask again, is :mod:`kubectl_gitops.kube.client`'s business.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import os
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from typing import Any, TypeVar
from urllib.parse import urlsplit

from kubectl_gitops.errors import ClusterError
from kubectl_gitops.kube import credentials
from kubectl_gitops.kube import kubeconfig as kubeconfig_mod

T = TypeVar("T")


def transient(e: BaseException) -> bool:
    """A reset or a dropped connection: a read may simply be asked again. A
    refused connection is not: nothing listens there, and a fleet's
    unreachable target must fail in a moment, not after seconds of retries."""
    if isinstance(e, ConnectionRefusedError):
        return False
    return isinstance(e, (ConnectionError, http.client.RemoteDisconnected,
                          http.client.IncompleteRead, ssl.SSLEOFError))


class Pool:
    """Keep-alive HTTP/1.1 connections to one API server.

    Each request is written with one ``sendall`` (head and body together):
    ``http.client`` and ``urllib3`` write them separately, which costs the
    server an extra wake-up and read per request, and on a busy machine that
    is a third of a small request's time. A connection is taken by one
    thread at a time; there are never more than the threads using the pool.
    Connections go through an HTTP CONNECT proxy when ``proxy-url`` or
    ``HTTPS_PROXY`` (and not ``NO_PROXY``) says so, as Go's transport does.
    """

    def __init__(self, conn: kubeconfig_mod.Connection, *, connect_timeout: float,
                 read_timeout: float | None) -> None:
        url = urlsplit(conn.server)
        self._tls = url.scheme == "https"
        self._host = url.hostname or "localhost"
        self._port = url.port or (443 if self._tls else 80)
        self._prefix = url.path.rstrip("/")  # a server URL may carry a path
        self._host_header = url.netloc.rpartition("@")[2]
        self._connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._conn = conn
        self._proxy = _proxy_for(conn, url.scheme, self._host, self._port)
        self._context: tuple[tuple[bytes, bytes] | None, ssl.SSLContext] | None = None
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()

    def _ssl_context(self, *, check_hostname: bool = True) -> ssl.SSLContext:
        cert = self._conn.credentials.client_cert()  # may run an exec plugin
        with self._lock:
            if self._context is not None and self._context[0] == cert and check_hostname:
                return self._context[1]
            c = self._conn
            # As client-go: a kubeconfig CA replaces the system's roots (and
            # skipping those saves parsing the whole system bundle).
            ctx = ssl.create_default_context(
                cadata=_pem_text(c.ca_data, c.context) if c.ca_data else None)
            if not c.verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            elif not check_hostname:
                ctx.check_hostname = False
            if cert:
                credentials.load_cert_chain(ctx, cert[0], cert[1], c.credentials.where)
            if check_hostname:
                self._context = (cert, ctx)
            return ctx

    def _dial(self, timeout: float) -> socket.socket:
        if self._proxy is None:
            return socket.create_connection((self._host, self._port), timeout=timeout)
        proxy = self._proxy
        try:
            sock = socket.create_connection((proxy.host, proxy.port), timeout=timeout)
            if proxy.tls:  # Go's transport: the proxy gets the cluster's TLS settings too
                sock = self._ssl_context().wrap_socket(sock, server_hostname=proxy.host)
        except OSError as e:
            raise ClusterError(f"cannot reach the proxy {proxy.label}: {_reason(e)}") from e
        try:
            proxy.tunnel(sock, self._host, self._port)
        except BaseException:
            sock.close()
            raise
        return sock

    def _connect(self, timeout: float | None = None, *,
                 check_hostname: bool = True) -> socket.socket:
        """A new connection; dialling and the TLS handshake are bounded by the
        connect timeout and by ``timeout`` (what the request may still take)."""
        limit = self._connect_timeout if timeout is None else min(self._connect_timeout,
                                                                 timeout)
        sock = self._dial(limit)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls:
                name = self._conn.tls_server_name or self._host
                ctx = self._ssl_context(check_hostname=check_hostname)
                if isinstance(sock, ssl.SSLSocket):  # TLS inside an https proxy's TLS
                    sock = _TlsInTls(sock, ctx, name)  # type: ignore[assignment]
                else:
                    sock = ctx.wrap_socket(sock, server_hostname=name)
            sock.settimeout(self.read_timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    def request(self, method: str, path: str, headers: list[tuple[str, str]],
                body: bytes | None, timeout: float | None) -> tuple[int, Message, bytes]:
        lines = [f"{method} {self._prefix}{path} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        message = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        while True:
            with self._lock:
                sock, reused = (self._idle.pop(), True) if self._idle else (None, False)
            if sock is None:
                sock = self._connect(timeout)
            try:
                sock.settimeout(timeout)
                sock.sendall(message)
                resp = http.client.HTTPResponse(sock, method=method)
                resp.begin()
                payload = resp.read()
            except (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError,
                    http.client.RemoteDisconnected):
                sock.close()
                if reused:  # the server closed an idle connection: the request never ran
                    continue
                raise
            except BaseException:
                sock.close()
                raise
            if resp.will_close:
                sock.close()
            else:
                with self._lock:
                    self._idle.append(sock)
            return resp.status, resp.msg, payload

    def describe(self, e: BaseException) -> str:
        """One line for a failure to talk to the server, naming what failed."""
        where = f"the cluster at {self._conn.server}"
        if self._proxy is not None:
            where += f" (through the proxy {self._proxy.label})"
        if isinstance(e, ssl.SSLCertVerificationError) and e.verify_code == 62:
            name = self._conn.tls_server_name or self._host
            names = self._names_on_certificate()
            valid = f"valid for {', '.join(names)}" if names else "not valid for it"
            return (f"cannot reach {where}: its certificate does not name {name!r} "
                    f"({valid}); set tls-server-name to one of them or fix the server URL")
        return f"cannot reach {where}: {_reason(e)}"

    def _names_on_certificate(self) -> list[str]:
        """The names the server's (trusted) certificate holds, for a message."""
        try:
            sock = self._connect(check_hostname=False)
        except (OSError, ClusterError):
            return []
        try:
            cert = sock.getpeercert() if hasattr(sock, "getpeercert") else None
        finally:
            sock.close()
        return [v for _, v in (cert or {}).get("subjectAltName", ())]

    def stream(self, path: str, headers: list[tuple[str, str]], *, read_timeout: float) \
            -> tuple[socket.socket, http.client.HTTPResponse]:
        """A GET on a connection of its own, its response left to be read."""
        lines = [f"GET {self._prefix}{path} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{k}: {v}" for k, v in headers]
        sock = self._connect()
        try:
            sock.settimeout(read_timeout)
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            resp = http.client.HTTPResponse(sock, method="GET")
            resp.begin()
        except BaseException:
            sock.close()
            raise
        return sock, resp

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()


def _pem_text(data: bytes, context: str) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise ClusterError(f"context {context!r}: the certificate authority is not PEM "
                           "text") from None


@dataclass(frozen=True)
class _Proxy:
    host: str
    port: int
    label: str  # the proxy URL without credentials, for messages
    authorization: str | None
    tls: bool = False

    def tunnel(self, sock: socket.socket, host: str, port: int) -> None:
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if self.authorization:
            head += f"Proxy-Authorization: {self.authorization}\r\n"
        sock.sendall((head + "\r\n").encode("latin-1"))
        # Nothing follows the proxy's answer until we speak TLS, so the
        # response's buffered reader cannot swallow the server's bytes.
        resp = http.client.HTTPResponse(sock, method="CONNECT")
        resp.begin()
        if resp.status != 200:
            raise ClusterError(f"the proxy {self.label} refused to connect to {target}: "
                               f"{resp.status} {resp.reason}")


def _proxy_for(conn: kubeconfig_mod.Connection, scheme: str, host: str,
               port: int) -> _Proxy | None:
    """``proxy-url``, else the environment's proxy for this URL, as Go decides."""
    url = conn.proxy_url
    if not url:
        names = ("HTTPS_PROXY", "https_proxy") if scheme == "https" else \
            ("HTTP_PROXY", "http_proxy")
        url = next((os.environ[n] for n in names if os.environ.get(n)), None)
        if not url or not proxied(host, port):
            return None
        if "://" not in url:
            url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ClusterError(f"proxy {parts.scheme}://{parts.hostname}: only http:// and "
                           "https:// proxies (HTTP CONNECT) are supported")
    auth = None
    if parts.username is not None:
        from urllib.parse import unquote  # noqa: PLC0415

        raw = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = "Basic " + base64.b64encode(raw).decode()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    label = f"{parts.scheme}://{parts.hostname}:{port}"
    return _Proxy(parts.hostname or "", port, label, auth, tls=parts.scheme == "https")


class _TlsInTls:
    """The API server's TLS spoken inside the TLS connection to an https proxy
    (``ssl`` cannot wrap an SSLSocket, so the inner session runs on memory
    buffers). Offers what the pool uses of a socket."""

    def __init__(self, outer: ssl.SSLSocket, ctx: ssl.SSLContext, name: str) -> None:
        self._outer = outer
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = ctx.wrap_bio(self._incoming, self._outgoing, server_hostname=name)
        self._pump(self._tls.do_handshake)

    def _pump(self, step: Callable[[], T]) -> T:
        while True:
            try:
                result = step()
            except ssl.SSLWantReadError:
                self._flush()
                data = self._outer.recv(65536)
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._outer.sendall(data)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._pump(lambda: self._tls.write(view)):]

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        try:
            return int(self._pump(lambda: self._tls.read(nbytes or len(buffer), buffer)))
        except ssl.SSLZeroReturnError:
            return 0

    def makefile(self, mode: str = "rb", buffering: int = -1) -> Any:
        import io  # noqa: PLC0415 - only behind an https proxy

        sock = self

        class Raw(io.RawIOBase):
            def readable(self) -> bool:
                return True

            def readinto(self, b: Any) -> int:
                return sock.recv_into(b)

        return io.BufferedReader(Raw())

    def getpeercert(self) -> Any:
        return self._tls.getpeercert()

    def settimeout(self, value: float | None) -> None:
        self._outer.settimeout(value)

    def close(self) -> None:
        self._outer.close()


def proxied(host: str, port: int) -> bool:
    """Go's ``httpproxy``: never loopback; NO_PROXY lists hosts, domains
    (``example.com`` and ``.example.com``), IPs and CIDRs, each with an optional
    port, or ``*``."""
    if host == "localhost":
        return False
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and ip.is_loopback:
        return False
    no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return False
        if "/" in entry:
            try:
                if ip is not None and ip in ipaddress.ip_network(entry, strict=False):
                    return False
            except ValueError:
                pass
            continue
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and entry_port != str(port):
            continue
        name = name.strip("[]")
        if ip is not None:
            try:
                if ip == ipaddress.ip_address(name):
                    return False
            except ValueError:
                pass
            continue
        host_l = host.lower()
        if name.startswith("."):
            if host_l.endswith(name):
                return False
        elif host_l == name or host_l.endswith("." + name):
            return False
    return True


def _reason(e: BaseException) -> str:
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message}"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve the host name: {e.strerror}"
    return str(getattr(e, "strerror", None) or e) or type(e).__name__
