"""The per-app Lease against the real control plane: one writer at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides
from kubectl_gitops.kube.lease import LEASE_TYPE, Lease, LeaseHeld, LeaseLost, identity

pytestmark = pytest.mark.cluster


@pytest.fixture
def kube(kube_env: dict[str, str]) -> Kube:
    return Kube(Overrides(kubeconfig=kube_env["KUBECONFIG"]))


def test_one_holder_and_a_clear_refusal(kube: Kube, namespace: str) -> None:
    first = Lease(kube, namespace, "app", holder="first")
    second = Lease(kube, namespace, "app", holder="second")
    first.acquire(timeout=1)
    assert first.held
    assert not second.try_acquire()
    with pytest.raises(LeaseHeld, match=r"held by first since \d{4}-.*--lock-timeout"):
        second.acquire(timeout=0.5)
    live = kube.get(LEASE_TYPE, namespace, "app")
    assert live and live["spec"]["holderIdentity"] == "first"


def test_release_frees_it_at_once(kube: Kube, namespace: str) -> None:
    first = Lease(kube, namespace, "app", holder="first", duration=60)
    first.acquire(timeout=1)
    first.release()
    second = Lease(kube, namespace, "app", holder="second", duration=60)
    assert second.try_acquire()
    live = kube.get(LEASE_TYPE, namespace, "app")
    assert live and live["spec"]["holderIdentity"] == "second"
    assert live["spec"]["leaseTransitions"] == 0  # released, not taken over


def test_an_expired_lease_is_taken_over(kube: Kube, namespace: str) -> None:
    Lease(kube, namespace, "app", holder="crashed-elsewhere", duration=1).acquire(timeout=1)
    taker = Lease(kube, namespace, "app", holder="taker")
    taker.acquire(timeout=10)  # waits out the 1 s duration
    live = kube.get(LEASE_TYPE, namespace, "app")
    assert live and live["spec"]["holderIdentity"] == "taker"
    assert live["spec"]["leaseTransitions"] == 1


def test_a_killed_holder_on_this_host_leaves_it(kube: Kube, namespace: str,
                                               kube_env: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "hold.py"
    script.write_text(
        "import sys, time\n"
        "from kubectl_gitops.kube.client import Kube\n"
        "from kubectl_gitops.kube.kubeconfig import Overrides\n"
        "from kubectl_gitops.kube.lease import Lease\n"
        "lease = Lease(Kube(Overrides(kubeconfig=sys.argv[1])), sys.argv[2], 'app',\n"
        "              duration=3600)\n"
        "lease.acquire(timeout=5)\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, str(script), kube_env["KUBECONFIG"], namespace],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout and proc.stdout.readline().strip() == "held"
        blocked = Lease(kube, namespace, "app")
        assert not blocked.try_acquire()  # alive: an hour-long lease is respected
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    after = Lease(kube, namespace, "app")
    after.acquire(timeout=2)  # would need an hour if the dead holder were trusted
    assert after.held


def test_of_two_racing_writers_exactly_one_wins(kube: Kube, namespace: str) -> None:
    for round_ in range(5):
        name = f"race-{round_}"
        leases = [Lease(kube, namespace, name, holder=f"w{i}", duration=60) for i in range(4)]
        results: list[bool] = []
        lock = threading.Lock()
        start = threading.Barrier(len(leases))

        def contend(lease: Lease) -> None:
            start.wait()
            won = lease.try_acquire()
            with lock:
                results.append(won)

        threads = [threading.Thread(target=contend, args=(lease,)) for lease in leases]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False, False, False, True], results


def test_hold_renews_and_notices_a_loss(kube: Kube, namespace: str) -> None:
    lease = Lease(kube, namespace, "app", holder="holder", duration=3)
    with lease.hold(timeout=1):
        first = kube.get(LEASE_TYPE, namespace, "app")
        assert first
        threading.Event().wait(2.5)  # one renewal happens at duration / 3
        renewed = kube.get(LEASE_TYPE, namespace, "app")
        assert renewed and renewed["spec"]["renewTime"] != first["spec"]["renewTime"]
        # Someone takes it by force (as a writer would after a long partition).
        renewed["spec"]["holderIdentity"] = "usurper"
        renewed["spec"]["renewTime"] = renewed["spec"]["renewTime"]
        kube.request("PUT", Kube.path(LEASE_TYPE, namespace, "app"), body=renewed)
        assert lease.renew() is False
        with pytest.raises(LeaseLost, match="stopped before writing more"):
            lease.check()
    live = kube.get(LEASE_TYPE, namespace, "app")
    assert live and live["spec"]["holderIdentity"] == "usurper"  # release left it alone


def test_identity_names_the_process() -> None:
    me = identity("sync")
    assert me.startswith("sync ") and f"pid={os.getpid()}" in me and "start=" in me


def test_renewals_that_keep_failing_stop_the_holder_before_it_expires(
        kube: Kube, namespace: str, kube_env: dict[str, str]) -> None:
    """A holder whose renewals fail (its rights revoked) keeps the error and
    goes on for a while, then, before anyone else may take the Lease (two
    thirds of its duration after the last renewal), counts it lost."""
    import yaml

    from kubectl_gitops.kube.kubeconfig import Overrides

    user = f"holder-{namespace}"
    rbac = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "leases", "namespace": namespace},
             "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                        "verbs": ["get", "create", "update"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "leases", "namespace": namespace},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                           "name": user}],
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": "leases"}}]
    subprocess.run(["kubectl", "apply", "-f", "-"], input=yaml.safe_dump_all(rbac),
                   env=kube_env, check=True, capture_output=True, text=True, timeout=60)
    clock = [0.0]
    lease = Lease(Kube(Overrides(kubeconfig=kube_env["KUBECONFIG"], as_user=user)), namespace,
                  "app", holder="h", duration=3, clock=lambda: clock[0])
    lease.acquire(timeout=5)
    subprocess.run(["kubectl", "delete", "rolebinding", "leases", "-n", namespace],
                   env=kube_env, check=True, capture_output=True, timeout=60)
    clock[0] = 1.0  # one renewal period later
    for _ in range(100):  # until the server applies the revocation
        assert lease.renew()
        if lease.error:
            break
        time.sleep(0.05)
    assert "forbidden" in lease.error and lease.held
    lease.check()  # still ours: nobody else may take it yet
    clock[0] = 2.0  # two thirds of the duration without a renewal
    assert not lease.renew()
    assert lease.lost
    with pytest.raises(LeaseLost, match="could not renew it: .*forbidden"):
        lease.check()


def test_taken_again_after_its_own_release_without_a_read_unless_changed(
        kube: Kube, kube_env: dict[str, str], namespace: str) -> None:
    """The agent takes an app's Lease for each write: after its own release
    the next take is one write; if another writer took it meanwhile, that
    write is refused (409) and the Lease read as usual."""
    calls: list[str] = []

    class Counting(Kube):
        def request(self, method: str, path: str, **kw: object) -> object:
            calls.append(method)
            return super().request(method, path, **kw)  # type: ignore[arg-type]

    counting = Counting(Overrides(kubeconfig=kube_env["KUBECONFIG"]))
    agent = Lease(counting, namespace, "app", holder="agent", duration=60)
    cli = Lease(kube, namespace, "app", holder="cli", duration=60)
    agent.acquire(timeout=1)
    agent.release()
    calls.clear()
    agent.acquire(timeout=1)
    assert calls == ["PUT"]
    agent.release()
    cli.acquire(timeout=1)  # a CLI sync takes it between two writes of the agent
    with pytest.raises(LeaseHeld, match="held by cli"):
        agent.acquire(timeout=0.2)
    cli.release()
    agent.acquire(timeout=1)
    assert kube.get(LEASE_TYPE, namespace, "app")["spec"]["holderIdentity"] == "agent"
