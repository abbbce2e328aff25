"""kubectl-gitops: GitOps inside kubectl and git."""

from __future__ import annotations

__version__ = "0.1.0"
