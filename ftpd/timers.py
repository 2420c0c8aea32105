"""A heap of one-shot timers with lazy cancellation.

Cancelling only marks the entry; the heap drops it when it reaches the top.
That keeps cancel O(1) and scheduling O(log n), which matters with thousands
of connections each holding a watchdog.  When cancelled entries make up most
of the heap it is rebuilt, so a churn of short-lived connections cannot grow
it without bound.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable

log = logging.getLogger("ftpd.timers")


class Timer:
    __slots__ = ("deadline", "seq", "callback", "cancelled")

    def __init__(self, deadline: float, seq: int, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.seq = seq
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = _noop


def _noop() -> None:
    pass


class TimerHeap:
    """Owns every one-shot timer of the reactor (watchdogs, login delays, housekeeping)
    and the clock sessions read their time from.

    It runs callbacks on the reactor thread only, from ``run_due``; it never
    looks at what a callback does, and a callback may not block.  Injecting
    ``clock`` makes everything time-based testable without sleeping.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # (deadline, seq, timer): tuples compare in C; seq is unique, so the
        # comparison never reaches the timer.
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._cancelled = 0

    def __len__(self) -> int:
        return len(self._heap) - self._cancelled

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        deadline, seq = self.clock() + max(0.0, delay), next(self._seq)
        timer = Timer(deadline, seq, callback)
        heapq.heappush(self._heap, (deadline, seq, timer))
        return timer

    def cancel(self, timer: Timer | None) -> None:
        if timer is not None and not timer.cancelled:
            timer.cancel()
            self._cancelled += 1
            if self._cancelled > 512 and self._cancelled > len(self._heap) // 2:
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def timeout(self) -> float | None:
        """Seconds until the next live timer, or None when there is none."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._cancelled -= 1
        if not heap:
            return None
        return max(0.0, heap[0][0] - self.clock())

    def run_due(self) -> int:
        """Run every timer whose deadline has passed; returns how many ran."""
        now = self.clock()
        heap = self._heap
        ran = 0
        while heap and (heap[0][2].cancelled or heap[0][0] <= now):
            timer = heapq.heappop(heap)[2]
            if timer.cancelled:
                self._cancelled -= 1
                continue
            timer.cancelled = True          # fired timers count as spent
            try:
                timer.callback()
            except Exception:
                log.exception("timer callback failed")
            ran += 1
        return ran
