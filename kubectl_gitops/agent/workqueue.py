"""A work queue of keys, as controller-runtime's: a key queued many times is
processed once; a key is never processed by two workers at once (nor two
keys of one group); due keys go by priority; failures requeue with per-key
exponential backoff.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Hashable
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
    """``group``: keys of one group (an app) never run at once, and a worker
    skips a busy group's keys for the next group's (one slow app holds one
    worker, never all). ``priority``: of the keys due, the lowest priority
    number first (drift corrections before periodic re-checks), then the
    longest waiting."""

    def __init__(self, *, group: Callable[[K], Hashable] | None = None,
                 priority: Callable[[K], int] | None = None) -> None:
        self._due: dict[K, float] = {}  # key -> when it becomes ready
        self._heap: list[tuple[float, int, K]] = []  # by time, until due
        self._ready: list[tuple[int, float, int, K]] = []  # due, by priority
        self._seq = 0
        self._running: set[K] = set()
        self._busy: dict[Hashable, int] = {}  # group -> keys of it running
        self._again: dict[K, float] = {}  # queued while running: requeue on done
        self._cond = threading.Condition()
        self._closed = False
        self._group = group or (lambda k: k)
        self._priority = priority or (lambda k: 0)

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

    def _current(self, when: float, key: K) -> bool:
        return self._due.get(key) == when  # else superseded by an earlier time

    def get(self, timeout: float | None = None) -> K | None:
        """The next ready key (now running), or None when closed or timed out."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    when, seq, key = heapq.heappop(self._heap)
                    if self._current(when, key):
                        heapq.heappush(self._ready, (self._priority(key), when, seq, key))
                while self._heap and not self._current(self._heap[0][0], self._heap[0][2]):
                    heapq.heappop(self._heap)
                key = self._take()
                if key is not None:
                    return key
                wait = self._heap[0][0] - now if self._heap else None
                if end is not None:
                    left = end - now
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
            return None

    def _take(self) -> K | None:
        """The first ready key whose group is not running; the skipped stay."""
        skipped = []
        found = None
        while self._ready:
            item = heapq.heappop(self._ready)
            _, when, _, key = item
            if not self._current(when, key):
                continue
            if self._busy.get(self._group(key)):
                skipped.append(item)
                continue
            found = key
            break
        for item in skipped:
            heapq.heappush(self._ready, item)
        if found is not None:
            del self._due[found]
            self._running.add(found)
            g = self._group(found)
            self._busy[g] = self._busy.get(g, 0) + 1
        return found

    def done(self, key: K) -> None:
        with self._cond:
            self._running.discard(key)
            g = self._group(key)
            n = self._busy.get(g, 0) - 1
            if n > 0:
                self._busy[g] = n
            else:
                self._busy.pop(g, None)
            when = self._again.pop(key, None)
            if when is not None and not self._closed:
                if key not in self._due or self._due[key] > when:
                    self._push(key, when)
            self._cond.notify_all()  # a key of that group may run now

    def pending(self, key: K) -> bool:
        with self._cond:
            return key in self._due or key in self._again

    def close(self) -> None:
        """Hand out nothing more; workers finish what they hold."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
