"""Shared fixtures: a real local control plane, one namespace per test, an
isolated git config, this package's executables on PATH. Helpers are in the
top-level ``testing`` package (``testing.git``, ``testing.kube``...).

Integration tests run against etcd + kube-apiserver + kube-controller-manager
started by ``testing.controlplane`` (or an already running cluster whose
kubeconfig is in ``$KUBECTL_GITOPS_KUBECONFIG``, e.g. from ``controlplane up``).
They are never skipped: if the control plane cannot start, they fail.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from testing.cli import BIN
from testing.git import isolate_git

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from testing.fleet import Fleet

CLUSTER_FIXTURES = {"control_plane", "api_client", "namespace", "fresh_namespace", "kube_env",
                    "three_clusters"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: needs the real local control plane (etcd + kube-apiserver)")
    config.addinivalue_line(
        "markers", "slow: a long scenario (about a minute); run by default, -m 'not slow' skips it")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Any test that touches the cluster is marked, so `-m "not cluster"` runs
    # exactly the unit tests without every test file having to remember.
    for item in items:
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


@dataclass(frozen=True)
class Cluster:
    """What tests need to reach a cluster."""

    kubeconfig: Path


@pytest.fixture(scope="session")
def control_plane() -> Iterator[Cluster]:
    reuse = os.environ.get("KUBECTL_GITOPS_KUBECONFIG")
    if reuse:
        path = Path(reuse)
        if not path.is_file():
            raise FileNotFoundError(f"KUBECTL_GITOPS_KUBECONFIG={reuse}: no such kubeconfig; "
                                    "unset it to start a control plane for this session")
        yield Cluster(path)
        return
    from testing.controlplane import ControlPlane

    # Any failure to start raises here, which fails (never skips) the tests.
    with ControlPlane() as cp:
        yield Cluster(cp.kubeconfig)


@pytest.fixture(scope="session")
def three_clusters(control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory) \
        -> Iterator[Fleet]:
    """A fleet: contexts ``staging`` (the suite's own cluster), ``prod-eu`` and
    ``prod-us`` (two more control planes, started once per session, about
    10 s and 300 MB each) in one kubeconfig (``.kubeconfig``)."""
    from testing.fleet import started

    with started(control_plane.kubeconfig, tmp_path_factory.mktemp("fleet"), ["staging"],
                 ["prod-eu", "prod-us"]) as fleet:
        yield fleet


@pytest.fixture(scope="session")
def api_client(control_plane: Cluster) -> Iterator[ApiClient]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    with client:
        yield client


def _reserve(request: pytest.FixtureRequest) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{uuid.uuid4().hex[:6]}"


def _delete_namespace(api_client: ApiClient, name: str) -> None:
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException

    try:
        CoreV1Api(api_client).delete_namespace(name)
    except ApiException as e:
        if e.status != 404:  # a test may delete its own namespace, or never make it
            raise


@pytest.fixture
def namespace(request: pytest.FixtureRequest, api_client: ApiClient) -> Iterator[str]:
    """A fresh namespace named after the test; deleted (not awaited) afterwards."""
    from kubernetes.client import CoreV1Api, V1Namespace, V1ObjectMeta

    name = _reserve(request)
    CoreV1Api(api_client).create_namespace(V1Namespace(metadata=V1ObjectMeta(name=name)))
    yield name
    _delete_namespace(api_client, name)


@pytest.fixture
def fresh_namespace(request: pytest.FixtureRequest, api_client: ApiClient) -> Iterator[str]:
    """A fresh namespace name that does not exist yet (an app on an empty
    cluster creates it); deleted afterwards if it came to exist."""
    name = _reserve(request)
    yield name
    _delete_namespace(api_client, name)


@pytest.fixture
def kube_env(control_plane: Cluster) -> dict[str, str]:
    """Environment for subprocesses: KUBECONFIG set, the venv's bin dir first
    on PATH so the real ``kubectl`` and this package's executables are found."""
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env["KUBECONFIG"] = str(control_plane.kubeconfig)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    return env


@pytest.fixture
def git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Isolated git config for this test; yields the resulting environment."""
    yield isolate_git(monkeypatch, tmp_path / ".gitconfig-home")


@pytest.fixture
def env(git_env: dict[str, str]) -> dict[str, str]:
    """The isolated git environment with this package's executables first on PATH."""
    return {**git_env, "PATH": os.pathsep.join([str(BIN), git_env.get("PATH", "")])}
