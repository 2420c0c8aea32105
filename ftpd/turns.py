"""One turn of the reactor: who is served first, and when bulk work yields.

Measured under load (issue 17, docs/BENCHMARKS.md "Latency under load"): with 8
connections streaming 1 GiB each, a turn of the loop served every one of them
for up to 4 MiB, so a turn took 50-200 ms and a ``stat`` -- answered inline, in
microseconds -- waited one or two whole turns (p50 95 ms).  Two rules bound
that wait:

* **Light before heavy.**  Ready connections that move no file bytes (requests,
  replies, the worker pools' wake-ups, the listener) are served first; the
  connections streaming an upload or a download after them.
* **A time budget for the heavy ones.**  After the light ones, heavy
  connections are served in turn for ``TURN_BUDGET`` -- or for as long as the
  light ones took, if that was longer -- and the rest are *owed* and go first
  in the next turn (the selector is level-triggered, so they are ready again
  at once: nothing is lost, the loop just comes back to the light ones in
  between).  Each heavy connection also stops reading or sending after its
  first buffer once the deadline has passed (``IOContext.turn_deadline``,
  checked by the transports), so with few requests waiting a turn is about
  the budget plus one buffer of one connection.

The bulk connections get at least half of a busy reactor, in shorter slices:
with 200 clients sending requests at once, a fixed 4 ms left the uploads one
connection per turn, they finished later than new ones began, and a user's
concurrent uploads passed its limit (``tests/test_daemon_load.py``).  The first
heavy connection of a turn is always served, so none starves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["TURN_BUDGET", "TurnScheduler"]

log = logging.getLogger("ftpd")

#: Seconds of a turn the heavy (file-streaming) connections may fill before the
#: loop goes back to the light ones.
TURN_BUDGET = 0.004


def _heavy(handler: Any) -> bool:
    moves_bulk = getattr(handler, "moves_bulk", None)
    return moves_bulk is not None and bool(moves_bulk())


class TurnScheduler:
    """Orders and bounds the dispatch of one ``select`` result.

    ``io`` is the transports' shared ``IOContext``: its ``turn_deadline`` is set
    here at the start of every turn.  ``clock`` is injectable for tests.
    """

    def __init__(self, io: Any, budget: float = TURN_BUDGET,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.io = io
        self.budget = budget
        self.clock = clock
        self.owed: list[Any] = []       # heavy handlers not served last turn, in order

    def dispatch(self, ready: Iterable[tuple[Any, int]]) -> None:
        """Serve one turn's ready ``(key, mask)`` pairs: light ones, then heavy ones
        (those owed from the last turn first) for the budget, or as long as the
        light ones took."""
        start = self.clock()
        self.io.turn_deadline = start + self.budget
        heavy: list[tuple[Any, int]] = []
        for key, mask in ready:
            handler = key.data
            if _heavy(handler):
                heavy.append((handler, mask))
            else:
                self.run(handler, mask)
        if not heavy:
            return
        now = self.clock()
        self.io.turn_deadline = now + max(self.budget, now - start)   # at least half the turn
        owed, self.owed = self.owed, []
        if owed and len(heavy) > 1:
            rank = {id(h): i for i, h in enumerate(owed)}
            heavy.sort(key=lambda item: rank.get(id(item[0]), len(rank)))
        for i, (handler, mask) in enumerate(heavy):
            if i and self.clock() >= self.io.turn_deadline:
                self.owed = [h for h, _ in heavy[i:]]
                return
            self.run(handler, mask)

    def run(self, handler: Any, mask: int) -> None:
        """One handler's event (replaced per instance by ``ftpd.loopstats`` to time it)."""
        try:
            handler.on_event(mask)
        except Exception:            # transports catch their own; this is the loop's
            log.exception("event handler failed")
