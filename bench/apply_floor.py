#!/usr/bin/env python3
"""The API server's floor under bench/sync.py's first sync (used by it).

Applies every object in DIR (server-side, field manager kubectl-gitops) with
16 requests at a time over keep-alive connections, and nothing else: no
git, no start-up in the time, no reading of live objects, no dry-run, no
ApplySet parent. Prints the seconds the applies took. No sync can take less
than this on the same cluster; kubectl apply's time divided by it is the
most any sync that also checks before it writes could reach.

    .venv/bin/python bench/apply_floor.py DIR KUBECONFIG
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

from kubectl_gitops.kube import Kube


def main() -> int:
    apps, kubeconfig = Path(sys.argv[1]), sys.argv[2]
    objs = [doc for path in sorted(apps.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]
    kube = Kube(kubeconfig, concurrency=16)
    types = kube.resource_types()
    work = [(types[(o["apiVersion"].rpartition("/")[0], o["kind"])], o) for o in objs]
    start = time.perf_counter()
    list(kube.map(lambda w: kube.apply(w[0], w[1]), work))
    print(f"{time.perf_counter() - start:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
