"""``kubectl gitops sync --wait``: every member Current, or a fast failure
naming the member and its reason; progress as lines, or one line in place
on a terminal; ``healthCheckExprs`` from ``.gitops.yaml``.

The custom resources' controller is the test: it writes their status
through the real API server's status subresource while the sync waits.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides
from testing.git import commit, make_repo, write
from testing.kube import configmap, docs, gitops
from testing.kubelet import eventually, set_status

GROUP = "wait.kubectl-gitops.io"


def _crd() -> dict[str, Any]:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"widgets.{GROUP}"},
            "spec": {"group": GROUP, "scope": "Namespaced",
                     "names": {"kind": "Widget", "plural": "widgets"},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "subresources": {"status": {}},
                                   "schema": {"openAPIV3Schema": {
                                       "type": "object",
                                       "x-kubernetes-preserve-unknown-fields": True}}}]}}


def _widget(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name},
            "spec": {"size": 1}}


@pytest.fixture(scope="module")
def widgets(control_plane: Any) -> Iterator[None]:
    """The Widget CRD, shared by this module's apps (a CRD can be a member
    of one app only)."""
    kube = Kube(Overrides(kubeconfig=str(control_plane.kubeconfig)))
    rtype = kube.resource_types()[("apiextensions.k8s.io", "CustomResourceDefinition")]
    kube.apply(rtype, _crd())
    eventually("the Widget CRD established", lambda: any(
        c["type"] == "Established" and c["status"] == "True" for c in
        ((kube.get(rtype, "", f"widgets.{GROUP}") or {}).get("status") or {})
        .get("conditions") or []))
    yield
    kube.delete(rtype, "", f"widgets.{GROUP}")


@pytest.fixture
def repo(tmp_path: Path, git_env: dict, widgets: None) -> Path:
    r = make_repo(tmp_path / "repo")
    write(r, "deploy/all.yaml", docs(configmap("settings"), _widget("a"), _widget("b")))
    commit(r, "widgets")
    return r


class Controller:
    """The widgets' controller: once the sync created a widget (and, when
    ``after`` is given, once that is set), it writes the status
    ``status_of(name)`` gives (None: nothing yet)."""

    def __init__(self, kubeconfig: str, ns: str, status_of: Any,
                 after: threading.Event | None = None) -> None:
        self.kube = Kube(Overrides(kubeconfig=kubeconfig))
        self.ns, self.status_of, self.after = ns, status_of, after
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.after is not None:
                self.after.wait(120)
            for name in ("a", "b"):
                status = self.status_of(name)
                if status is None:
                    continue
                eventually(f"Widget {name} created", lambda n=name: self._get(n), 120)
                set_status(self.kube, GROUP, "Widget", self.ns, name, status)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e

    def _get(self, name: str) -> dict[str, Any] | None:
        self.kube.forget_discovery()
        rtype = self.kube.resource_types().get((GROUP, "Widget"))
        return rtype and self.kube.get(rtype, self.ns, name)

    def __enter__(self) -> Controller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(130)
        if self.error:
            raise self.error


def _sync(repo: Path, ns: str, env: dict, *extra: str) -> subprocess.CompletedProcess[str]:
    return gitops("sync", "deploy", "-n", ns, "--name", "app", "--wait", "--timeout", "5m",
                  *extra, cwd=repo, env=env)


READY = {"observedGeneration": 1, "conditions": [
    {"type": "Ready", "status": "True", "reason": "Built", "message": "widget built"}]}
STALLED = {"observedGeneration": 1, "conditions": [
    {"type": "Stalled", "status": "True", "reason": "OutOfParts",
     "message": "no sprockets left in the store"},
    {"type": "Ready", "status": "False", "reason": "OutOfParts",
     "message": "no sprockets left in the store"}]}


def test_wait_fails_fast_naming_a_stalled_member(repo: Path, kube_env: dict,
                                                 namespace: str) -> None:
    # b is never written: the sync would wait the whole 5 minutes for it, but
    # a's Stalled ends the wait as soon as it is read.
    with Controller(kube_env["KUBECONFIG"], namespace,
                    lambda name: STALLED if name == "a" else None):
        r = _sync(repo, namespace, kube_env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert (f"error: Widget {namespace}/a: Degraded: Stalled: no sprockets left in the store"
            in r.stderr)
    assert "timed out" not in r.stderr


def test_wait_succeeds_once_every_member_is_current(repo: Path, kube_env: dict,
                                                    namespace: str) -> None:
    waited = threading.Event()  # the widgets get their status once the sync waits
    lines: list[str] = []
    with Controller(kube_env["KUBECONFIG"], namespace, lambda name: READY, after=waited):
        proc = subprocess.Popen(["kubectl", "gitops", "sync", "deploy", "-n", namespace,
                                 "--name", "app", "--wait"], cwd=repo, env=kube_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout and proc.stderr
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("waiting "):
                waited.set()
        err = proc.stderr.read()
        proc.wait(60)
    assert proc.returncode == 0, "\n".join(lines) + err
    # Not a terminal: progress as plain lines, each time what is awaited changes.
    waiting = [line for line in lines if line.startswith("waiting ")]
    assert waiting and all(line.startswith("waiting    members: ") for line in waiting)
    assert any(f"Widget {namespace}/" in line and "no status yet" in line
               for line in waiting), waiting
    assert "synced git@" in err and "0 failed" in err


def test_healthcheckexprs_decide_for_their_kind_in_wait_and_status(
        repo: Path, kube_env: dict, namespace: str) -> None:
    """Flux's format: a Widget is ready when its Assembled condition is True,
    failed when False; the Ready condition no longer counts. ``status``
    reads the expressions the sync recorded, with no checkout."""
    write(repo, ".gitops.yaml", yaml.safe_dump({"healthCheckExprs": [{
        "apiVersion": f"{GROUP}/v1", "kind": "Widget",
        "failed": "status.conditions.filter(e, e.type == 'Assembled')"
                  ".all(e, e.status == 'False')",
        "current": "status.conditions.filter(e, e.type == 'Assembled')"
                   ".all(e, e.status == 'True')"}]}))
    commit(repo, "health checks")
    assembled = {"conditions": [{"type": "Assembled", "status": "True"},
                                {"type": "Ready", "status": "False", "reason": "Ignored"}]}
    with Controller(kube_env["KUBECONFIG"], namespace, lambda name: assembled):
        r = _sync(repo, namespace, kube_env)
    assert r.returncode == 0, r.stdout + r.stderr
    st = json.loads(gitops("status", "app", "-n", namespace, "-o", "json", cwd=repo,
                           env=kube_env).stdout)
    assert st["health"] == "Healthy", st
    kube = Kube(Overrides(kubeconfig=kube_env["KUBECONFIG"]))
    set_status(kube, GROUP, "Widget", namespace, "b",
               {"conditions": [{"type": "Assembled", "status": "False"}]})
    st = json.loads(gitops("status", "app", "-n", namespace, "-o", "json", cwd=repo,
                           env=kube_env).stdout)
    assert st["health"] == "Degraded"
    assert f"Widget {namespace}/b: Degraded: failed: " in st["unhealthy"][0]


def test_an_expression_that_does_not_compile_writes_nothing(
        repo: Path, kube_env: dict, namespace: str) -> None:
    write(repo, ".gitops.yaml", yaml.safe_dump({"healthCheckExprs": [{
        "apiVersion": f"{GROUP}/v1", "kind": "Widget", "current": "status.ready =="}]}))
    commit(repo, "broken check")
    r = _sync(repo, namespace, kube_env)
    assert r.returncode == 2
    assert "error: .gitops.yaml: healthCheckExprs[0].current: " in r.stderr
    assert not _created(kube_env, namespace)


def _created(env: dict, ns: str) -> bool:
    kube = Kube(Overrides(kubeconfig=env["KUBECONFIG"]))
    return kube.get(kube.resource_types()[("", "ConfigMap")], ns, "settings") is not None


def test_on_a_terminal_progress_is_one_line_rewritten(repo: Path, kube_env: dict,
                                                      namespace: str) -> None:
    main, other = pty.openpty()
    shown = bytearray()
    waited = threading.Event()  # the widgets get their status once the line shows

    def read() -> None:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                return
            if not chunk:
                return
            shown.extend(chunk)
            if b"waiting for members: " in shown:
                waited.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        with Controller(kube_env["KUBECONFIG"], namespace, lambda name: READY, after=waited):
            r = subprocess.run(["kubectl", "gitops", "sync", "deploy", "-n", namespace,
                                "--name", "app", "--wait"], cwd=repo, env=kube_env,
                               stdout=subprocess.PIPE, stderr=other, text=True, timeout=300)
    finally:
        os.close(other)
        reader.join(10)
        os.close(main)
    text = shown.decode()
    assert r.returncode == 0, text
    assert "waiting for members: 1/3 ready; Widget " in text and "\r\x1b[K" in text
    assert "waiting" not in r.stdout  # the lines on stdout are the sync's own
