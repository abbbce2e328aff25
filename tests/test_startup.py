"""Start-up cost and small runs: the modules a command imports, the on-disk
discovery cache, and the requests a small no-change run makes.

Counts, never time: the module budget fails when a heavy import lands on
the no-change ``sync``/``diff`` path or on the pre-commit hook.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kubectl_gitops.cli.common import MODULES_ENV
from kubectl_gitops.engine import desired
from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides
from kubectl_gitops.source import tree
from testing.cli import run
from testing.git import commit, git, make_repo, write

# A little above what a run imports now (sys.modules at exit; sync 216, diff
# 217, hook 175 when these were set, after the layout in packages, whose
# __init__ modules count; the default editable install's import hook adds
# 3): a new heavy import fails here.
SYNC_BUDGET = 223
DIFF_BUDGET = 223
HOOK_BUDGET = 183
# Machinery none of these paths uses.
NEVER = ("kubernetes", "tabulate", "prometheus_client", "kubectl_gitops.agent",
         "kubectl_gitops.cli.manpage", "kubectl_gitops.cli.complete",
         "kubectl_gitops.engine.status", "kubectl_gitops.validate.hooks",
         "cel")  # healthCheckExprs: only where an object meets one
NOT_ON_NO_CHANGE = ("difflib", "kubectl_gitops.kube.schema", "kubectl_gitops.source.kustomize",
                    "concurrent.futures", "tempfile", "traceback", "unidiff",
                    "kubectl_gitops.kube.lease", "kubectl_gitops.kube.health",
                    "kubectl_gitops.fields", "kubectl_gitops.source.ignore",
                    "kubectl_gitops.engine.prune", "kubectl_gitops.engine.history",
                    "kubectl_gitops.engine.wait", "kubectl_gitops.engine.hooks")
NOT_IN_HOOK = ("ssl", "http.client", "kubectl_gitops.kube.client", "kubectl_gitops.kube.transport",
               "kubectl_gitops.kube.credentials", "concurrent.futures", "difflib",
               "kubectl_gitops.engine.plan")


@pytest.mark.parametrize("name", sorted(set(NEVER + NOT_ON_NO_CHANGE + NOT_IN_HOOK)))
def test_every_module_a_budget_names_exists(name: str) -> None:
    # A module renamed or moved would make its rule vacuous: each is a real
    # module (a file, or a package with an __init__), importable here.
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin not in (None, "namespace"), name


def small_app(namespace: str) -> str:
    """Five objects, as most apps are small: two ConfigMaps, a Secret, a
    (paused) Deployment and a headless Service."""
    return "---\n".join([
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c1, namespace: {namespace}}}\n"
        "data: {a: '1'}\n",
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c2, namespace: {namespace}}}\n"
        "data: {a: '2'}\n",
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s1, namespace: {namespace}}}\n"
        "stringData: {k: v}\n",
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {namespace}}}\n"
        "spec:\n  paused: true\n  selector: {matchLabels: {app: web}}\n"
        "  template:\n    metadata: {labels: {app: web}}\n"
        "    spec: {containers: [{name: web, image: nginx:1.0}]}\n",
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {namespace}}}\n"
        "spec: {clusterIP: None, selector: {app: web}, ports: [{port: 80}]}\n"])


def imported(args: list[str], cwd: Path, environ: dict[str, str], tmp: Path,
             expect: int = 0) -> set[str]:
    dump = tmp / f"modules-{args[-1].lstrip('-')}.txt"
    proc = run(args, cwd, {**environ, MODULES_ENV: str(dump)})
    assert proc.returncode == expect, proc.stderr
    return set(dump.read_text().split())


@pytest.fixture
def app_repo(git_env: dict[str, str], tmp_path: Path, namespace: str) -> Path:
    repo = make_repo(tmp_path / "repo")
    write(repo, ".gitops.yaml", f"name: small\nnamespace: {namespace}\npath: apps\n")
    write(repo, "apps/app.yaml", small_app(namespace))
    commit(repo)
    return repo


@pytest.mark.cluster
def test_a_no_change_sync_and_diff_of_a_small_app_stay_within_the_module_budget(
        app_repo: Path, kube_env: dict[str, str], git_env: dict[str, str],
        tmp_path: Path) -> None:
    environ = {**git_env, **kube_env, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    first = run(["kubectl", "gitops", "sync", "--prune"], app_repo, environ)
    assert first.returncode == 0, first.stderr
    assert "5 created" in first.stderr

    sync = imported(["kubectl", "gitops", "sync", "--prune"], app_repo, environ, tmp_path)
    diff = imported(["kubectl", "gitops", "diff"], app_repo, environ, tmp_path)

    assert "kubectl_gitops.engine.sync" in sync and "kubectl_gitops.engine.plan" in diff  # it did run
    for mods, budget in ((sync, SYNC_BUDGET), (diff, DIFF_BUDGET)):
        assert len(mods) <= budget, sorted(mods)
        assert not [m for m in mods if m.split(".")[0] in NEVER or m in NEVER]
        assert not [m for m in NOT_ON_NO_CHANGE if m in mods]


@pytest.mark.cluster
def test_a_diff_that_shows_changes_still_renders_them(
        app_repo: Path, kube_env: dict[str, str], git_env: dict[str, str],
        namespace: str, tmp_path: Path) -> None:
    environ = {**git_env, **kube_env, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert run(["kubectl", "gitops", "sync", "--prune"], app_repo, environ).returncode == 0
    write(app_repo, "apps/app.yaml", small_app(namespace).replace("a: '2'", "a: '3'"))
    commit(app_repo)
    proc = run(["kubectl", "gitops", "diff"], app_repo, environ)
    assert proc.returncode == 1, proc.stderr
    assert "-  a: \"2\"\n+  a: \"3\"\n" in proc.stdout or "-  a: '2'\n+  a: '3'\n" in proc.stdout


def test_the_pre_commit_hook_stays_within_the_module_budget(
        env: dict[str, str], git_env: dict[str, str], tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    write(repo, "apps/app.yaml", small_app("web"))
    commit(repo)
    write(repo, "apps/app.yaml", small_app("web").replace("a: '2'", "a: '3'"))
    git(repo, "add", "-A")

    for args in (["gitops-pre-commit"], ["git", "gitops", "validate", "--staged"]):
        mods = imported(args, repo, env, tmp_path)
        assert "kubectl_gitops.validate.checks" in mods  # it did validate
        assert len(mods) <= HOOK_BUDGET, sorted(mods)
        assert not [m for m in mods if m.split(".")[0] in NEVER or m in NEVER]
        assert not [m for m in NOT_IN_HOOK if m in mods]


# --- the discovery cache on disk ---------------------------------------------------

def requests(kube: Kube, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """``METHOD path status`` of every answered request of ``kube``."""
    seen: Counter[str] = Counter()
    real = kube._http.request

    def counting(method: str, path: str, *args: Any, **kw: Any) -> Any:
        status, headers, payload = real(method, path, *args, **kw)
        seen[f"{method} {path} {status}"] += 1
        return status, headers, payload

    monkeypatch.setattr(kube._http, "request", counting)
    return seen


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


def cache_dir(cache_home: Path) -> Path:
    [server] = (cache_home / "kubectl-gitops" / "discovery").iterdir()
    return server


@pytest.mark.cluster
def test_discovery_is_kept_on_disk_and_revalidated_with_one_conditional_request(
        control_plane: Any, cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = Kube(Overrides(kubeconfig=str(control_plane.kubeconfig)))
    seen = requests(first, monkeypatch)
    types = first.resource_types()
    assert seen == Counter({"GET /apis 200": 1, "GET /api 200": 1})

    directory = cache_dir(cache_home)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert sorted(p.name for p in directory.iterdir()) == ["api.json", "apis.json"]
    for f in directory.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert json.loads(f.read_text())["etag"]

    second = Kube(Overrides(kubeconfig=str(control_plane.kubeconfig)))
    seen = requests(second, monkeypatch)
    assert second.resource_types() == types
    # /apis unchanged (304, no body); /api, the built-in core group, reused.
    assert seen == Counter({"GET /apis 304": 1})


@pytest.mark.cluster
def test_a_corrupt_cache_file_is_ignored_and_replaced(
        control_plane: Any, cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    types = Kube(Overrides(kubeconfig=str(control_plane.kubeconfig))).resource_types()
    directory = cache_dir(cache_home)
    (directory / "apis.json").write_text('{"etag": "x", "doc": [')
    (directory / "api.json").write_bytes(b"\x00\xff not json")

    kube = Kube(Overrides(kubeconfig=str(control_plane.kubeconfig)))
    seen = requests(kube, monkeypatch)
    assert kube.resource_types() == types
    assert seen == Counter({"GET /apis 200": 1, "GET /api 200": 1})
    assert json.loads((directory / "apis.json").read_text())["doc"]["items"]


@pytest.mark.cluster
def test_a_kind_the_reused_discovery_lacks_makes_it_ask_again(
        control_plane: Any, cache_home: Path, git_env: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache written by an older server (another ETag, no ConfigMap in the
    core group): /apis is unchanged, so /api is reused, until a manifest names
    a kind it does not know."""
    Kube(Overrides(kubeconfig=str(control_plane.kubeconfig))).resource_types()
    core = cache_dir(cache_home) / "api.json"
    entry = json.loads(core.read_text())
    for group in entry["doc"]["items"]:
        for version in group["versions"]:
            version["resources"] = [r for r in version["resources"]
                                    if r["resource"] != "configmaps"]
    entry["etag"] = '"an-older-server"'
    core.write_text(json.dumps(entry))
    repo = make_repo(tmp_path / "repo")
    write(repo, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n")
    commit(repo)

    kube = Kube(Overrides(kubeconfig=str(control_plane.kubeconfig)))
    seen = requests(kube, monkeypatch)
    [m] = desired.load(tree.resolve(repo=repo), kube=kube, namespace="default")

    assert (m.kind, m.namespace) == ("ConfigMap", "default")
    assert seen == Counter({"GET /apis 304": 1, "GET /api 200": 1})
    assert "configmaps" in core.read_text()


def test_the_cache_directory_is_per_server_and_unusable_when_not_ours(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubectl_gitops.kube.client import _DiscoveryCache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a = _DiscoveryCache.for_server("https://127.0.0.1:6443")
    b = _DiscoveryCache.for_server("https://user@example.com:443/prefix/")
    assert a.directory == str(tmp_path / "kubectl-gitops" / "discovery" / "127.0.0.1_6443")
    assert b.directory == str(tmp_path / "kubectl-gitops" / "discovery" /
                              "example.com_443_prefix")
    a.write("/apis", '"e1"', {"items": []})
    assert a.read("/apis") == ('"e1"', {"items": []})
    assert a.read("/api") is None
    os.chmod(str(a.directory), 0o755)  # loosened by someone: tightened again on use
    assert a.read("/apis") is not None
    assert stat.S_IMODE(os.stat(str(a.directory)).st_mode) == 0o700
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = Path(str(b.directory))
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)  # a planted link is never followed
    b.write("/apis", '"e2"', {"items": []})
    assert b.read("/apis") is None and not list(target.iterdir())
