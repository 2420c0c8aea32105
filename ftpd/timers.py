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

    def __lt__(self, other: Timer) -> bool:
        return (self.deadline, self.seq) < (other.deadline, other.seq)

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = _noop


def _noop() -> None:
    pass


class TimerHeap:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._heap: list[Timer] = []
        self._seq = itertools.count()
        self._cancelled = 0

    def __len__(self) -> int:
        return len(self._heap) - self._cancelled

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.clock() + max(0.0, delay), next(self._seq), callback)
        heapq.heappush(self._heap, timer)
        return timer

    def cancel(self, timer: Timer | None) -> None:
        if timer is not None and not timer.cancelled:
            timer.cancel()
            self._cancelled += 1
            if self._cancelled > 512 and self._cancelled > len(self._heap) // 2:
                self._heap = [t for t in self._heap if not t.cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def timeout(self) -> float | None:
        """Seconds until the next live timer, or None when there is none."""
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
            self._cancelled -= 1
        if not heap:
            return None
        return max(0.0, heap[0].deadline - self.clock())

    def run_due(self) -> int:
        """Run every timer whose deadline has passed; returns how many ran."""
        now = self.clock()
        heap = self._heap
        ran = 0
        while heap and (heap[0].cancelled or heap[0].deadline <= now):
            timer = heapq.heappop(heap)
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
