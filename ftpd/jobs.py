"""What a handler returns, and the part of a session a handler may use.

A handler answers a request by returning an ``Outcome``: a reply (or the
reply's frame already encoded, ``bytes``: replies that are the same for every
session, such as ``hello``'s and ``quit``'s, are encoded once); a ``Deferred``
(work for a worker thread or a timer, with the continuation that turns its
result into the next outcome); ``Paged`` (a multi-frame reply
produced under the water marks); ``Finish`` (end the session once its output
is out); ``None`` (a transfer that answers by itself); or a tuple of these, in
order.  The session runs outcomes: while a ``Deferred`` is in flight it reads
no further requests, and when it completes the session takes up the ones that
waited.  No handler marks itself busy or resumes the session by hand.

This module imports nothing from the rest of ``ftpd``, so handlers depend on
it and on ``HandlerSession`` -- never on the session class itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, Union

from protocol import ErrorReply, Reply, Request

if TYPE_CHECKING:
    from .context import SessionContext
    from .transfers import DownloadProducer

Outcome = Union[Reply, bytes, "Deferred", "Paged", "Finish", tuple[Any, ...], None]

Handler = Callable[[Any, Any], Outcome]
#: The handler of each command (ftpd/handlers.py, ftpd/listing.py register theirs).
HANDLERS: dict[str, Handler] = {}


def handles(cmd: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of ``cmd``."""
    def register(fn: Handler) -> Handler:
        HANDLERS[cmd] = fn
        return fn
    return register


class Deferred:
    """Work off the reactor thread, then its continuation on it.

    ``job`` runs on a worker (``cpu``: the password pool), or nothing runs and
    ``delay`` seconds pass on the timer heap.  Then, on the reactor thread:
    ``always(result, error)`` first, whatever happened (bookkeeping such as
    freeing a slot); if the connection is gone, ``if_closed(result, error)``;
    else ``then(result)`` -- or ``failed(error)`` when the job raised -- gives
    the next outcome.  Without ``failed`` the error becomes the error reply
    (``ftpd.errors``); ``operation`` names file work, so that an unexpected
    exception is an ``IO_ERROR`` ("commit failed: ...") and not ``INTERNAL``.
    """

    __slots__ = ("job", "then", "failed", "always", "if_closed", "cpu", "delay", "operation")

    def __init__(self, job: Callable[[], Any] | None, then: Callable[[Any], Outcome], *,
                 failed: Callable[[BaseException], Outcome] | None = None,
                 always: Callable[[Any, BaseException | None], None] | None = None,
                 if_closed: Callable[[Any, BaseException | None], None] | None = None,
                 cpu: bool = False, delay: float = 0.0, operation: str = "") -> None:
        self.job = job
        self.then = then
        self.failed = failed
        self.always = always
        self.if_closed = if_closed
        self.cpu = cpu
        self.delay = delay
        self.operation = operation

    @classmethod
    def after(cls, delay: float, then: Callable[[Any], Outcome]) -> Deferred:
        """Nothing to run: just ``then(None)`` in ``delay`` seconds (login delays)."""
        return cls(None, then, delay=delay)


class Paged:
    """A reply in several frames, produced a page at a time under the water marks.

    ``pages`` yields the frames; where the next ones need work off the loop (the
    next batch of a listing: ftpd/listing.py) it yields a ``Deferred`` instead.
    The session runs that job only once its output has drained to the low-water
    mark (``held`` keeps it until then), like any job of the user's (its
    continuation feeds ``pages`` and returns None, or the error reply that ends
    the reply), and then draws again.  So a paged reply never reads ahead of a
    client that does not read.
    """

    __slots__ = ("pages", "held")

    def __init__(self, pages: Iterator[Reply | Deferred]) -> None:
        self.pages = pages
        self.held: Deferred | None = None


class Finish:
    """End the session once what is queued has gone out (``quit``, a fatal refusal)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class HandlerSession(Protocol):
    """The part of a session a handler may read and change."""

    ctx: SessionContext
    peer: str
    ip: str
    user: str | None
    cwd: str
    data_frame: int
    digest: str                 # the digest hello chose: "sha256" or "blake3"

    def advance(self, event: str) -> None: ...
    def start_upload(self, request: Request, upload: Any) -> Outcome: ...
    def commit_upload(self, request: Request) -> Outcome: ...
    def cancel_transfer(self, request: Request) -> Outcome: ...
    def start_download(self, producer: DownloadProducer) -> None: ...
    def start_inline(self, request: Request, refusal: ErrorReply | None) -> None: ...
    def begin_login(self, user: str, uid: int, generation: int) -> bool: ...
    def end_login(self) -> None: ...
