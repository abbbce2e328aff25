"""The application a command works on: a source, a cluster, its ApplySet.

An app's identity is its source: the repository (its remote URL, else its
first commit) and the path inside it. The default name is derived from
that, never from the checkout directory's name, so two unrelated
repositories both checked out as ``deploy/`` are two apps.
"""

from __future__ import annotations

import posixpath
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from kubectl_gitops.engine import applyset, desired
from kubectl_gitops.engine.applyset import SourceId
from kubectl_gitops.errors import ClusterError, ConfigError
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides
from kubectl_gitops.source import git, order
from kubectl_gitops.source.manifests import Manifest
from kubectl_gitops.source.tree import Source

T = TypeVar("T")

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_MAX_DEFAULT = 200  # room for the Lease's prefix within 253 characters


@dataclass
class App:
    src: Source
    kube: Kube
    manifests: list[Manifest]  # the members: what the revision applies
    parent: applyset.Parent
    parent_live: dict[str, Any] | None
    source: SourceId | None = None  # where this run reads from
    hooks: list[Manifest] = field(default_factory=list)  # run at a moment of the sync


def normalize_url(url: str, root: str = ".") -> str:
    """A remote URL as ``host/path`` without scheme, user, password, port
    or ``.git``, so the https and ssh spellings of one repo agree and no
    credential is ever recorded. A local path stays an absolute path."""
    url = url.strip()
    scp = re.match(r"^(?:[^@/:]+@)?([^/:]+):(?!//)(.+)$", url)
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme == "file":
            return posixpath.normpath(parts.path)
        host, path = (parts.hostname or "").lower(), parts.path
    elif scp and not url.startswith(("/", ".")):
        host, path = scp.group(1).lower(), scp.group(2)
    else:
        return posixpath.normpath(posixpath.join(root, url))
    path = path.strip("/")
    path = path[:-4] if path.endswith(".git") else path
    return f"{host}/{path}"


def _remote_url(root: str) -> str:
    """``origin``'s URL, else the first remote's by name; "" without remotes."""
    proc = git.run(["config", "--get-regexp", r"^remote\..*\.url$"], cwd=root, check=False)
    urls: dict[str, str] = {}
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        key, _, url = line.partition(" ")
        urls.setdefault(key[len("remote."):-len(".url")], url)
    if not urls:
        return ""
    return normalize_url(urls.get("origin") or urls[sorted(urls)[0]], root)


def _root_commit(src: Source) -> str:
    proc = git.run(["rev-list", "--max-parents=0", src.sha or "HEAD"], cwd=src.root,
                   check=False)
    roots = proc.stdout.decode().split()
    return min(roots) if proc.returncode == 0 and roots else ""


def source_id(src: Source) -> SourceId:
    """The app's source: one git call, two without a remote."""
    repo = _remote_url(str(src.root))
    return SourceId(repo, "" if repo else _root_commit(src), src.path)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")


def default_name(src: Source, sid: SourceId) -> str:
    """The repo's name (its remote's last path element) and the path inside
    it: ``shop`` for the root of github.com/acme/shop, ``shop-deploy-prod``
    for deploy/prod in it. A repo without remote uses its first commit:
    ``deploy-3f2a1b9``."""
    if sid.repo:
        parts = [posixpath.basename(sid.repo.rstrip("/")), src.path]
    elif sid.root_commit:
        parts = [src.path or "app", sid.root_commit[:7]]
    else:
        raise ConfigError("the repository has no remote and no commit to name the app "
                          "after; set --name or name: in .gitops.yaml")
    name = _slug("-".join(p for p in parts if p))[:_MAX_DEFAULT].strip("-.")
    return name or "gitops"


def legacy_name(src: Source) -> str:
    """The default name before 0.2: the checkout directory's."""
    return _slug(src.root.name) or "gitops"


def app_name(src: Source, explicit: str | None, sid: SourceId | None = None) -> str:
    """``--name``, else ``.gitops.yaml``'s, else :func:`default_name`."""
    name = explicit or src.name or default_name(src, sid or source_id(src))
    if not _NAME.match(name):
        raise ConfigError(f"{name!r} is not a valid application name (lower-case letters, "
                          "digits, '-' and '.'); set --name or name: in .gitops.yaml")
    return name


def source_conflict(app: App) -> str | None:
    """How the app's recorded source differs from this run's, or None."""
    recorded, ours = app.parent.source, app.source
    if recorded is None or ours is None or recorded.same(ours):
        return None
    return f"{app.parent.label} records source {recorded}; this run reads {ours}"


def connect(cluster: Overrides, concurrency: int = 16, *,
            deadline: float | None = None) -> Kube:
    """The connection kubectl would make with these flags (``cluster``, from
    ``cli.common.cluster_options``). ``deadline`` bounds the whole run's
    requests, in seconds."""
    return Kube(cluster, concurrency=concurrency, deadline=deadline)


def load(src: Source, kube: Kube, *, name: str | None = None,
         namespace: str | None = None) -> App:
    """Read the desired state and this application's ApplySet parent.

    The cluster is asked (discovery, then the parent) in a thread while git
    is read and parsed here: the same requests, no longer one after the
    other with the parsing of hundreds of manifests."""
    ns = desired.default_namespace(src, namespace, kube)

    def ask() -> tuple[SourceId, tuple[str, dict[str, Any] | None]]:
        kube.resource_types()
        sid = source_id(src)
        return sid, _find(src, kube, name, ns, sid)

    asked = started(ask)
    manifests = desired.load(src, kube=kube, namespace=namespace)
    sid, (app, parent_live) = asked()
    parent = applyset.parent_from_live(app, ns, parent_live)
    problem = applyset.check_parent(parent, parent_live)
    if problem:
        raise ClusterError(problem)
    hooks = [m for m in manifests if order.is_hook(m.obj)]
    members = [m for m in manifests if not order.is_hook(m.obj)] if hooks else manifests
    return App(src, kube, members, parent, parent_live, sid,
               hooks=[h for h in hooks if order.SKIP not in order.hook_phases(h.obj)])


def started(fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` running in a thread from now on; the returned call waits for
    its value (or raises its error). A daemon: an error in the caller
    meanwhile (invalid manifests) ends the run without waiting for it."""
    out: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            out.append((True, fn()))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out.append((False, e))

    thread = threading.Thread(target=run, name="ask", daemon=True)
    thread.start()

    def result() -> T:
        thread.join()
        ok, value = out[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    return result


def name_in_cluster(src: Source, kube: Kube, explicit: str | None, namespace: str) -> str:
    """The app's name as :func:`load` finds it (for history and rollback)."""
    return _find(src, kube, explicit, namespace, source_id(src))[0]


def _find(src: Source, kube: Kube, explicit: str | None, ns: str, sid: SourceId) \
        -> tuple[str, dict[str, Any] | None]:
    """The app's name and its parent as it is in the cluster (None: none yet)."""
    app = app_name(src, explicit, sid)
    live = kube.get(applyset.PARENT_TYPE, ns, app)
    if live is None and not (explicit or src.name):
        return _legacy(src, kube, ns, sid) or (app, None)
    return app, live


def _legacy(src: Source, kube: Kube, ns: str, sid: SourceId) \
        -> tuple[str, dict[str, Any]] | None:
    """An app synced before 0.2 under the checkout directory's name keeps
    working: its parent is used when it records no source or this one."""
    old = legacy_name(src)
    live = kube.get(applyset.PARENT_TYPE, ns, old) if _NAME.match(old) else None
    if live is None:
        return None
    recorded = applyset.parent_from_live(old, ns, live).source
    return (old, live) if recorded is None or recorded.same(sid) else None
