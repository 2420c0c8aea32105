"""Listings streamed a batch at a time: ``ls``, ``uploads`` (issue 13, items 7 and 8) and
``hash`` by the opened descriptor (item 12).

One ``ls`` of a 50,000-entry folder used to build the whole listing on a worker
(40 MB of daemon memory) and keep it until the slowest client had read it.
Now a listing is a ``Listing``: the pager of a ``Paged`` outcome that holds one
batch of entries at a time.  It turns the batch into pages (each under
``PAGE_BUDGET`` bytes); when the batch is used up it yields a ``Deferred`` that
reads the next batch on a worker, and the session runs that job only once the
connection's output has drained to its low-water mark.  So a listing costs at
most one batch plus the transport's high-water mark of memory, whatever the
folder holds; a client that stops reading stops the reading of the folder; and
each batch is a short job that goes through the user's share of the file
workers (``ftpd/fairshare.py``), so one user's listings, however many and
however large, leave workers to everyone else.

Order (docs/PROTOCOL.md, ``ls``): a folder is read in the file system's order
(as sftp's ``readdir``: only the client can sort a listing it has not held
whole) in batches of ``LIST_BATCH`` entries, each batch sorted by name; a
folder of at most ``LIST_BATCH`` entries is one batch, so it comes sorted as
before.  ``uploads`` is read from the catalogue in path order
(``Store.list_uploads_page``), so it stays sorted whole.

A store without the paged calls (the object store, whose ``list_dir`` pages in
its database) gives its whole listing as one batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import protocol.messages as m
from protocol import ErrorReply, ProtocolError
from storage import StorageError

from .digests import negotiated
from .errors import error_reply
from .jobs import Deferred, Outcome, Paged, handles
from .jobs import HandlerSession as Session
from .walks import walked

__all__ = ["LIST_BATCH", "PAGE_BUDGET", "UPLOADS_BATCH", "Listing", "entry_of", "hash_", "ls",
           "uploads"]

log = logging.getLogger("ftpd.listing")

#: A page of a listing stays well under the 64 KiB every peer must accept.
PAGE_BUDGET = 48 * 1024
#: Folder entries read (one ``lstat`` each) and held per worker job: about a wire page or
#: two of typical names; also the largest folder whose listing comes sorted as a whole.
LIST_BATCH = 500
#: Unfinished uploads read from the catalogue per worker job (one indexed range).
UPLOADS_BATCH = 100

#: What a worker advances: each batch of wire records with whether another may follow.
Batches = Iterator[tuple[list[Any], bool]]


def entry_of(e: Any) -> m.Entry:
    """The wire's Entry for a storage entry."""
    return m.Entry(name=e.name, type=e.type, size=e.size, mtime=max(0.0, float(e.mtime)))


def _entry_cost(e: m.Entry) -> int:
    return 80 + len(e.name.encode("utf-8", "replace")) * 6   # worst case: \\u escapes


def _upload_cost(info: m.UploadInfo) -> int:
    return 200 + len(info.path.encode("utf-8", "replace")) * 6


