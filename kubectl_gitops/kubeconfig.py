"""Read a kubeconfig the way kubectl does, without the ``kubernetes`` package.

Importing the official client costs about a second, more than a whole
no-change sync should take. Certificates, tokens and basic auth are read
here; kubeconfigs that need an exec plugin or an auth provider are handed to
the official loader, which knows them all.
"""

from __future__ import annotations

import atexit
import base64
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubectl_gitops.errors import ClusterError

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it


@dataclass
class Connection:
    server: str
    context: str
    namespace: str
    verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    token_file: str | None = None
    basic: str | None = None
    fallback: Any = field(default=None, repr=False)  # kubernetes.client.Configuration

    def authorization(self) -> str | None:
        if self.fallback is not None:
            cfg = self.fallback
            if cfg.refresh_api_key_hook is not None:
                cfg.refresh_api_key_hook(cfg)
            return cfg.get_api_key_with_prefix("authorization") if cfg.api_key else None
        if self.token_file:
            return "Bearer " + Path(self.token_file).read_text().strip()
        if self.token:
            return f"Bearer {self.token}"
        if self.basic:
            return f"Basic {self.basic}"
        return None


def _paths(explicit: str | None) -> list[Path]:
    if explicit:
        return [Path(explicit).expanduser()]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [Path.home() / ".kube" / "config"]


def _merged(paths: list[Path]) -> tuple[dict[str, Any], Path]:
    """kubectl's merge: the first file to define a name or current-context wins."""
    merged: dict[str, Any] = {"clusters": {}, "users": {}, "contexts": {}, "current": None}
    base = paths[0]
    found = False
    for path in paths:
        if not path.is_file():
            continue
        try:
            doc = yaml.load(path.read_text(), Loader=_Loader) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ClusterError(f"{path}: cannot read kubeconfig: {e}") from e
        found = True
        for key, single in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for entry in doc.get(key) or []:
                entry_dict = dict(entry.get(single) or {})
                entry_dict["_dir"] = str(path.parent)
                merged[key].setdefault(entry.get("name"), entry_dict)
        merged["current"] = merged["current"] or doc.get("current-context")
    if not found:
        raise ClusterError(f"no kubeconfig at {', '.join(map(str, paths))}; "
                           "pass --kubeconfig or set KUBECONFIG")
    return merged, base


def _file(entry: dict[str, Any], key: str) -> str | None:
    """A path from ``key`` or a temp file holding ``key-data``."""
    data = entry.get(f"{key}-data")
    if data:
        tmp = tempfile.NamedTemporaryFile(prefix="kubectl-gitops-", delete=False)
        tmp.write(base64.b64decode(data))
        tmp.close()
        os.chmod(tmp.name, 0o600)
        atexit.register(os.unlink, tmp.name)
        return tmp.name
    path = entry.get(key)
    if path:
        return str(Path(entry["_dir"], os.path.expanduser(path)))
    return None


def load(kubeconfig: str | None, context: str | None) -> Connection:
    merged, base = _merged(_paths(kubeconfig))
    name = context or merged["current"]
    if not name:
        raise ClusterError("the kubeconfig has no current-context; pass --context")
    ctx = merged["contexts"].get(name)
    if ctx is None:
        raise ClusterError(f"context {name!r} not found in the kubeconfig")
    cluster = merged["clusters"].get(ctx.get("cluster"))
    if cluster is None or not cluster.get("server"):
        raise ClusterError(f"context {name!r}: cluster {ctx.get('cluster')!r} has no server")
    user = merged["users"].get(ctx.get("user")) or {}
    conn = Connection(server=str(cluster["server"]).rstrip("/"), context=name,
                      namespace=ctx.get("namespace") or "default",
                      verify=not cluster.get("insecure-skip-tls-verify", False),
                      ca_file=_file(cluster, "certificate-authority"))
    if user.get("exec") or user.get("auth-provider"):
        conn.fallback = _official(kubeconfig or str(base), name)
        conn.cert_file, conn.key_file = conn.fallback.cert_file, conn.fallback.key_file
        return conn
    conn.cert_file = _file(user, "client-certificate")
    conn.key_file = _file(user, "client-key")
    conn.token = user.get("token")
    conn.token_file = user.get("tokenFile")
    if user.get("username"):
        raw = f"{user['username']}:{user.get('password', '')}".encode()
        conn.basic = base64.b64encode(raw).decode()
    return conn


def _official(path: str, context: str) -> Any:
    from kubernetes import client, config  # noqa: PLC0415
    from kubernetes.config.config_exception import ConfigException  # noqa: PLC0415

    cfg = client.Configuration()
    try:
        config.load_kube_config(config_file=path, context=context, client_configuration=cfg,
                                persist_config=False)
    except (ConfigException, OSError) as e:
        raise ClusterError(f"cannot load the kubeconfig context {context!r}: {e}") from e
    return cfg
