"""Helm charts as a renderer: the real ``helm template``, charts from git,
chart repositories and OCI registries, and two caches.

What renders, and how (README "Helm charts"):

- ``helm:`` in ``.gitops.yaml`` (:class:`Spec`): ``chart`` a path in the
  repository, or ``repo`` + ``chart`` + ``version``, or ``oci://...`` +
  ``version``; ``releaseName``, ``namespace``, ``valuesFiles`` (paths in
  git, SOPS-encrypted or not), inline ``values``, ``includeCRDs``;
- a directory holding ``Chart.yaml`` under PATH (release: the directory's
  name, the chart's own values).

``helm template`` gets ``--kube-version`` and ``--api-versions`` from the
live cluster (:class:`Capabilities`; offline, the schema release), the
values merged here (helm's own rule: maps merge, later files win, inline
``values`` last) on its stdin, so decrypted values never touch a file.

Caches, both under ``$XDG_CACHE_HOME/kubectl-gitops/`` (private, written
whole): ``charts/`` keeps each downloaded archive by (repository, chart,
version), checked against the index's digest when fetched and against its
own hash when read; ``rendered/`` keeps what a render parsed to, by (chart
digest, values, release, namespace, Capabilities, helm), so a no-change sync
of a chart costs a hash and a JSON read. Output holding a Secret, or made
from decrypted values, is never kept.

Chart hooks (``helm.sh/hook``) are not applied: test hooks are skipped
(``--skip-tests``); the others are left out of the desired set and named on
stderr (:func:`hooks_note`).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from kubectl_gitops.errors import ConfigError, ManifestError

CHART_FILE = "Chart.yaml"
HOOK = "helm.sh/hook"
_SPEC_KEYS = {"chart", "repo", "version", "releaseName", "namespace", "valuesFiles", "values",
              "includeCRDs", "plainHTTP"}
_EXACT = re.compile(r"^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_RELEASE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_TIMEOUT = 60.0
# Bump when what a render entry holds changes.
_RENDER_FORMAT = "1"


# --- what to render ---------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    """One chart to render. ``chart``: a repo-relative path (local), a chart
    name (with ``repo``), or an ``oci://`` reference."""

    chart: str
    repo: str | None = None
    version: str | None = None
    release_name: str | None = None
    namespace: str | None = None
    values_files: tuple[str, ...] = ()
    values: dict[str, Any] | None = field(default=None, compare=False)
    include_crds: bool = True
    plain_http: bool = False
    where: str = ".gitops.yaml"  # what errors name

    @property
    def kind(self) -> str:
        if self.chart.startswith("oci://") or (self.repo or "").startswith("oci://"):
            return "oci"
        return "repo" if self.repo else "local"

    @property
    def reference(self) -> str:
        """The chart as a user names it: its path, ``repo/chart`` or ``oci://...``."""
        if self.kind == "local":
            return self.chart
        if self.chart.startswith("oci://"):
            return self.chart
        return f"{_public(self.repo or '').rstrip('/')}/{self.chart}"

    @property
    def name(self) -> str:
        return posixpath.basename(self.chart.rstrip("/")) or "chart"

    @property
    def label(self) -> str:
        """Where rendered objects say they come from."""
        if self.kind == "local":
            return self.chart
        return f"{self.name}@{self.version}"


