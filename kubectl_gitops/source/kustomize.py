"""Kustomizations: what one reads, found before kustomize runs, and their
rendering (``kubectl kustomize``, from an export of the revision).

Kustomize follows ``resources: [../../x]`` wherever it leads; rendered from a
copy of the tree, that may be a shared directory anyone can write. So every
resource, base, component, patch, generator and transformer file a
kustomization names (and, for directories, what their kustomizations name in
turn) is resolved here first: anything outside the repository, and any remote
URL (its content is not pinned by the revision, and fetching it runs git or
HTTP from inside a render), is refused with its path.

The walk reads through a :class:`Reader`, so rendering (files on disk) and
rollback (git objects at a commit) share it.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kubectl_gitops.errors import ManifestError
from kubectl_gitops.source import git, links
from kubectl_gitops.source.tree import KUSTOMIZATION_FILES, Source

if TYPE_CHECKING:
    from kubectl_gitops.source.helm import RenderContext

# Fields naming directories (or files) that are rendered as resources.
_TREES = ("resources", "bases", "components")
# Fields naming files read as they are.
_FILES = ("crds", "configurations", "patchesStrategicMerge")
_PATH_KEYS = ("path",)  # in patches, patchesJson6902, replacements, openapi
_PLUGINS = ("generators", "transformers", "validators")
_REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|git@|[\w.-]+\.(?:com|org|io|net)/)", re.I)


@dataclass
class Reader:
    """``kind(path)``: "file", "dir" or None; ``read(path)``: bytes;
    ``real(path)``: the link-free path inside the repo, or None when it leads
    outside. Paths are relative to the repo root, POSIX."""

    kind: Callable[[str], str | None]
    read: Callable[[str], bytes]
    real: Callable[[str], str | None]


@dataclass
class Walk:
    """Directories and files a kustomization reads, and what is refused."""

    dirs: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, message)
    helm: bool = False  # some kustomization has helmCharts: render with helm


def git_reader(root: Path, entries: Sequence[tuple[str, str, str]]) -> Reader:
    """A commit's tree (``(mode, sha, path)`` of every entry) as a :class:`Reader`."""
    tree = links.GitTree(entries, lambda shas: git.cat_blobs(root, shas), root)

    def real(path: str) -> str | None:
        try:
            return links.resolve(tree, path)
        except links.LinkError as e:
            return None if e.outside else path  # missing: kustomize will say so

    def kind(path: str) -> str | None:
        found = tree.kind(path)
        return found if found in ("file", "dir") else None

    return Reader(kind=kind, read=lambda p: git.cat_blobs(root, [tree.sha(p)])[0], real=real)


def kustomization_file(reader: Reader, directory: str) -> str | None:
    for name in KUSTOMIZATION_FILES:
        path = posixpath.join(directory, name) if directory else name
        if reader.kind(path) == "file":
            return path
    return None


def walk(reader: Reader, directory: str, out: Walk | None = None) -> Walk:
    """Everything the kustomization in ``directory`` reads, recursively."""
    out = out or Walk()
    if directory in out.dirs:
        return out
    out.dirs.add(directory)
    kfile = kustomization_file(reader, directory)
    if kfile is None:
        return out
    out.files.add(kfile)
    try:
        doc = yaml.safe_load(reader.read(kfile)) or {}
    except yaml.YAMLError:
        return out  # kustomize reports the syntax error itself
    if not isinstance(doc, dict):
        return out
    if doc.get("helmCharts"):
        out.helm = True
    for kind, ref in _references(doc):
        _check(reader, directory, kfile, kind, ref, out)
    return out


