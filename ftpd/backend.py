"""Which storage backend the daemon runs on, and what that changes in the daemon.

``open_store(config)``: the local ``Store`` (SQLite plus files under
``root``, the default) or, when ``metadata_url`` and ``blob_url`` are set,
the ``ObjectStore`` (PostgreSQL plus an S3 bucket, shared by several nodes).

``handlers_for(store, handlers)``: with the object store even the "quick"
storage calls (``stat``, ``mkdir``, ``mv``, ...) are database round trips, so
the handlers that run them inline on the reactor are wrapped to run them on a
worker, ``get`` streams with ``BlobDownloadProducer``, and ``login``/
``register`` read the shared login throttle and tokens on a worker first
(``login_remote``).  The local
backend keeps the table as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import protocol.messages as m
from protocol import ProtocolError
from storage import Store

from .blob_download import download_producer
from .digests import negotiated
from .jobs import Deferred, Outcome

__all__ = ["handlers_for", "open_store", "uses_object_store"]

#: Handlers that only read the session and call the store: run whole on a worker.
_PURE = ("stat", "mkdir", "rmdir", "rm", "mv", "quota", "uploads", "hash", "abort")


def uses_object_store(config: Any) -> bool:
    """Both URLs set (``Config.validate`` refuses one without the other)."""
    return bool(getattr(config, "metadata_url", "") and getattr(config, "blob_url", ""))


def open_store(config: Any) -> Any:
    """The configured backend; never logs either URL."""
    if uses_object_store(config):
        from storage.objstore.store import ObjectStore

        return ObjectStore(config.metadata_url, config.blob_url, scrypt_n=config.scrypt_n,
                           partial_ttl=config.partial_ttl,
                           default_quota=config.default_quota,
                           metadata_timeout=config.metadata_timeout,
                           spool_limit=config.spool_limit,
                           max_partials=config.max_partials_per_user,
                           folder_cost=config.folder_cost)
    return Store(config.root, scrypt_n=config.scrypt_n, partial_ttl=config.partial_ttl,
                 default_quota=config.default_quota,
                 max_partials=config.max_partials_per_user, folder_cost=config.folder_cost)


def handlers_for(store: Any, handlers: dict[str, Callable[[Any, Any], Outcome]]
                 ) -> dict[str, Callable[[Any, Any], Outcome]]:
    if not getattr(store, "remote", False):
        return handlers
    table = dict(handlers)
    for name in _PURE:
        if name in table:
            table[name] = _on_worker(table[name])
    table["cd"] = _cd
    table["get"] = _get
    # The throttle's shared records and token checks are database reads: on a worker.
    from . import login_remote

    for name in ("login", "register"):
        if name in table:
            table[name] = getattr(login_remote, name)
    return table


def _same(outcome: Outcome) -> Outcome:
    return outcome


def _on_worker(handler: Callable[[Any, Any], Outcome]) -> Callable[[Any, Any], Outcome]:
    """The whole handler as a worker job; its outcome (a reply, a further ``Deferred``,
    a ``Paged``) is applied on the reactor.  Safe because the session takes no other
    request while a job is in flight, and these handlers only read it."""
    def run(session: Any, req: Any) -> Outcome:
        return Deferred(lambda: handler(session, req), _same)
    run.__name__ = getattr(handler, "__name__", "handler")
    return run


def _cd(session: Any, req: m.Cd) -> Outcome:
    store, user, cwd = session.ctx.store, session.user, session.cwd

    def moved(path: str) -> Outcome:
        session.cwd = path               # on the reactor: the session's own field
        return m.CdOk(id=req.id, path=path)

    return Deferred(lambda: store.is_dir(user, req.path, cwd), moved)


def _get(session: Any, req: m.Get) -> Outcome:
    """``get`` over the object store: metadata (and a hash, if asked) on a worker, then
    the blob streams through ``BlobDownloadProducer`` from ``req.offset``."""
    store, user, cwd = session.ctx.store, session.user, session.cwd
    negotiated(session, req.digest)       # SHA-256 only: this store lists no other

    def job() -> tuple[str, Any, int, str | None]:
        path = store.resolve(user, req.path, cwd)
        source, size = store.open_read(user, path)
        if req.offset > size:
            raise ProtocolError(f"offset {req.offset} is past the end ({size} bytes)",
                                code="OFFSET_MISMATCH", expected=size, got=req.offset)
        # Of the blob just opened, not of whatever the path names by now (item 12).
        sha256 = store.hash_fd(source)[0] if req.verify else None
        return path, source, size, sha256

    def begin(result: tuple[str, Any, int, str | None]) -> Outcome:
        path, source, size, sha256 = result
        session.start_download(download_producer(req, path, source, size, req.offset,
                                                 session.data_frame))
        return m.GetReady(id=req.id, path=path, size=size, offset=req.offset, sha256=sha256)

    return Deferred(job, begin)
