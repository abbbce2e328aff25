"""``/healthz``, ``/readyz``, ``/metrics`` and ``POST /hooks/git``.

The webhook takes the shared secret as ``Authorization: Bearer <secret>``,
``X-Gitops-Secret`` or GitHub's ``X-Hub-Signature-256`` (an HMAC of the
body); it only triggers a fetch, so its body is never trusted for anything.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubectl_gitops.agent.runner import Agent

log = logging.getLogger("kubectl-gitops.agent")
MAX_BODY = 1 << 20


def authorized(secret: bytes, headers: dict[str, str], body: bytes) -> bool:
    token = headers.get("x-gitops-secret") or \
        headers.get("authorization", "").removeprefix("Bearer ").strip()
    if token and hmac.compare_digest(token.encode(), secret):
        return True
    sig = headers.get("x-hub-signature-256", "")
    want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return bool(sig) and hmac.compare_digest(sig, want)


def serve(agent: Agent, address: str, port: int, secret: bytes | None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:
            log.debug("http: " + fmt, *args)

        def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if self.path == "/healthz":
                alive = not agent.stopping.is_set()
                self._send(200 if alive else 503, b"ok\n" if alive else b"stopping\n")
            elif self.path == "/readyz":
                ok = agent.is_ready()
                self._send(200 if ok else 503, b"ok\n" if ok else b"not ready\n")
            elif self.path == "/metrics":
                self._send(200, agent.metrics.text(), "text/plain; version=0.0.4")
            else:
                self._send(404, b"not found\n")

        def do_POST(self) -> None:  # noqa: N802
            if self.path.split("?")[0] != "/hooks/git":
                self._send(404, b"not found\n")
                return
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
            body = self.rfile.read(length) if length else b""
            if secret is None:
                self._send(404, b"the webhook is off (no --webhook-secret-file)\n")
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            if not authorized(secret, headers, body):
                log.warning("webhook: refused a request without the shared secret")
                self._send(401, b"unauthorized\n")
                return
            agent.trigger_fetch()
            self._send(202, b"fetching\n")

    httpd = ThreadingHTTPServer((address, port), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    return httpd
