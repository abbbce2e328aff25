"""`kubectl gitops sync` against the real control plane."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from kubectl_gitops.engine.applyset import (GROUP_KINDS_ANNOTATION, ID_LABEL, NAMESPACES_ANNOTATION,
                                            PART_OF_LABEL, TOOLING_ANNOTATION, applyset_id)
from testing.git import commit, make_repo, write
from testing.kube import configmap, crd, deployment, docs, get, gitops, kubectl


def _repo(tmp_path: Path, text: str) -> Path:
    repo = make_repo(tmp_path / "repo")
    write(repo, "deploy/all.yaml", text)
    commit(repo, "manifests")
    return repo


def _sync(repo: Path, ns: str, env: dict, *extra: str, name: str = "app") \
        -> subprocess.CompletedProcess[str]:
    return gitops("sync", "deploy", "-n", ns, "--name", name, *extra, cwd=repo, env=env)


def _set(repo: Path, text: str, msg: str = "change") -> str:
    write(repo, "deploy/all.yaml", text)
    return commit(repo, msg)


def _rvs(env: dict, ns: str) -> dict[str, str]:
    out = json.loads(kubectl("get", "configmaps,deployments,services", "-n", ns, "-o", "json",
                             env=env).stdout)
    return {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
            for o in out["items"] if o["metadata"]["name"] != "app"}


def test_sync_is_idempotent(tmp_path: Path, git_env: dict, kube_env: dict,
                            namespace: str) -> None:
    repo = _repo(tmp_path, docs(configmap("a"), deployment("web", 2)))
    first = _sync(repo, namespace, kube_env, "-o", "json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["counts"]["created"] == 2
    before = _rvs(kube_env, namespace)
    second = _sync(repo, namespace, kube_env, "-o", "json")
    assert second.returncode == 0, second.stderr
    counts = json.loads(second.stdout)["counts"]
    assert counts == {"created": 0, "updated": 0, "pruned": 0, "unchanged": 2, "failed": 0}
    assert _rvs(kube_env, namespace) == before


def test_dry_run_writes_nothing(tmp_path: Path, git_env: dict, kube_env: dict,
                                namespace: str) -> None:
    repo = _repo(tmp_path, docs(configmap("a"), configmap("b")))
    r = _sync(repo, namespace, kube_env, "--dry-run", "--prune")
    assert r.returncode == 0, r.stderr
    assert "would create  ConfigMap" in r.stdout
    assert "nothing written" in r.stderr
    assert get("configmap", "a", kube_env, namespace) is None
    assert get("configmap", "app", kube_env, namespace) is None  # no ApplySet parent either


def test_invalid_manifest_writes_nothing(tmp_path: Path, git_env: dict, kube_env: dict,
                                         namespace: str) -> None:
    repo = _repo(tmp_path, docs(configmap("good")) + "---\napiVersion: v1\nkind: ConfigMap\n"
                 "metadata: {}\n")
    r = _sync(repo, namespace, kube_env)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: deploy/all.yaml:8: missing required field metadata.name"
    assert get("configmap", "good", kube_env, namespace) is None
    assert get("configmap", "app", kube_env, namespace) is None


def test_server_rejected_manifest_writes_nothing(tmp_path: Path, git_env: dict,
                                                 kube_env: dict, namespace: str) -> None:
    bad = deployment("bad")
    bad["spec"]["replicas"] = "three"
    repo = _repo(tmp_path, docs(configmap("good"), bad))
    r = _sync(repo, namespace, kube_env)
    assert r.returncode == 2
    assert f"Deployment {namespace}/bad:" in r.stderr and "Traceback" not in r.stderr
    assert get("configmap", "good", kube_env, namespace) is None


def test_key_an_apply_refuses_writes_nothing(tmp_path: Path, git_env: dict, kube_env: dict,
                                             namespace: str) -> None:
    # A create accepts two env entries of one name; an apply refuses them.
    # New objects are predicted with a create dry-run, so sync checks this
    # itself before anything is written.
    bad = deployment("twice")
    bad["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "MODE", "value": "a"}, {"name": "MODE", "value": "b"}]
    repo = _repo(tmp_path, docs(configmap("good"), bad))
    r = _sync(repo, namespace, kube_env)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: Deployment {namespace}/twice: spec.template.spec.containers[0]"
                      '.env[1]: duplicate entry name="MODE" (also at [0]); keys of this list '
                      "must be unique"], r.stderr
    assert get("configmap", "good", kube_env, namespace) is None
    assert get("configmap", "app", kube_env, namespace) is None


def test_create_prediction_falls_back_when_the_object_appeared(kube_env: dict,
                                                               namespace: str) -> None:
    # Planned as new (no live object seen), but created by someone since:
    # the create dry-run says AlreadyExists and the apply dry-run predicts.
    from kubectl_gitops.engine import applyset, plan
    from kubectl_gitops.engine.desired import object_id
    from kubectl_gitops.engine.model import Item
    from kubectl_gitops.kube.client import Kube
    from kubectl_gitops.kube.kubeconfig import Overrides
    from kubectl_gitops.source.manifests import Manifest

    kubectl("create", "configmap", "late", "-n", namespace, "--from-literal=k=old",
            env=kube_env)
    kube = Kube(Overrides(kubeconfig=kube_env["KUBECONFIG"]))
    obj = configmap("late", {"k": "new"}, namespace=namespace)
    m = Manifest(obj=obj, path="late.yaml", line=1)
    parent = applyset.Parent("app", namespace)
    item = Item(object_id(m), "create", kube.resource_types()[("", "ConfigMap")],
                manifest=m, desired=plan.to_apply(m, parent.id))
    for dry_run in plan._Predictor(kube, {}).calls([item]):
        dry_run()
    assert not item.error, item.error
    assert item.predicted["data"] == {"k": "new"}
    assert item.predicted["metadata"]["uid"] == get("configmap", "late", kube_env,
                                                    namespace)["metadata"]["uid"]
    kube.close()


def test_prune_uses_the_plans_lists_and_its_label(tmp_path: Path, git_env: dict,
                                                  kube_env: dict, namespace: str) -> None:
    # Several objects of a kind in a namespace: the plan LISTs them all, and
    # prune picks its members out of that LIST by the part-of label. A
    # namespace the revision leaves entirely is searched by the label.
    other = f"{namespace}-y"
    kubectl("create", "namespace", other, env=kube_env)
    kubectl("create", "configmap", "bystander", "-n", namespace, env=kube_env)
    foreign = _repo(tmp_path / "f", docs(configmap("theirs")))
    assert _sync(foreign, namespace, kube_env, name="other-app").returncode == 0
    repo = _repo(tmp_path, docs(configmap("a"), configmap("b"), configmap("c"),
                                configmap("d", namespace=other)))
    assert _sync(repo, namespace, kube_env, "--prune").returncode == 0
    _set(repo, docs(configmap("a"), configmap("b")))
    r = _sync(repo, namespace, kube_env, "--prune")
    assert r.returncode == 0, r.stderr
    pruned = sorted(line.split()[-1] for line in r.stdout.splitlines()
                    if line.startswith("pruned"))
    assert pruned == sorted([f"{namespace}/c", f"{other}/d"])
    for name in ("a", "b", "bystander", "theirs"):
        assert get("configmap", name, kube_env, namespace) is not None, name
    kubectl("delete", "namespace", other, "--wait=false", env=kube_env)


def test_applyset_parent_matches_kep_and_kubectl(tmp_path: Path, git_env: dict, kube_env: dict,
                                                 namespace: str) -> None:
    other = f"{namespace}-b"
    kubectl("create", "namespace", other, env=kube_env)
    repo = _repo(tmp_path, docs(configmap("a"), deployment("web"),
                                configmap("elsewhere", namespace=other)))
    assert _sync(repo, namespace, kube_env).returncode == 0
    parent = get("configmap", "app", kube_env, namespace)
    assert parent is not None
    set_id = parent["metadata"]["labels"][ID_LABEL]
    assert set_id == applyset_id("app", namespace)
    ann = parent["metadata"]["annotations"]
    assert ann[TOOLING_ANNOTATION].startswith("kubectl-gitops/v")
    assert ann[GROUP_KINDS_ANNOTATION] == "ConfigMap,Deployment.apps"
    assert ann[NAMESPACES_ANNOTATION] == other
    for kind, name, ns in (("configmap", "a", namespace), ("deployment", "web", namespace),
                           ("configmap", "elsewhere", other)):
        assert get(kind, name, kube_env, ns)["metadata"]["labels"][PART_OF_LABEL] == set_id
    # kubectl computes the same ID for a parent of the same name and namespace.
    probe = tmp_path / "probe.yaml"
    probe.write_text(docs(configmap("probe-member")))
    env = {**kube_env, "KUBECTL_APPLYSET": "true"}
    kubectl("apply", "--server-side", "--prune", "--applyset=configmap/kubectl-made", "-n",
            namespace, "-f", str(probe), env=env)
    made = get("configmap", "kubectl-made", kube_env, namespace)
    assert made["metadata"]["labels"][ID_LABEL] == applyset_id("kubectl-made", namespace)
    kubectl("delete", "namespace", other, "--wait=false", env=kube_env)


def test_prune_only_touches_own_members(tmp_path: Path, git_env: dict, kube_env: dict,
                                        namespace: str) -> None:
    other = f"{namespace}-x"
    kubectl("create", "namespace", other, env=kube_env)
    # Same name, another namespace, no label: must survive.
    kubectl("create", "configmap", "old", "-n", other, env=kube_env)
    # A member of another ApplySet, in our namespace: must survive.
    foreign = _repo(tmp_path / "f", docs(configmap("theirs")))
    assert _sync(foreign, namespace, kube_env, name="other-app").returncode == 0
    repo = _repo(tmp_path, docs(configmap("old"), configmap("new"),
                                configmap("pinned", annotations={
                                    "kubectl-gitops.io/prune": "false"})))
    assert _sync(repo, namespace, kube_env, "--prune").returncode == 0
    _set(repo, docs(configmap("new")))
    r = _sync(repo, namespace, kube_env, "--prune", "-o", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["counts"]["pruned"] == 1
    assert get("configmap", "old", kube_env, namespace) is None
    assert get("configmap", "pinned", kube_env, namespace) is not None  # prune: "false"
    assert get("configmap", "old", kube_env, other) is not None
    assert get("configmap", "theirs", kube_env, namespace) is not None
    assert get("configmap", "new", kube_env, namespace) is not None
    kubectl("delete", "namespace", other, "--wait=false", env=kube_env)


def test_empty_revision_guard(tmp_path: Path, git_env: dict, kube_env: dict,
                              namespace: str) -> None:
    repo = _repo(tmp_path, docs(configmap("a")))
    assert _sync(repo, namespace, kube_env, "--prune").returncode == 0
    _set(repo, "# nothing here any more\n")
    r = _sync(repo, namespace, kube_env, "--prune")
    assert r.returncode == 2
    assert "refusing to prune everything (pass --allow-empty" in r.stderr
    assert get("configmap", "a", kube_env, namespace) is not None
    r = _sync(repo, namespace, kube_env, "--prune", "--allow-empty")
    assert r.returncode == 0, r.stderr
    assert get("configmap", "a", kube_env, namespace) is None


CRD = crd("Gadget", "NS.example.com", {"size": {"type": "integer", "maximum": 10}})


def _gadget(name: str, size: int, ns: str) -> str:
    return f"---\napiVersion: {ns}.example.com/v1\nkind: Gadget\nmetadata: {{name: {name}}}\n" \
           f"spec: {{size: {size}}}\n"


def test_crd_and_custom_resource_in_one_revision(tmp_path: Path, git_env: dict,
                                                 kube_env: dict, namespace: str) -> None:
    repo = _repo(tmp_path, CRD.replace("NS", namespace) + _gadget("g1", 3, namespace))
    r = _sync(repo, namespace, kube_env)
    assert r.returncode == 0, r.stderr
    assert "created    Gadget" in r.stdout
    assert gitops("diff", "deploy", "-n", namespace, "--name", "app", cwd=repo,
                  env=kube_env).returncode == 0
    kubectl("delete", "crd", f"gadgets.{namespace}.example.com", "--wait=false", env=kube_env)


def test_failed_apply_does_not_stop_others_and_blocks_prune(tmp_path: Path, git_env: dict,
                                                            kube_env: dict,
                                                            namespace: str) -> None:
    repo = _repo(tmp_path, docs(configmap("doomed")))
    assert _sync(repo, namespace, kube_env, "--prune").returncode == 0
    # The CR can only be checked once its CRD exists, so it fails at apply time.
    _set(repo, CRD.replace("NS", namespace) + _gadget("too-big", 99, namespace) + "---\n"
         + docs(configmap("fine")))
    r = _sync(repo, namespace, kube_env, "--prune")
    assert r.returncode == 2
    failures = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(failures) == 1 and f"Gadget {namespace}/too-big" in failures[0]
    assert get("configmap", "fine", kube_env, namespace) is not None
    assert get("configmap", "doomed", kube_env, namespace) is not None  # no prune
    hist = json.loads(gitops("history", "-n", namespace, "--name", "app", "-o", "json",
                             cwd=repo, env=kube_env).stdout)
    assert hist[0]["result"] == "failed" and hist[0]["counts"]["failed"] == 1
    kubectl("delete", "crd", f"gadgets.{namespace}.example.com", "--wait=false", env=kube_env)


def test_conflicts_and_force(tmp_path: Path, git_env: dict, kube_env: dict,
                             namespace: str) -> None:
    path = tmp_path / "theirs.yaml"
    path.write_text(docs(deployment("web", 5)))
    kubectl("apply", "--server-side", "--field-manager", "someone-else", "-n", namespace, "-f",
            str(path), env=kube_env)
    repo = _repo(tmp_path, docs(deployment("web", 2)))
    # --no-force-conflicts refuses, one line naming the manager and the field.
    r = _sync(repo, namespace, kube_env, "--no-force-conflicts")
    assert r.returncode == 2
    assert r.stderr.strip() == (f'error: Deployment {namespace}/web: fields set by another '
                                'manager: "someone-else": .spec.replicas; refused by '
                                "--no-force-conflicts (forceConflicts: false in .gitops.yaml)")
    assert get("deployment", "web", kube_env, namespace)["spec"]["replicas"] == 5
    # By default git is the source of truth: the field is taken back.
    r = _sync(repo, namespace, kube_env)
    assert r.returncode == 0, r.stderr
    assert get("deployment", "web", kube_env, namespace)["spec"]["replicas"] == 2


def test_immutable_field_is_explained(tmp_path: Path, git_env: dict, kube_env: dict,
                                      namespace: str) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
           "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "c", "image": "busybox:1.36", "command": ["true"]}]}}}}
    repo = _repo(tmp_path, docs(job))
    assert _sync(repo, namespace, kube_env).returncode == 0
    job["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:1.37"
    _set(repo, docs(job))
    r = _sync(repo, namespace, kube_env)
    assert r.returncode == 2
    assert f"Job {namespace}/migrate:" in r.stderr and "immutable" in r.stderr
    assert f"delete Job {namespace}/migrate and sync again" in r.stderr


def test_adopt(tmp_path: Path, git_env: dict, kube_env: dict, namespace: str) -> None:
    kubectl("create", "configmap", "shared", "-n", namespace, env=kube_env)
    kubectl("label", "configmap", "shared", "-n", namespace,
            f"{PART_OF_LABEL}=applyset-someone-else-v1", env=kube_env)
    repo = _repo(tmp_path, docs(configmap("shared")))
    r = _sync(repo, namespace, kube_env)
    assert r.returncode == 2
    assert "already owned by ApplySet applyset-someone-else-v1" in r.stderr
    assert _sync(repo, namespace, kube_env, "--adopt").returncode == 0
    labels = get("configmap", "shared", kube_env, namespace)["metadata"]["labels"]
    assert labels[PART_OF_LABEL] == applyset_id("app", namespace)


def _play_kubelet(env: dict, ns: str, replicas: int, delay: float) -> threading.Thread:
    """No kubelet runs here: after ``delay``, report the Deployment's pods as
    running and ready through the status subresource, as a kubelet would; the
    real ReplicaSet and Deployment controllers then finish the rollout."""
    def go() -> None:
        time.sleep(delay)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now}]}}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pods = json.loads(kubectl("get", "pods", "-n", ns, "-o", "json",
                                      env=env).stdout)["items"]
            if len(pods) >= replicas:
                for pod in pods:
                    kubectl("patch", "pod", pod["metadata"]["name"], "-n", ns,
                            "--subresource=status", "--type=merge", "-p", json.dumps(status),
                            env=env)
                return
            time.sleep(0.5)
    t = threading.Thread(target=go)
    t.start()
    return t


def test_wait_for_rollout(tmp_path: Path, git_env: dict, kube_env: dict,
                          namespace: str) -> None:
    repo = _repo(tmp_path, docs(deployment("web", 2)))
    r = _sync(repo, namespace, kube_env, "--wait", "--timeout", "3s")
    assert r.returncode == 2
    assert (f"timed out after 3 s waiting for members: Deployment {namespace}/web: "
            "Progressing: 0 of 2 replicas available") in r.stderr
    writer = _play_kubelet(kube_env, namespace, 2, delay=2.0)
    r = _sync(repo, namespace, kube_env, "--wait", "--timeout", "60s")
    writer.join()
    assert r.returncode == 0, r.stderr
    assert f"waiting    members: 0/1 ready; Deployment {namespace}/web: Progressing" in r.stdout


def test_history_after_three_syncs(tmp_path: Path, git_env: dict, kube_env: dict,
                                   namespace: str) -> None:
    repo = _repo(tmp_path, docs(configmap("a", {"v": "1"})))
    shas = []
    for v in ("1", "2", "3"):
        shas.append(_set(repo, docs(configmap("a", {"v": v})), f"v{v}"))
        assert _sync(repo, namespace, kube_env).returncode == 0
    out = gitops("history", "-n", namespace, "--name", "app", "-o", "json", cwd=repo,
                 env=kube_env)
    records = json.loads(out.stdout)
    assert [r["revision"] for r in records] == shas[::-1]
    assert all(r["result"] == "succeeded" and r["clusterUser"] == "admin" for r in records)
    assert records[0]["gitUser"] == "Test User <test@example.com>"
    assert records[0]["path"] == "deploy"
    table = gitops("history", "-n", namespace, "--name", "app", cwd=repo, env=kube_env)
    assert table.stdout.splitlines()[0].split()[:3] == ["TIME", "REVISION", "REF"]
    assert shas[-1][:7] in table.stdout.splitlines()[1]


def _requests(stderr: str) -> list[str]:
    """``METHOD path`` of each request a ``-v 6`` run logged."""
    return [" ".join(line.split()[:2]).split("?")[0] for line in stderr.splitlines()
            if line.split()[:1] and line.split()[0] in ("GET", "PUT", "POST", "PATCH", "DELETE")]


def test_converged_rerun_only_reads(tmp_path: Path, git_env: dict, kube_env: dict,
                                    namespace: str) -> None:
    # A re-run at the revision the newest record holds, with nothing to
    # apply or prune, is a read: no Lease, no record, no write at all.
    repo = _repo(tmp_path, docs(configmap("a"), configmap("b"), deployment("web", 1)))
    assert _sync(repo, namespace, kube_env, "--prune").returncode == 0
    r = _sync(repo, namespace, kube_env, "--prune", "-v", "6")
    assert r.returncode == 0, r.stderr
    assert "3 unchanged" in r.stderr
    sent = _requests(r.stderr)
    assert sent and all(req.startswith("GET ") for req in sent), sent
    assert not any("/leases/" in req for req in sent)
    # The one Deployment and the prune search for Deployments are one LIST
    # by the part-of label (no GET of it besides).
    assert not any(req.endswith("/deployments/web") for req in sent), sent
    records = lambda: json.loads(gitops("history", "-n", namespace, "--name", "app", "-o",  # noqa: E731
                                        "json", cwd=repo, env=kube_env).stdout)
    assert len(records()) == 1
    # Drift is work: the re-run takes it back under the Lease and records it.
    kubectl("scale", "deployment", "web", "-n", namespace, "--replicas", "3", env=kube_env)
    r = _sync(repo, namespace, kube_env, "--prune", "-v", "6")
    assert r.returncode == 0, r.stderr
    assert any("/leases/" in req and req.startswith("PUT") for req in _requests(r.stderr))
    assert get("deployment", "web", kube_env, namespace)["spec"]["replicas"] == 1
    assert len(records()) == 2
    # A new revision that changes no object is still recorded.
    write(repo, "README.md", "docs only\n")
    sha = commit(repo, "docs")
    assert _sync(repo, namespace, kube_env, "--prune").returncode == 0
    assert [r_["revision"] for r_ in records()][:1] == [sha]
    # An object not yet labelled as ours (created by hand) is still found
    # when its type is searched by label: adopted, not created again.
    kubectl("create", "service", "clusterip", "db", "--tcp", "5432", "-n", namespace,
            env=kube_env)
    _set(repo, docs(configmap("a"), configmap("b"), deployment("web", 1),
                    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
                     "spec": {"ports": [{"name": "5432-5432", "port": 5432,
                                         "protocol": "TCP", "targetPort": 5432}]}}))
    r = _sync(repo, namespace, kube_env, "--prune", "--adopt", "-o", "json")
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout)["counts"]
    assert counts["created"] == 0 and counts["updated"] == 1, counts
    assert get("service", "db", kube_env, namespace)["metadata"]["labels"][PART_OF_LABEL]


def test_killed_sync_converges_on_rerun(tmp_path: Path, git_env: dict, kube_env: dict,
                                        namespace: str) -> None:
    many = [configmap(f"cm-{i:03d}", {"i": str(i)}) for i in range(150)]
    repo = _repo(tmp_path, docs(*many))
    proc = subprocess.Popen(["kubectl", "gitops", "sync", "deploy", "-n", namespace, "--name",
                             "app", "--concurrency", "1"], cwd=repo, env=kube_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # kill it once it is visibly half-way
        if "cm-020" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    made = json.loads(kubectl("get", "configmaps", "-n", namespace, "-o", "json",
                              env=kube_env).stdout)["items"]
    assert 20 <= len([m for m in made if m["metadata"]["name"].startswith("cm-")]) < 150
    r = _sync(repo, namespace, kube_env, "--prune")
    assert r.returncode == 0, r.stderr
    assert gitops("diff", "deploy", "-n", namespace, "--name", "app", cwd=repo,
                  env=kube_env).returncode == 0
    # Nothing was lost track of: removing half from git prunes exactly that half.
    _set(repo, docs(*many[:75]))
    r = _sync(repo, namespace, kube_env, "--prune", "-o", "json")
    assert json.loads(r.stdout)["counts"]["pruned"] == 75
