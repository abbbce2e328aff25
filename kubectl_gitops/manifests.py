"""Manifest files to Kubernetes objects, each remembering its ``file:line``.

Safe loading only (libyaml's C loader when available); every problem of a
read is collected and reported together.
"""

from __future__ import annotations

import json
import posixpath
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubectl_gitops import git
from kubectl_gitops.errors import ManifestError, ManifestErrors
from kubectl_gitops.source import KUSTOMIZATION_FILES, Source, SourceFile, index_env

try:  # libyaml is ~10x faster; fall back to the pure-Python loader.
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on the PyYAML build
    _Loader = yaml.SafeLoader

MAX_FILE_BYTES = 8 * 1024 * 1024
# Past this many nodes after alias expansion, a document is an alias bomb.
MAX_EXPANDED_NODES = 500_000


@dataclass
class Manifest:
    """One desired object and where it was read from."""

    obj: dict[str, Any]
    path: str
    line: int

    @property
    def api_version(self) -> str:
        return self.obj["apiVersion"]

    @property
    def kind(self) -> str:
        return self.obj["kind"]

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0] if "/" in self.api_version else ""

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    @property
    def namespace(self) -> str | None:
        return self.obj["metadata"].get("namespace") or None

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path

    def __str__(self) -> str:
        ns = self.namespace
        return f"{self.kind} {ns}/{self.name}" if ns else f"{self.kind} {self.name}"


def read(src: Source, files: list[SourceFile] | None = None) \
        -> tuple[list[Manifest], list[ManifestError]]:
    """Every object under the source, in sorted path order, and every error.

    ``files``: the source's files when the caller already read them.
    """
    files = sorted(src.files() if files is None else files, key=lambda f: f.path)
    kdirs = _kustomize_dirs(f.path for f in files)
    manifests: list[Manifest] = []
    errors: list[ManifestError] = []
    for f in files:
        if any(_inside(f.path, d) for d in kdirs):
            continue  # rendered with its kustomization, not on its own
        ms, es = parse_file(f.path, f.data)
        manifests += ms
        errors += es
    for d in kdirs:
        ms, es = _render_kustomization(src, d)
        manifests += ms
        errors += es
    return manifests, errors


def parse_file(path: str, data: bytes) -> tuple[list[Manifest], list[ManifestError]]:
    if len(data) > MAX_FILE_BYTES:
        mb = len(data) / 1_000_000
        return [], [ManifestError(path, None, f"file is {mb:.1f} MB, over the "
                                  f"{MAX_FILE_BYTES // 2**20} MiB limit for a manifest file")]
    if b"\0" in data:
        return [], [ManifestError(path, None, "binary file (contains NUL bytes), not YAML or JSON")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return [], [ManifestError(path, line, f"not valid UTF-8 (byte 0x{data[e.start]:02x} at "
                                  f"offset {e.start}); save the file as UTF-8")]
    text = text.removeprefix("\ufeff")
    if path.endswith(".json"):
        return _parse_json(path, text)
    manifests: list[Manifest] = []
    errors: list[ManifestError] = []
    for start, chunk in split_documents(text):
        try:
            doc = _load(chunk)
        except yaml.YAMLError as e:
            errors.append(_yaml_error(path, start, e))
            continue
        except _AliasBomb:
            errors.append(ManifestError(path, _first_content_line(chunk, start),
                                        "YAML aliases expand to more than "
                                        f"{MAX_EXPANDED_NODES:,} nodes (an alias bomb?)"))
            continue
        if doc is None:
            continue  # an empty document
        ms, es = to_manifests(doc, path, _first_content_line(chunk, start))
        manifests += ms
        errors += es
    return manifests, errors


def split_documents(text: str) -> list[tuple[int, str]]:
    """``(first line number, text)`` of each YAML document in a stream.

    Splitting on ``---`` at column 0 lets one bad document be reported
    without losing the others, and gives each its line. A marker can only
    stand at column 0 outside a quoted scalar, and block scalars are indented.
    """
    docs: list[tuple[int, str]] = []
    current: list[str] = []
    start = 1
    for n, line in enumerate(text.splitlines(keepends=True), 1):
        if line.startswith("---") and (len(line) == 3 or line[3] in " \t\r\n"):
            if current:
                docs.append((start, "".join(current)))
            # Blank out the marker but keep what follows it on the same line,
            # and its columns, so marks still point at the right place.
            current = ["   " + line[3:]]
            start = n
        elif line.startswith("...") and (len(line) == 3 or line[3] in " \t\r\n"):
            if current:
                docs.append((start, "".join(current)))
            current = []
            start = n + 1
        else:
            if not current:
                start = n
            current.append(line)
    if current:
        docs.append((start, "".join(current)))
    return docs


class _AliasBomb(Exception):
    pass


def _load(chunk: str) -> Any:
    doc = yaml.load(chunk, Loader=_Loader)  # noqa: S506 - a safe loader
    if "&" in chunk and "*" in chunk:
        _check_expansion(doc)
    return doc


def _check_expansion(doc: Any) -> None:
    """Aliases share nodes when loaded; count them as if expanded, once each."""
    memo: dict[int, int] = {}

    def size(node: Any) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if isinstance(node, dict):
            n = 1 + sum(size(k) + size(v) for k, v in node.items())
        elif isinstance(node, list):
            n = 1 + sum(size(v) for v in node)
        else:
            n = 1
        if n > MAX_EXPANDED_NODES:
            raise _AliasBomb
        memo[key] = n
        return n

    size(doc)


def _first_content_line(chunk: str, start: int) -> int:
    for i, line in enumerate(chunk.splitlines()):
        s = line.strip()
        if s and not s.startswith("#"):
            return start + i
    return start


def _yaml_error(path: str, start: int, e: yaml.YAMLError) -> ManifestError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    msg = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    if mark is None:
        return ManifestError(path, start, msg)
    return ManifestError(path, start + mark.line, f"{msg} at column {mark.column + 1}")


def _parse_json(path: str, text: str) -> tuple[list[Manifest], list[ManifestError]]:
    if not text.strip():
        return [], []
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        return [], [ManifestError(path, e.lineno, f"invalid JSON: {e.msg} at column {e.colno}")]
    return to_manifests(doc, path, 1)


def to_manifests(doc: Any, path: str, line: int) -> tuple[list[Manifest], list[ManifestError]]:
    """One loaded document to objects: a ``List`` is expanded into its items."""
    if not isinstance(doc, dict):
        what = "a list" if isinstance(doc, list) else f"a {type(doc).__name__} scalar"
        return [], [ManifestError(path, line, f"document is {what}, not a Kubernetes object "
                                  "(expected a mapping with apiVersion, kind, metadata)")]
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list) \
            and doc.get("apiVersion") in ("v1", None):
        out: list[Manifest] = []
        errs: list[ManifestError] = []
        for item in doc["items"]:
            ms, es = to_manifests(item, path, line)
            out += ms
            errs += es
        return out, errs
    problem = _missing_fields(doc)
    if problem:
        return [], [ManifestError(path, line, problem)]
    return [Manifest(doc, path, line)], []


