"""The desired state: a source read, parsed and resolved into identities
(each manifest's object, its namespace filled in, its kind's scope checked).

This is the single entry point diff, sync, rollback and validate use; none
of them reads files itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from kubectl_gitops.errors import ManifestError, ManifestErrors
from kubectl_gitops.kube.resources import Mapper, ObjectId, ResourceType, builtin_types
from kubectl_gitops.source import manifests as _manifests
from kubectl_gitops.source import order
from kubectl_gitops.source.manifests import Manifest
from kubectl_gitops.source.tree import Source

if TYPE_CHECKING:
    from kubectl_gitops.kube.client import Kube
    from kubectl_gitops.source.helm import RenderContext


def default_namespace(src: Source, namespace: str | None, kube: Kube | None) -> str:
    """``--namespace``, else ``.gitops.yaml``, else the context's, else default."""
    return namespace or src.namespace or (kube.info.namespace if kube else "") or "default"


def render_context(src: Source, kube: Kube | None, namespace: str) -> RenderContext:
    """How charts under the source render: with the cluster's Capabilities
    (asked once, and only when a chart renders), else the schema release's."""
    from kubectl_gitops.source import helm  # noqa: PLC0415

    if kube is None:
        return helm.RenderContext.offline(src)
    asked: list[helm.Capabilities] = []

    def capabilities() -> helm.Capabilities:
        if not asked:
            version, api_versions = kube.capabilities()
            asked.append(helm.Capabilities(version, tuple(api_versions)))
        return asked[0]

    return helm.RenderContext(capabilities, namespace)


def load(src: Source, *, kube: Kube | None = None, namespace: str | None = None,
         unknown_kinds_ok: bool = False) -> list[Manifest]:
    """Every desired object with its namespace resolved; all errors together.

    With ``kube``, scope comes from the cluster's discovery (plus CRDs in the
    tree); without, from built-in knowledge (the offline mode of the hook).
    """
    manifests, errors = _manifests.read(src, cache=True, render=render_context(
        src, kube, default_namespace(src, namespace, kube)))
    mapper: Mapper = kube.mapper((m.group, m.kind) for m in manifests) \
        .with_types(crd_types(manifests)) if kube else offline_mapper(manifests)
    resolved, more = resolve(manifests, mapper, default_namespace(src, namespace, kube),
                             unknown_kinds_ok=unknown_kinds_ok)
    errors += more + _manifests.repeated_key_errors(resolved)
    if errors:
        errors.sort(key=lambda e: (e.path, e.line or 0))
        raise ManifestErrors(errors)
    return resolved


def object_id(m: Manifest) -> ObjectId:
    return ObjectId(m.group, m.kind, m.namespace or "", m.name)


def crd_types(manifests: Iterable[Manifest]) -> dict[tuple[str, str], ResourceType]:
    """Kinds defined by CRDs among the manifests."""
    types: dict[tuple[str, str], ResourceType] = {}
    for m in manifests:
        if m.kind != "CustomResourceDefinition" or m.group != "apiextensions.k8s.io":
            continue
        spec = m.obj.get("spec") or {}
        names = spec.get("names") or {}
        group, kind = spec.get("group"), names.get("kind")
        if not isinstance(group, str) or not isinstance(kind, str):
            continue  # validation reports the malformed CRD itself
        served = [v.get("name") for v in spec.get("versions") or []
                  if isinstance(v, dict) and v.get("served", True)]
        types[(group, kind)] = ResourceType(group, kind, spec.get("scope") != "Cluster",
                                            plural=str(names.get("plural") or ""),
                                            version=str(served[0]) if served else "")
    return types


def offline_mapper(manifests: Iterable[Manifest] = ()) -> Mapper:
    """Built-in kinds plus CRDs in the tree: no cluster needed (the hook)."""
    return Mapper(builtin_types()).with_types(crd_types(manifests))


def resolve(manifests: list[Manifest], mapper: Mapper, default_namespace: str,
            *, unknown_kinds_ok: bool = False) -> tuple[list[Manifest], list[ManifestError]]:
    """Fill in namespaces, check scope and identities; return every problem.

    ``unknown_kinds_ok`` lets kinds the mapper does not know pass as
    namespaced-if-given (offline validation reports them separately).
    """
    errors: list[ManifestError] = []
    seen: dict[ObjectId, Manifest] = {}
    out: list[Manifest] = []
    for m in manifests:
        rtype = mapper.lookup(m.group, m.kind)
        if rtype is None and not unknown_kinds_ok:
            errors.append(ManifestError(m.path, m.line, f"unknown kind {m.kind} in "
                                        f"{m.api_version}: no such resource type in the "
                                        "cluster and no CRD for it in this revision", obj=str(m)))
            continue
        meta = m.obj["metadata"]
        if rtype is not None and not rtype.namespaced:
            # A chart's cluster-scoped object may carry the release namespace:
            # helm drops it, and so does this.
            if m.namespace and not m.default_namespace:
                errors.append(ManifestError(m.path, m.line, f"{m.kind} is cluster-scoped but "
                                            "has metadata.namespace; remove it", obj=str(m)))
                continue
            meta.pop("namespace", None)
        elif rtype is not None and not m.namespace:
            meta["namespace"] = m.default_namespace or default_namespace
        errors += [ManifestError(m.path, m.line, p, obj=str(m)) for p in order.problems(m.obj)]
        if not m.name:  # a hook with generateName: each run creates another
            out.append(m)
            continue
        oid = object_id(m)
        if oid in seen:
            first = seen[oid]
            errors.append(ManifestError(m.path, m.line, f"duplicate object, also defined at "
                                        f"{first.location}", obj=str(oid)))
            continue
        seen[oid] = m
        out.append(m)
    return out, errors
