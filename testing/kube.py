"""Helpers for CLI tests against the real control plane."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml


def run(args: list[str], *, cwd: Path, env: dict[str, str],
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run an installed executable (``kubectl gitops ...`` or ``kubectl ...``)."""
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def gitops(sub: str, *args: str, cwd: Path, env: dict[str, str]) \
        -> subprocess.CompletedProcess[str]:
    """``kubectl gitops SUB ...`` through kubectl's own plugin discovery."""
    return run(["kubectl", "gitops", sub, *args], cwd=cwd, env=env)


def kubectl(*args: str, env: dict[str, str], cwd: Path | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["kubectl", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc


def get(kind: str, name: str, env: dict[str, str], namespace: str | None = None) \
        -> dict[str, Any] | None:
    args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
    proc = kubectl(*args, env=env, check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr or "not found" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    return json.loads(proc.stdout)


def docs(*objs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(list(objs), sort_keys=False)


def configmap(name: str, data: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, **meta}, "data": data or {"k": "v"}}


def deployment(name: str, replicas: int = 1, image: str = "nginx:1.27") -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}}


def crd(kind: str, group: str, properties: dict[str, Any]) -> str:
    """A namespaced CRD ``<kind>s.<group>`` whose spec has ``properties``."""
    plural = kind.lower() + "s"
    schema = {"type": "object", "properties": {
        "spec": {"type": "object", "properties": properties}}}
    return docs({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                 "metadata": {"name": f"{plural}.{group}"},
                 "spec": {"group": group, "scope": "Namespaced",
                          "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                                    "listKind": f"{kind}List"},
                          "versions": [{"name": "v1", "served": True, "storage": True,
                                        "schema": {"openAPIV3Schema": schema}}]}})


def gone(kind: str, name: str, env: dict[str, str], ns: str | None = None) -> bool:
    """Deleted, or being deleted (a Namespace terminates for a while)."""
    live = get(kind, name, env, ns)
    return live is None or bool(live["metadata"].get("deletionTimestamp"))


def obj(api_version: str, kind: str, name: str, namespace: str | None = None) -> str:
    """A bare object's manifest text."""
    ns = f"\n  namespace: {namespace}" if namespace else ""
    return f"apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: {name}{ns}\n"


def scoped_crd(group: str, kind: str, plural: str, scope: str) -> str:
    """A CRD of ``scope`` (Namespaced or Cluster) serving v1 (v1alpha1 not served)."""
    return f"""\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.{group}
spec:
  group: {group}
  scope: {scope}
  names: {{kind: {kind}, plural: {plural}, singular: {kind.lower()}, listKind: {kind}List}}
  versions:
    - name: v1alpha1
      served: false
      storage: false
      schema: {{openAPIV3Schema: {{type: object}}}}
    - name: v1
      served: true
      storage: true
      schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}
"""
