"""A stand-in for the kubelet, which the local control plane does not run:
tests write a pod's status through the real API server's status
subresource, and the real controllers (ReplicaSet, Deployment, StatefulSet,
Job) take it from there, as they would from a kubelet's report.

Also writes the status of objects no controller here looks after (a custom
resource, a Service's load balancer), as their controller would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubectl_gitops.kube.client import Kube

RUNNING = {"phase": "Running",
           "conditions": [{"type": "Initialized", "status": "True"},
                          {"type": "Ready", "status": "True"},
                          {"type": "ContainersReady", "status": "True"},
                          {"type": "PodScheduled", "status": "True"}]}


def _pod_type(kube: Kube) -> Any:
    return kube.resource_types()[("", "Pod")]


def pods(kube: Kube, namespace: str, selector: str) -> list[dict[str, Any]]:
    return kube.list(_pod_type(kube), namespace, label_selector=selector or None)


def set_status(kube: Kube, group: str, kind: str, namespace: str, name: str,
               status: dict[str, Any]) -> dict[str, Any]:
    """Replace the object's status (merge patch on ``/status``)."""
    rtype = kube.resource_types()[(group, kind)]
    return kube.request("PATCH", Kube.path(rtype, namespace, name) + "/status",
                        body={"status": status}, content_type="application/merge-patch+json")


def pod_status(kube: Kube, pod: dict[str, Any], status: dict[str, Any]) -> None:
    containers = pod["spec"]["containers"]
    running = status.get("phase") == "Running"
    full = {**status, "containerStatuses": [
        {"name": c["name"], "image": c["image"], "imageID": "", "ready": running,
         "restartCount": 0,
         "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}} if running
         else {"terminated": {"exitCode": 0 if status.get("phase") == "Succeeded" else 1,
                              "reason": "Completed" if status.get("phase") == "Succeeded"
                              else "Error"}}}
        for c in containers]}
    set_status(kube, "", "Pod", pod["metadata"]["namespace"], pod["metadata"]["name"], full)


def run_pods(kube: Kube, namespace: str, selector: str, phase: str = "Running", *,
             want: int = 1, timeout: float = 30) -> int:
    """Report every pod matching ``selector`` (at least ``want`` of them,
    waiting for their controller to create them) as Running and Ready,
    Succeeded or Failed. Returns how many were reported."""
    status = RUNNING if phase == "Running" else {"phase": phase}
    done: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(done) < want:
        for pod in pods(kube, namespace, selector):
            if pod["metadata"]["name"] not in done and not pod["metadata"].get("deletionTimestamp"):
                pod_status(kube, pod, status)
                done.add(pod["metadata"]["name"])
        if len(done) < want:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(done)} of {want} pods {selector} in {namespace}")
            time.sleep(0.2)
    return len(done)


def eventually(what: str, fn: Callable[[], Any], timeout: float = 30) -> Any:
    """``fn()``'s first true value, polled; an AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: still {last!r} after {timeout:g} s")


class Kubelet:
    """Plays the kubelet in the background while a sync runs: each new pod
    of ``namespace`` is reported in the phase ``decide(pod)`` returns
    (``Running`` means running and ready), or left alone for None. ``decide``
    runs in this thread, so it may also look at the cluster at that moment
    (what exists when a hook's pod starts). Use as a context manager."""

    def __init__(self, kube: Kube, namespace: str,
                 decide: Callable[[dict[str, Any]], str | None]) -> None:
        import threading  # noqa: PLC0415

        self.kube, self.namespace, self.decide = kube, namespace, decide
        self.seen: set[str] = set()
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Kubelet:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.errors:
            raise self.errors[0]

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                for pod in pods(self.kube, self.namespace, ""):
                    name = pod["metadata"]["name"]
                    if name in self.seen or pod["metadata"].get("deletionTimestamp"):
                        continue
                    self.seen.add(name)
                    phase = self.decide(pod)
                    if phase:
                        pod_status(self.kube, pod, RUNNING if phase == "Running"
                                   else {"phase": phase})
            except BaseException as e:  # noqa: BLE001 - handed to the test
                self.errors.append(e)
                return
