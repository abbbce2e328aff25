"""The application a command works on: a source, a cluster, its ApplySet."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kubectl_gitops import applyset, desired
from kubectl_gitops.errors import ClusterError, ConfigError
from kubectl_gitops.kube import Kube
from kubectl_gitops.kubeconfig import Overrides
from kubectl_gitops.manifests import Manifest
from kubectl_gitops.source import Source

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass
class App:
    src: Source
    kube: Kube
    manifests: list[Manifest]
    parent: applyset.Parent
    parent_live: dict[str, Any] | None


def app_name(src: Source, explicit: str | None) -> str:
    """``--name``, else ``.gitops.yaml``'s, else the repo directory made a valid name."""
    if explicit:
        name = explicit
    elif src.name != src.root.name:
        name = src.name
    else:
        name = re.sub(r"[^a-z0-9.-]+", "-", src.root.name.lower()).strip("-.") or "gitops"
    if not _NAME.match(name):
        raise ConfigError(f"{name!r} is not a valid application name (lower-case letters, "
                          "digits, '-' and '.'); set --name or name: in .gitops.yaml")
    return name


def connect(cluster: Overrides | str | None, context: str | None = None,
            concurrency: int = 16, *, deadline: float | None = None) -> Kube:
    """The connection kubectl would make with these flags (``cluster``, from
    ``cli.common.cluster_options``; a kubeconfig path is also accepted).
    ``deadline`` bounds the whole run's requests, in seconds."""
    if not isinstance(cluster, Overrides):
        cluster = Overrides(kubeconfig=cluster, context=context)
    return Kube(cluster, concurrency=concurrency, deadline=deadline)


def load(src: Source, kube: Kube, *, name: str | None = None,
         namespace: str | None = None) -> App:
    """Read the desired state and this application's ApplySet parent."""
    manifests = desired.load(src, kube=kube, namespace=namespace)
    ns = desired.default_namespace(src, namespace, kube)
    app = app_name(src, name)
    parent_live = kube.get(applyset.PARENT_TYPE, ns, app)
    parent = applyset.parent_from_live(app, ns, parent_live)
    problem = applyset.check_parent(parent, parent_live)
    if problem:
        raise ClusterError(problem)
    return App(src, kube, manifests, parent, parent_live)
