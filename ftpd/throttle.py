"""Failed-login bookkeeping: growing delays, then lockouts, per user and per address.

A failure delays only the connection that failed (the reactor stops reading
it and re-arms it with a timer), for ``base * 2**(n-1)`` seconds capped at
``max_delay``, where n counts consecutive failures of that user name or
address, whichever is larger.  At ``threshold`` failures the name or the
address is locked for ``lockout`` seconds, during which even the right
password is refused (without spending a password hash on it).  Unknown user
names are tracked like real ones so the replies cannot tell them apart.

Password checks in flight count as failures-to-be: a user name or address
may have at most ``threshold - failures`` checks running at once, so parallel
connections cannot fire a burst of guesses past the lockout before the first
answers arrive.  A login over that budget waits (``admit`` says no) until a
running check finishes.

Tables are bounded: the oldest entries are dropped past ``max_entries``, so a
flood of random names cannot grow memory without limit.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    def __init__(self, *, base: float, max_delay: float, threshold: int, lockout: float,
                 max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.base = base
        self.max_delay = max_delay
        self.threshold = threshold
        self.lockout = lockout
        self.max_entries = max_entries
        self.clock = clock
        self._users: OrderedDict[str, _Record] = OrderedDict()
        self._addrs: OrderedDict[str, _Record] = OrderedDict()
        self._inflight: dict[tuple[int, str], int] = {}     # (0 user | 1 addr, key) -> checks

    def _live_failures(self, table: OrderedDict[str, _Record], key: str, now: float) -> int:
        rec = table.get(key)
        if rec is None or (rec.locked_until and rec.locked_until <= now):
            return 0
        return rec.failures

    def admit(self, user: str | None, addr: str) -> bool:
        """Reserve a password check for this user and address, if the budget allows.

        Every ``admit`` that returns True must be followed by ``release``.
        """
        now = self.clock()
        keys = [(0, user, self._users), (1, addr, self._addrs)]
        for kind, key, table in keys:
            if key is None:
                continue
            running = self._inflight.get((kind, key), 0)
            if self._live_failures(table, key, now) + running >= self.threshold:
                return False
        for kind, key, _ in keys:
            if key is not None:
                self._inflight[(kind, key)] = self._inflight.get((kind, key), 0) + 1
        return True

    def release(self, user: str | None, addr: str) -> None:
        """A check reserved by ``admit`` finished (before recording its outcome)."""
        for kind, key in ((0, user), (1, addr)):
            if key is None:
                continue
            left = self._inflight.get((kind, key), 0) - 1
            if left > 0:
                self._inflight[(kind, key)] = left
            else:
                self._inflight.pop((kind, key), None)

    def locked(self, user: str | None, addr: str) -> float:
        """Seconds left on a lockout of this user or address (0 if none)."""
        now = self.clock()
        left = 0.0
        for table, key in ((self._users, user), (self._addrs, addr)):
            rec = table.get(key) if key is not None else None
            if rec is not None and rec.locked_until > now:
                left = max(left, rec.locked_until - now)
        return left

    def failure(self, user: str | None, addr: str) -> float:
        """Record a failed login; returns the delay to impose before replying."""
        now = self.clock()
        worst = 0
        for table, key in ((self._users, user), (self._addrs, addr)):
            if key is None:
                continue
            rec = table.pop(key, None) or _Record()
            if rec.locked_until and rec.locked_until <= now:
                rec = _Record()            # a served lockout starts a fresh count
            rec.failures += 1
            rec.last = now
            if rec.failures >= self.threshold:
                rec.locked_until = now + self.lockout
            table[key] = rec               # most recent last
            while len(table) > self.max_entries:
                table.popitem(last=False)
            worst = max(worst, rec.failures)
        return min(self.max_delay, self.base * 2 ** min(worst - 1, 60)) if worst else 0.0

    def success(self, user: str, addr: str) -> None:
        self._users.pop(user, None)
        self._addrs.pop(addr, None)

    def failures(self, user: str | None = None, addr: str | None = None) -> int:
        rec = (self._users.get(user) if user is not None else None) or \
              (self._addrs.get(addr) if addr is not None else None)
        return rec.failures if rec else 0