def parse_spec(doc: Any, where: str) -> Spec:
    """``helm:`` of ``.gitops.yaml``; one clear line for anything wrong."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: helm must be a mapping (chart, repo, version, "
                          "releaseName, namespace, valuesFiles, values, includeCRDs)")
    unknown = set(doc) - _SPEC_KEYS
    if unknown:
        raise ConfigError(f"{where}: helm: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("chart", "repo", "releaseName", "namespace"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise ConfigError(f"{where}: helm.{key} must be a string")
    version = doc.get("version")
    if version is not None and not isinstance(version, (str, int, float)):
        raise ConfigError(f"{where}: helm.version must be a string")
    chart = doc.get("chart")
    if not chart:
        raise ConfigError(f"{where}: helm.chart is required (a path in the repository, a "
                          "chart name with helm.repo, or oci://...)")
    files = doc.get("valuesFiles") or []
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise ConfigError(f"{where}: helm.valuesFiles must be a list of paths")
    values = doc.get("values")
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{where}: helm.values must be a mapping")
    for key in ("includeCRDs", "plainHTTP"):
        if key in doc and not isinstance(doc[key], bool):
            raise ConfigError(f"{where}: helm.{key} must be true or false")
    release = doc.get("releaseName")
    if release is not None and (not _RELEASE.match(release) or len(release) > 53):
        raise ConfigError(f"{where}: helm.releaseName {release!r} is not a valid release "
                          "name (lower-case DNS name, at most 53 characters)")
    chart = chart.strip()
    spec = Spec(chart=chart if "://" in chart else posixpath.normpath(chart),
                repo=(doc.get("repo") or None),
                version=None if version is None else str(version), release_name=release,
                namespace=doc.get("namespace") or None,
                values_files=tuple(posixpath.normpath(f) for f in files),
                values=values, include_crds=doc.get("includeCRDs", True),
                plain_http=doc.get("plainHTTP", False), where=where)
    if spec.kind != "local":
        if not spec.version:
            raise ConfigError(f"{where}: helm.version is required for {spec.reference}")
        if not _EXACT.match(spec.version):
            raise ConfigError(f"{where}: helm.version {spec.version!r} must be one exact "
                              "version (a range is not pinned by the revision)")
        if spec.kind == "repo" and not str(spec.repo).startswith(("https://", "http://")):
            raise ConfigError(f"{where}: helm.repo must be an https://, http:// or oci:// URL")
    elif spec.chart.startswith(("/", "../")) or spec.chart == ".." or "://" in spec.chart:
        raise ConfigError(f"{where}: helm.chart {spec.chart!r}: a local chart is a path "
                          "inside the repository (else give helm.repo or oci://)")
    for f in spec.values_files:
        if f.startswith(("/", "../")) or f == ".." or "://" in f:
            raise ConfigError(f"{where}: helm.valuesFiles: {f!r} must be a path inside the "
                              "repository")
    return spec


@dataclass(frozen=True)
class Capabilities:
    """What ``Capabilities`` tells a chart: the cluster's version and its
    served API versions (``group/version`` and ``group/version/Kind``)."""

    kube_version: str
    api_versions: tuple[str, ...] = ()

    def args(self) -> list[str]:
        out = ["--kube-version", self.kube_version]
        for v in self.api_versions:
            out += ["--api-versions", v]
        return out

    def digest(self) -> str:
        return _sha(self.kube_version, *self.api_versions)


def _sha(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogateescape") if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def _public(url: str) -> str:
    """A URL without user and password: what messages may show."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# --- the helm binary ----------------------------------------------------------------

_HELM: list[tuple[str, str]] = []


def helm_binary() -> tuple[str, str]:
    """helm on PATH and its identity (path, size, mtime) for cache keys,
    without running it."""
    if not _HELM:
        exe = shutil.which("helm")
        if exe is None:
            raise FileNotFoundError("helm")
        st = os.stat(exe)
        _HELM.append((exe, f"{os.path.realpath(exe)}:{st.st_size}:{st.st_mtime_ns}"))
    return _HELM[0]


def _helm_env() -> dict[str, str]:
    from kubectl_gitops.source import git  # noqa: PLC0415

    return git.clean_env({"HELM_NO_PLUGINS": "1"})


# --- charts from repositories and registries ------------------------------------

class ChartError(Exception):
    """A chart could not be had; the message is one line."""


