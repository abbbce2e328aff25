"""Ownership as a KEP-3659 ApplySet, so that ``kubectl apply --prune
--applyset`` and this tool agree on which objects a sync manages.

The parent is a ConfigMap named after the application, in the application's
namespace. Members carry ``applyset.kubernetes.io/part-of=<id>``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubectl_gitops import __version__
from kubectl_gitops.kube.resources import ObjectId, ResourceType

ID_LABEL = "applyset.kubernetes.io/id"
PART_OF_LABEL = "applyset.kubernetes.io/part-of"
TOOLING_ANNOTATION = "applyset.kubernetes.io/tooling"
GROUP_KINDS_ANNOTATION = "applyset.kubernetes.io/contains-group-kinds"
NAMESPACES_ANNOTATION = "applyset.kubernetes.io/additional-namespaces"
PRUNE_ANNOTATION = "kubectl-gitops.io/prune"
HISTORY_KEY = "kubectl-gitops.history"
# The key of the applied hash of this set's Secrets (see plan.desired_hash).
SALT_ANNOTATION = "kubectl-gitops.io/hash-salt"
# Where the app comes from: the repo (its remote URL, else its first commit)
# and the path inside it. A sync from elsewhere does not prune this set.
SOURCE_REPO_ANNOTATION = "kubectl-gitops.io/source-repo"
SOURCE_ROOT_ANNOTATION = "kubectl-gitops.io/source-root-commit"
SOURCE_PATH_ANNOTATION = "kubectl-gitops.io/source-path"
# The same on every member ("<repo>#<path>", the repo "commit:<sha>" without a
# remote): a new parent of the same name (the old one deleted, another repo
# syncing under its name) neither adopts nor prunes what another source wrote.
SOURCE_ANNOTATION = "kubectl-gitops.io/source"
# What status, ls and the agent read without the revision: the app's
# healthCheckExprs (JSON) and the apps it depends on ("ns/name,...").
HEALTH_CHECKS_ANNOTATION = "kubectl-gitops.io/health-checks"
DEPENDS_ON_ANNOTATION = "kubectl-gitops.io/depends-on"
TOOLING = f"kubectl-gitops/v{__version__}"
TOOL_NAME = "kubectl-gitops"

PARENT_TYPE = ResourceType("", "ConfigMap", True, plural="configmaps", version="v1")

# Labels and annotations by which other deployment tools mark what they own.
FOREIGN_OWNERS = {
    "app.kubernetes.io/managed-by": ("Helm",),
    "meta.helm.sh/release-name": None,
    "kapp.k14s.io/app": None,
    "argocd.argoproj.io/instance": None,
    "argocd.argoproj.io/tracking-id": None,  # Argo CD's default tracking since 3.0
    "kustomize.toolkit.fluxcd.io/name": None,
    "helm.toolkit.fluxcd.io/name": None,
}


def applyset_id(name: str, namespace: str, kind: str = "ConfigMap", group: str = "") -> str:
    """The ID exactly as KEP-3659 specifies it:
    ``applyset-<base64url(sha256(<name>.<namespace>.<kind>.<group>))>-v1``."""
    digest = hashlib.sha256(f"{name}.{namespace}.{kind}.{group}".encode()).digest()
    return f"applyset-{base64.urlsafe_b64encode(digest).decode().rstrip('=')}-v1"


@dataclass(frozen=True)
class SourceId:
    """An app's source: the repo's normalised remote URL ("" without one),
    its first commit ("" when unknown) and the path inside it ("" = root)."""

    repo: str
    root_commit: str
    path: str

    def same(self, other: SourceId) -> bool:
        if self.path != other.path:
            return False
        if self.repo and other.repo:
            return self.repo == other.repo
        if self.root_commit and other.root_commit:
            return self.root_commit == other.root_commit
        return self.repo == other.repo  # nothing else to tell them apart by

    def annotation(self) -> str:
        """The value of :data:`SOURCE_ANNOTATION` on a member."""
        return f"{self.repo or 'commit:' + self.root_commit}#{self.path or '.'}"

    @classmethod
    def from_annotation(cls, value: str) -> SourceId:
        repo, _, path = value.rpartition("#")
        path = "" if path == "." else path
        if repo.startswith("commit:"):
            return cls("", repo[len("commit:"):], path)
        return cls(repo, "", path)

    def __str__(self) -> str:
        repo = self.repo or (f"a repo without remote, first commit {self.root_commit[:12]}"
                             if self.root_commit else "a repo without remote")
        return f"{repo} path {self.path or '.'}"


@dataclass
class Parent:
    name: str
    namespace: str
    group_kinds: set[str] = field(default_factory=set)
    namespaces: set[str] = field(default_factory=set)  # including the parent's own
    tooling: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    exists: bool = False
    salt: str = ""  # new and random until the parent stores one
    source: SourceId | None = None  # the recorded source; None for a parent without one
    health_checks: tuple[dict[str, str], ...] = ()  # .gitops.yaml's healthCheckExprs
    depends_on: tuple[str, ...] = ()  # "namespace/name" of the apps it waits for

    @property
    def id(self) -> str:
        return applyset_id(self.name, self.namespace)

    @property
    def label(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    def to_object(self, *, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        extra = sorted(self.namespaces - {self.namespace})
        annotations = {TOOLING_ANNOTATION: TOOLING,
                       GROUP_KINDS_ANNOTATION: ",".join(sorted(self.group_kinds)),
                       NAMESPACES_ANNOTATION: ",".join(extra)}
        if self.salt:
            annotations[SALT_ANNOTATION] = self.salt
        if self.source is not None:
            annotations.update({SOURCE_REPO_ANNOTATION: self.source.repo,
                                SOURCE_ROOT_ANNOTATION: self.source.root_commit,
                                SOURCE_PATH_ANNOTATION: self.source.path or "."})
        if self.health_checks:
            annotations[HEALTH_CHECKS_ANNOTATION] = json.dumps(
                list(self.health_checks), sort_keys=True, separators=(",", ":"))
        if self.depends_on:
            annotations[DEPENDS_ON_ANNOTATION] = ",".join(self.depends_on)
        obj: dict[str, Any] = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self.name, "namespace": self.namespace,
                         "labels": {ID_LABEL: self.id}, "annotations": annotations},
        }
        if history is not None:
            obj["data"] = {HISTORY_KEY: json.dumps(history, indent=1, sort_keys=True)}
        return obj


def parent_from_live(name: str, namespace: str, live: dict[str, Any] | None) -> Parent:
    parent = Parent(name, namespace, namespaces={namespace}, salt=secrets.token_hex(16))
    if live is None:
        return parent
    meta = live.get("metadata") or {}
    ann = meta.get("annotations") or {}
    parent.exists = True
    parent.salt = ann.get(SALT_ANNOTATION) or parent.salt
    if SOURCE_PATH_ANNOTATION in ann:
        path = ann[SOURCE_PATH_ANNOTATION]
        parent.source = SourceId(ann.get(SOURCE_REPO_ANNOTATION, ""),
                                 ann.get(SOURCE_ROOT_ANNOTATION, ""), "" if path == "." else path)
    parent.tooling = ann.get(TOOLING_ANNOTATION, "")
    parent.group_kinds = {g for g in ann.get(GROUP_KINDS_ANNOTATION, "").split(",") if g}
    parent.namespaces |= {n for n in ann.get(NAMESPACES_ANNOTATION, "").split(",") if n}
    try:
        checks = json.loads(ann.get(HEALTH_CHECKS_ANNOTATION) or "[]")
        parent.health_checks = tuple(c for c in checks if isinstance(c, dict))
    except (ValueError, TypeError):
        parent.health_checks = ()
    parent.depends_on = tuple(d for d in ann.get(DEPENDS_ON_ANNOTATION, "").split(",") if d)
    raw = (live.get("data") or {}).get(HISTORY_KEY)
    if raw:
        try:
            parent.history = list(json.loads(raw))
        except ValueError:
            parent.history = []
    return parent


_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_GROUP_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\.[a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$")


def check_parent(parent: Parent, live: dict[str, Any] | None) -> str | None:
    """Why this parent cannot be used, or None."""
    if live is None:
        return None
    meta = live.get("metadata") or {}
    labels = meta.get("labels") or {}
    ann = meta.get("annotations") or {}
    for key, valid, what in ((NAMESPACES_ANNOTATION, _NAMESPACE, "namespace names"),
                             (GROUP_KINDS_ANNOTATION, _GROUP_KIND, "Kind.group names")):
        bad = [v for v in str(ann.get(key, "")).split(",") if v and not valid.match(v)]
        if bad:
            return (f"{parent.label}: annotation {key} holds {bad[0]!r}, not a comma-separated "
                    f"list of {what}; fix it by hand (it lists where the app's members are)")
    if parent.tooling and not parent.tooling.startswith(TOOL_NAME + "/"):
        return (f"{parent.label} is an ApplySet managed by {parent.tooling}, not by "
                f"{TOOL_NAME}; choose another --name")
    if labels.get(ID_LABEL) not in (None, parent.id):
        return f"{parent.label} has ApplySet id {labels.get(ID_LABEL)}, expected {parent.id}"
    if not parent.tooling and ID_LABEL not in labels:
        return (f"{parent.label} exists and is not an ApplySet parent; choose another --name "
                "or delete it")
    return None


def group_kinds(ids: Iterable[ObjectId]) -> set[str]:
    return {i.group_kind for i in ids}


def stored(parent: Parent, live: dict[str, Any] | None) -> bool:
    """Whether ``live`` already says everything ``parent`` would write but its history."""
    if live is None:
        return False
    meta = live.get("metadata") or {}
    have = meta.get("annotations") or {}
    want = parent.to_object()["metadata"]["annotations"]
    gone = {HEALTH_CHECKS_ANNOTATION, DEPENDS_ON_ANNOTATION} - set(want)
    return all(have.get(k) == v for k, v in want.items()) and not gone & set(have)


def parse_group_kind(gk: str) -> tuple[str, str]:
    kind, _, group = gk.partition(".")
    return group, kind


def foreign_owner(live: dict[str, Any], our_id: str) -> str | None:
    """Who else owns a live object, when it is not (yet) ours."""
    meta = live.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    part_of = labels.get(PART_OF_LABEL)
    if part_of and part_of != our_id:
        return f"ApplySet {part_of}"
    if part_of == our_id:
        return None
    for key, values in FOREIGN_OWNERS.items():
        value = labels.get(key, annotations.get(key))
        if value is not None and (values is None or value in values):
            return f"{key}={value}"
    return None


def label_member(obj: dict[str, Any], set_id: str,
                 source: SourceId | None = None) -> dict[str, Any]:
    """A copy of ``obj`` carrying this ApplySet's part-of label (and its source)."""
    meta = dict(obj["metadata"])
    meta["labels"] = {**(meta.get("labels") or {}), PART_OF_LABEL: set_id}
    if source is not None:
        meta["annotations"] = {**(meta.get("annotations") or {}),
                               SOURCE_ANNOTATION: source.annotation()}
    return {**obj, "metadata": meta}


def other_source(live: dict[str, Any] | None, source: SourceId | None) -> str:
    """Why a member of this set was written from another source than
    ``source`` ("" when it was not, or says nothing: written before members
    carried their source)."""
    ann = ((live or {}).get("metadata") or {}).get("annotations") or {}
    value = ann.get(SOURCE_ANNOTATION)
    if not value or source is None:
        return ""
    theirs = SourceId.from_annotation(str(value))
    if theirs.same(source):
        return ""
    return f"written from another source ({theirs}; this run reads {source})"


def keeps(live: dict[str, Any]) -> bool:
    """``kubectl-gitops.io/prune: "false"`` keeps an object from being pruned."""
    ann = (live.get("metadata") or {}).get("annotations") or {}
    return str(ann.get(PRUNE_ANNOTATION, "")).lower() == "false"
