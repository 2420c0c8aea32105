"""How one file is downloaded: the policy around ``transfer``'s download primitives.

``GetPolicy`` owns the local side -- the ``.part`` file, the digest of the
prefix it already holds, the rename into place -- and decides *restart* (a
``.part`` that does not match the remote file is started over once, with a
notice) and *retry* (through ``Retry``).  ``StreamPolicy`` sends the bytes to
a callable instead of a file and resumes from the position it reached.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from protocol.digests import BLAKE3, SHA256, new_hasher
from protocol.messages import GetReady

from .errors import FtpError, IntegrityError
from .files import commit, hash_file, part_path, remove_quietly, write_all
from .results import GetResult
from .retry import Notice, Retry, ignore
from .transfer import Progress, Received, Sink, named_digest, receive_download, start_download

if TYPE_CHECKING:
    from .client import Client

STALE_PART_NOTICE = "local partial download did not match the remote file; starting over"


@dataclasses.dataclass
class GetOptions:
    """What the caller asked for (``Client.get``'s keyword arguments)."""

    verify: bool = True
    fsync: bool = False
    progress: Progress | None = None
    retries: int = 0
    notice: Notice = ignore
    times: bool = True          # give the file the remote modification time (rsync -t)
    perms: bool = False         # and the remote permission bits (rsync -p)


def _result(ready: GetReady, algo: str, verified: bool, resumed_from: int,
            local: str | None) -> GetResult:
    """The ``GetResult`` of a download; its digest (of ``algo``) only if ``verified``."""
    digest = named_digest(ready, algo) if verified else None
    return GetResult(ready.path, ready.size, digest if algo == SHA256 else None, resumed_from,
                     local, blake3=digest if algo == BLAKE3 else None)


def verified(result: GetResult) -> bool:
    """Whether a download was verified (with SHA-256 or BLAKE3)."""
    return result.sha256 is not None or result.blake3 is not None


def apply_metadata(path: str, ready: GetReady, options: GetOptions) -> None:
    """Before the rename into place: the remote mtime (and mode, with ``perms``)."""
    if options.perms and ready.mode is not None:
        os.chmod(path, ready.mode & 0o777)
    if options.times and ready.mtime is not None:
        os.utime(path, (os.stat(path).st_atime, ready.mtime))


class GetPolicy:
    """One download of ``remote`` into ``local`` through ``local + ".part"``."""

    def __init__(self, client: Client, remote: str, local: str, options: GetOptions) -> None:
        self.client = client
        self.remote = remote
        self.local = local
        self.part = part_path(local)
        self.options = options
        self.starts: list[int] = []         # offset of every attempt that got get.ready
        self.restarted = False

    def run(self) -> GetResult:
        opts = self.options
        retry = Retry(self.client.reconnect, opts.retries, self.client.retry_backoff,
                      opts.notice)
        result = retry.run(self._attempt)
        reused = 0 if self.restarted else self.starts[0]
        return GetResult(result.path, result.size, result.sha256, reused, self.local,
                         self.restarted, len(self.starts), result.blake3)

    def _attempt(self, _n: int) -> GetResult:
        while True:
            result = self._once()
            self.restarted = self.restarted or result.restarted
            if verified(result) or not self.options.verify:
                return result
            remove_quietly(self.part)
            if result.resumed_from == 0 or self.restarted:
                raise IntegrityError("INTEGRITY", f"the digest of the downloaded {self.remote!r} "
                                     "differs from the server's; the download was deleted")
            self.restarted = True
            self.options.notice(STALE_PART_NOTICE)

    def _once(self) -> GetResult:
        """One download attempt.  No digest with ``verify`` means mismatch."""
        opts, part = self.options, self.part
        try:
            offset = os.stat(part).st_size
        except FileNotFoundError:
            offset = 0
        digest = None
        conn = self.client._require()
        algo = conn.digest() if opts.verify else SHA256     # BLAKE3 where hello chose it
        if opts.verify:
            if offset:
                with open(part, "rb") as prefix:
                    digest = hash_file(prefix, offset, algo)
            else:
                digest = new_hasher(algo)
        try:
            rid, ready = start_download(conn, self.remote, offset, opts.verify, algo)
        except FtpError as exc:
            if exc.code != "OFFSET_MISMATCH" or not offset:
                raise
            remove_quietly(part)              # longer than the remote file: stale
            opts.notice(STALE_PART_NOTICE)
            return dataclasses.replace(self._once(), restarted=True)
        self.starts.append(offset)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size != offset:
                # Only when needed: on ext4 a truncation to 0 makes close() start
                # writing the whole file back (auto_da_alloc), ~0.4 s per GiB.
                os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            receive_download(conn, rid, ready, lambda view: write_all(fd, view), digest,
                             opts.progress, threaded_sink=True)
            if opts.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if digest is not None and digest.hexdigest() != named_digest(ready, algo):
            return _result(ready, algo, False, offset, self.local)
        apply_metadata(part, ready, opts)
        commit(part, self.local, fsync=opts.fsync)
        return _result(ready, algo, opts.verify, offset, self.local)


class StreamPolicy:
    """A download into ``sink(view)``; a retry resumes at the position reached.

    ``verify`` needs ``offset=0``: the digest covers the whole file.
    """

    def __init__(self, client: Client, remote: str, sink: Sink, offset: int,
                 options: GetOptions) -> None:
        if options.verify and offset:
            raise ValueError("verify needs the whole file: offset must be 0")
        self.client = client
        self.remote = remote
        self.sink = sink
        self.offset = self.position = offset
        self.options = options
        self.digest = None          # made on the first attempt, of the session's digest
        self.algo = SHA256

    def _attempt(self, _n: int) -> GetResult:
        conn = self.client._require()
        if self.options.verify and self.digest is None:
            self.algo = conn.digest()
            self.digest = new_hasher(self.algo)
        rid, ready = start_download(conn, self.remote, self.position, self.options.verify,
                                    self.algo)
        # The sink is called as given (no counting wrapper per chunk); the count of
        # what it was handed comes back in ``received``, also when the attempt fails.
        received = Received()
        try:
            receive_download(self.client._require(), rid, ready, self.sink, self.digest,
                             self.options.progress, received=received)
        finally:
            self.position += received.bytes
        return _result(ready, self.algo, self.options.verify, self.offset, None)

    def run(self) -> GetResult:
        opts = self.options
        retry = Retry(self.client.reconnect, opts.retries, self.client.retry_backoff,
                      opts.notice)
        result = retry.run(self._attempt)
        expected = result.blake3 if self.algo == BLAKE3 else result.sha256
        if self.digest is not None and self.digest.hexdigest() != expected:
            raise IntegrityError("INTEGRITY", f"{self.algo} of the streamed {self.remote!r} "
                                 "differs from the server's")
        return result


GetFile = Callable[[str, str], GetResult]
