"""The one place that knows each exit status (DESIGN.md, "Commands")."""

from __future__ import annotations

OK = 0
# diff: differences found; validate: manifests invalid; rollback: nothing to do.
DIFFERENT = 1
INVALID = 1
NOTHING_TO_DO = 1
# Any error: bad input, unreachable cluster, a failed apply.
ERROR = 2
# The process was interrupted by the user (128 + SIGINT), as shells report it.
INTERRUPTED = 130
