"""The desired state: a source read, parsed and resolved into identities.

This is the single entry point diff, sync, rollback and validate use; none
of them reads files itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kubectl_gitops import manifests as _manifests
from kubectl_gitops.errors import ManifestErrors
from kubectl_gitops.manifests import Manifest
from kubectl_gitops.resources import Mapper, offline_mapper, resolve
from kubectl_gitops.source import Source

if TYPE_CHECKING:
    from kubectl_gitops.helm import RenderContext
    from kubectl_gitops.kube import Kube


def default_namespace(src: Source, namespace: str | None, kube: Kube | None) -> str:
    """``--namespace``, else ``.gitops.yaml``, else the context's, else default."""
    return namespace or src.namespace or (kube.info.namespace if kube else "") or "default"


def render_context(src: Source, kube: Kube | None, namespace: str) -> RenderContext:
    """How charts under the source render: with the cluster's Capabilities
    (asked once, and only when a chart renders), else the schema release's."""
    from kubectl_gitops import helm  # noqa: PLC0415

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
    mapper: Mapper = kube.mapper((m.group, m.kind) for m in manifests).with_crds(manifests) \
        if kube else offline_mapper(manifests)
    resolved, more = resolve(manifests, mapper, default_namespace(src, namespace, kube),
                             unknown_kinds_ok=unknown_kinds_ok)
    errors += more + _manifests.repeated_key_errors(resolved)
    if errors:
        errors.sort(key=lambda e: (e.path, e.line or 0))
        raise ManifestErrors(errors)
    return resolved
