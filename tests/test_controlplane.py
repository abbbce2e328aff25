"""The local control plane is real: an unmodified kube-apiserver backed by
etcd, with kube-controller-manager running, reachable by the real kubectl,
and it leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import AppsV1Api, CoreV1Api, VersionApi
from kubernetes.client.exceptions import ApiException

from testing import controlplane
from testing.controlplane import (
    TOOLS_DIR,
    ControlPlane,
    ControlPlaneError,
    binaries_dir,
    pid_alive,
)
from testing.controlplane import free_ports as real_free_ports

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parent.parent


def deployment(name: str) -> dict[str, Any]:
    # Deliberately without strategy, revisionHistoryLimit and friends: the
    # server must fill them in.
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.25)


def gone(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


def all_dead(pids: Iterable[int]) -> bool:
    return not any(pid_alive(p) for p in pids)


# --------------------------------------------------------------------------
# Against the session's control plane


def test_kubectl_reads_back_server_defaults(api_client, namespace, kube_env) -> None:
    AppsV1Api(api_client).create_namespaced_deployment(namespace, deployment("web"))

    kubectl = shutil.which("kubectl", path=kube_env["PATH"])
    assert kubectl, "the real kubectl binary must be on PATH"
    run = subprocess.run([kubectl, "get", "deploy", "web", "-n", namespace, "-o", "json"],
                         env=kube_env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    live = json.loads(run.stdout)
    assert live["metadata"]["namespace"] == namespace
    assert live["spec"]["strategy"]["type"] == "RollingUpdate"
    assert live["spec"]["revisionHistoryLimit"] == 10

    run = subprocess.run([kubectl, "get", "namespace", namespace, "-o", "json"],
                         env=kube_env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["status"]["phase"] == "Active"


def test_server_side_apply_dry_run_defaults_and_writes_nothing(api_client, namespace) -> None:
    apps = AppsV1Api(api_client)
    predicted = apps.patch_namespaced_deployment(
        "web", namespace, deployment("web"), dry_run="All", field_manager="kubectl-gitops",
        _content_type="application/apply-patch+yaml")

    assert predicted.spec.strategy.type == "RollingUpdate"
    assert predicted.spec.revision_history_limit == 10
    container = predicted.spec.template.spec.containers[0]
    assert container.termination_message_path == "/dev/termination-log"
    assert [(m.manager, m.operation) for m in predicted.metadata.managed_fields] == [
        ("kubectl-gitops", "Apply")]
    assert gone(lambda: apps.read_namespaced_deployment("web", namespace))


def test_namespace_deletion_finalizes(api_client, namespace) -> None:
    # Content makes the namespace controller (in kube-controller-manager)
    # do real work before it can remove the finalizer.
    core = CoreV1Api(api_client)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "content"}})
    core.delete_namespace(namespace)
    eventually(lambda: gone(lambda: core.read_namespace(namespace)), 60,
               f"namespace {namespace} deleted")


def test_garbage_collector_deletes_dependents(api_client, namespace) -> None:
    core = CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "dependent", "ownerReferences": [ref]}})
    core.delete_namespaced_config_map("owner", namespace)
    eventually(lambda: gone(lambda: core.read_namespaced_config_map("dependent", namespace)),
               60, "dependent ConfigMap garbage-collected")


def pinned_kubernetes_version() -> str:
    go_mod = (TOOLS_DIR / "controlplane" / "go.mod").read_text()
    match = re.search(r"^require k8s\.io/kubernetes (v\S+)", go_mod, re.MULTILINE)
    assert match, "tools/controlplane/go.mod pins no k8s.io/kubernetes"
    return match.group(1)


def test_version_is_the_pinned_release(api_client, kube_env) -> None:
    expected = pinned_kubernetes_version()
    assert VersionApi(api_client).get_code().git_version == expected

    run = subprocess.run(["kubectl", "version", "-o", "json"], env=kube_env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["serverVersion"]["gitVersion"] == expected


# --------------------------------------------------------------------------
# Life cycle of control planes of their own


def test_stop_leaves_no_process_and_no_files() -> None:
    with ControlPlane() as cp:
        pids = cp.pids
        data_dir = cp.data_dir
        assert sorted(pids) == ["etcd", "kube-apiserver", "kube-controller-manager"]
        assert all(pid_alive(p) for p in pids.values())
        assert cp.kubeconfig.is_file()
    for name, pid in pids.items():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped by stop(), not just signalled
    assert not data_dir.exists()


def test_components_die_with_their_parent(tmp_path: Path) -> None:
    # A parent that is SIGKILLed runs no cleanup at all; the kernel's
    # parent-death signal must still take the components down.
    code = ("import json, sys, time\n"
            "from pathlib import Path\n"
            "from testing.controlplane import ControlPlane\n"
            "cp = ControlPlane(data_dir=Path(sys.argv[1])).start()\n"
            "print(json.dumps(cp.pids), flush=True)\n"
            "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "cp")], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stderr is not None
        line = parent.stdout.readline()
        assert line, parent.stderr.read()
        pids = json.loads(line).values()
        assert all(pid_alive(p) for p in pids)
    finally:
        parent.kill()
        parent.wait()
    eventually(lambda: all_dead(pids), 10, "components gone after their parent was killed")


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """The real etcd with a kube-apiserver that fails, to exercise start-up errors."""
    real = binaries_dir()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "etcd").symlink_to(real / "etcd")
    for name in ("kube-apiserver", "kube-controller-manager"):
        script = fake / name
        script.write_text("#!/bin/sh\necho 'E0101 fake: cannot bind' >&2\nexit 3\n")
        script.chmod(0o755)
    return fake


def test_failed_start_reports_the_log_and_stops_the_rest(fake_bin: Path) -> None:
    cp = ControlPlane(bin_dir=fake_bin, timeout=60)
    with pytest.raises(ControlPlaneError) as err:
        cp.start()
    message = str(err.value)
    assert "kube-apiserver exited with status 3" in message
    assert "E0101 fake: cannot bind" in message
    assert all_dead(cp.pids.values())
    assert not cp.data_dir.exists()


def test_start_retries_when_a_port_is_taken_meanwhile(fake_bin: Path, monkeypatch) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    chosen: list[list[int]] = []

    def ports(count: int) -> list[int]:
        # The first pick hands etcd a port someone else has bound since.
        chosen.append([taken.getsockname()[1], *real_free_ports(count - 1)] if not chosen
                      else real_free_ports(count))
        return chosen[-1]

    monkeypatch.setattr(controlplane, "free_ports", ports)
    cp = ControlPlane(bin_dir=fake_bin, timeout=60)
    with taken, pytest.raises(ControlPlaneError) as err:
        cp.start()
    # The second attempt got past etcd, to the fake kube-apiserver.
    assert len(chosen) == 2
    assert "kube-apiserver exited with status 3" in str(err.value)
    assert all_dead(cp.pids.values())


def test_start_timeout_reports_and_kills_a_hung_component(fake_bin: Path) -> None:
    (fake_bin / "kube-apiserver").write_text("#!/bin/sh\necho 'still starting'\nexec sleep 600\n")
    cp = ControlPlane(bin_dir=fake_bin, timeout=3)
    with pytest.raises(ControlPlaneError, match=r"(?s)timed out after 3s.*still starting"):
        cp.start()
    assert all_dead(cp.pids.values())


# --------------------------------------------------------------------------
# The background CLI: up / status / down


def controlplane_cli(*args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "testing.controlplane", *args, "--state-dir", str(state_dir)],
        env=env, capture_output=True, text=True, timeout=600)


def test_cli_up_is_idempotent_and_down_stops_everything(tmp_path: Path) -> None:
    state = tmp_path / "cluster"
    try:
        first = controlplane_cli("up", state_dir=state)
        assert first.returncode == 0, first.stderr
        kubeconfig = first.stdout.splitlines()[-1]
        assert Path(kubeconfig) == state / "kubeconfig"
        info = json.loads((state / "cluster.json").read_text())
        pids = [int((state / "pid").read_text()), *info["pids"].values()]

        second = controlplane_cli("up", state_dir=state)
        assert second.returncode == 0, second.stderr
        assert second.stdout.splitlines()[-1] == kubeconfig
        assert json.loads((state / "cluster.json").read_text())["pids"] == info["pids"]

        status = controlplane_cli("status", state_dir=state)
        assert status.returncode == 0, status.stdout
        assert info["server"] in status.stdout
    finally:
        down = controlplane_cli("down", state_dir=state)
    assert down.returncode == 0, down.stderr
    assert all_dead(pids)
    assert not (state / "kubeconfig").exists()
    assert controlplane_cli("status", state_dir=state).returncode == 1
