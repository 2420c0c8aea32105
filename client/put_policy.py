"""How one file is uploaded: the policy around ``transfer.upload``.

``transfer.upload`` makes one attempt over one connection.  ``PutPolicy``
decides everything around it: hashing (up front, or in the background while
sending), *restart* (a resumed partial that came from another version of the
file is started over once), *busy* (just after a drop the server may still
hold our old upload: wait a moment), *park* (a deferred commit whose digest is
late: ping until it is ready, then put again at the end), *retry* (through
``Retry``), and the final check of what the server stored.
"""

from __future__ import annotations

import dataclasses
import os
import stat as stat_module
import time
from typing import TYPE_CHECKING

from protocol.digests import BLAKE3, SHA256
from protocol.messages import PutDone, PutReady

from . import transfer
from .errors import IntegrityError, ServerError
from .files import BackgroundHash, hash_file, identity
from .results import PutResult
from .retry import Notice, Retry, ignore
from .transfer import Parked, Progress, UploadJob, changed_during_upload, named_digest

if TYPE_CHECKING:
    from .client import Client

RESTARTED_NOTICE = "remote partial did not match the local file; starting over"
#: Pauses before asking again when the server still holds an upload that a dropped
#: connection of ours was writing (about 3 s in all).
UPLOAD_BUSY_BACKOFF = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


@dataclasses.dataclass
class PutOptions:
    """What the caller asked for (``Client.put``'s keyword arguments)."""

    overwrite: bool = False
    verify: bool = True
    defer_hash: bool = True
    progress: Progress | None = None
    retries: int = 0
    notice: Notice = ignore
    times: bool = True          # send the modification time (rsync -t)
    perms: bool = False         # send the permission bits (rsync -p)


class PutPolicy:
    """One upload of ``local`` to ``remote``, from open to verified ``PutResult``.

    Owns the local file, its identity, the background hash and the record of
    every ``put.ready``; talks to the server only through ``transfer`` on the
    client's current connection, and reconnects only through ``Retry``.
    """

    def __init__(self, client: Client, local: str, remote: str, options: PutOptions) -> None:
        self.client = client
        self.local = local
        self.remote = remote
        self.options = options
        self.deferred = options.verify and options.defer_hash
        self.readies: list[PutReady] = []
        self.restarted = False
        self.hasher: BackgroundHash | None = None
        self.algo = SHA256          # the session's digest (hello), fixed for every attempt
        self._fd = -1
        self._size = 0

    # ------------------------------------------------------------ the whole upload

    def run(self) -> PutResult:
        opts = self.options
        with open(self.local, "rb") as fileobj:
            before = identity(fileobj)
            self._fd, self._size = fileobj.fileno(), before.size
            st = os.fstat(fileobj.fileno())
            if not stat_module.S_ISREG(st.st_mode):
                raise IsADirectoryError(f"{self.local} is not a regular file")
            retry = Retry(self.client.reconnect, opts.retries, self.client.retry_backoff,
                          opts.notice)
            sha256 = None       # (of self.algo: SHA-256 or, where negotiated, BLAKE3)
            if opts.verify:     # (reading hello's reply may find the connection gone)
                self.algo = retry.run(lambda _n: self.client._require().digest())
            if opts.verify and not self.deferred:
                sha256 = hash_file(fileobj, algo=self.algo).hexdigest()
                if identity(fileobj) != before:
                    raise IntegrityError("INTEGRITY", f"local file {self.local!r} changed "
                                         "while it was being hashed; try again once it is "
                                         "stable")
            job = UploadJob(fileobj, self.remote, before.size, before, self.local, sha256,
                            opts.overwrite, opts.progress, self._on_ready,
                            self._whole_file_sha256 if self.deferred else None,
                            max(0.0, st.st_mtime) if opts.times else None,
                            stat_module.S_IMODE(st.st_mode) & 0o777 if opts.perms else None,
                            self.algo)
            try:
                done = retry.run(lambda _n: self._attempt(job))
                if self.deferred:
                    sha256 = self._whole_file_sha256()
            finally:
                if self.hasher is not None:
                    self.hasher.stop()
            if identity(fileobj) != before:
                raise changed_during_upload(self.local)
        return self._checked(done, before.size, sha256)

    def _checked(self, done: PutDone, size: int, sha256: str | None) -> PutResult:
        algo = self.algo
        if self.deferred and named_digest(done, algo) is None:
            # A server without commit published it unverified: check what it stored.
            stored = self.client.hash(done.path, digest=algo)
            done = dataclasses.replace(done, sha256=stored.sha256, blake3=stored.blake3)
        got = named_digest(done, algo)
        if done.size != size or (sha256 is not None and got != sha256):
            raise IntegrityError("INTEGRITY", f"the server stored {done.size} bytes with "
                                 f"{algo} {got}, not what was sent")
        resumed_from = 0 if self.restarted else self.readies[0].offset
        return PutResult(done.path, done.size, done.sha256, resumed_from, self.restarted,
                         self.local, len(self.readies),
                         done.blake3 if algo == BLAKE3 else None)

    # ------------------------------------------------------------ one connection

    def _on_ready(self, ready: PutReady) -> None:
        self.readies.append(ready)
        self.remote = ready.path            # normalised: immune to cwd after reconnect
        if ready.restarted:
            self.restarted = True
            self.options.notice(RESTARTED_NOTICE)
        if self.deferred and self.hasher is None:
            # One hash for every attempt: it covers the whole file, not the offset.
            self.hasher = BackgroundHash(self._fd, self._size, self.algo)

    def _whole_file_sha256(self, timeout: float | None = None) -> str | None:
        assert self.hasher is not None
        return self.hasher.result(timeout)

    def _attempt(self, job: UploadJob) -> PutDone:
        """Upload over the current connection: restart once, wait out UPLOAD_BUSY, park."""
        busy_waits = iter(UPLOAD_BUSY_BACKOFF)
        while True:
            job.remote = self.remote
            try:
                outcome = transfer.upload(self.client._require(), job)
                if isinstance(outcome, Parked):
                    outcome = self._park(outcome)
                if outcome is not None:
                    return outcome
            except IntegrityError as exc:
                if identity(job.fileobj) != job.before:
                    raise changed_during_upload(self.local) from exc
                if (not self.deferred or self.restarted or not self.readies
                        or self.readies[-1].offset == 0):
                    raise
                # The resumed prefix came from another version of the file;
                # the server has discarded it, so the next put starts at 0.
                self.restarted = True
                self.options.notice(RESTARTED_NOTICE)
            except ServerError as exc:
                # Just after a drop the server may not have seen the old connection
                # close yet and still holds the upload: give it a moment.
                pause = next(busy_waits, None) if exc.code == "UPLOAD_BUSY" else None
                if pause is None:
                    raise
                time.sleep(pause)

    def _park(self, parked: Parked) -> PutDone | None:
        """Keep the session alive until the digest is ready; None: put again."""
        conn = self.client._require()
        while self._whole_file_sha256(transfer.PARK_PING) is None:
            transfer.keep_alive(conn)
        self.remote = parked.path
        return parked.done          # a server without commit: ``_checked`` verifies it
