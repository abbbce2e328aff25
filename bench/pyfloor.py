"""The least a Python kubectl plugin can do for a no-change sync: the floor
that bench/small.py sets beside ``kubectl get`` at small N.

Installed by bench/small.py as ``kubectl-pyfloor`` (its first line names
the same interpreter our plugin runs on, with ``-I``: no site, no user
paths), and run as ``kubectl pyfloor DIR``. It does only what any tool in
our place must: start the interpreter through kubectl's plugin lookup,
import TLS, HTTP, JSON and a C YAML parser, read the kubeconfig (client
certificate or token), ask git for HEAD, parse the manifests in DIR, and
read the app's objects: the parent's GET and one LIST per type and
namespace, over one TLS connection. No flags, no checks, no output: what is
left between this and our sync is the price of being a real tool.
"""

from __future__ import annotations

import base64
import glob
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile

import yaml

PLURAL = {"ConfigMap": ("api/v1", "configmaps"), "Service": ("api/v1", "services"),
          "Deployment": ("apis/apps/v1", "deployments"), "Secret": ("api/v1", "secrets")}


def tls(cluster: dict, user: dict) -> tuple[ssl.SSLContext, dict[str, str]]:
    ctx = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    if "client-certificate-data" in user:
        with tempfile.TemporaryDirectory() as d:
            cert, key = os.path.join(d, "c"), os.path.join(d, "k")
            with open(cert, "wb") as f:
                f.write(base64.b64decode(user["client-certificate-data"]))
            with open(key, "wb") as f:
                f.write(base64.b64decode(user["client-key-data"]))
            ctx.load_cert_chain(cert, key)
    headers = {"Authorization": f"Bearer {user['token']}"} if "token" in user else {}
    return ctx, headers


def main() -> None:
    with open(os.environ["KUBECONFIG"].split(os.pathsep)[0]) as f:
        cfg = yaml.load(f, Loader=yaml.CSafeLoader)
    ctx_name = cfg["current-context"]
    context = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == context["user"])
    ctx, headers = tls(cluster, user)
    subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, check=True)
    wanted: set[tuple[str, str]] = set()
    for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.yaml"))):
        with open(path) as f:
            for doc in yaml.load_all(f, Loader=yaml.CSafeLoader):
                if doc:
                    wanted.add((doc["kind"], doc["metadata"]["namespace"]))
    conn = http.client.HTTPSConnection(cluster["server"].split("//", 1)[1], context=ctx)
    ns = sorted(wanted)[0][1]
    paths = [f"/api/v1/namespaces/{ns}/configmaps/{sys.argv[2]}"]
    for kind, namespace in sorted(wanted):
        prefix, plural = PLURAL[kind]
        paths.append(f"/{prefix}/namespaces/{namespace}/{plural}?limit=500")
    for path in paths:
        conn.request("GET", path, headers=headers)
        json.loads(conn.getresponse().read())


if __name__ == "__main__":
    main()
