"""Downloads from the object store: ranged GET chunks pulled on a worker, written by the reactor.

The local backend's ``DownloadProducer`` sends from a file descriptor with
``sendfile``; a blob has no descriptor.  ``BlobDownloadProducer`` has the
same interface towards the session (``produce``, ``end``, ``deferred``,
``cancel_id``, ...) and keeps at most ``PREFETCH`` bytes in memory: a worker
pulls the next chunk of one ranged GET (``BlobStore.read`` from the resume
offset) only while the buffer has room, and the reactor writes buffered
chunks through ``transport.write`` only while the transport is not paused.
A slow client therefore stops the pulls, and the GET's TCP window stops S3.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from protocol import Request

from .transfers import DownloadProducer, FramedDownload

log = logging.getLogger("ftpd.conn")

__all__ = ["BlobDownloadProducer", "PREFETCH", "close_source", "download_producer"]

#: Bytes pulled ahead of the socket (four 256 KiB chunks).
PREFETCH = 1 << 20


def close_source(source: Any) -> None:
    """Close what ``Store.open_read`` gave: an fd (local) or a ``BlobSource``."""
    if isinstance(source, int):
        try:
            os.close(source)
        except OSError:
            pass
    else:
        source.close()


def download_producer(request: Request, path: str, source: Any, size: int, offset: int,
                      frame_size: int) -> DownloadProducer | BlobDownloadProducer:
    """The producer for what ``open_read`` returned (the only backend-dependent choice)."""
    if isinstance(source, int):
        return DownloadProducer(request, path, source, size, offset, frame_size)
    return BlobDownloadProducer(request, path, source, size, offset, frame_size)


class BlobDownloadProducer(FramedDownload):
    """A blob streaming out as DATA frames; see the module docstring.

    ``attach(pool, wake, paused)`` is called by the session when the download
    starts: ``pool`` runs the pulls, ``wake`` (on the reactor, from a worker's
    completion) makes the session produce again, ``paused`` tells whether the
    transport asked us to stop writing.
    """

    __slots__ = ("source", "_chunks", "_buffered", "_stream", "_fetching", "_fetched",
                 "_error", "_ended", "_pool", "_wake", "_paused")

    def __init__(self, request: Request, path: str, source: Any, size: int, offset: int,
                 frame_size: int) -> None:
        super().__init__(request, path, size, offset, frame_size)
        self.source = source
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._stream: Iterator[bytes] | None = None
        self._fetching = False
        self._fetched = offset              # bytes pulled from S3 so far (absolute)
        self._error: str | None = None
        self._ended = False
        self._pool: Any = None
        self._wake: Callable[[], None] | None = None
        self._paused: Callable[[], bool] = lambda: False

    def attach(self, pool: Any, wake: Callable[[], None], paused: Callable[[], bool]) -> None:
        self._pool, self._wake, self._paused = pool, wake, paused
        self._fetch()

    # ------------------------------------------------------------ worker side
    def _fetch(self) -> None:
        """Start one pull if none runs, the buffer has room and bytes are left."""
        if (self._fetching or self._ended or self._error is not None or self._pool is None
                or self._buffered >= PREFETCH or self._fetched >= self.size):
            return
        self._fetching = True
        self._pool.submit(self._pull, self._pulled)

    def _pull(self) -> bytes | None:
        """On a worker: the next chunk of the ranged GET (opened on first use)."""
        if self._stream is None:
            self._stream = self.source.blobs.read(self.source.blob, start=self._fetched,
                                                  end=self.size)
        return next(self._stream, None)

    def _pulled(self, chunk: bytes | None, error: BaseException | None) -> None:
        """On the reactor: buffer the chunk, pull on, and let the session write."""
        self._fetching = False
        if self._ended:
            self._close_stream()
            return
        if error is not None:
            self._error = f"read failed: {getattr(error, 'code', type(error).__name__)}"
        elif chunk is None:
            if self._fetched < self.size:
                self._error = "blob shorter than its entry"
        else:
            self._chunks.append(chunk)
            self._buffered += len(chunk)
            self._fetched += len(chunk)
            self._fetch()
        if self._wake is not None:
            self._wake()

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None and hasattr(stream, "close"):
            try:
                stream.close()          # type: ignore[attr-defined]
            except Exception:           # releasing a broken connection: nothing to do
                pass

    # ------------------------------------------------------------ reactor side
    def _send_body(self, transport: Any) -> bool | str | None:
        """The next pulled chunk (or as much as the frame holds), if the transport
        is not paused; None while waiting for the socket or a pull."""
        if self._paused():
            return None
        if not self._chunks:
            if self._error is not None:
                return self._error
            self._fetch()
            return None
        chunk = self._chunks.popleft()
        if len(chunk) > self.frame_left:
            self._chunks.appendleft(chunk[self.frame_left:])
            chunk = chunk[: self.frame_left]
        self._buffered -= len(chunk)
        transport.write(chunk)
        self.pos += len(chunk)
        self.frame_left -= len(chunk)
        self._fetch()
        return True

    def end(self, result: str, user: str | None) -> None:
        """Stop pulling (a running pull closes the stream when it returns) and log."""
        self._ended = True
        if not self._fetching:
            self._close_stream()
        self._chunks.clear()
        self._log_end(result, user)