def _missing_fields(doc: dict[str, Any]) -> str | None:
    missing = [k for k in ("apiVersion", "kind") if not isinstance(doc.get(k), str) or not doc[k]]
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        missing.append("metadata.name")
    elif not isinstance(meta.get("name"), str) or not meta["name"]:
        missing.append("metadata.name")
    elif "namespace" in meta and meta["namespace"] is not None \
            and not isinstance(meta["namespace"], str):
        return "metadata.namespace must be a string"
    if missing:
        return f"missing required field{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
    return None


# --- kustomize -------------------------------------------------------------

def _kustomize_dirs(paths: Iterable[str]) -> list[str]:
    """Top-most directories holding a kustomization file."""
    dirs = sorted({posixpath.dirname(p) for p in paths
                   if posixpath.basename(p) in KUSTOMIZATION_FILES})
    top: list[str] = []
    for d in dirs:
        if not any(_inside(d + "/x", t) for t in top):
            top.append(d)
    return top


def _inside(path: str, directory: str) -> bool:
    return not directory or path.startswith(directory + "/")


def kubectl_binary() -> str:
    """The real kubectl: the one installed beside this Python first."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if not found:
        raise FileNotFoundError("kubectl")
    return found


def _render_kustomization(src: Source, directory: str) -> tuple[list[Manifest], list[ManifestError]]:
    label = posixpath.join(directory, "kustomization.yaml")
    with tempfile.TemporaryDirectory(prefix="kubectl-gitops-kustomize-") as tmp:
        if src.mode == "worktree":
            base = src.root
        else:
            base = Path(tmp)
            _export(src, base)
        try:
            proc = subprocess.run([kubectl_binary(), "kustomize", str(base / directory)],
                                  capture_output=True, env=git.clean_env())
        except FileNotFoundError:
            return [], [ManifestError(label, None, "kubectl is needed to render kustomize "
                                      "directories and was not found on PATH")]
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        msg = (err[-1] if err else "failed").replace(str(base) + "/", "")
        return [], [ManifestError(label, None, f"kustomize: {msg.removeprefix('error: ')}")]
    manifests, errors = parse_file(label, proc.stdout)
    for m in manifests:
        m.line = 0  # lines of rendered output mean nothing to the author
    return manifests, errors


def _export(src: Source, dest: Path) -> None:
    """Write the revision's whole tree to ``dest`` (bases may live outside PATH)."""
    if src.mode == "index":
        git.run(["checkout-index", "--all", f"--prefix={dest}/"], cwd=src.root,
                env=index_env(src))
        return
    archive = git.run(["archive", "--format=tar", str(src.sha)], cwd=src.root).stdout
    import io  # noqa: PLC0415
    import tarfile  # noqa: PLC0415

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")


def load(src: Source) -> list[Manifest]:
    """Read and parse; raise every problem together."""
    manifests, errors = read(src)
    if errors:
        raise ManifestErrors(errors)
    return manifests
