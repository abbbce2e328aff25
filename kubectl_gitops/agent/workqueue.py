"""A work queue of keys, as controller-runtime's: a key queued many times is
processed once; a key is never processed by two workers at once; failures
requeue with per-key exponential backoff.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Backoff(Generic[K]):
    """Per-key exponential delays: ``base * 2**n`` up to ``cap``; ``forget``
    resets a key after it succeeds."""

    def __init__(self, base: float = 1.0, cap: float = 300.0) -> None:
        self.base, self.cap = base, cap
        self._n: dict[K, int] = {}
        self._lock = threading.Lock()

    def next(self, key: K) -> float:
        with self._lock:
            n = self._n.get(key, 0)
            self._n[key] = n + 1
        return min(self.cap, self.base * (2 ** n))

    def failures(self, key: K) -> int:
        with self._lock:
            return self._n.get(key, 0)

    def forget(self, key: K) -> None:
        with self._lock:
            self._n.pop(key, None)


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._due: dict[K, float] = {}  # key -> when it becomes ready
        self._heap: list[tuple[float, int, K]] = []
        self._seq = 0
        self._running: set[K] = set()
        self._again: dict[K, float] = {}  # queued while running: requeue on done
        self._cond = threading.Condition()
        self._closed = False

    def add(self, key: K, delay: float = 0.0) -> None:
        """Queue ``key`` to run after ``delay``; an earlier pending time wins,
        so a burst of events collapses into one run."""
        when = time.monotonic() + delay
        with self._cond:
            if self._closed:
                return
            if key in self._running:
                self._again[key] = min(when, self._again.get(key, when))
                return
            if key in self._due and self._due[key] <= when:
                return
            self._push(key, when)

    def _push(self, key: K, when: float) -> None:
        self._due[key] = when
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, key))
        self._cond.notify_all()

    def get(self, timeout: float | None = None) -> K | None:
        """The next ready key (now running), or None when closed or timed out."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded by an earlier time
                if self._heap and self._heap[0][0] <= now:
                    _, _, key = heapq.heappop(self._heap)
                    del self._due[key]
                    self._running.add(key)
                    return key
                wait = self._heap[0][0] - now if self._heap else None
                if end is not None:
                    left = end - now
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
            return None

    def done(self, key: K) -> None:
        with self._cond:
            self._running.discard(key)
            when = self._again.pop(key, None)
            if when is not None and not self._closed:
                if key not in self._due or self._due[key] > when:
                    self._push(key, when)

    def pending(self, key: K) -> bool:
        with self._cond:
            return key in self._due or key in self._again

    def close(self) -> None:
        """Hand out nothing more; workers finish what they hold."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
