"""Is a live object healthy? kstatus for every kind, and custom CEL checks.

The results are kstatus's (sigs.k8s.io/cli-utils): Current, InProgress,
Failed, Terminating, NotFound, Unknown; status and ``ls`` show them as
Healthy, Progressing, Degraded, Missing. Every object first passes the
generic rules (being deleted; ``metadata.generation`` not yet observed in
``status.observedGeneration``; a ``Reconciling`` or ``Stalled`` condition),
then the rules of its kind, then its ``Ready`` condition.

Where this differs from kstatus, it is on the side of not calling something
healthy too early, as Argo CD users expect: a Job is healthy once complete,
not once started; a failed Pod (phase Failed, an image that cannot be
pulled, a crash loop) is Degraded; ``Ready=False`` is Degraded with the
condition's message unless the object says it is still reconciling; a
custom resource with no status yet, of a type whose status a controller
writes (its CRD has the status subresource), is Progressing, not Healthy;
a Service of type LoadBalancer and an Ingress wait for an address.

The rules read only fields every read returns: the caller names the type
(group, kind) it read, since the items of a LIST carry no apiVersion/kind.

Custom checks are ``healthCheckExprs`` in Flux's format (CEL expressions
``inProgress``, ``failed``, ``current`` per apiVersion group and optional
kind), evaluated as Flux's kustomize-controller does (RFC-0009); the CEL
library is imported only when an object meets such a check.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubectl_gitops.errors import ConfigError
from kubectl_gitops.kube.resources import builtin_types

CURRENT = "Current"
IN_PROGRESS = "InProgress"
FAILED = "Failed"
TERMINATING = "Terminating"
NOT_FOUND = "NotFound"
UNKNOWN = "Unknown"

HEALTHY = "Healthy"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
MISSING = "Missing"
_SHOWN = {CURRENT: HEALTHY, IN_PROGRESS: PROGRESSING, TERMINATING: PROGRESSING,
          UNKNOWN: PROGRESSING, FAILED: DEGRADED, NOT_FOUND: MISSING}
_WORSE = (HEALTHY, PROGRESSING, MISSING, DEGRADED)  # an app is as healthy as its worst member

# How long a Pod may wait for a node before Unschedulable counts as failed (kstatus's window).
SCHEDULE_WINDOW = 15.0
# A container waiting for one of these will not start by itself.
_STUCK_WAITING = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                  "CreateContainerConfigError", "CreateContainerError", "CrashLoopBackOff")


@dataclass(frozen=True)
class Health:
    status: str  # kstatus: Current, InProgress, Failed, Terminating, NotFound, Unknown
    message: str = ""

    @property
    def shown(self) -> str:
        """Healthy, Progressing, Degraded or Missing, as status and ls show it."""
        return _SHOWN[self.status]

    @property
    def current(self) -> bool:
        return self.status == CURRENT

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    def __str__(self) -> str:
        return f"{self.shown}: {self.message}" if self.message else self.shown


def worst(shown: Iterable[str]) -> str:
    """The health of a set of objects: its worst member's (Healthy when empty)."""
    return max(shown, key=_WORSE.index, default=HEALTHY)


def check(group: str, kind: str, obj: Mapping[str, Any] | None, *,
          checks: Checks | None = None, status_subresource: bool = True) -> Health:
    """The health of ``obj``, a live object of type (``group``, ``kind``).

    ``status_subresource``: whether the type's status is written by a
    controller (discovery lists ``<plural>/status``); a custom resource
    without one has nothing to wait for.
    """
    if obj is None:
        return Health(NOT_FOUND, "not found")
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return Health(TERMINATING, "being deleted")
    custom = checks.find(group, kind) if checks else None
    if custom is not None:
        return custom.evaluate(obj)
    found = _generation(obj) or _standard_conditions(obj)
    if found:
        return found
    rule = _RULES.get((group, kind))
    if rule is not None:
        return rule(obj)
    if (group, kind) in _ALWAYS_CURRENT:
        return Health(CURRENT)
    return _ready(obj) or _no_status(group, kind, obj, status_subresource) or Health(CURRENT)


# --- the generic rules ---------------------------------------------------------

def _status(obj: Mapping[str, Any]) -> dict[str, Any]:
    st = obj.get("status")
    return st if isinstance(st, dict) else {}