def _references(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(how, reference)``: "tree" for what may be a kustomization directory,
    "file" for a file read as it is."""
    for key in _TREES:
        yield from (("tree", r) for r in _strings(doc.get(key)))
    for key in _FILES:
        # patchesStrategicMerge may hold inline patches: only one-line entries are paths.
        yield from (("file", r) for r in _strings(doc.get(key)) if "\n" not in r)
    for key in ("patches", "patchesJson6902", "replacements"):
        for item in doc.get(key) or []:
            if isinstance(item, dict) and isinstance(item.get("path"), str):
                yield "file", item["path"]
    openapi = doc.get("openapi")
    if isinstance(openapi, dict) and isinstance(openapi.get("path"), str):
        yield "file", openapi["path"]
    for key in ("configMapGenerator", "secretGenerator"):
        for gen in doc.get(key) or []:
            if isinstance(gen, dict):
                yield from _generator_files(gen)
    for key in _PLUGINS:
        yield from (("tree", r) for r in _strings(doc.get(key)) if "\n" not in r)
    yield from _helm_references(doc)


def _helm_references(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``helmCharts:``: each chart's values file, and its chart directory
    (``helmGlobals.chartHome``, default ``charts``, then the chart's name)
    when it does not come from a repository (``repo:``, which kustomize
    pulls with helm). The legacy generator plugin is refused."""
    if doc.get("helmChartInflationGenerator"):
        yield "file", "helm chart (helmChartInflationGenerator)"  # refused below
    globals_ = doc.get("helmGlobals") if isinstance(doc.get("helmGlobals"), dict) else {}
    home = globals_.get("chartHome") if isinstance(globals_.get("chartHome"), str) else "charts"
    for chart in doc.get("helmCharts") or []:
        if not isinstance(chart, dict):
            continue
        if isinstance(chart.get("valuesFile"), str):
            yield "file", chart["valuesFile"]
        for extra in _strings(chart.get("additionalValuesFiles")):
            yield "file", extra
        if not chart.get("repo") and isinstance(chart.get("name"), str):
            yield "chart", posixpath.join(home, chart["name"])


def _generator_files(gen: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for entry in _strings(gen.get("files")):
        yield "file", entry.partition("=")[2] if "=" in entry else entry
    for entry in _strings(gen.get("envs")) + _strings(gen.get("env")):
        yield "file", entry


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _check(reader: Reader, directory: str, kfile: str, how: str, ref: str, out: Walk) -> None:
    if ref.startswith("helm chart"):
        out.problems.append((kfile, f"{ref}: the legacy generator plugin is not run; use "
                            "helmCharts:"))
        return
    if _REMOTE.match(ref):
        out.problems.append((kfile, f"{ref}: remote resources are refused (their content "
                            "is not pinned by the revision); vendor them into the repository"))
        return
    joined = posixpath.normpath(posixpath.join(directory, ref)) if not ref.startswith("/") else ref
    real = None if joined.startswith(("/", "../")) or joined == ".." else reader.real(
        "" if joined == "." else joined)
    if real is None:
        out.problems.append((kfile, f"{ref}: outside the repository; kustomize may only "
                            "read files of the repository"))
        return
    kind = reader.kind(real)
    if how == "chart":
        if kind == "dir":
            out.dirs.add(real)  # helm reads it whole; rollback restores it with PATH
        return
    if kind == "dir" and how == "tree":
        walk(reader, real, out)
    elif kind == "file":
        out.files.add(real)
    # Missing: kustomize says so itself, with its own words.


# --- rendering ------------------------------------------------------------------

def kubectl_binary() -> str:
    """The real kubectl: the one installed beside this Python first."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if not found:
        raise FileNotFoundError("kubectl")
    return found


@dataclass
class Output:
    """What one kustomization rendered: its YAML; whether it inflated
    ``helmCharts:``; each ENC[...] string of the SOPS files it read, to its
    plaintext (kustomize renders the encrypted files as they are)."""

    kfile: str
    output: bytes
    helm: bool = False
    secrets: dict[str, Any] = field(default_factory=dict, repr=False)


def render(src: Source, kfiles: list[str], ctx: RenderContext | None = None) \
        -> tuple[list[Output], list[ManifestError]]:
    """Render each kustomization (by its file's path) from one export of the
    tree: its output (YAML), or the errors that stopped it. ``ctx``: the
    Capabilities ``helmCharts:`` see and whether SOPS files are decrypted
    (default: offline, decrypted).

    The export lies one level down in a private directory (0700, a random
    name), so even a ``..`` that escaped the checks below would find nothing
    another user can plant; every reference is checked to stay inside the
    repository before kustomize runs, in every mode. The export holds the
    revision's blobs as git stores them: a SOPS file stays encrypted.
    """
    from kubectl_gitops.source import helm  # noqa: PLC0415

    ctx = ctx or helm.RenderContext.offline(src)
    rendered: list[Output] = []
    errors: list[ManifestError] = []
    with tempfile.TemporaryDirectory(prefix="kubectl-gitops-kustomize-") as tmp:
        base, outside = src.root, {}
        if src.mode != "worktree":
            base = Path(tmp) / "repo"
            outside = src.export(base)  # the revision's blobs: bases may live outside PATH
        reader = _reader(base, outside)
        for kfile in kfiles:
            found = walk(reader, posixpath.dirname(kfile))
            if found.problems:
                errors += [ManifestError(path, None, f"kustomize: {msg}")
                           for path, msg in found.problems]
                continue
            secrets, refused = _secrets(src, reader, found, ctx)
            if refused:
                errors += refused
                continue
            output, error = _render_one(base, kfile, ctx if found.helm else None)
            if error:
                errors.append(error)
            else:
                rendered.append(Output(kfile, output, found.helm, secrets))
    return rendered, errors


def _secrets(src: Source, reader: Reader, found: Walk, ctx: RenderContext) \
        -> tuple[dict[str, Any], list[ManifestError]]:
    """The SOPS files a kustomization reads, decrypted in memory: each
    ENC[...] string to its plaintext; without decryption (validate), their
    structure checked."""
    from kubectl_gitops.source import sops  # noqa: PLC0415

    table: dict[str, Any] = {}
    errors: list[ManifestError] = []
    for path in sorted(found.files):
        data = reader.read(path)
        if not sops.encrypted(data):
            continue
        if not ctx.decrypt:
            errors += sops.check(path, data)
            continue
        try:
            table.update(sops.plaintexts(data, sops.decrypt(path, data, src.keys)))
        except ManifestError as e:
            errors.append(e)
    return table, errors


def _reader(base: Path, outside: dict[str, str]) -> Reader:
    """Files under ``base`` as the walk sees them; links are resolved on disk and
    must stay under it, and links the export left out count as outside."""
    real_base = base.resolve()

    def real(path: str) -> str | None:
        if any(path == o or path.startswith(o + "/") for o in outside):
            return None
        try:
            rel = Path(os.path.realpath(base / path)).relative_to(real_base).as_posix()
        except ValueError:
            return None
        return "" if rel == "." else rel

    def kind(path: str) -> str | None:
        full = base / path
        return "dir" if full.is_dir() else "file" if full.is_file() else None

    return Reader(kind=kind, read=lambda p: (base / p).read_bytes(), real=real)


def _render_one(base: Path, kfile: str, helm_ctx: RenderContext | None = None) \
        -> tuple[bytes, ManifestError | None]:
    """``kubectl kustomize`` of one directory; with ``helm_ctx`` (its
    ``helmCharts:``), with the helm on PATH and the cluster's Capabilities."""
    try:
        # Root-only loading is kustomize's default; said here so that no
        # kustomize configuration can widen it.
        args = [kubectl_binary(), "kustomize", "--load-restrictor", "LoadRestrictionsRootOnly"]
    except FileNotFoundError:
        return b"", ManifestError(kfile, None, "kubectl is needed to render kustomize "
                                  "directories and was not found on PATH")
    if helm_ctx is not None:
        flags = _helm_flags(helm_ctx)
        if flags is None:
            return b"", ManifestError(kfile, None, "helm is needed to render helmCharts and "
                                      "was not found on PATH")
        args += flags
    proc = subprocess.run(args + [str(base / posixpath.dirname(kfile))], capture_output=True,
                          env=git.clean_env())
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        msg = (err[-1] if err else "failed").replace(str(base) + "/", "")
        return b"", ManifestError(kfile, None, f"kustomize: {msg.removeprefix('error: ')}")
    return proc.stdout, None


def _helm_flags(ctx: RenderContext) -> list[str] | None:
    """kustomize's own flags for helmCharts: the helm found on PATH and the
    Capabilities a chart sees; None without helm."""
    from kubectl_gitops.source import helm  # noqa: PLC0415

    try:
        exe, _ = helm.helm_binary()
    except FileNotFoundError:
        return None
    caps = ctx.capabilities()
    args = ["--enable-helm", "--helm-command", exe, "--helm-kube-version", caps.kube_version]
    if caps.api_versions:
        args += ["--helm-api-versions", ",".join(caps.api_versions)]
    return args