def archive(spec: Spec) -> tuple[Path, str]:
    """The chart archive of a repository or OCI chart and its digest: from the
    cache, else downloaded once (and checked) and kept."""
    from kubectl_gitops import diskcache  # noqa: PLC0415

    base = diskcache.directory("charts")
    if base is None:
        raise ChartError("no usable cache directory for charts (set XDG_CACHE_HOME)")
    key = _sha(spec.kind, spec.repo or "", spec.chart, str(spec.version))
    folder = os.path.join(base, key[:2], key[2:34])
    meta = diskcache.read_json(os.path.join(folder, "chart.json"))
    if isinstance(meta, dict) and isinstance(meta.get("file"), str) and \
            diskcache.private(folder):
        path = Path(folder) / os.path.basename(meta["file"])
        try:
            if hashlib.sha256(path.read_bytes()).hexdigest() == meta.get("sha256"):
                return path, str(meta.get("digest"))
        except OSError:
            pass  # gone or unreadable: fetch it again
    data, digest = _download_oci(spec) if spec.kind == "oci" else _download_repo(spec)
    name = f"{spec.name}-{spec.version}.tgz"
    diskcache.write_bytes(os.path.join(folder, name), data)
    diskcache.write_json(os.path.join(folder, "chart.json"), {
        "repo": _public(spec.repo or ""), "chart": spec.chart, "version": spec.version,
        "digest": digest, "sha256": hashlib.sha256(data).hexdigest(), "file": name})
    path = Path(folder) / name
    if not path.is_file():
        raise ChartError(f"could not write {path} (the chart cache)")
    return path, digest


def _download_repo(spec: Spec) -> tuple[bytes, str]:
    """From a chart repository: its index, then the archive, whose sha256
    must be the index's digest."""
    import yaml  # noqa: PLC0415

    repo = (spec.repo or "").rstrip("/") + "/"
    auth = repository_credentials(repo)
    index_url = urljoin(repo, "index.yaml")
    try:
        index = yaml.load(_get(index_url, auth), Loader=getattr(yaml, "CSafeLoader",
                                                                 yaml.SafeLoader))
    except yaml.YAMLError:
        raise ChartError(f"{_public(index_url)}: not a valid chart repository index") from None
    entries = (index.get("entries") or {}).get(spec.chart) if isinstance(index, dict) else None
    if not entries:
        raise ChartError(f"chart {spec.chart!r} is not in {_public(repo)}")
    want = str(spec.version).removeprefix("v")
    entry = next((e for e in entries if isinstance(e, dict)
                  and str(e.get("version", "")).removeprefix("v") == want), None)
    if entry is None or not entry.get("urls"):
        raise ChartError(f"{spec.chart} version {spec.version} is not in {_public(repo)}")
    url = urljoin(repo, str(entry["urls"][0]))
    same_host = urlsplit(url).netloc == urlsplit(repo).netloc
    data = _get(url, auth if same_host else None)
    digest = str(entry.get("digest") or "")
    actual = hashlib.sha256(data).hexdigest()
    if not digest:
        raise ChartError(f"{spec.chart} {spec.version} in {_public(repo)} has no digest in "
                         "the index; a chart that cannot be checked is refused")
    if actual != digest.removeprefix("sha256:"):
        raise ChartError(f"{_public(url)}: sha256 {actual[:12]}... is not the index's digest "
                         f"{digest[:12]}...; refusing the chart")
    return data, f"sha256:{actual}"


