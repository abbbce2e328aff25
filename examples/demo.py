#!/usr/bin/env python3
"""The kubectl-gitops demo, narrated, start to end without input.

Starts the embedded local control plane if needed (`make cluster`), copies
examples/shop into a fresh git repository, and walks through diff, sync, a
committed change, diff again, sync --prune after removing a file, an
upstream Helm chart (podinfo) joining the app, and history, every step
through the real `kubectl gitops ...`, `git` and `helm`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # testing/: helm and the upstream charts (make sourcetools)
BIN = Path(sys.executable).parent
BOLD, DIM, RESET = ("\x1b[1m", "\x1b[2m", "\x1b[0m") if sys.stdout.isatty() else ("", "", "")


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}", flush=True)


def sh(cmd: str, repo: Path, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> int:
    print(f"{DIM}$ {cmd}{RESET}", flush=True)
    rc = subprocess.run(cmd, shell=True, cwd=repo, env=env).returncode
    if rc not in ok:
        sys.exit(f"demo: `{cmd}` exited {rc}, expected {' or '.join(map(str, ok))}")
    return rc


def cluster_kubeconfig() -> str:
    # cwd: testing/ is a package of the checkout, not of the installation.
    proc = subprocess.run([sys.executable, "-m", "testing.controlplane", "up"],
                          stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
    if proc.returncode != 0:
        sys.exit("demo: the local control plane did not start (see above)")
    return proc.stdout.strip().splitlines()[-1]


def fresh_namespace(env: dict[str, str], name: str) -> None:
    """A previous demo's namespace is deleted first, so every run starts clean."""
    kubectl = str(BIN / "kubectl")
    subprocess.run([kubectl, "delete", "namespace", name, "--ignore-not-found",
                    "--wait=true", "--timeout=90s"], env=env, stdout=subprocess.DEVNULL)
    for _ in range(90):
        gone = subprocess.run([kubectl, "get", "namespace", name], env=env,
                              capture_output=True).returncode != 0
        if gone:
            return
        time.sleep(1)


def main() -> None:
    start = time.monotonic()
    say("Starting (or reusing) the embedded local control plane")
    kubeconfig = cluster_kubeconfig()
    print(f"kubeconfig: {kubeconfig}")
    from testing.sources import tool_path, upstream_chart

    env = {**os.environ, "KUBECONFIG": kubeconfig, "NO_COLOR": "1",
           "PATH": tool_path(os.environ.get("PATH", "")),
           "GIT_AUTHOR_NAME": "Demo Dev", "GIT_AUTHOR_EMAIL": "dev@example.com",
           "GIT_COMMITTER_NAME": "Demo Dev", "GIT_COMMITTER_EMAIL": "dev@example.com"}
    fresh_namespace(env, "shop")
    with tempfile.TemporaryDirectory(prefix="kubectl-gitops-demo-") as tmp:
        repo = Path(tmp, "shop")
        shutil.copytree(HERE / "shop", repo / "deploy")
        shutil.copy(HERE / "shop.gitops.yaml", repo / ".gitops.yaml")
        say(f"A git repository holding the desired state: {repo}")
        sh("git init -q -b main && git add . && git commit -qm 'shop: first version' "
           "&& git ls-files", repo, env)

        say("What would change? (exit 1: there are differences; the Secret is masked)")
        sh("kubectl gitops diff -o table", repo, env, ok=(1,))

        say("Sync the cluster to the commit, with pruning of what git no longer holds")
        sh("kubectl gitops sync --prune", repo, env)

        say("Diff again: the cluster equals git (exit 0), server defaults are no drift")
        sh("kubectl gitops diff", repo, env)

        say("A change is committed: 3 replicas and a debug log level")
        sh("sed -i 's/replicas: 2/replicas: 3/' deploy/web.yaml && "
           "sed -i 's/LOG_LEVEL: info/LOG_LEVEL: debug/' deploy/config.yaml && "
           "git commit -qam 'shop: scale web to 3, debug logs' && git log --oneline -1",
           repo, env)
        sh("kubectl gitops diff", repo, env, ok=(1,))
        sh("kubectl gitops sync --prune", repo, env)

        say("The cron job is retired: its file is removed from git")
        sh("git rm -q deploy/worker.yaml && git commit -qm 'shop: retire cart-cleanup'",
           repo, env)
        sh("kubectl gitops diff --prune -o table", repo, env, ok=(1,))
        sh("kubectl gitops sync --prune", repo, env)
        sh("kubectl get cronjobs -n shop", repo, env)

        say("A Helm chart joins the app: podinfo's upstream chart, found by its Chart.yaml")
        shutil.copytree(upstream_chart("podinfo", "6.9.2"), repo / "deploy" / "podinfo")
        sh("git add deploy/podinfo && git commit -qm 'shop: podinfo 6.9.2' && "
           "kubectl gitops diff -o table", repo, env, ok=(1,))
        sh("kubectl gitops sync --prune && kubectl get deployments -n shop", repo, env)

        say("History: every sync is recorded in the ApplySet parent in the cluster")
        sh("kubectl gitops history", repo, env)
        sh("kubectl get configmap shop -n shop -o jsonpath="
           "'{.metadata.labels}{\"\\n\"}{.metadata.annotations}{\"\\n\"}'", repo, env)
    say(f"Done in {time.monotonic() - start:.0f} s. Stop the cluster with `make cluster-down`.")


if __name__ == "__main__":
    main()
