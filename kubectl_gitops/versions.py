"""Versions this project pins, in one place Python code can read."""

from __future__ import annotations

# The Kubernetes release the project builds and tests against; it must equal
# k8s.io/kubernetes in tools/controlplane/go.mod (a unit test checks). It is
# also the default of ``git gitops validate --kubernetes-version``.
KUBERNETES_VERSION = "1.37.2"
