"""What a session may touch of the daemon: one small object, shared by all sessions.

A session never sees the ``Server``: it gets this context, made once by the
server.  Everything in it is process-local today (worker processes will each
have their own, and the upload slots are the one piece that must then be
shared between processes: see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage import Store

    from .config import Config
    from .throttle import LoginThrottle
    from .timers import TimerHeap
    from .workers import WorkerPool

from .fairshare import FairShare
from .revocation import LoginWatch
from .slots import UploadSlots, UserSlots

__all__ = ["SessionContext", "UploadSlots"]   # (UploadSlots lives in ftpd/slots.py)


class SessionContext:
    """Config, store, worker pools, timers, login throttle, upload slots, handler table.

    Also the per-user session slots (``user_slots``, issue 13 item 16), the logins
    watched for revocation (``logins``, item 6) and the per-user share of the file
    pool (``jobs``, item 8): every file job of a logged-in session goes through
    ``jobs.submit(user, ...)``.  ``stopping`` is set by the server when a shutdown
    begins; ``forget`` is how a closing session leaves the server's books.
    """

    __slots__ = ("config", "store", "pool", "auth_pool", "timers", "throttle", "uploads",
                 "handlers", "stopping", "forget", "user_slots", "logins", "jobs")

    def __init__(self, config: Config, store: Store, pool: WorkerPool, auth_pool: WorkerPool,
                 timers: TimerHeap, throttle: LoginThrottle, handlers: dict[str, Any],
                 forget: Callable[[Any], None]) -> None:
        self.config = config
        self.store = store
        self.pool = pool
        self.auth_pool = auth_pool
        self.timers = timers
        self.throttle = throttle
        self.uploads = UploadSlots(config.max_uploads_per_user)
        self.handlers = handlers
        self.stopping = False
        self.forget = forget
        self.user_slots: UserSlots = UserSlots(config.max_connections_per_user)
        self.logins = LoginWatch(store, timers, pool)
        self.jobs = FairShare.of(pool, config.workers)