def _get(url: str, auth: tuple[str, str] | None) -> bytes:
    import base64  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    request = urllib.request.Request(url, headers={"User-Agent": "kubectl-gitops"})
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_unredirected_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        hint = "; give credentials in helm's repositories.yaml" if e.code in (401, 403) else ""
        raise ChartError(f"{_public(url)}: HTTP {e.code} {e.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise ChartError(f"{_public(url)}: {reason}") from None


def repository_credentials(repo: str) -> tuple[str, str] | None:
    """User and password for ``repo`` from helm's own ``repositories.yaml``
    (``$HELM_REPOSITORY_CONFIG``, else helm's default place), or from the
    URL's user part. Never logged."""
    import yaml  # noqa: PLC0415

    parts = urlsplit(repo)
    if parts.username is not None:
        return parts.username, parts.password or ""
    config = os.environ.get("HELM_REPOSITORY_CONFIG") or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config"),
        "helm", "repositories.yaml")
    try:
        with open(config, "rb") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    for entry in (doc.get("repositories") or []) if isinstance(doc, dict) else []:
        if isinstance(entry, dict) and str(entry.get("url", "")).rstrip("/") == repo.rstrip("/") \
                and entry.get("username"):
            return str(entry["username"]), str(entry.get("password") or "")
    return None


def _download_oci(spec: Spec) -> tuple[bytes, str]:
    """``helm pull`` from the registry (helm's registry config holds the
    credentials); the digest is the one the registry served."""
    import tempfile  # noqa: PLC0415

    ref = spec.chart if spec.chart.startswith("oci://") else \
        f"{(spec.repo or '').rstrip('/')}/{spec.chart}"
    exe, _ = helm_binary()
    with tempfile.TemporaryDirectory(prefix="kubectl-gitops-chart-") as tmp:
        args = [exe, "pull", ref, "--version", str(spec.version), "--destination", tmp]
        proc = subprocess.run(args + (["--plain-http"] if spec.plain_http else []),
                              capture_output=True, env=_helm_env(), timeout=_TIMEOUT * 5)
        if proc.returncode != 0:
            raise ChartError(f"{ref}:{spec.version}: {_last_line(proc.stderr)}")
        found = [p for p in os.listdir(tmp) if p.endswith(".tgz")]
        if len(found) != 1:
            raise ChartError(f"{ref}:{spec.version}: helm pull left no chart archive")
        data = Path(tmp, found[0]).read_bytes()
    digest = re.search(rb"Digest: (sha256:[0-9a-f]{64})", proc.stdout)
    return data, digest.group(1).decode() if digest else \
        f"sha256:{hashlib.sha256(data).hexdigest()}"


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()
             if line.strip()]
    return (lines[-1] if lines else "failed").removeprefix("Error: ")


# --- rendering ------------------------------------------------------------------------

@dataclass
class Rendered:
    """What one chart rendered to: ``(object, template path)`` pairs, and
    the hooks left out (``Kind ns/name (hook)``)."""

    objects: list[tuple[dict[str, Any], str]]
    hooks: list[str]


def merge_values(docs: Iterable[Any]) -> dict[str, Any]:
    """Values files merged as helm merges ``-f`` files: maps merge key by
    key, anything else is replaced by the later file."""
    out: dict[str, Any] = {}
    for doc in docs:
        if isinstance(doc, dict):
            _merge(out, doc)
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> None:
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def render_key(chart_digest: str, values: bytes, release: str, namespace: str,
               caps: Capabilities, include_crds: bool) -> str:
    _, helm_id = helm_binary()
    return _sha(_RENDER_FORMAT, helm_id, chart_digest, hashlib.sha256(values).hexdigest(),
                release, namespace, caps.digest(), str(include_crds))


def cached_render(key: str) -> Rendered | None:
    from kubectl_gitops import diskcache  # noqa: PLC0415

    folder = diskcache.directory("rendered", key[:2])
    if folder is None or not diskcache.private(folder):
        return None
    hit = diskcache.read_json(os.path.join(folder, key[2:] + ".json"))
    if not isinstance(hit, dict) or hit.get("v") != _RENDER_FORMAT:
        return None
    try:
        objects = [(obj, str(path)) for obj, path in hit["objects"] if isinstance(obj, dict)]
        return Rendered(objects, [str(h) for h in hit["hooks"]])
    except (KeyError, TypeError, ValueError):
        return None


