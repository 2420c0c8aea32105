"""Repeated log lines of one connection are rate-limited (issue 13, item 14).

A client sending refused inline puts as fast as it can grew the log by
4.2 MB/s: one INFO line per refusal.  A connection's ``LogBudget`` lets at most
``LINES_PER_KIND`` lines of one kind (say "inline put failed with BAD_PATH")
through per ``WINDOW`` seconds; the rest are counted, and one line
``suppressed K similar lines (kind)`` reports them when the window is over (at
the next line of that kind) or when the connection closes.  A connection can
then write at most ``LINES_PER_KIND + 1`` lines per kind and minute, however
fast it sends; other connections' lines are unaffected.

Reactor thread only (made lazily by the session: most connections never need one).
"""

from __future__ import annotations

import logging

__all__ = ["LINES_PER_KIND", "WINDOW", "LogBudget"]

#: Lines of one kind a connection may write per window.
LINES_PER_KIND = 10
#: Seconds of a window.
WINDOW = 60.0


class LogBudget:
    """Per-connection counters: kind -> (window start, lines written, lines suppressed)."""

    __slots__ = ("logger", "peer", "kinds")

    def __init__(self, logger: logging.Logger, peer: str) -> None:
        self.logger = logger
        self.peer = peer
        self.kinds: dict[str, list[float]] = {}

    def allow(self, kind: str, now: float) -> bool:
        """Whether a line of ``kind`` may be written now (counts it either way)."""
        entry = self.kinds.get(kind)
        if entry is None or now - entry[0] >= WINDOW:
            if entry is not None:
                self._report(kind, entry)
            self.kinds[kind] = [now, 1, 0]
            return True
        if entry[1] < LINES_PER_KIND:
            entry[1] += 1
            return True
        entry[2] += 1
        return False

    def close(self) -> None:
        """The connection ended: report what is still suppressed."""
        for kind, entry in self.kinds.items():
            self._report(kind, entry)
        self.kinds.clear()

    def _report(self, kind: str, entry: list[float]) -> None:
        if entry[2]:
            self.logger.info("suppressed %d similar lines %s (%s)", int(entry[2]), self.peer,
                             kind)
            entry[2] = 0