class Listing:
    """The pages of one paged reply, read a batch at a time (an iterator for ``Paged``).

    Owns the batch in hand (wire records, in the order they go out) and the
    source of further batches (an iterator that a worker advances, one job at a
    time; it holds the folder's descriptor or the catalogue's position).  Each
    ``next`` is a page while the batch has more than one page's worth; the tail
    of a batch is held back and a ``Deferred`` is yielded to read the next
    batch (so the last page can say ``more: false`` without an empty page after
    it, unless a batch boundary falls exactly there).  Reactor thread only; the
    source is touched only inside the jobs it yields, and closed on the reactor
    once no job runs (or by its own finaliser when the listing is dropped).
    """

    __slots__ = ("make", "cost", "source", "batch", "pos", "done", "request_id")

    def __init__(self, request_id: int, make: Callable[[tuple[Any, ...], bool], Any],
                 cost: Callable[[Any], int], first: list[Any],
                 source: Batches | None) -> None:
        self.request_id = request_id
        self.make = make
        self.cost = cost
        self.batch = first
        self.pos = 0
        self.source = source            # None: ``batch`` is the last
        self.done = False

    def __iter__(self) -> Listing:
        return self

    def __next__(self) -> Any:
        if self.done:
            raise StopIteration
        batch, cost = self.batch, self.cost
        page: list[Any] = []
        used, pos = 0, self.pos
        while pos < len(batch):
            item_cost = cost(batch[pos])
            if page and used + item_cost > PAGE_BUDGET:
                self.pos = pos
                return self.make(tuple(page), True)
            page.append(batch[pos])
            used += item_cost
            pos += 1
        if self.source is not None:     # the tail waits for the next batch
            self.batch, self.pos = batch[self.pos:], 0
            return Deferred(self._read, self._got, failed=self._failed,
                            if_closed=self._closed)
        self.done = True
        self.batch = []
        return self.make(tuple(page), False)

    def _read(self) -> tuple[list[Any], bool]:
        """A worker: the next batch, and whether more may follow."""
        assert self.source is not None
        return next(self.source, ([], False))

    def _got(self, result: tuple[list[Any], bool]) -> Outcome:
        batch, more = result
        self.batch = self.batch + batch
        if not more:
            self._close_source()
        return None                     # the session draws the next page

    def _failed(self, error: BaseException) -> Outcome:
        """A batch could not be read: the reply ends with an error carrying the request's
        id instead of the remaining pages (see ``_refusal``)."""
        self._close_source()
        self.done = True
        self.batch = []
        return _refusal(error, self.request_id)

    def _closed(self, *_: Any) -> None:
        self._close_source()

    def _close_source(self) -> None:
        source, self.source = self.source, None
        close = getattr(source, "close", None)
        if close is not None:
            close()


def _opened(request_id: int, make: Callable[[tuple[Any, ...], bool], Any],
            cost: Callable[[Any], int], source: Batches) -> Deferred:
    """The first batch on a worker (errors such as NOT_FOUND come from it, before any
    page), then the ``Paged`` reply."""
    def first() -> tuple[list[Any], bool]:
        try:
            batch, more = next(source, ([], False))
        except BaseException:
            _close(source)
            raise
        if not more:
            _close(source)
        return batch, more

    def paged(result: tuple[list[Any], bool]) -> Outcome:
        batch, more = result
        return Paged(Listing(request_id, make, cost, batch, source if more else None))

    return Deferred(first, paged, failed=lambda error: _refusal(error, request_id),
                    if_closed=lambda *_: _close(source))


def _refusal(error: BaseException, request_id: int) -> ErrorReply:
    """A failed batch: its own code, or ``IO_ERROR`` for the disk's ``OSError`` (logged);
    anything else is a bug and goes on as one (``INTERNAL``, and the session ends)."""
    if isinstance(error, StorageError | ProtocolError):
        return error_reply(error, request_id)
    if not isinstance(error, OSError):
        raise error
    log.error("listing failed", exc_info=error)
    return error_reply(error, request_id, operation="listing")


def _close(source: Iterator[Any]) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        close()


# ---------------------------------------------------------------- ls


def _entry_batches(store: Any, user: str, path: str, cwd: str) -> Batches:
    """Batches of the folder's entries as wire records, each sorted by name (a worker
    advances it; it holds the folder open until exhausted or closed).  A full batch
    may be followed by an empty one: the folder's end is known only once read."""
    if not hasattr(store, "iter_dir"):      # the object store: one batch, already sorted
        yield [entry_of(e) for e in store.list_dir(user, path, cwd)], False
        return
    pages = store.iter_dir(user, path, cwd, LIST_BATCH)
    try:
        for page in pages:
            yield (sorted((entry_of(e) for e in page), key=lambda e: e.name),
                   len(page) >= LIST_BATCH)
    finally:
        pages.close()


