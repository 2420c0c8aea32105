"""``login`` and ``register`` on the object backend: their database reads on a worker.

On the object backend the login throttle's records are shared by every node in
PostgreSQL (storage/objstore/logins.py), and a token is checked against
PostgreSQL too.  The throttle (ftpd/throttle.py) and the login handler
(ftpd/handlers.py) ask on the reactor thread, where no database round trip may
run.  So each ``login``/``register`` first runs one worker job that loads the
records this attempt reads into the throttle's cache (the address, the user
name, the pair's trust) and, for a token login, checks the token; then the
usual handler runs on the reactor from the cache.  Its writes (a failure, a
success) go to PostgreSQL from the ledger's background thread.
"""

from __future__ import annotations

import logging
from typing import Any

import protocol.messages as m
from protocol import ProtocolError
from storage import AuthFailed

from . import handlers
from .jobs import Deferred, Outcome

__all__ = ["login", "register"]

log = logging.getLogger("ftpd.handlers")


def _refresh(session: Any, user: Any) -> None:
    """The worker half: this attempt's throttle records, fresh from the database."""
    throttle = session.ctx.throttle
    throttle.ledger.refresh(user if isinstance(user, str) else None, session.ip,
                            throttle.clock() - throttle.trust_window)


def login(session: Any, req: m.Login) -> Outcome:
    store = session.ctx.store

    def job() -> Any:
        _refresh(session, req.user)
        if req.token is None:
            return None
        try:
            return store.verify_token(req.token)
        except AuthFailed as exc:
            return exc

    def then(verified: Any) -> Outcome:
        if req.token is None:
            return handlers.login(session, req)         # the password path, as ever
        throttle = session.ctx.throttle
        locked = throttle.locked(req.user, session.ip, token=True)
        if locked:
            log.info("login refused %s user=%s: locked out", session.peer, req.user)
            raise ProtocolError(f"too many failed logins; try again in {int(locked) + 1} s",
                                code="LOCKED_OUT", retry_after=int(locked) + 1)
        if isinstance(verified, AuthFailed) or \
                (req.user is not None and req.user != verified.name):
            return handlers._login_failed(session, req)
        return handlers._login_ok(session, req, verified)

    return Deferred(job, then)


def register(session: Any, req: Any) -> Outcome:
    return Deferred(lambda: _refresh(session, None),
                    lambda _: handlers.HANDLERS["register"](session, req))