def keep_render(key: str, rendered: Rendered) -> None:
    """Keep a render, unless any object is a Secret (its values stay in git)."""
    from kubectl_gitops import diskcache  # noqa: PLC0415

    if any(obj.get("kind") == "Secret" for obj, _ in rendered.objects):
        return
    folder = diskcache.directory("rendered", key[:2])
    if folder is None:
        return
    diskcache.write_json(os.path.join(folder, key[2:] + ".json"), {
        "v": _RENDER_FORMAT, "objects": [[o, p] for o, p in rendered.objects],
        "hooks": rendered.hooks})


def template(chart: Path, release: str, namespace: str, values: bytes, caps: Capabilities,
             include_crds: bool) -> bytes:
    """``helm template`` of a chart directory or archive; the values YAML on
    stdin. Raises :class:`ChartError` with helm's last line."""
    exe, _ = helm_binary()
    args = [exe, "template", release, str(chart), "--namespace", namespace, "--skip-tests",
            *caps.args(), "--values", "-"]
    if include_crds:
        args.append("--include-crds")
    proc = subprocess.run(args, input=values, capture_output=True, env=_helm_env(),
                          timeout=_TIMEOUT * 5)
    if proc.returncode != 0:
        msg = _last_line(proc.stderr).replace(str(chart) + "/", "").replace(str(chart), "")
        raise ChartError(f"helm template: {msg}")
    return proc.stdout


_SOURCE = re.compile(r"^# Source: (.+)$", re.M)
_DOCUMENT = re.compile(r"^---[ \t]*$\n?", re.M)


def split_output(text: str) -> list[tuple[str, str]]:
    """``(template path, document)`` of each document helm printed (each
    starts with ``---`` and ``# Source:``; block scalars are indented, so a
    ``---`` at column 0 is always a document marker)."""
    out = []
    for chunk in _DOCUMENT.split(text):
        if not chunk.strip():
            continue
        found = _SOURCE.search(chunk)
        out.append((found.group(1).strip() if found else "", chunk))
    return out


def hook_of(obj: dict[str, Any]) -> str | None:
    """The object's Helm hook events, or None; ``crd-install`` (Helm 2) is
    no hook here: the CRD is applied as any object."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(HOOK) if isinstance(annotations, dict) else None
    if not isinstance(value, str) or not value.strip():
        return None
    events = [e.strip() for e in value.split(",") if e.strip() and e.strip() != "crd-install"]
    return ",".join(events) or None


_NOTED: set[tuple[str, str]] = set()
_NOTED_LOCK = threading.Lock()


def hooks_note(label: str, hooks: list[str], write: Callable[[str], Any] | None = None) -> None:
    """Name, once per process, the chart hooks that are not applied."""
    write = write or sys.stderr.write
    for hook in hooks:
        with _NOTED_LOCK:
            if (label, hook) in _NOTED:
                continue
            _NOTED.add((label, hook))
        write(f"note: {label}: {hook} is a Helm hook and is not applied "
              "(see README, Helm charts)\n")


def chart_digest(files: Iterable[tuple[str, bytes | str]]) -> str:
    """A local chart's identity: its files' paths and contents (or blob ids)."""
    return "git:" + _sha(*(p for path, data in sorted(files, key=lambda f: f[0])
                           for p in (path, data)))


def dump_values(values: dict[str, Any]) -> bytes:
    """The merged values as helm reads them (JSON is YAML)."""
    return json.dumps(values, sort_keys=True, separators=(",", ":")).encode()


# --- charts of a source -----------------------------------------------------------

@dataclass
class RenderContext:
    """How a source renders: the Capabilities charts see (asked only when a
    chart renders), the namespace of releases that name none, and whether
    SOPS files are decrypted (validate checks them without keys). ``only``:
    render just the charts it accepts (by reference); the others are left
    out (the hook renders the charts a commit changes)."""

    capabilities: Callable[[], Capabilities]
    namespace: str
    decrypt: bool = True
    only: Callable[[Spec], bool] | None = None

    @classmethod
    def offline(cls, src: Any, kube_version: str | None = None, *,
                decrypt: bool = True) -> RenderContext:
        """No cluster: the schema release's Capabilities."""
        from kubectl_gitops.versions import KUBERNETES_VERSION  # noqa: PLC0415

        caps = Capabilities(kube_version or KUBERNETES_VERSION)
        return cls(lambda: caps, src.namespace or "default", decrypt=decrypt)


