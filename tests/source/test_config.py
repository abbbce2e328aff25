"""``.gitops.yaml``'s healthCheckExprs (Flux's format) and dependsOn: their
shape is checked where the file is read, one line naming the entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubectl_gitops.errors import ConfigError
from kubectl_gitops.source import config
from kubectl_gitops.source.config import Dependency

FLUX = Path(__file__).parent.parent / "kube" / "data" / "health" / "flux-exprs.yaml"


def load(text: str) -> config.RepoConfig:
    return config.load(Path("."), text.encode())


def test_flux_healthcheckexprs_are_read_unchanged() -> None:
    doc = yaml.safe_load(FLUX.read_text())
    cfg = load(yaml.safe_dump({"healthCheckExprs": doc["healthCheckExprs"]}))
    assert list(cfg.health_checks) == doc["healthCheckExprs"]


def test_depends_on_with_and_without_a_namespace() -> None:
    cfg = load("dependsOn:\n- {name: cert-manager, namespace: monitoring}\n- name: db\n")
    assert cfg.depends_on == (Dependency("cert-manager", "monitoring"), Dependency("db"))
    assert [str(d) for d in cfg.depends_on] == ["monitoring/cert-manager", "db"]


@pytest.mark.parametrize(("text", "error"), [
    ("healthCheckExprs: {apiVersion: a/v1}\n", "healthCheckExprs must be a list of mappings"),
    ("healthCheckExprs: [{kind: X, current: 'true'}]\n",
     "healthCheckExprs[0]: apiVersion is required"),
    ("healthCheckExprs: [{apiVersion: a/v1, kind: X}]\n",
     "healthCheckExprs[0]: current is required"),
    ("healthCheckExprs: [{apiVersion: a/v1, current: 'true', ready: x}]\n",
     "healthCheckExprs[0]: unknown key(s) ready"),
    ("healthCheckExprs: [{apiVersion: a/v1, current: true}]\n",
     "healthCheckExprs[0]: current must be a string"),
    ("healthCheckExprs:\n- {apiVersion: a/v1, kind: X, current: 'true'}\n"
     "- {apiVersion: a/v2, kind: X, current: 'false'}\n",
     "healthCheckExprs[1]: a second check for X of group a (the first is healthCheckExprs[0])"),
    ("dependsOn: cert-manager\n", "dependsOn must be a list"),
    ("dependsOn: [{namespace: x}]\n", "dependsOn[0]: name is required"),
    ("dependsOn: [{name: a, ns: x}]\n", "dependsOn[0]: unknown key(s) ns"),
    ("dependsOn: [{name: a, namespace: 3}]\n", "dependsOn[0]: namespace must be a string"),
])
def test_a_bad_entry_is_one_line_naming_it(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(text)
    assert str(e.value) == f".gitops.yaml: {error}" or \
        str(e.value).startswith(f".gitops.yaml: {error}")
