"""One user's share of the file worker pool (issue 13, item 8, daemon side).

Six connections of one user listing a 50,000-entry folder used to occupy all
four workers, and another user's 2-byte put waited 11 s behind them.  Every
job a logged-in session hands to the file pool goes through ``FairShare``: at
most ``share`` jobs of one user run (or are queued on the pool) at once, by
default ``max(1, workers // 2)``; that user's further jobs wait here, in
order, and go to the pool as the user's earlier ones finish.  So at least
``workers - share`` workers are always left to other users, whatever one user
does; a lone user still gets ``share`` workers at once.

Reactor thread only (the pool calls back there).  Jobs are never dropped: a
job queued for a session that has closed still runs, because its completion
does bookkeeping (an upload slot, a partial to release).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .workers import Done, WorkerPool

__all__ = ["FairShare"]


class FairShare:
    """Per-user admission in front of a ``WorkerPool``."""

    __slots__ = ("pool", "share", "running", "queued")

    def __init__(self, pool: WorkerPool, share: int) -> None:
        if share < 1:
            raise ValueError("a user's share of the workers must be >= 1")
        self.pool = pool
        self.share = share
        self.running: dict[str, int] = {}                    # jobs of a user on the pool
        self.queued: dict[str, deque[tuple[Callable[[], Any], Done]]] = {}

    @classmethod
    def of(cls, pool: WorkerPool, workers: int) -> FairShare:
        return cls(pool, max(1, workers // 2))

    def submit(self, user: str | None, job: Callable[[], Any], done: Done) -> None:
        """Run ``job`` on the pool when ``user`` has fewer than ``share`` jobs there."""
        if user is None:
            self.pool.submit(job, done)
            return
        running = self.running.get(user, 0)
        if running < self.share:
            self.running[user] = running + 1
            self.pool.submit(job, self._finisher(user, done))
        else:
            self.queued.setdefault(user, deque()).append((job, done))

    def waiting(self, user: str) -> int:
        """Jobs of ``user`` held back here (for tests and logs)."""
        queue = self.queued.get(user)
        return len(queue) if queue else 0

    def _finisher(self, user: str, done: Done) -> Done:
        def finished(result: Any, error: BaseException | None) -> None:
            queue = self.queued.get(user)
            if queue:
                job, next_done = queue.popleft()
                if not queue:
                    del self.queued[user]
                # The slot passes straight to the user's next job (submitted before this
                # callback runs, so the pool's pending count never drops to 0 meanwhile).
                self.pool.submit(job, self._finisher(user, next_done))
            else:
                left = self.running.get(user, 1) - 1
                if left > 0:
                    self.running[user] = left
                else:
                    self.running.pop(user, None)
            done(result, error)
        return finished
