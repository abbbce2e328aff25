"""Running the agent as a subprocess against the real control plane."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from testing.kube import get, kubectl

T = TypeVar("T")
SECRET = "hook-s3cret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProc:
    """``kubectl gitops agent`` with its log in a file and its HTTP port known."""

    def __init__(self, tmp: Path, env: dict[str, str], *args: str, tag: str = "a") -> None:
        self.port = free_port()
        self.log = tmp / f"agent-{tag}-{self.port}.log"
        secret = tmp / "hook-secret"
        secret.write_text(SECRET + "\n")
        self.args = ["kubectl", "gitops", "agent", "--listen", f"127.0.0.1:{self.port}",
                     "--cache-dir", str(tmp / f"cache-{tag}"), "--webhook-secret-file",
                     str(secret), "--debounce", "0.2s", *args]
        self.env = env
        self.killed = False  # by kill(), not restarted since: no clean exit to expect
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as out:
            return subprocess.Popen(self.args, env=self.env, stdout=out, stderr=out,
                                    start_new_session=True)

    def restart(self) -> None:
        self.killed = False
        self.proc = self._start()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def http(self, path: str, *, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     headers=headers or {}, method="POST" if data else "GET")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples that carry ``labels``."""
        _, text = self.http("/metrics")
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_ready(self, bound: float = 30) -> None:
        wait_for(lambda: self.http("/readyz")[0] == 200 or self._dead(), bound, "readyz")
        assert self.proc.poll() is None, self.text()

    def _dead(self) -> bool:
        return self.proc.poll() is not None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        self.proc.wait(30)
        self.killed = True

    def stop(self) -> int:
        """SIGTERM, as a pod's termination: the agent exits 0 on its own."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def wait_for(pred: Callable[[], T], bound: float, what: str) -> T:
    """Poll ``pred`` until it is true; fail when ``bound`` seconds pass (a bound,
    never a timing assertion)."""
    end = time.monotonic() + bound
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"not within {bound:g} s: {what}")
        time.sleep(0.1)


def status(name: str, ns: str, env: dict[str, str]) -> dict[str, Any]:
    parent = get("configmap", name, env, ns) or {}
    ann = (parent.get("metadata") or {}).get("annotations") or {}
    return json.loads(ann.get("kubectl-gitops.io/status") or "{}")


def events(ns: str, env: dict[str, str], reason: str) -> list[dict[str, Any]]:
    out = json.loads(kubectl("get", "events", "-n", ns, "-o", "json", env=env).stdout)
    return [e for e in out["items"] if e.get("reason") == reason]


def history(name: str, ns: str, env: dict[str, str]) -> list[dict[str, Any]]:
    parent = get("configmap", name, env, ns) or {}
    return json.loads((parent.get("data") or {}).get("kubectl-gitops.history") or "[]")