def find_charts(src: Any, paths: list[str], skip: list[str]) -> list[Spec]:
    """``helm:`` of ``.gitops.yaml``, and every top-most directory under PATH
    holding a ``Chart.yaml`` (not inside a kustomization in ``skip``, whose
    ``helmCharts:`` kustomize renders; not the ``helm:`` chart itself)."""
    specs: list[Spec] = [src.helm] if src.helm is not None else []
    taken = [s.chart for s in specs if s.kind == "local"]
    for path in sorted((p for p in paths if posixpath.basename(p) == CHART_FILE),
                       key=lambda p: p.count("/")):
        folder = posixpath.dirname(path)
        if any(_inside(folder, d) for d in taken + skip):
            continue
        taken.append(folder)
        specs.append(Spec(chart=folder, release_name=_release(posixpath.basename(folder)),
                          where=path))
    return specs


def _inside(path: str, folder: str) -> bool:
    return not folder or path == folder or path.startswith(folder + "/")


def _release(name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:53].strip("-")
    return slug or "release"


# Parses one rendered document: ``manifests.parse_file`` (passed in, so that
# this module, which manifests.read calls, needs nothing of it).
Parse = Callable[[str, bytes], tuple[list[Any], list[ManifestError]]]


def render(src: Any, specs: list[Spec], ctx: RenderContext, parse: Parse,
           read: dict[str, bytes] | None = None) \
        -> tuple[list[tuple[dict[str, Any], str, str]], list[ManifestError]]:
    """Every chart's objects as ``(object, where, release namespace)``, and
    one error per chart that fails. ``read``: files already read (values
    files under PATH), by path."""
    manifests: list[tuple[dict[str, Any], str, str]] = []
    errors: list[ManifestError] = []
    for spec in specs:
        if ctx.only is not None and not ctx.only(spec):
            continue
        try:
            manifests += _render_one(src, spec, ctx, parse, read or {})
        except ChartError as e:
            errors.append(ManifestError(spec.where, None, f"helm: {e}"))
        except ManifestError as e:  # a values file that does not decrypt, or does not parse
            errors.append(e)
        except FileNotFoundError:
            errors.append(ManifestError(spec.where, None, "helm is needed to render "
                                        f"{spec.reference} and was not found on PATH"))
    return manifests, errors


def _render_one(src: Any, spec: Spec, ctx: RenderContext, parse: Parse,
                read: dict[str, bytes]) -> list[tuple[dict[str, Any], str, str]]:
    namespace = spec.namespace or ctx.namespace
    release = spec.release_name or _release(spec.name)
    values, secret = _values(src, spec, ctx, read)
    if values is None:
        return []  # encrypted values and no decryption (validate): not rendered
    with _ChartFiles(src, spec) as (chart, digest):
        key = None if secret else render_key(digest, values, release, namespace,
                                             ctx.capabilities(), spec.include_crds)
        rendered = cached_render(key) if key else None
        if rendered is None:
            rendered = _template(chart(), spec, release, namespace, values, ctx, parse)
            if key:
                keep_render(key, rendered)
    hooks_note(spec.reference, rendered.hooks)
    return [(obj, path, namespace) for obj, path in rendered.objects]