@handles("ls")
def ls(session: Session, req: m.Ls) -> Outcome:
    # Walked from the home (on a worker), not from the working folder the session holds:
    # a folder removed (or swapped for a link) under the session is NOT_FOUND (BAD_PATH),
    # never an empty listing of a deleted folder.
    store, user, cwd = session.ctx.store, session.user, session.cwd
    path = store.resolve(user, req.path, cwd)
    return _opened(req.id, lambda page, more: m.LsOk(id=req.id, path=path, entries=page,
                                                      more=more),
                   _entry_cost, _entry_batches(store, user, path, "/"))


# ---------------------------------------------------------------- uploads


def _info(p: Any) -> m.UploadInfo:
    return m.UploadInfo(path=p.path, size=p.size, offset=p.offset,
                        updated=max(0.0, float(p.updated)), sha256=p.sha256, blake3=p.blake3)


def _upload_batches(store: Any, user: str) -> Batches:
    """Batches of unfinished uploads in path order, a catalogue page each."""
    if not hasattr(store, "list_uploads_page"):     # the object store: one batch
        yield [_info(p) for p in store.list_uploads(user)], False
        return
    after: str | None = None
    while True:
        page, after = store.list_uploads_page(user, after, UPLOADS_BATCH)
        yield [_info(p) for p in page], after is not None
        if after is None:
            return


@handles("uploads")
def uploads(session: Session, req: m.Uploads) -> Outcome:
    store, user = session.ctx.store, session.user
    return _opened(req.id, lambda page, more: m.UploadsOk(id=req.id, uploads=page, more=more),
                   _upload_cost, _upload_batches(store, user))


# ---------------------------------------------------------------- hash


@handles("hash")
def hash_(session: Session, req: m.Hash) -> Outcome:
    """The digest of the file the request opens: looked up in the cache by that
    descriptor's ``fstat``, or read through it on a worker -- never by the path
    again, so a file replaced meanwhile cannot lend its digest (item 12)."""
    store, user, cwd = session.ctx.store, session.user, session.cwd
    algo = negotiated(session, req.digest)
    path = store.resolve(user, req.path, cwd)
    if not hasattr(store, "cached_hash_fd"):
        return _hash_by_blob(store, user, path, cwd, req)

    def open_file() -> tuple[int, tuple[str, int] | None]:
        fd, _ = store.open_read(user, path, cwd)
        try:
            return fd, store.cached_hash_fd(fd, algo)
        except BaseException:
            os.close(fd)
            raise

    def answer(result: tuple[str, int]) -> m.HashOk:
        if algo != "sha256":
            return m.HashOk(id=req.id, path=path, blake3=result[0], size=result[1])
        return m.HashOk(id=req.id, path=path, sha256=result[0], size=result[1])

    def opened(result: tuple[int, tuple[str, int] | None]) -> Outcome:
        fd, cached = result
        if cached is not None:
            os.close(fd)
            return answer(cached)
        return Deferred(lambda: store.hash_fd(fd, algo), answer,
                        always=lambda *_: os.close(fd))

    def closed_meanwhile(result: Any, _: Any = None) -> None:
        if result is not None:
            os.close(result[0])

    return walked(cwd, (req.path,), open_file, opened, if_closed=closed_meanwhile)


def _hash_by_blob(store: Any, user: str, path: str, cwd: str, req: m.Hash) -> Outcome:
    """The object store: a file's content is an immutable blob named in its entry, so
    the blob id read with the entry is the whole key (no descriptor to hold)."""
    def answer(result: tuple[str, int]) -> m.HashOk:
        return m.HashOk(id=req.id, path=path, sha256=result[0], size=result[1])

    cached = store.cached_hash(user, path, cwd)
    if cached is not None:
        return answer(cached)
    return Deferred(lambda: store.file_hash(user, path, cwd), answer)
