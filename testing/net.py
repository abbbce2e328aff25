"""Small real network components for connection tests: an HTTP CONNECT proxy,
a TCP relay that can freeze, a reverse proxy that throttles once, and a
listener that never answers. Each runs in threads on loopback."""

from __future__ import annotations

import http.client
import http.server
import select
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit


def _pipe(a: socket.socket, b: socket.socket, frozen: Callable[[], bool]) -> None:
    """Relay bytes both ways until one side closes (or, frozen, hold them)."""
    socks = [a, b]
    try:
        while True:
            ready, _, _ = select.select(socks, [], [], 0.2)
            if frozen():
                continue  # keep both ends open, forward nothing: a hung server
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                while isinstance(s, ssl.SSLSocket) and s.pending():
                    data += s.recv(s.pending())  # what select cannot see
                (b if s is a else a).sendall(data)
    except OSError:
        return
    finally:
        a.close()
        b.close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def _serving(server: socketserver.BaseServer) -> Iterator[None]:
    """Serve in a thread for the ``with`` block, then shut down and close."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


class ConnectProxy:
    """An HTTP CONNECT proxy. ``hosts`` maps names to addresses (its own DNS),
    ``tunnels`` lists every target it connected, in order."""

    def __init__(self, hosts: dict[str, str] | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        """``tls``: a server context, to be an https:// proxy."""
        self.hosts = hosts or {}
        self.tunnels: list[str] = []
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock = self.request
                if tls is not None:
                    try:
                        sock = tls.wrap_socket(sock, server_side=True)
                    except (OSError, ssl.SSLError):
                        return
                proxy._handle(sock)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def _handle(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        host, _, port = target.rpartition(":")
        self.tunnels.append(target)
        try:
            upstream = socket.create_connection((self.hosts.get(host, host), int(port)), 5)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        _pipe(client, upstream, lambda: False)

    @contextmanager
    def running(self) -> Iterator[ConnectProxy]:
        with _serving(self._server):
            yield self


class FreezingRelay:
    """A TCP relay to ``target``; ``freeze()`` stops all forwarding (the
    connections stay open), as an API server whose process is stopped."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.frozen = threading.Event()
        self.connections = 0
        relay = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                relay.connections += 1
                upstream = socket.create_connection(target, 5)
                _pipe(self.request, upstream, relay.frozen.is_set)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]

    @contextmanager
    def running(self) -> Iterator[FreezingRelay]:
        with _serving(self._server):
            try:
                yield self
            finally:
                self.frozen.clear()  # release held connections before shutting down


class ThrottlingReverseProxy:
    """Plain HTTP in front of an HTTPS API server (as ``kubectl proxy``): the
    first request whose method is ``throttle_method`` gets ``status`` (429
    with ``Retry-After: 1``); everything else is passed through with ``ctx``'s
    client certificate. ``log`` records (method, path, status)."""

    def __init__(self, server: str, ctx: ssl.SSLContext, throttle_method: str,
                 status: int = 429) -> None:
        self.log: list[tuple[str, str, int]] = []
        url = urlsplit(server)
        proxy = self
        throttled = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == throttle_method and not throttled.is_set():
                    throttled.set()
                    proxy.log.append((self.command, self.path, status))
                    self.send_response(status)
                    if status == 429:
                        self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                up = http.client.HTTPSConnection(url.hostname, url.port, context=ctx, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection")}
                up.request(self.command, self.path, body=body or None, headers=headers)
                resp = up.getresponse()
                data = resp.read()
                proxy.log.append((self.command, self.path, resp.status))
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                up.close()

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[ThrottlingReverseProxy]:
        with _serving(self._server):
            yield self


@contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()
