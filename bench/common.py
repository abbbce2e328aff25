"""Shared helpers for the cluster benchmarks (bench/diff.py, bench/sync.py).

A fresh local control plane per run (testing.controlplane, in a temp
state dir, stopped at the end), a generated git repository of N objects
(ConfigMaps, Deployments and Services spread over 5 namespaces), commands
run as subprocesses exactly as a user types them (``kubectl gitops ...``
goes through kubectl's plugin discovery), wall time with
``time.perf_counter``, medians over rounds and a table of medians and
ratios.

The Namespaces are created before anything is timed and are not part of the
measured files: every tool is given exactly N objects of the same three
kinds (see ``render`` for their shape).

Besides wall time, each run's client CPU (user + system of the command and
its children: kubectl, and our plugin that kubectl execs) is recorded: on a
shared machine it is steadier than wall time, though it leaves out the API
server's work, which is most of the cost.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kubectl_gitops.kube.client import Kube
from kubectl_gitops.kube.kubeconfig import Overrides

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = VENV_BIN / "python"
NAMESPACES = 5
APPS_DIR = "apps"  # the manifests, flat, so `kubectl ... -f DIR` needs no -R

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: config-{n}
  namespace: {ns}
  labels:
    app.kubernetes.io/name: app-{app}
data:
  LOG_LEVEL: {log_level}
  app.properties: |
    feature.a=true
    feature.b=false
    threads={n}
"""
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-{n}
  namespace: {ns}
  labels:
    app.kubernetes.io/name: app-{app}
spec:
  replicas: 1{paused}
  selector:
    matchLabels:
      app.kubernetes.io/name: app-{app}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: app-{app}
    spec:
      containers:
        - name: web
          image: registry.example.com/web:{tag}
          ports:
            - containerPort: 8080
              name: http
          env:
            - name: LOG_LEVEL
              value: info
          resources:
            requests: {{cpu: 100m, memory: 128Mi}}
            limits: {{memory: 256Mi}}
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web-{n}
  namespace: {ns}
  labels:
    app.kubernetes.io/name: app-{app}
  annotations:
    example.com/revision: "{revision}"
spec:
  clusterIP: None
  selector:
    app.kubernetes.io/name: app-{app}
  ports:
    - name: http
      port: 80
      targetPort: http
"""
KINDS = (CONFIGMAP, DEPLOYMENT, SERVICE)


# --- output ---------------------------------------------------------------

def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def die(line: str) -> None:
    say(f"bench: error: {line}")
    raise SystemExit(2)


def arguments(doc: str, rounds: int) -> argparse.Namespace:
    """The options every cluster bench takes."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("-n", "--objects", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--reuse", metavar="STATE_DIR",
                    help="use (and leave running) the control plane of this state dir "
                         "instead of a fresh one")
    ap.add_argument("--no-peers", action="store_true",
                    help="leave out kapp and the Flux harness (bench/peers.py)")
    return ap.parse_args()


# --- the cluster ----------------------------------------------------------

@dataclass
class Cluster:
    kubeconfig: Path
    state_dir: Path
    owned: bool  # started by this run, so stopped at its end

    def kube(self) -> Kube:
        """A client for the bench's own untimed bookkeeping."""
        return Kube(Overrides(kubeconfig=str(self.kubeconfig)), concurrency=5)


@contextlib.contextmanager
def cluster(reuse: str | None = None) -> Iterator[Cluster]:
    """A fresh control plane in a temp state dir, stopped at the end; or,
    with ``reuse`` (a state dir), one that is left running."""
    if reuse:
        state = Path(reuse)
        yield Cluster(_up(state), state, owned=False)
        return
    state = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        started = time.perf_counter()
        kubeconfig = _up(state)
        say(f"control plane up in {time.perf_counter() - started:.1f}s ({state})")
        yield Cluster(kubeconfig, state, owned=True)
    finally:
        subprocess.run([str(PYTHON), "-m", "testing.controlplane", "down",
                        "--state-dir", str(state)], capture_output=True, cwd=ROOT)
        shutil.rmtree(state, ignore_errors=True)


