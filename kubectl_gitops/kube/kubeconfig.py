"""Find and read the connection settings exactly as kubectl (client-go) does.

No ``kubernetes`` package: importing it costs about a second, more than a
whole no-change sync should take, and its loader differs from kubectl's in
the cases that matter (several KUBECONFIG files, exec plugins, impersonation).

The rules followed, from client-go's ``clientcmd``:

* ``--kubeconfig`` names one file, which must exist; else ``$KUBECONFIG`` is
  a list of files where missing ones are skipped; else ``~/.kube/config``.
  With none of them and ``KUBERNETES_SERVICE_HOST`` set, the pod's service
  account is used (in-cluster).
* Merging: the first file to define a cluster, user or context name wins,
  and so does the first ``current-context``. Relative paths are resolved
  against the file that names them.
* Flags override the chosen context field by field (``--cluster``,
  ``--user``, ``--server``, ``--token``, ``--as``...).

Credentials themselves (exec plugins, OIDC, key material) live in
:mod:`kubectl_gitops.kube.credentials`.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kubectl_gitops.errors import ClusterError

if TYPE_CHECKING:  # loaded with the first connection: the hook builds Overrides only
    from kubectl_gitops.kube.credentials import Credentials, OidcProvider

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it

# Where a pod finds its service account; the variable exists for tests only.
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICEACCOUNT_DIR_ENV = "KUBECTL_GITOPS_SERVICEACCOUNT_DIR"
# What a hanging exec plugin gets when --request-timeout does not say.
EXEC_TIMEOUT = 60.0


class KubeconfigError(ClusterError):
    """The kubeconfig (or a flag) cannot give a usable connection."""


@dataclass(frozen=True)
class Overrides:
    """kubectl's global connection flags; empty values leave the kubeconfig's."""

    kubeconfig: str | None = None
    context: str | None = None
    cluster: str | None = None
    user: str | None = None
    server: str | None = None
    token: str | None = None
    as_user: str | None = None
    as_groups: tuple[str, ...] = ()
    as_uid: str | None = None
    certificate_authority: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None
    tls_server_name: str | None = None
    insecure_skip_tls_verify: bool = False
    request_timeout: float | None = None  # seconds; 0 means no limit
    verbosity: int = 0

    def argv(self) -> list[str]:
        """The same flags as a command line, to hand to a child command."""
        args: list[str] = []
        for flag, value in (("--kubeconfig", self.kubeconfig), ("--context", self.context),
                            ("--cluster", self.cluster), ("--user", self.user),
                            ("--server", self.server), ("--token", self.token),
                            ("--as", self.as_user), ("--as-uid", self.as_uid),
                            ("--certificate-authority", self.certificate_authority),
                            ("--client-certificate", self.client_certificate),
                            ("--client-key", self.client_key),
                            ("--tls-server-name", self.tls_server_name)):
            if value:
                args += [flag, value]
        for group in self.as_groups:
            args += ["--as-group", group]
        if self.insecure_skip_tls_verify:
            args.append("--insecure-skip-tls-verify")
        if self.request_timeout is not None:
            args += ["--request-timeout", f"{self.request_timeout:g}s"]
        if self.verbosity:
            args += ["-v", str(self.verbosity)]
        return args


@dataclass
class Connection:
    """Everything the transport needs to reach and authenticate to one server."""

    server: str
    context: str
    namespace: str
    credentials: Credentials
    verify: bool = True
    ca_data: bytes | None = field(default=None, repr=False)  # PEM; None: the system's roots
    tls_server_name: str | None = None
    proxy_url: str | None = None
    impersonate: list[tuple[str, str]] = field(default_factory=list)
    request_timeout: float | None = None
    verbosity: int = 0

    def authorization(self) -> str | None:
        return self.credentials.authorization()


# --- finding and merging the files ------------------------------------------------


def _paths(explicit: str | None) -> list[Path]:
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise KubeconfigError(f"--kubeconfig {explicit}: no such file")
        return [path]
    env = os.environ.get("KUBECONFIG")
    if env:
        seen: list[Path] = []
        for p in env.split(os.pathsep):
            if p and Path(p).expanduser() not in seen:
                seen.append(Path(p).expanduser())
        return seen
    return [Path.home() / ".kube" / "config"]


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise KubeconfigError(f"{path}: cannot read the kubeconfig: "
                              f"{e.strerror or e}") from e
    try:
        doc = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise KubeconfigError(f"{where}: not a valid kubeconfig: {problem}") from e
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise KubeconfigError(f"{path}: not a valid kubeconfig: expected a mapping")
    return doc


@dataclass
class _Merged:
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    contexts: dict[str, dict[str, Any]] = field(default_factory=dict)
    current: str | None = None
    files: list[Path] = field(default_factory=list)


def _merge(paths: list[Path]) -> _Merged:
    merged = _Merged()
    for path in paths:
        if not path.is_file():
            continue  # client-go skips a missing file in KUBECONFIG
        doc = _read(path)
        merged.files.append(path)
        for key, single, into in (("clusters", "cluster", merged.clusters),
                                  ("users", "user", merged.users),
                                  ("contexts", "context", merged.contexts)):
            entries = doc.get(key) or []
            if not isinstance(entries, list):
                raise KubeconfigError(f"{path}: {key} must be a list")
            for entry in entries:
                if not isinstance(entry, dict) or not isinstance(entry.get(single) or {}, dict):
                    raise KubeconfigError(f"{path}: an entry of {key} is not a mapping "
                                          f"with name and {single}")
                name = str(entry.get("name") or "")
                if name and name not in into:
                    into[name] = {**(entry.get(single) or {}), "_file": path}
        merged.current = merged.current or doc.get("current-context") or None
    return merged


# --- choosing and overriding ---------------------------------------------------


def load(kubeconfig: str | None = None, context: str | None = None, *,
         overrides: Overrides | None = None) -> Connection:
    """The connection kubectl would make with these flags and this environment."""
    o = overrides or Overrides(kubeconfig=kubeconfig, context=context)
    paths = _paths(o.kubeconfig)
    merged = _merge(paths)
    if not merged.files and not o.kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return _in_cluster(o)
    if not merged.files and not o.server:
        raise KubeconfigError(f"no kubeconfig found (looked for {', '.join(map(str, paths))}) "
                              "and not running in a pod; pass --kubeconfig or set KUBECONFIG")
    name = o.context or merged.current or ""
    if o.context and name not in merged.contexts:
        raise KubeconfigError(f"context {name!r} not found in {_files(merged)}")
    ctx = merged.contexts.get(name, {})
    if not name and not o.server and not (o.cluster and o.user):
        raise KubeconfigError(f"{_files(merged)} sets no current-context; pass --context")
    cluster_name = o.cluster or str(ctx.get("cluster") or "")
    user_name = o.user or str(ctx.get("user") or "")
    if o.cluster and cluster_name not in merged.clusters:
        raise KubeconfigError(f"cluster {cluster_name!r} not found in {_files(merged)}")
    if o.user and user_name not in merged.users:
        raise KubeconfigError(f"user {user_name!r} not found in {_files(merged)}")
    cluster = merged.clusters.get(cluster_name, {})
    user = merged.users.get(user_name, {})
    return _connection(o, name or cluster_name, cluster_name, cluster, user_name, user,
                       str(ctx.get("namespace") or "default"))


def contexts(kubeconfig: str | None = None) -> list[str]:
    """The contexts of the kubeconfig kubectl would read (``--kubeconfig``,
    else ``$KUBECONFIG``'s files merged, else ``~/.kube/config``), in order."""
    return list(_merge(_paths(kubeconfig)).contexts)


def _files(merged: _Merged) -> str:
    return ", ".join(map(str, merged.files)) or "the kubeconfig"


def _connection(o: Overrides, context: str, cluster_name: str, cluster: dict[str, Any],
                user_name: str, user: dict[str, Any], namespace: str) -> Connection:
    server = str(o.server or cluster.get("server") or "").rstrip("/")
    if not server:
        raise KubeconfigError(f"context {context!r}: cluster {cluster_name!r} has no server; "
                              "pass --server")
    if "://" not in server:
        server = "https://" + server  # kubectl accepts host:port
    insecure = o.insecure_skip_tls_verify or bool(cluster.get("insecure-skip-tls-verify"))
    where = f"cluster {cluster_name!r}"
    ca = None
    if o.certificate_authority:
        ca = _read_bytes(o.certificate_authority, "--certificate-authority")
    elif not o.insecure_skip_tls_verify:  # client-go: the insecure flag drops the CA
        ca = _material(cluster, "certificate-authority", where)
    # client-go: a --server override drops the kubeconfig's tls-server-name.
    tls_name = o.tls_server_name or (None if o.server else cluster.get("tls-server-name"))
    creds = _credentials(o, user_name, user, server=server, cluster=cluster, ca=ca,
                         tls_name=tls_name, insecure=insecure)
    conn = Connection(server=server, context=context, namespace=namespace, credentials=creds,
                      verify=not insecure, ca_data=ca, tls_server_name=tls_name or None,
                      proxy_url=cluster.get("proxy-url") or None,
                      impersonate=_impersonation(o, user, user_name),
                      request_timeout=o.request_timeout, verbosity=o.verbosity)
    if conn.proxy_url and not str(conn.proxy_url).startswith(("http://", "https://")):
        raise KubeconfigError(f"{where}: proxy-url {conn.proxy_url!r}: only http:// and "
                              "https:// proxies are supported")
    return conn


def _credentials(o: Overrides, user_name: str, user: dict[str, Any], *, server: str,
                 cluster: dict[str, Any], ca: bytes | None, tls_name: str | None,
                 insecure: bool) -> Credentials:
    from kubectl_gitops.kube.credentials import Credentials, ExecPlugin  # noqa: PLC0415

    where = f"user {user_name!r}"
    creds = Credentials(where=where)
    if o.client_certificate or o.client_key:
        creds.cert_pem = _read_bytes(o.client_certificate or "", "--client-certificate")
        creds.key_pem = _read_bytes(o.client_key or "", "--client-key")
    else:
        creds.cert_pem = _material(user, "client-certificate", where)
        creds.key_pem = _material(user, "client-key", where)
    if bool(creds.cert_pem) != bool(creds.key_pem):
        raise KubeconfigError(f"{where}: a client certificate needs both "
                              "client-certificate and client-key")
    if o.token:  # as in client-go, a token given as a flag replaces every other login
        creds.token = o.token
        return creds
    creds.token = user.get("token") or None
    token_file = user.get("tokenFile")
    creds.token_file = _resolve(user, str(token_file)) if token_file else None
    if user.get("username") or user.get("password"):
        creds.basic = (str(user.get("username") or ""), str(user.get("password") or ""))
    if user.get("exec") and user.get("auth-provider"):
        raise KubeconfigError(f"{where}: exec and auth-provider exclude each other")
    timeout = o.request_timeout or EXEC_TIMEOUT
    if user.get("exec"):
        creds.provider = ExecPlugin.from_config(
            user["exec"], where=where, base=_base(user), timeout=timeout,
            cluster=_cluster_info(server, cluster, ca, tls_name, insecure))
    elif user.get("auth-provider"):
        creds.provider = _auth_provider(user, user_name, timeout)
    return creds


def _auth_provider(user: dict[str, Any], user_name: str, timeout: float) -> OidcProvider:
    from kubectl_gitops.kube.credentials import OidcProvider  # noqa: PLC0415

    ap = user["auth-provider"] or {}
    name = ap.get("name")
    if name != "oidc":
        raise KubeconfigError(f"user {user_name!r}: auth-provider {name!r} is not supported "
                              "(client-go removed it too); use its exec credential plugin, "
                              "e.g. gke-gcloud-auth-plugin or kubelogin")
    config = dict(ap.get("config") or {})
    ca_file = config.get("idp-certificate-authority")
    if ca_file:
        config["idp-certificate-authority"] = _resolve(user, str(ca_file))
    return OidcProvider(config, where=f"user {user_name!r}", file=user.get("_file"),
                        user_name=user_name, timeout=timeout)


def _cluster_info(server: str, cluster: dict[str, Any], ca: bytes | None,
                  tls_name: str | None, insecure: bool) -> dict[str, Any]:
    """ExecCredential's spec.cluster, for plugins with provideClusterInfo."""
    info: dict[str, Any] = {"server": server}
    if tls_name:
        info["tls-server-name"] = tls_name
    if insecure:
        info["insecure-skip-tls-verify"] = True
    if ca:
        info["certificate-authority-data"] = base64.b64encode(ca).decode()
    if cluster.get("proxy-url"):
        info["proxy-url"] = cluster["proxy-url"]
    for ext in cluster.get("extensions") or []:
        if isinstance(ext, dict) and ext.get("name") == "client.authentication.k8s.io/exec":
            info["config"] = ext.get("extension")
    return info


def _impersonation(o: Overrides, user: dict[str, Any], user_name: str) -> list[tuple[str, str]]:
    """``Impersonate-*`` headers from the flags, else the kubeconfig's user."""
    who = o.as_user or user.get("as")
    groups = list(o.as_groups) or list(user.get("as-groups") or [])
    uid = o.as_uid or user.get("as-uid")
    extra = user.get("as-user-extra") or {}
    if not who and (groups or uid or extra):
        raise KubeconfigError(f"user {user_name!r}: impersonating groups, a uid or extra "
                              "fields needs a user to impersonate (as / --as)")
    headers: list[tuple[str, str]] = []
    if who:
        headers.append(("Impersonate-User", str(who)))
    headers += [("Impersonate-Group", str(g)) for g in groups]
    if uid:
        headers.append(("Impersonate-Uid", str(uid)))
    from urllib.parse import quote  # noqa: PLC0415 - only with impersonation

    for key, values in extra.items():
        for value in values if isinstance(values, list) else [values]:
            headers.append((f"Impersonate-Extra-{quote(str(key), safe='')}", str(value)))
    return headers


# --- files and -data fields -------------------------------------------------------


def _base(entry: dict[str, Any]) -> Path:
    file = entry.get("_file")
    return Path(file).parent if file else Path.cwd()


def _resolve(entry: dict[str, Any], path: str) -> str:
    """A path as client-go reads it: relative to the kubeconfig that names it."""
    return str(_base(entry) / os.path.expanduser(path))


def _material(entry: dict[str, Any], key: str, where: str) -> bytes | None:
    """``key-data`` decoded in memory, else the file ``key`` names, else None."""
    data = entry.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except (binascii.Error, ValueError):
            raise KubeconfigError(f"{where}: {key}-data is not valid base64") from None
    path = entry.get(key)
    if path:
        return _read_bytes(_resolve(entry, str(path)), f"{where}: {key}")
    return None


def _read_bytes(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as e:
        raise KubeconfigError(f"{what}: cannot read {path}: {e.strerror or e}") from e


# --- in a pod -----------------------------------------------------------------------


def _in_cluster(o: Overrides) -> Connection:
    """The pod's service account, as client-go's ``rest.InClusterConfig``."""
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    sa = Path(os.environ.get(SERVICEACCOUNT_DIR_ENV) or SERVICEACCOUNT_DIR)
    token = sa / "token"
    if not token.is_file() and not o.token:
        raise KubeconfigError(f"in-cluster: no service-account token at {token} and no "
                              "kubeconfig; pass --kubeconfig or set KUBECONFIG")
    server = o.server or f"https://{f'[{host}]' if ':' in host else host}:{port}"
    ca = (_read_bytes(o.certificate_authority, "--certificate-authority")
          if o.certificate_authority else
          _read_bytes(str(sa / "ca.crt"), "in-cluster CA") if (sa / "ca.crt").is_file()
          else None)
    try:
        namespace = (sa / "namespace").read_text().strip() or "default"
    except OSError:
        namespace = "default"
    from kubectl_gitops.kube.credentials import Credentials  # noqa: PLC0415

    creds = Credentials(where="the pod's service account", token=o.token,
                        token_file=None if o.token else str(token))
    return Connection(server=server.rstrip("/"), context="in-cluster", namespace=namespace,
                      credentials=creds, verify=not o.insecure_skip_tls_verify, ca_data=ca,
                      tls_server_name=o.tls_server_name,
                      impersonate=_impersonation(o, {}, "in-cluster"),
                      request_timeout=o.request_timeout, verbosity=o.verbosity)