def _int(d: Mapping[str, Any], key: str, default: int) -> int:
    v = d.get(key, default)
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def _conditions(obj: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for c in _status(obj).get("conditions") or []:
        if isinstance(c, dict) and isinstance(c.get("type"), str):
            out.setdefault(c["type"], c)
    return out


def _said(c: Mapping[str, Any]) -> str:
    """A condition's message, else its reason."""
    return str(c.get("message") or c.get("reason") or "")


def _generation(obj: Mapping[str, Any]) -> Health | None:
    generation = _int(obj.get("metadata") or {}, "generation", -1)
    observed = _int(_status(obj), "observedGeneration", -1)
    if generation >= 0 and observed >= 0 and observed != generation:
        return Health(IN_PROGRESS, f"generation {generation} not observed yet "
                                   f"(status is of generation {observed})")
    return None


def _standard_conditions(obj: Mapping[str, Any]) -> Health | None:
    conds = _conditions(obj)
    reconciling, stalled = conds.get("Reconciling"), conds.get("Stalled")
    if reconciling and reconciling.get("status") == "True":
        return Health(IN_PROGRESS, f"Reconciling: {_said(reconciling)}".rstrip(": "))
    if stalled and stalled.get("status") == "True":
        return Health(FAILED, f"Stalled: {_said(stalled)}".rstrip(": "))
    return None


def _ready(obj: Mapping[str, Any]) -> Health | None:
    c = _conditions(obj).get("Ready")
    if c is None:
        return None
    said = _said(c)
    if c.get("status") == "True":
        return Health(CURRENT, "Ready")
    generation = _int(obj.get("metadata") or {}, "generation", -1)
    observed = _int(c, "observedGeneration", -1)
    if c.get("status") != "False" or 0 <= observed < generation or \
            c.get("severity") == "Info":  # Cluster API: not a problem, just not there yet
        return Health(IN_PROGRESS, f"Ready={c.get('status')}: {said}".rstrip(": "))
    return Health(FAILED, f"Ready=False: {said}".rstrip(": "))


def _no_status(group: str, kind: str, obj: Mapping[str, Any],
               status_subresource: bool) -> Health | None:
    """A custom resource whose controller has not written any status yet."""
    if _status(obj) or not status_subresource or (group, kind) in _builtin():
        return None
    if _int(obj.get("metadata") or {}, "generation", -1) < 0:
        return None
    return Health(IN_PROGRESS, "no status yet: waiting for its controller")


@functools.cache
def _builtin() -> frozenset[tuple[str, str]]:
    return frozenset(builtin_types())


# --- the rules of built-in kinds ----------------------------------------------

def _replicas(n: int) -> str:
    return f"{n} replica" + ("" if n == 1 else "s")


def _deployment(obj: Mapping[str, Any]) -> Health:
    spec, st = obj.get("spec") or {}, _status(obj)
    conds = _conditions(obj)
    progressing = conds.get("Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Health(FAILED, f"progress deadline exceeded: {_said(progressing)}".rstrip(": "))
    want = _int(spec, "replicas", 1)
    have, updated = _int(st, "replicas", 0), _int(st, "updatedReplicas", 0)
    ready, available = _int(st, "readyReplicas", 0), _int(st, "availableReplicas", 0)
    if have < want:
        return Health(IN_PROGRESS, f"{have} of {_replicas(want)} created")
    if updated < want:
        return Health(IN_PROGRESS, f"{updated} of {_replicas(want)} updated")
    if have > want:
        return Health(IN_PROGRESS, f"{_replicas(have - want)} of the old version "
                                   "still terminating")
    if available < updated:
        return Health(IN_PROGRESS, f"{available} of {_replicas(want)} available")
    if ready < want:
        return Health(IN_PROGRESS, f"{ready} of {_replicas(want)} ready")
    # Without a deadline the controller never says the rollout finished.
    deadline = "progressDeadlineSeconds" in spec and spec["progressDeadlineSeconds"] != 2**31 - 1
    if deadline and not (progressing.get("status") == "True"
                         and progressing.get("reason") == "NewReplicaSetAvailable"):
        return Health(IN_PROGRESS, "rollout not finished: " + (_said(progressing) or "waiting "
                                                               "for the controller"))
    if (conds.get("Available") or {}).get("status") != "True":
        return Health(IN_PROGRESS, "Available condition not True")
    return Health(CURRENT, f"{_replicas(available)} available")


def _statefulset(obj: Mapping[str, Any]) -> Health:
    spec, st = obj.get("spec") or {}, _status(obj)
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type") == "OnDelete":
        return Health(CURRENT, "updateStrategy OnDelete: pods are replaced by hand")
    want = _int(spec, "replicas", 1)
    have, ready = _int(st, "replicas", 0), _int(st, "readyReplicas", 0)
    if have < want:
        return Health(IN_PROGRESS, f"{have} of {_replicas(want)} created")
    if ready < want:
        return Health(IN_PROGRESS, f"{ready} of {_replicas(want)} ready")
    if have > want:
        return Health(IN_PROGRESS, f"{_replicas(have - want)} still terminating")
    # The API server defaults the partition to 0: only a larger one holds pods back.
    partition = _int(strategy.get("rollingUpdate") or {}, "partition", 0)
    updated = _int(st, "updatedReplicas", 0)
    if partition > 0:
        if updated < want - partition:
            return Health(IN_PROGRESS, f"{updated} of {_replicas(want - partition)} updated "
                                       f"(partition {partition})")
        return Health(CURRENT, f"partitioned rollout done: {updated} updated")
    if updated < want:
        return Health(IN_PROGRESS, f"{updated} of {_replicas(want)} updated")
    if _int(st, "currentReplicas", 0) < want:
        return Health(IN_PROGRESS, f"{_int(st, 'currentReplicas', 0)} of {_replicas(want)} "
                                   "at the current revision")
    if st.get("currentRevision", "") != st.get("updateRevision", ""):
        return Health(IN_PROGRESS, f"rolling out revision {st.get('updateRevision')}")
    return Health(CURRENT, f"{_replicas(ready)} ready")


def _daemonset(obj: Mapping[str, Any]) -> Health:
    st = _status(obj)
    # Its controller always writes these: until it has, it has not looked.
    if "observedGeneration" not in st or "desiredNumberScheduled" not in st:
        return Health(IN_PROGRESS, "not observed by its controller yet")
    want = _int(st, "desiredNumberScheduled", 0)
    for key, what in (("currentNumberScheduled", "scheduled"), ("updatedNumberScheduled",
                                                                 "updated"),
                      ("numberAvailable", "available"), ("numberReady", "ready")):
        if _int(st, key, 0) < want:
            return Health(IN_PROGRESS, f"{_int(st, key, 0)} of {want} pods {what}")
    return Health(CURRENT, f"{want} pods ready")


def _replicaset(obj: Mapping[str, Any]) -> Health:
    spec, st = obj.get("spec") or {}, _status(obj)
    failure = _conditions(obj).get("ReplicaFailure")
    if failure and failure.get("status") == "True":
        return Health(IN_PROGRESS, f"ReplicaFailure: {_said(failure)}".rstrip(": "))
    want = _int(spec, "replicas", 1)
    for key, what in (("fullyLabeledReplicas", "labelled"), ("availableReplicas", "available"),
                      ("readyReplicas", "ready")):
        if _int(st, key, 0) < want:
            return Health(IN_PROGRESS, f"{_int(st, key, 0)} of {_replicas(want)} {what}")
    if _int(st, "replicas", 0) > want:
        return Health(IN_PROGRESS, f"{_replicas(_int(st, 'replicas', 0) - want)} "
                                   "still terminating")
    return Health(CURRENT, f"{_replicas(want)} available")


def _job(obj: Mapping[str, Any]) -> Health:
    spec, st = obj.get("spec") or {}, _status(obj)
    conds = _conditions(obj)
    completions = _int(spec, "completions", _int(spec, "parallelism", 1))
    succeeded = _int(st, "succeeded", 0)
    for ctype in ("Failed", "FailureTarget"):
        c = conds.get(ctype)
        if c and c.get("status") == "True":
            return Health(FAILED, f"failed: {_said(c)}".rstrip(": "))
    complete = conds.get("Complete")
    if complete and complete.get("status") == "True":
        return Health(CURRENT, f"complete: {succeeded} of {completions} succeeded")
    suspended = conds.get("Suspended")
    if spec.get("suspend") and suspended and suspended.get("status") == "True":
        return Health(CURRENT, "suspended")
    if not st.get("startTime"):
        return Health(IN_PROGRESS, "not started")
    return Health(IN_PROGRESS, f"running: {succeeded} of {completions} succeeded, "
                               f"{_int(st, 'active', 0)} active, {_int(st, 'failed', 0)} failed")


def _pod(obj: Mapping[str, Any]) -> Health:
    st = _status(obj)
    phase = st.get("phase", "")
    if phase == "Succeeded":
        return Health(CURRENT, "completed")
    if phase == "Failed":
        return Health(FAILED, f"failed: {st.get('message') or st.get('reason') or 'phase Failed'}")
    stuck = [f"{c.get('name')}: {w.get('reason')}" + (f": {w['message']}" if w.get("message")
                                                        else "")
             for c in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses")
                                                                 or [])
             for w in [((c.get("state") or {}).get("waiting") or {})]
             if w.get("reason") in _STUCK_WAITING]
    conds = _conditions(obj)
    if phase == "Running" and (conds.get("Ready") or {}).get("status") == "True":
        return Health(CURRENT, "running and ready")
    if stuck:
        return Health(FAILED, "container " + "; ".join(stuck))
    if phase == "Running":
        return Health(IN_PROGRESS, "running, not ready")
    if phase == "Pending":
        scheduled = conds.get("PodScheduled") or {}
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            if _age(obj) > SCHEDULE_WINDOW:
                return Health(FAILED, f"unschedulable: {_said(scheduled)}".rstrip(": "))
            return Health(IN_PROGRESS, "not scheduled yet")
        return Health(IN_PROGRESS, "pending")
    return Health(IN_PROGRESS, f"phase {phase}" if phase else "not observed yet")


def _age(obj: Mapping[str, Any]) -> float:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    try:
        born = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (dt.datetime.now(dt.UTC) - born).total_seconds()


def _pvc(obj: Mapping[str, Any]) -> Health:
    phase = _status(obj).get("phase") or "Pending"
    if phase == "Bound":
        return Health(CURRENT, "bound")
    if phase == "Lost":
        return Health(FAILED, "lost: its PersistentVolume is gone")
    return Health(IN_PROGRESS, f"phase {phase}: not bound yet")


def _has_address(obj: Mapping[str, Any]) -> bool:
    return bool(((_status(obj).get("loadBalancer") or {}).get("ingress")))


def _service(obj: Mapping[str, Any]) -> Health:
    if (obj.get("spec") or {}).get("type") == "LoadBalancer" and not _has_address(obj):
        return Health(IN_PROGRESS, "waiting for a load balancer address")
    return Health(CURRENT)


def _ingress(obj: Mapping[str, Any]) -> Health:
    if not _has_address(obj):
        return Health(IN_PROGRESS, "waiting for an address from the ingress controller")
    return Health(CURRENT)


def _crd(obj: Mapping[str, Any]) -> Health:
    conds = _conditions(obj)
    names, established = conds.get("NamesAccepted") or {}, conds.get("Established") or {}
    if names.get("status") == "False":
        return Health(FAILED, f"names not accepted: {_said(names)}".rstrip(": "))
    if established.get("status") == "True":
        return Health(CURRENT, "established")
    if established.get("status") == "False" and established.get("reason") != "Installing":
        return Health(FAILED, f"not established: {_said(established)}".rstrip(": "))
    return Health(IN_PROGRESS, "not established yet")


def _apiservice(obj: Mapping[str, Any]) -> Health:
    available = _conditions(obj).get("Available")
    if available is None:
        return Health(IN_PROGRESS, "availability not checked yet")
    if available.get("status") == "True":
        return Health(CURRENT, "available")
    # Often its backend is still starting: wait, with the reason.
    return Health(IN_PROGRESS, f"Available={available.get('status')}: {_said(available)}"
                  .rstrip(": "))


def _pdb(obj: Mapping[str, Any]) -> Health:
    st = _status(obj)
    if "observedGeneration" not in st:
        return Health(IN_PROGRESS, "not observed by the disruption controller yet")
    allowed = _int(st, "disruptionsAllowed", 0)
    return Health(CURRENT, f"{allowed} disruption{'' if allowed == 1 else 's'} allowed")


def _namespace(obj: Mapping[str, Any]) -> Health:
    if _status(obj).get("phase") == "Terminating":
        return Health(TERMINATING, "being deleted")
    return Health(CURRENT)


_RULES = {
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("apps", "DaemonSet"): _daemonset,
    ("apps", "ReplicaSet"): _replicaset,
    ("batch", "Job"): _job,
    ("", "Pod"): _pod,
    ("", "PersistentVolumeClaim"): _pvc,
    ("", "Service"): _service,
    ("networking.k8s.io", "Ingress"): _ingress,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): _crd,
    ("apiregistration.k8s.io", "APIService"): _apiservice,
    ("policy", "PodDisruptionBudget"): _pdb,
    ("", "Namespace"): _namespace,
}
# Built-in kinds whose conditions say nothing about readiness to wait for.
_ALWAYS_CURRENT = {("batch", "CronJob"), ("", "ConfigMap"), ("", "Secret")}


