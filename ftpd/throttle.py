"""Failed-login bookkeeping: delays, then lockouts, that an attacker cannot turn on others.

In the spirit of OWASP's device cookies and OpenSSH's per-source penalties:

* **Per address.**  Every failed login (any user name, known or not, password or
  token) counts against the address it came from.  Each failure delays only the
  connection that failed, for ``base * 2**(n-1)`` seconds capped at ``max_delay``;
  at ``threshold`` failures the address is refused (``LOCKED_OUT``, without
  spending a password hash) for ``lockout`` seconds, whatever names it tries.
  A success does *not* clear an address's failures: they decay, one forgiven
  per ``decay`` seconds, so one address is held to about one guess per ``decay``
  in the long run however it mixes failures with logins of its own account.
* **Per user name, for untrusted sources only.**  Failures also count against the
  user name, so guesses spread over many addresses are slowed and then refused
  too -- but only for sources the owner has no claim on.  A login with a session
  token (``locked(..., token=True)``), or from an address that logged in
  successfully as that account within ``trust_days`` (a device cookie without the
  cookie), is not subject to the user name's delays or lockout: a stranger's
  guesses cannot lock the owner out.  A success clears that user name's record
  only.  ``ftpd user unlock NAME`` clears it by hand.
* A WARNING is logged when a lockout starts (address or user name).

Password checks in flight count as failures-to-be: an address (and a user name,
for untrusted sources) may have at most ``threshold - failures`` checks running
at once, so parallel connections cannot fire a burst of guesses past the lockout
before the first answers arrive.  A login over that budget waits (``admit`` says
no) until a running check finishes.  That budget is counted in this process, or,
for a worker of ``--workers N`` (``shared`` set), over every worker
(:mod:`storage.shared`); the records themselves live in the catalogue
(:mod:`storage.logins`), shared by every daemon process and bounded in size.

The login handler's whole interface: ``locked(user, addr, token=...)`` before a
login, ``admit``/``release`` around a password check, ``failure`` (returns the
delay) and ``success``; ``register`` asks ``locked(None, addr)`` and then
``register_attempt(addr)`` (the delay before its reply).  They run on the
reactor: each is one or two indexed SQLite reads, and at most two small writes
(no fsync: WAL, ``synchronous=NORMAL``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from storage.db import Database
from storage.logins import ADDR, USER, FailureState, LoginLedger, decayed

if TYPE_CHECKING:
    from storage import Store, UserInfo
    from storage.shared import SharedState

    from .config import Config

log = logging.getLogger("ftpd.throttle")

DAY = 86_400.0
#: A trusted address's timestamp is rewritten at most this often (one write per hour
#: per user and address, not one per login).
TRUST_REFRESH = 3_600.0
#: How long this process believes a trust look-up (another process may add trust).
TRUST_CACHE_SECONDS = 5.0
#: Fully decayed records and expired trust are swept after this many failures.
PRUNE_EVERY = 1_000


def _private_ledger() -> LoginLedger:
    """A ledger in a temporary database, for a throttle without a store (unit tests)."""
    folder = tempfile.mkdtemp(prefix="ftpd-throttle-")
    db = Database(f"{folder}/throttle.db")
    ledger = LoginLedger(db)
    weakref.finalize(ledger, lambda: (db.close(), shutil.rmtree(folder, ignore_errors=True)))
    return ledger


class LoginThrottle:
    def __init__(self, *, base: float, max_delay: float, threshold: int, lockout: float,
                 decay: float = 60.0, trust_days: float = 30.0, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.time, store: Store | None = None) -> None:
        self.base = base
        self.max_delay = max_delay
        self.threshold = threshold
        self.lockout = lockout
        self.decay = decay
        self.trust_window = trust_days * DAY
        self.max_entries = max_entries
        self.clock = clock
        self.ledger = store.logins if store is not None else _private_ledger()
        self._inflight: dict[tuple[int, str], int] = {}     # (USER | ADDR, key) -> checks
        self._reserved: dict[tuple[str | None, str], list[list[tuple[int, str]]]] = {}
        self._trust_cache: dict[tuple[str, str], tuple[float, bool]] = {}
        #: (user, addr, (uid, generation)) -> until when this process need not look at
        #: that login's trust record again (``success``).
        self._trust_fresh: dict[tuple[str, str, tuple[int, int]], float] = {}
        self._since_prune = 0
        #: Set by a worker of ``--workers N``: checks in flight are counted over all workers.
        self.shared: SharedState | None = None

    @classmethod
    def from_config(cls, config: Config, store: Store) -> LoginThrottle:
        """The daemon's throttle: settings from ``config``, records in ``store``."""
        return cls(base=config.auth_delay_base, max_delay=config.auth_delay_max,
                   threshold=config.lockout_threshold, lockout=config.lockout_seconds,
                   decay=config.auth_failure_decay, trust_days=config.login_trust_days,
                   store=store)

    # ----- reading the records
    def _state(self, kind: int, key: str, now: float) -> FailureState:
        return self.ledger.state(kind, key, now, self.decay, self.threshold)

    def trusted(self, user: str | None, addr: str) -> bool:
        """Did ``addr`` log in as ``user`` within the trust window?  (Cached briefly.)"""
        if user is None or self.trust_window <= 0:
            return False
        now = self.clock()
        cached = self._trust_cache.get((user, addr))
        if cached is not None and cached[0] > now:
            return cached[1]
        answer = self.ledger.trusted(user, addr, now - self.trust_window)
        if len(self._trust_cache) >= self.max_entries:
            self._trust_cache.clear()
        self._trust_cache[(user, addr)] = (now + TRUST_CACHE_SECONDS, answer)
        return answer

    def _keys(self, user: str | None, addr: str, token: bool = False) -> list[tuple[int, str]]:
        """The records that bind this attempt: the address, and the user name unless the
        source is trusted for it (a token, or an address it logged in from)."""
        keys = [(ADDR, addr)]
        if user is not None and not token and not self.trusted(user, addr):
            keys.append((USER, user))
        return keys

    def locked(self, user: str | None, addr: str, token: bool = False) -> float:
        """Seconds left on a lockout that refuses this attempt (0 if none).

        ``token``: the client presents a session token; a valid one is not subject
        to the user name's lockout (an invalid one fails like a wrong password)."""
        now = self.clock()
        return max(self._state(kind, key, now).locked(now)
                   for kind, key in self._keys(user, addr, token))

    def verify_token(self, store: Any, token: str, addr: str) -> tuple[UserInfo, Any]:
        """The token's account (``AuthFailed`` if it is not valid) and, when this
        throttle keeps its records in the store's own catalogue, the address's and the
        user name's records read by the same statement (``token_login``'s ``records``;
        else None): a reconnecting client's login costs one statement (issue 17)."""
        read_both = getattr(store, "verify_token_with_records", None)
        if read_both is not None and getattr(store, "logins", None) is self.ledger:
            found = read_both(token, addr)
            return found.info, (found.addr, found.user)
        return store.verify_token(token), None

    def token_login(self, user: str, addr: str,
                    records: tuple[Any, Any] | None = None) -> tuple[float, FailureState]:
        """A login whose session token was found valid for ``user``: the seconds left on
        the address's lockout (0: it may go on), and the user name's record for
        ``success`` -- both with one read of the ledger (issue 17: a reconnecting
        client's login pays one statement here, not two), or none when ``records``
        (the address's and the user name's rows, from ``verify_token``) are given.
        A token is not subject to the user name's lockout (``locked(..., token=True)``)."""
        now = self.clock()
        if records is not None:
            found = []
            for row in records:
                failures, _, locked_until = decayed(row, now, self.decay, self.threshold)
                found.append(FailureState(failures, locked_until))
            return found[0].locked(now), found[1]
        states = getattr(self.ledger, "states", None)
        if states is None:          # a ledger that reads one record at a time
            found = [self._state(ADDR, addr, now), self._state(USER, user, now)]
        else:
            found = states([(ADDR, addr), (USER, user)], now, self.decay, self.threshold)
        return found[0].locked(now), found[1]

    def admit(self, user: str | None, addr: str) -> bool:
        """Reserve a password check for this user and address, if the budget allows.

        Every ``admit`` that returns True must be followed by ``release``.
        """
        now = self.clock()
        keys = self._keys(user, addr)
        if self.shared is not None:
            return self._admit_shared(self.shared, user, addr, keys, now)
        for key in keys:
            running = self._inflight.get(key, 0)
            if self._state(*key, now).failures + running >= self.threshold:
                return False
        for key in keys:
            self._inflight[key] = self._inflight.get(key, 0) + 1
        self._reserved.setdefault((user, addr), []).append(keys)
        return True

    def _admit_shared(self, shared: SharedState, user: str | None, addr: str,
                      keys: list[tuple[int, str]], now: float) -> bool:
        taken: list[str] = []
        for kind, key in keys:
            name = f"auth:{kind}:{key}"
            if not shared.take(name, self.threshold - self._state(kind, key, now).failures):
                for done in taken:
                    shared.give(done)
                return False
            taken.append(name)
        self._reserved.setdefault((user, addr), []).append(keys)
        return True

    def release(self, user: str | None, addr: str) -> None:
        """A check reserved by ``admit`` finished (before recording its outcome).

        Gives back exactly the budgets that ``admit`` took (a trusted source took
        none of the user name's)."""
        held = self._reserved.get((user, addr))
        if not held:
            return
        keys = held.pop()
        if not held:
            del self._reserved[(user, addr)]
        for key in keys:
            if self.shared is not None:
                self.shared.give(f"auth:{key[0]}:{key[1]}")
                continue
            left = self._inflight.get(key, 0) - 1
            if left > 0:
                self._inflight[key] = left
            else:
                self._inflight.pop(key, None)

    # ----- recording outcomes
    def failure(self, user: str | None, addr: str) -> float:
        """Record a failed login; returns the delay to impose before replying."""
        now = self.clock()
        binding = self._keys(user, addr)
        worst = 0
        for kind, key in ((ADDR, addr), (USER, user)):
            if key is None:
                continue
            state, started = self.ledger.fail(kind, key, now, decay=self.decay,
                                              threshold=self.threshold, lockout=self.lockout,
                                              max_rows=self.max_entries)
            if started:
                what = "address" if kind == ADDR else "user name (for untrusted sources)"
                log.warning("lockout started: %s %s after %d failed logins or registrations, "
                            "for %d s",
                            what, key, state.failures, int(self.lockout))
            if (kind, key) in binding:
                worst = max(worst, state.failures)
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self._since_prune = 0
            self.ledger.prune(now, self.decay, now - self.trust_window)
        return min(self.max_delay, self.base * 2 ** min(worst - 1, 60)) if worst else 0.0

    def register_attempt(self, addr: str) -> float:
        """A ``register`` from ``addr``: it counts against the address like a failed
        login (recorded before its scrypt runs, so parallel attempts cannot overshoot),
        and its reply waits the returned delay.  Whether the name was free or taken,
        an address learns names no faster than it could guess passwords."""
        return self.failure(None, addr)

    def success(self, user: str, addr: str, stamp: tuple[int, int] | None = None,
                user_state: FailureState | None = None) -> None:
        """``user`` logged in from ``addr``: clear that user name's record (only), and
        trust the address for the account.

        ``stamp``: the account's ``(uid, generation)`` at this login.  With it, the trust
        record is looked at (and rewritten when older than ``TRUST_REFRESH``) once per
        ``TRUST_REFRESH`` per login in this process, not at every login: a reconnecting
        client saves a read per cycle (issue 17).  The record's time then lags by at most
        one more ``TRUST_REFRESH`` (an hour of a 30-day window).  A new password (which
        deletes the account's trust records) or a delete bumps the generation or the
        uid, so it is never hidden by what this process remembers.

        ``user_state``: the user name's record as ``token_login`` just read it."""
        now = self.clock()
        state = user_state if user_state is not None else self._state(USER, user, now)
        if state.failures or state.locked_until:
            self.ledger.clear(USER, user)
        if self.trust_window > 0:
            fresh = self._trust_fresh
            key = (user, addr, stamp) if stamp is not None else None
            if key is None or fresh.get(key, 0.0) <= now:
                self.ledger.trust(user, addr, now, TRUST_REFRESH)
                if key is not None:
                    if len(fresh) >= self.max_entries:
                        fresh.clear()
                    fresh[key] = now + TRUST_REFRESH
            self._trust_cache[(user, addr)] = (now + TRUST_CACHE_SECONDS, True)

    # ----- inspection (tests, ``ftpd user unlock``)
    def failures(self, user: str | None = None, addr: str | None = None) -> int:
        """Live failures of ``user`` (or, without one, of ``addr``)."""
        now = self.clock()
        if user is not None:
            return self._state(USER, user, now).failures
        return self._state(ADDR, addr, now).failures if addr is not None else 0

    def entries(self) -> tuple[int, int]:
        """Records kept: (user names, addresses)."""
        return self.ledger.count(USER), self.ledger.count(ADDR)

    def unlock(self, user: str) -> bool:
        """End a lockout of ``user`` and forget its failures; True if there was one."""
        self._trust_cache.clear()
        return self.ledger.clear(USER, user)
