"""Offline validation of manifests and the git pre-commit hook that runs it."""
