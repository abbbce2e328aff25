"""``kubectl gitops agent manifests``: what running the agent in a cluster
takes: a ServiceAccount, RBAC, the config, a Deployment of two replicas (they
divide the apps between them through a Lease each) and a Service for the webhook and metrics.

RBAC: an agent applies whatever its repositories hold, so it needs write
rights on those kinds; ``--namespaced`` confines them to the agent's own
namespace (a Role, no ClusterRole at all), ``--cluster-wide`` gives a
ClusterRole. Discovery and ``SelfSubjectReview`` need no grant (every
authenticated user has them).
"""

from __future__ import annotations

from typing import Any

from kubectl_gitops import __version__

NAME = "kubectl-gitops-agent"
PORT = 8080
IMAGE = f"ghcr.io/kubectl-gitops/kubectl-gitops:{__version__}"
_ALL = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]


def manifests(namespace: str, *, cluster_wide: bool, config: str,
              image: str = IMAGE) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/version": __version__}
    meta = {"name": NAME, "namespace": namespace, "labels": labels}
    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
         "data": {"agent.yaml": config}},
    ]
    objs += _rbac(namespace, meta, cluster_wide)
    objs += [_deployment(meta, labels, image),
             {"apiVersion": "v1", "kind": "Service", "metadata": meta,
              "spec": {"selector": {"app.kubernetes.io/name": NAME},
                       "ports": [{"name": "http", "port": PORT, "targetPort": "http"}]}}]
    return objs


def _rbac(namespace: str, meta: dict[str, Any], cluster_wide: bool) -> list[dict[str, Any]]:
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]
    if not cluster_wide:
        return [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
                 "rules": _ALL},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": meta, "subjects": subject,
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": NAME}}]
    cluster_meta = {"name": NAME, "labels": meta["labels"]}
    return [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": cluster_meta, "rules": _ALL},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": cluster_meta, "subjects": subject,
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": NAME}}]


def _deployment(meta: dict[str, Any], labels: dict[str, str], image: str) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10}
    container = {
        "name": "agent", "image": image,
        "args": ["agent", "--config", "/etc/kubectl-gitops/agent.yaml", "--cache-dir",
                 "/var/cache/kubectl-gitops", "--log-format", "json",
                 "--listen", f"0.0.0.0:{PORT}"],
        "ports": [{"name": "http", "containerPort": PORT}],
        "livenessProbe": probe,
        "readinessProbe": {**probe, "httpGet": {"path": "/readyz", "port": "http"}},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                      "limits": {"memory": "512Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "env": [{"name": "HOME", "value": "/tmp"},
                # The replicas keep their Leases in their own namespace.
                {"name": "POD_NAMESPACE",
                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "volumeMounts": [{"name": "config", "mountPath": "/etc/kubectl-gitops"},
                         {"name": "cache", "mountPath": "/var/cache/kubectl-gitops"},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = {"serviceAccountName": meta["name"],
           "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                               "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
           "containers": [container],
           "volumes": [{"name": "config", "configMap": {"name": meta["name"]}},
                       {"name": "cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]}
    selector = {"app.kubernetes.io/name": labels["app.kubernetes.io/name"]}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": 2, "selector": {"matchLabels": selector},
                     "template": {"metadata": {"labels": labels}, "spec": pod}}}
