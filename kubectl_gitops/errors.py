"""The error hierarchy. Every user-facing error renders as one line.

A location is either ``path:line`` (a manifest in git) or an object as
``Kind namespace/name``; the message says what went wrong and, where it helps,
what to do next.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class GitOpsError(Exception):
    """Base of every error this tool reports to a user."""

    exit_code = 2

    def lines(self) -> list[str]:
        return [str(self)]


class UsageError(GitOpsError):
    """Options that do not fit together, or a value of the wrong form."""


class ConfigError(GitOpsError):
    """A bad ``.gitops.yaml`` or an unusable source selection."""


class GitError(GitOpsError):
    """A git command failed, or the repository is not in a usable state."""

    def __init__(self, message: str, *, cmd: Sequence[str] = (), status: int | None = None,
                 stderr: str = "") -> None:
        super().__init__(message)
        self.cmd = tuple(cmd)
        self.status = status
        self.stderr = stderr


class ManifestError(GitOpsError):
    """A problem with one document, located at ``path:line``."""

    def __init__(self, path: str, line: int | None, message: str, *, obj: str = "") -> None:
        self.path = path
        self.line = line
        self.obj = obj
        self.message = message
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        what = f" {self.obj}:" if self.obj else ""
        return f"{where}:{what} {self.message}"


class ManifestErrors(GitOpsError):
    """Every problem found in one read, reported together."""

    def __init__(self, errors: Iterable[ManifestError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(e.render() for e in self.errors))

    def lines(self) -> list[str]:
        return [e.render() for e in self.errors]


class ClusterError(GitOpsError):
    """The cluster could not be reached or refused a request."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "",
                 obj: str = "") -> None:
        self.status = status
        self.reason = reason
        self.obj = obj
        self.message = message  # without the object, for callers that name it themselves
        super().__init__(f"{obj}: {message}" if obj else message)


class NotFoundError(ClusterError):
    """The object or resource type does not exist in the cluster."""


class ConflictError(ClusterError):
    """Server-side apply found fields owned by another manager."""