def _up(state: Path) -> Path:
    # cwd: testing/ is a package of the checkout, not of the installation.
    proc = subprocess.run([str(PYTHON), "-m", "testing.controlplane", "up",
                           "--state-dir", str(state)], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        die(f"cannot start the control plane: {proc.stderr.strip()}")
    return Path(proc.stdout.strip().splitlines()[-1])


def environment(kubeconfig: Path, tmp: Path) -> dict[str, str]:
    """The environment every timed command runs in: the venv first on PATH
    (kubectl and its plugins), an isolated git config, no external differ."""
    gitconfig = tmp / "gitconfig"
    gitconfig.write_text("[user]\n\tname = Bench\n\temail = bench@example.com\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GIT_", "KUBECTL_")) and k not in ("NO_COLOR",
                                                                   "PYTHONDONTWRITEBYTECODE")}
    # Bytecode as an installed package has it (pip compiles on install): without
    # it every run compiles our modules again, ~70 ms. Kept in the temp dir,
    # so the checkout is never written.
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
               KUBECONFIG=str(kubeconfig), GIT_CONFIG_GLOBAL=str(gitconfig),
               GIT_CONFIG_NOSYSTEM="1", HOME=str(tmp),
               PYTHONPYCACHEPREFIX=str(tmp / "pycache"))
    if not shutil.which("diff", path=env["PATH"]):
        die("kubectl diff needs a `diff` program on PATH")
    return env


def run(argv: Sequence[str], env: dict[str, str], *, cwd: Path | None = None,
        expect: Sequence[int] = (0,)) -> str:
    """Run a command with stdout to /dev/null; fail loudly (with its stderr)
    on an unexpected exit status. Returns its stderr."""
    return _run(argv, env, cwd, expect, capture=False).stderr