def _template(chart: Path, spec: Spec, release: str, namespace: str, values: bytes,
              ctx: RenderContext, parse: Parse) -> Rendered:
    text = template(chart, release, namespace, values, ctx.capabilities(),
                    spec.include_crds).decode("utf-8", "replace")
    objects: list[tuple[dict[str, Any], str]] = []
    hooks: list[str] = []
    for source, chunk in split_output(text):
        path = f"{spec.label}: {source}" if source else spec.label
        ms, es = parse(path, chunk.encode())
        if es:
            raise ChartError(f"{source or 'output'}: {es[0].message}")
        for m in ms:
            hook = hook_of(m.obj)
            if hook:  # named in the release namespace, where helm would create it
                hooks.append(f"{m.kind} {m.namespace or namespace}/{m.name} ({hook})")
            else:
                objects.append((m.obj, path))
    return Rendered(objects, hooks)


def _values(src: Any, spec: Spec, ctx: RenderContext,
            read: dict[str, bytes]) -> tuple[bytes | None, bool]:
    """The merged values (``valuesFiles`` in order, then ``values``) and
    whether any file was decrypted; None when an encrypted file is not to
    be decrypted."""
    import yaml  # noqa: PLC0415

    from kubectl_gitops.source import sops  # noqa: PLC0415

    docs: list[Any] = []
    secret = False
    for path in spec.values_files:
        data = read[path] if path in read else src.read(path)
        if data is None:
            raise ChartError(f"valuesFiles: {path}: no such file in {src.revision}")
        if sops.encrypted(data):
            if not ctx.decrypt:
                problems = sops.check(path, data)
                if problems:
                    raise problems[0]
                return None, True
            data = sops.decrypt(path, data, src.keys)
            secret = True
        try:
            doc = yaml.load(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            # No problem text: it may quote a decrypted value.
            raise ManifestError(path, mark.line + 1 if mark else None,
                                "not valid YAML (a Helm values file)") from None
        if doc is not None and not isinstance(doc, dict):
            raise ManifestError(path, None, "a Helm values file must be a mapping")
        docs.append(doc)
    if spec.values:
        docs.append(spec.values)
    return dump_values(merge_values(docs)), secret


class _ChartFiles:
    """The chart as helm reads it, and its digest. A local chart from git is
    written to a private temporary directory only when it must render (the
    digest alone comes from the blob ids); a chart in the working tree is
    used in place; a repository chart is its cached archive."""

    def __init__(self, src: Any, spec: Spec) -> None:
        self.src, self.spec = src, spec
        self._tmp: Any = None

    def __enter__(self) -> tuple[Callable[[], Path], str]:
        spec, src = self.spec, self.src
        if spec.kind != "local":
            path, digest = archive(spec)
            return (lambda: path), digest
        if src.mode == "worktree":
            folder = src.root / spec.chart
            if not (folder / CHART_FILE).is_file():
                raise ChartError(f"{spec.chart}: no {CHART_FILE} in the working tree")
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            digest = chart_digest((p.relative_to(folder).as_posix(), p.read_bytes())
                                  for p in files)
            return (lambda: folder), digest
        try:
            entries = [e for e in src.entries(spec.chart) if e[0].startswith("100")]
        except ConfigError:  # no such directory at the revision
            entries = []
        if not any(p == posixpath.join(spec.chart, CHART_FILE) for _, _, p in entries):
            raise ChartError(f"{spec.chart}: no {CHART_FILE} in {src.revision}")
        digest = chart_digest((p, sha) for _, sha, p in entries)
        return (lambda: self._export(entries)), digest

    def _export(self, entries: list[tuple[str, str, str]]) -> Path:
        import tempfile  # noqa: PLC0415

        self._tmp = tempfile.TemporaryDirectory(prefix="kubectl-gitops-chart-")
        dest = Path(self._tmp.name) / posixpath.basename(self.spec.chart)
        blobs = self.src.blobs([sha for _, sha, _ in entries])
        for (_, _, path), data in zip(entries, blobs):
            full = dest / posixpath.relpath(path, self.spec.chart)
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_bytes(data)
        return dest

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