# --- custom checks: Flux's healthCheckExprs --------------------------------------

class ExprError(ConfigError):
    """A healthCheckExprs expression that does not compile; the message names it."""


def api_group(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


class Checks:
    """``healthCheckExprs`` entries, as ``.gitops.yaml`` holds them (Flux's
    format, its shape checked where it is read), by (group, kind): a
    kind's own entry wins over its group's."""

    def __init__(self, entries: Sequence[Mapping[str, str]] = (),
                 where: str = ".gitops.yaml") -> None:
        self.entries = tuple(dict(e) for e in entries)
        self._by_type: dict[tuple[str, str], _Compiled] = {}
        for i, e in enumerate(self.entries):
            self._by_type.setdefault((api_group(e.get("apiVersion", "")), e.get("kind", "")),
                                     _Compiled(e, f"{where}: healthCheckExprs[{i}]"))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def find(self, group: str, kind: str) -> _Compiled | None:
        return self._by_type.get((group, kind)) or self._by_type.get((group, ""))

    def compile(self) -> None:
        """Compile every expression now (raises :class:`ExprError` naming
        the first that does not compile): before a sync writes anything."""
        for c in self._by_type.values():
            c.programs()


class _Compiled:
    """An entry's expressions, compiled on first use."""

    def __init__(self, entry: Mapping[str, str], where: str) -> None:
        self.entry = entry
        self.where = where
        self._programs: list[tuple[str, str, Any, list[str]]] | None = None

    def programs(self) -> list[tuple[str, str, Any, list[str]]]:
        """(key, result, program, top-level names it reads), in Flux's order."""
        if self._programs is None:
            import cel  # noqa: PLC0415 - only apps with healthCheckExprs pay for it

            out = []
            for key, result in (("inProgress", IN_PROGRESS), ("failed", FAILED),
                                ("current", CURRENT)):
                source = self.entry.get(key, "")
                if not source:
                    continue
                try:
                    program = cel.compile(source)
                except (ValueError, RuntimeError) as e:
                    raise ExprError(f"{self.where}.{key}: {_first_line(e)}") from None
                out.append((key, result, program, program.variables()))
            self._programs = out
        return self._programs

    def evaluate(self, obj: Mapping[str, Any]) -> Health:
        """RFC-0009: an unobserved generation is in progress; then the first
        of inProgress, failed, current that is true; none true is in
        progress. An expression that cannot be evaluated (a field not there
        yet) leaves the object Unknown, which is waited on, as Flux does."""
        found = _generation(obj)
        if found:
            return found
        try:
            programs = self.programs()
        except ExprError as e:
            return Health(UNKNOWN, str(e))
        for key, result, program, names in programs:
            # Only the fields it names: converting a large spec costs time.
            context = {n: obj[n] for n in names if n in obj}
            try:
                value = program.execute(context)
            except (KeyError, ValueError, TypeError, RuntimeError) as e:
                return Health(UNKNOWN, f"{self.where}.{key}: {_cel_error(e)}")
            if not isinstance(value, bool):
                return Health(UNKNOWN, f"{self.where}.{key}: returned "
                                       f"{type(value).__name__}, not a boolean")
            if value:
                return Health(result, f"{key}: {_short(programs, key)}")
        return Health(IN_PROGRESS, "healthCheckExprs: none of the expressions is true yet")


def _short(programs: list[tuple[str, str, Any, list[str]]], key: str) -> str:
    source = next(p.source for k, _, p, _ in programs if k == key)
    return source if len(source) <= 80 else source[:77] + "..."


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _cel_error(e: BaseException) -> str:
    if isinstance(e, KeyError):
        return f"no such key: {e.args[0] if e.args else ''}"
    text = _first_line(e)
    if text.startswith("Undefined variable or function:"):
        # A top-level field the object does not have (yet), e.g. no status.
        return "no such field: " + text.split(":", 1)[1].split(".")[0].strip().strip("'")
    return text
