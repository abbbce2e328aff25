"""Prometheus metrics of one agent (a registry of its own, so tests and a
second agent in one process never share counters)."""

from __future__ import annotations

import time
from typing import Any

from kubectl_gitops.kube.client import Kube


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram  # noqa: PLC0415

        r = self.registry = CollectorRegistry()
        self.reconciles = Counter("gitops_reconcile_total", "Reconciles of an app, by kind "
                                  "(app, drift) and result.", ["app", "kind", "result"],
                                  registry=r)
        self.duration = Histogram("gitops_reconcile_duration_seconds", "Time one reconcile "
                                  "took.", ["app", "kind"], registry=r)
        self.drift_detected = Counter("gitops_drift_detected_total", "Members found to differ "
                                      "from git.", ["app"], registry=r)
        self.drift_corrected = Counter("gitops_drift_corrected_total", "Members re-applied "
                                       "by self-heal.", ["app"], registry=r)
        self.last_sync = Gauge("gitops_last_successful_sync_timestamp_seconds", "When the "
                               "app last synced without failures.", ["app"], registry=r)
        self.fetches = Counter("gitops_git_fetches_total", "git fetches (and first clones).",
                               ["app"], registry=r)
        self.fetch_errors = Counter("gitops_git_fetch_errors_total", "Failed git fetches.",
                                    ["app"], registry=r)
        self.stalled = Gauge("gitops_app_stalled", "1 while the app cannot make progress, "
                             "by reason (LeaseFailed, FetchFailed, InvalidRevision, SyncFailed, "
                             "Forbidden, WatchFailed, ...).", ["app", "reason"], registry=r)
        self.errors = Counter("gitops_errors_total", "Failures that keep an app from making "
                              "progress, each attempt counted, by reason.", ["app", "reason"],
                              registry=r)
        self.objects = Gauge("gitops_objects_managed", "Objects the app's revision holds.",
                             ["app"], registry=r)
        self.plans = Counter("gitops_plans_total", "Revisions planned (a new revision that "
                             "changes nothing the app reads is not).", ["app"], registry=r)
        self.led = Gauge("gitops_apps_led", "Apps this replica leads.", registry=r)
        self.watches = Gauge("gitops_watches", "Watches open (one per member type, shared "
                             "by the apps, and one on the parents).", registry=r)
        self.requests = Counter("gitops_api_requests_total", "Requests to the Kubernetes API "
                                "by verb (watches counted once, when opened).", ["verb"],
                                registry=r)

    def text(self) -> bytes:
        from prometheus_client import generate_latest  # noqa: PLC0415

        return generate_latest(self.registry)


class CountingKube(Kube):
    """A :class:`Kube` that counts its requests by verb, for ``/metrics`` and
    the idle-load benchmark (and remembers who it is for a while)."""

    metrics: Metrics | None = None
    _who: tuple[float, dict[str, Any]] | None = None

    def identity(self) -> dict[str, Any]:
        """Who the server sees, asked once per 10 minutes (a history record
        of every sync names it; the agent's user does not change per sync)."""
        now = time.monotonic()
        if self._who is None or now - self._who[0] > 600:
            self._who = (now, super().identity())
        return self._who[1]

    def request(self, method: str, path: str, **kw: Any) -> Any:
        if self.metrics is not None:
            verb = "list" if method == "GET" and _is_collection(path) else method.lower()
            self.metrics.requests.labels(verb).inc()
        return super().request(method, path, **kw)

    def watch(self, *args: Any, **kw: Any) -> Any:
        if self.metrics is not None:
            self.metrics.requests.labels("watch").inc()
        return super().watch(*args, **kw)


def _is_collection(path: str) -> bool:
    """``/api/v1/namespaces/x/configmaps`` (a LIST), not ``.../configmaps/y``."""
    parts = path.split("?")[0].strip("/").split("/")
    core = parts[0] == "api"
    rest = parts[2:] if core else parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    return len(rest) == 1 and path.startswith(("/api/", "/apis/"))