def _run(argv: Sequence[str], env: dict[str, str], cwd: Path | None,
         expect: Sequence[int], *, capture: bool) -> subprocess.CompletedProcess[str]:
    """``run``; with ``capture``, stdout is kept too (for tools that report there)."""
    proc = subprocess.run(list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode not in expect:
        die(f"`{' '.join(argv)}` exited {proc.returncode} (expected "
            f"{' or '.join(map(str, expect))}):\n{proc.stderr.strip()[-3000:]}"
            f"{(proc.stdout or '').strip()[-3000:]}")
    return proc


def kubectl(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        die(f"`kubectl {' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def create_namespaces(env: dict[str, str], names: Sequence[str]) -> None:
    docs = "".join(f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {n}\n"
                   for n in names)
    proc = subprocess.run(["kubectl", "apply", "--server-side", "-f", "-"], env=env,
                          input=docs, capture_output=True, text=True)
    if proc.returncode != 0:
        die(f"cannot create namespaces: {proc.stderr.strip()}")


# --- the repository -------------------------------------------------------

@dataclass
class Repo:
    root: Path
    namespaces: list[str]
    n_objects: int
    paused: bool = False  # Deployments paused: see render()
    changed: set[int] = field(default_factory=set)

    @property
    def apps(self) -> Path:
        return self.root / APPS_DIR


def namespace_set(prefix: str) -> list[str]:
    return [f"{prefix}-{i}" for i in range(NAMESPACES)]


def changed_indices(n_objects: int, seed: int = 7) -> set[int]:
    """A third of the objects, spread over all kinds and namespaces."""
    return set(random.Random(seed).sample(range(n_objects), n_objects // 3))


def render(n_objects: int, namespaces: Sequence[str], changed: set[int], *,
           paused: bool = False) -> dict[str, str]:
    """``{file name: text}``: one file per app (ConfigMap, Deployment, Service),
    apps spread round-robin over the namespaces. A changed ConfigMap gets a new
    value, a changed Deployment a new image, a changed Service a new annotation.

    Services are headless: the local cluster's service range is a /24, too
    small for several sets of N/3 ClusterIPs. ``paused`` Deployments cost the
    tools the same API work but spare the controller-manager (20 writes/s)
    a ReplicaSet and a Pod each, half a minute of catching up after every
    first sync of N = 500."""
    files: dict[str, list[str]] = {}
    for n in range(n_objects):
        app = n // len(KINDS)
        new = n in changed
        text = KINDS[n % len(KINDS)].format(
            n=n, app=app, ns=namespaces[app % len(namespaces)],
            log_level="debug" if new else "info", tag="2.0" if new else "1.0",
            revision=2 if new else 1, paused="\n  paused: true" if paused else "")
        files.setdefault(f"app-{app:04d}.yaml", []).append(text)
    return {name: "---\n".join(docs) for name, docs in files.items()}


def git(env: dict[str, str], root: Path, *args: str) -> None:
    run(["git", *args], env, cwd=root)


def make_repo(env: dict[str, str], root: Path, n_objects: int, namespaces: list[str],
              *, name: str = "bench", paused: bool = False) -> Repo:
    """A git repo whose HEAD holds the unchanged revision under ``apps/``;
    the application (ApplySet parent) lives in the first namespace."""
    repo = Repo(root, list(namespaces), n_objects, paused)
    repo.apps.mkdir(parents=True)
    (root / ".gitops.yaml").write_text(f"name: {name}\nnamespace: {namespaces[0]}\n"
                                       f"path: {APPS_DIR}\n")
    _write(repo, set())
    git(env, root, "init", "-q", "-b", "main")
    git(env, root, "add", "-A")
    git(env, root, "commit", "-q", "-m", f"{n_objects} objects")
    return repo


def commit_change(env: dict[str, str], repo: Repo, changed: set[int]) -> None:
    """Commit the revision in which the ``changed`` objects differ."""
    repo.changed = set(changed)
    _write(repo, repo.changed)
    git(env, repo.root, "commit", "-q", "-a", "-m", f"change {len(changed)} objects")


def _write(repo: Repo, changed: set[int]) -> None:
    for name, text in render(repo.n_objects, repo.namespaces, changed,
                             paused=repo.paused).items():
        (repo.apps / name).write_text(text)


# --- timing ---------------------------------------------------------------

@dataclass
class Timing:
    wall: float  # seconds
    cpu: float  # client CPU seconds (user + system)
    stderr: str
    stdout: str = ""  # only with timed(..., capture=True)


def timed(argv: Sequence[str], env: dict[str, str], *, cwd: Path | None = None,
          expect: Sequence[int] = (0,), capture: bool = False) -> Timing:
    """Wall and client CPU seconds of one run of a command, and its stderr
    (and, with ``capture``, its stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = _run(argv, env, cwd, expect, capture=capture)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall, cpu, proc.stderr, proc.stdout or "")


def settle(kube: Kube, namespaces: Sequence[str], timeout: float = 120.0) -> None:
    """Wait (untimed) until the controllers have caught up with the Deployments
    in ``namespaces`` (ReplicaSets and Pods made), so that the work one tool's
    sync set off does not land in the next tool's measurement."""
    deployments = kube.resource_types()[("apps", "Deployment")]
    deadline = time.monotonic() + timeout
    while True:
        lagging = 0
        for items in kube.map(lambda ns: kube.list(deployments, ns), namespaces):
            for d in items:
                spec, status = d.get("spec") or {}, d.get("status") or {}
                if status.get("observedGeneration") != d["metadata"].get("generation"):
                    lagging += 1
                elif not spec.get("paused") and status.get("updatedReplicas", 0) != \
                        spec.get("replicas", 1):
                    lagging += 1
        if not lagging:
            return
        if time.monotonic() > deadline:
            die(f"{lagging} Deployments still not rolled out after {timeout:g}s")
        time.sleep(0.2)


@dataclass
class Table:
    """Seconds per (scenario, tool) over rounds; printed as medians and ratios
    against the first tool (ours): ratio = tool's median / our median, so a
    ratio of 3.0 means we are 3x faster."""

    tools: list[str]
    times: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    cpu: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, scenario: str, tool: str, t: Timing) -> None:
        self.times.setdefault((scenario, tool), []).append(t.wall)
        self.cpu.setdefault((scenario, tool), []).append(t.cpu)

    def last(self, scenario: str, tool: str) -> float:
        return self.times[(scenario, tool)][-1]

    def median(self, scenario: str, tool: str) -> float:
        return statistics.median(self.times[(scenario, tool)])

    def scenarios(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in self.times))

    def render(self) -> str:
        ours = self.tools[0]
        width = max(len(t) for t in self.tools) + 2
        sw = max([13, *(len(s) + 2 for s in self.scenarios())])
        lines = [f"{'scenario':<{sw}}{'tool':<{width}}{'median s':>9}{'min s':>8}{'max s':>8}"
                 f"{'cpu s':>7}{'rounds':>7}{'ratio':>8}"]
        for scenario in self.scenarios():
            base = self.median(scenario, ours)
            for tool in self.tools:
                runs = self.times.get((scenario, tool))
                if not runs:
                    continue
                med = statistics.median(runs)
                cpu = statistics.median(self.cpu[(scenario, tool)])
                ratio = "-" if tool == ours else f"{med / base:.2f}x"
                lines.append(f"{scenario:<{sw}}{tool:<{width}}{med:>9.3f}{min(runs):>8.3f}"
                             f"{max(runs):>8.3f}{cpu:>7.2f}{len(runs):>7}{ratio:>8}")
        return "\n".join(lines)


def rotate(items: Sequence[str], k: int) -> list[str]:
    """Round ``k``'s order: interleave tools so none always runs first."""
    k %= len(items)
    return list(items[k:]) + list(items[:k])


def machine(when: str = "start") -> str:
    return (f"python {sys.version.split()[0]}, cpus: {os.cpu_count()}, "
            f"load average at {when}: {os.getloadavg()[0]:.2f}")


def rss_mib(pid: int) -> float:
    """A running process's resident memory, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile."""
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]
