"""The apps an agent reconciles: from flags for one app, or ``agent.yaml``.

``agent.yaml`` is a mapping with an ``apps:`` list (or just the list); each
app has ``repo`` (a git URL or path), and optionally ``name``, ``ref``,
``path``, ``namespace``, ``interval``, ``prune``, ``selfHeal``, ``suspend``,
``decryptionSecret`` (``NAME`` in the app's namespace, or ``NAMESPACE/NAME``:
a Secret whose ``*.agekey`` entries hold the age keys of its SOPS files),
``kubeConfigSecret`` (hub mode: ``NAME`` in the agent's namespace, or
``NAMESPACE/NAME``: a Secret holding the kubeconfig of the cluster the app
goes to, under ``value``, ``value.yaml`` or ``kubeconfig``, as Flux's
``spec.kubeConfig.secretRef``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubectl_gitops import durations
from kubectl_gitops.errors import ConfigError

_KEYS = {"name", "repo", "ref", "path", "namespace", "interval", "prune", "selfHeal", "suspend",
         "decryptionSecret", "kubeConfigSecret"}


@dataclass(frozen=True)
class AppSpec:
    name: str
    repo: str  # a git URL or a local path
    ref: str = "HEAD"
    path: str | None = None  # None: .gitops.yaml's, else the repo root
    namespace: str | None = None
    interval: float = 60.0
    prune: bool = False
    self_heal: bool = False
    suspend: bool = False
    named: bool = True  # False: .gitops.yaml's name, else ``name`` (from the URL)
    decryption_secret: str | None = None  # NAME or NAMESPACE/NAME: age keys for SOPS
    # NAME or NAMESPACE/NAME, in the agent's cluster: the kubeconfig of the
    # cluster this app goes to (hub mode); None: the agent's own cluster.
    kubeconfig_secret: str | None = None


def duration(value: Any, where: str) -> float:
    """A positive duration (:mod:`kubectl_gitops.durations`: ``30s``, ``1m30s``, ``90``)."""
    try:
        seconds = durations.parse(str(value))
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    if seconds <= 0:
        raise ConfigError(f"{where}: the interval must be more than 0")
    return seconds


def name_from_url(url: str) -> str:
    """The last path element of a URL or path, made a valid app name."""
    tail = re.split(r"[/:]", url.rstrip("/"))[-1].removesuffix(".git")
    return re.sub(r"[^a-z0-9.-]+", "-", tail.lower()).strip("-.") or "gitops"


def load(path: Path) -> list[AppSpec]:
    """Parse ``agent.yaml``; every problem names the file and the app."""
    import yaml  # noqa: PLC0415

    try:
        doc = yaml.safe_load(path.read_bytes()) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML") from e
    apps = doc.get("apps") if isinstance(doc, dict) else doc
    if not isinstance(apps, list):
        raise ConfigError(f"{path}: expected apps: a list of apps")
    specs = [_spec(path, i, entry) for i, entry in enumerate(apps)]
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{path}: app name(s) given twice: {', '.join(dup)}")
    return specs


def _spec(path: Path, index: int, entry: Any) -> AppSpec:
    where = f"{path}: apps[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("repo"), str):
        raise ConfigError(f"{where}: expected a mapping with repo: a git URL or path")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("prune", "selfHeal", "suspend"):
        if key in entry and not isinstance(entry[key], bool):
            raise ConfigError(f"{where}: {key} must be true or false")
    name = str(entry.get("name") or name_from_url(entry["repo"]))
    return AppSpec(name=name, repo=entry["repo"], ref=str(entry.get("ref") or "HEAD"),
                   path=entry.get("path"), namespace=entry.get("namespace"),
                   interval=duration(entry.get("interval", "1m"), f"{where}.interval"),
                   prune=bool(entry.get("prune", False)),
                   self_heal=bool(entry.get("selfHeal", False)),
                   suspend=bool(entry.get("suspend", False)), named="name" in entry,
                   decryption_secret=secret_ref(entry.get("decryptionSecret"),
                                                f"{where}: decryptionSecret"),
                   kubeconfig_secret=secret_ref(entry.get("kubeConfigSecret"),
                                                f"{where}: kubeConfigSecret"))


def secret_ref(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.match(r"^([a-z0-9.-]+/)?[a-z0-9.-]+$", value):
        raise ConfigError(f"{where} must be NAME or NAMESPACE/NAME")
    return value
