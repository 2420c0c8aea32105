"""``Client``: a blocking, one-connection client with one method per command.

It keeps what is needed to rebuild a session after the connection drops --
the credentials given to ``login`` (the session token when the server issued
one), and the working folder -- so that ``put``/``get`` with ``retries=N``
can reconnect and resume where the bytes stopped: from the server's offset for
an upload, from the ``.part`` file's length for a download.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import posixpath
import stat as stat_module
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

from protocol import BadRequest
from protocol.messages import (
    Abort,
    AbortOk,
    Cd,
    CdOk,
    Greeting,
    Hash,
    HashOk,
    Login,
    LoginOk,
    Logout,
    LogoutOk,
    Ls,
    LsOk,
    Mkdir,
    MkdirOk,
    Mv,
    MvOk,
    Ping,
    Pong,
    PutDone,
    PutReady,
    Pwd,
    PwdOk,
    Quit,
    QuitOk,
    Quota,
    QuotaOk,
    Register,
    RegisterOk,
    Reply,
    Request,
    Rm,
    Rmdir,
    RmdirOk,
    RmOk,
    Stat,
    StatOk,
    UploadInfo,
    Uploads,
    UploadsOk,
    Whoami,
    WhoamiOk,
)

from .connection import Connection
from .errors import (
    AuthError,
    ConnectionLost,
    FtpError,
    IntegrityError,
    RequestError,
    ServerError,
)
from .files import (
    BackgroundHash,
    commit,
    hash_file,
    identity,
    part_path,
    remove_quietly,
    write_all,
)
from .results import (
    GetResult,
    HashResult,
    Listing,
    MoveResult,
    PutResult,
    QuotaInfo,
    Session,
    StatResult,
)
from .transfer import (
    InlineFile,
    InlinePipe,
    Progress,
    Sink,
    changed_during_upload,
    receive_download,
    start_download,
    upload,
)
from .trust import Security

R = TypeVar("R", bound=Reply)
T = TypeVar("T")
Notice = Callable[[str], None]

RESTARTED_NOTICE = "remote partial did not match the local file; starting over"
STALE_PART_NOTICE = "local partial download did not match the remote file; starting over"
#: Pauses before asking again when the server still holds an upload that a dropped
#: connection of ours was writing (about 3 s in all).
UPLOAD_BUSY_BACKOFF = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


def _ignore(_message: str) -> None:
    pass


class Client:
    """A connection to the daemon.  Use as a context manager::

        with Client("127.0.0.1", 2121) as c:
            c.login("alice", "secret")
            c.put("big.iso")
    """

    #: Seconds before the first reconnect; doubles per attempt, capped at 4 s.
    retry_backoff = 0.25

    def __init__(self, host: str = "127.0.0.1", port: int = 2121, *,
                 timeout: float | None = 30.0, tls: bool | None = None,
                 **trust: Any) -> None:
        #: TLS and server authentication (client/trust.py): ``tls=False`` is plain
        #: text; ``trust`` takes cacert=, trust=, known_hosts=, prompt=, notice=.
        self.security = Security.make(tls, **trust)
        self.host = host
        self.port = port
        self.timeout = timeout
        self.session: Session | None = None
        self.cwd = "/"
        self._conn: Connection | None = None
        self._user: str | None = None
        self._password: str | None = None
        self._token: str | None = None

    # ------------------------------------------------------------ connection

    def connect(self) -> Greeting:
        """Connect and read the greeting (``hello`` goes with the next request).
        Replaces any old connection."""
        self.close()
        self._conn = Connection.open(self.host, self.port, self.timeout,
                                     self.security.options)
        assert self._conn.greeting is not None
        return self._conn.greeting

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    @property
    def greeting(self) -> Greeting | None:
        return self._conn.greeting if self._conn else None

    def close(self) -> None:
        """Drop the connection without ceremony (the server keeps partials)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def reconnect(self) -> None:
        """A fresh connection with the same session: log in again, go back to cwd."""
        cwd = self.cwd
        self.connect()
        if self._user is None and self._token is None:
            return
        session = None
        if self._token is not None:
            try:
                session = self._login(token=self._token)
            except AuthError:
                if self._password is None:
                    raise
                self._token = None          # expired (a restarted server, say)
        if session is None:
            session = self._login(user=self._user, password=self._password, want_token=True)
            self._token = session.token
        if cwd != "/":
            self.cd(cwd)

    def __enter__(self) -> Client:
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None and self.connected:
            try:
                self.quit()
            except FtpError:
                pass
        self.close()

    def _require(self) -> Connection:
        if self._conn is None or self._conn.closed:
            raise ConnectionLost("CONNECTION_LOST", "not connected")
        return self._conn

    def _request(self, cls: type[Request], **fields: Any) -> Request:
        """Build a request; a field the protocol rejects is the caller's error."""
        try:
            return cls(id=self._require().next_id(), **fields)
        except BadRequest as exc:
            raise RequestError("BAD_REQUEST", exc.message)

    def _call(self, cls: type[Request], expected: type[R], **fields: Any) -> R:
        request = self._request(cls, **fields)
        return self._require().call(request, expected)

    def _pages(self, cls: type[Request], expected: type[R], **fields: Any) -> list[R]:
        """Every page of a paged reply (``more: true`` on all but the last)."""
        conn = self._require()
        request = self._request(cls, **fields)
        conn.send_message(request)
        pages = [conn.reply(request.id, expected)]
        while pages[-1].more:  # type: ignore[attr-defined]
            pages.append(conn.reply(request.id, expected))
        return pages

    # ------------------------------------------------------------ session

    def register(self, user: str, password: str) -> str:
        """Create an account (if the server allows it).  Does not log in."""
        self.security.check_credentials(self._require().sock)
        return self._call(Register, RegisterOk, user=user, password=password).user

    def login(self, user: str | None = None, password: str | None = None, *,
              token: str | None = None, want_token: bool = False) -> Session:
        """Log in with a password, or with a token from an earlier login.

        The credentials are kept (in memory only) for ``reconnect``.
        """
        if (password is None) == (token is None):
            raise ValueError("login needs exactly one of password and token")
        if password is not None and user is None:
            raise ValueError("login with a password needs a user")
        session = self._login(user=user, password=password, token=token,
                              want_token=want_token)
        self._user, self._password = session.user, password
        self._token = session.token or token
        return session

    def _login(self, **fields: Any) -> Session:
        self.security.check_credentials(self._require().sock)
        reply = self._call(Login, LoginOk, **fields)
        self.session = Session(reply.user, reply.cwd, reply.token)
        self.cwd = reply.cwd
        return self.session

    def logout(self) -> None:
        self._call(Logout, LogoutOk)
        self.session = None
        self._user = self._password = self._token = None
        self.cwd = "/"

    def whoami(self) -> str | None:
        return self._call(Whoami, WhoamiOk).user

    def ping(self, payload: str | None = None) -> float:
        """Round-trip time in seconds."""
        start = time.perf_counter()
        self._call(Ping, Pong, payload=payload)
        return time.perf_counter() - start

    def quit(self) -> None:
        """Say goodbye and close."""
        try:
            self._call(Quit, QuitOk)
        finally:
            self.close()

    # ------------------------------------------------------------ folders and files

    def pwd(self) -> str:
        self.cwd = self._call(Pwd, PwdOk).path
        return self.cwd

    def cd(self, path: str) -> str:
        self.cwd = self._call(Cd, CdOk, path=path).path
        return self.cwd

    def ls(self, path: str = ".") -> Listing:
        pages = self._pages(Ls, LsOk, path=path)
        entries = tuple(entry for page in pages for entry in page.entries)
        return Listing(pages[0].path, entries)

    def stat(self, path: str) -> StatResult:
        reply = self._call(Stat, StatOk, path=path)
        return StatResult(reply.path, reply.entry)

    def mkdir(self, path: str, parents: bool = False) -> str:
        return self._call(Mkdir, MkdirOk, path=path, parents=parents).path

    def rmdir(self, path: str) -> str:
        return self._call(Rmdir, RmdirOk, path=path).path

    def rm(self, path: str) -> str:
        return self._call(Rm, RmOk, path=path).path

    def mv(self, src: str, dst: str, overwrite: bool = False) -> MoveResult:
        reply = self._call(Mv, MvOk, src=src, dst=dst, overwrite=overwrite)
        return MoveResult(reply.src, reply.dst)

    def uploads(self) -> tuple[UploadInfo, ...]:
        pages = self._pages(Uploads, UploadsOk)
        return tuple(info for page in pages for info in page.uploads)

    def abort(self, path: str) -> str:
        return self._call(Abort, AbortOk, path=path).path

    def quota(self) -> QuotaInfo:
        r = self._call(Quota, QuotaOk)
        return QuotaInfo(r.used, r.reserved, r.limit, r.free)

    def hash(self, path: str) -> HashResult:
        r = self._call(Hash, HashOk, path=path)
        return HashResult(r.path, r.size, r.sha256)

    # ------------------------------------------------------------ transfers

    def _with_retries(self, retries: int, notice: Notice,
                      attempt: Callable[[int], T]) -> T:
        """Run ``attempt(n)``; after a dropped connection reconnect and run it again."""
        n = 0
        while True:
            try:
                if n:
                    self.reconnect()
                return attempt(n)
            except ConnectionLost as exc:
                if n >= retries:
                    raise
                n += 1
                notice(f"{exc.code}: {exc.message}; reconnecting (retry {n} of {retries})")
                time.sleep(min(self.retry_backoff * 2 ** (n - 1), 4.0))

    def put(self, local: str | os.PathLike[str], remote: str | None = None, *,
            overwrite: bool = False, verify: bool = True, defer_hash: bool = True,
            progress: Progress | None = None, retries: int = 0,
            notice: Notice | None = None) -> PutResult:
        """Upload a local file, resuming the server's partial if there is one.

        With ``verify`` the server checks the whole file's SHA-256 before it
        publishes the file.  By default (``defer_hash``) the file is hashed in
        a background thread *while* it is sent and the digest is named after
        the last byte (``commit``); the bytes a resumed upload skips are hashed
        too, so a partial left by an older version of the file is caught: then
        the upload starts over once from zero, with a notice.  With
        ``defer_hash=False`` the file is hashed first and the digest declared
        up front (two reads of the file, but the protocol's older path).

        A local file that changes while it is hashed or sent raises
        ``IntegrityError`` (the upload is cancelled and its partial discarded).
        ``notice`` receives one-line messages (a restart, a reconnect).
        """
        local = os.fspath(local)
        notice = notice or _ignore
        remote_path = remote or os.path.basename(local.rstrip(os.sep))
        deferred = verify and defer_hash
        with open(local, "rb") as fileobj:
            before = identity(fileobj)
            if not stat_module.S_ISREG(os.fstat(fileobj.fileno()).st_mode):
                raise IsADirectoryError(f"{local} is not a regular file")
            sha256 = None
            if verify and not deferred:
                sha256 = hash_file(fileobj).hexdigest()
                if identity(fileobj) != before:
                    raise IntegrityError("INTEGRITY", f"local file {local!r} changed while it "
                                         "was being hashed; try again once it is stable")
            first: list[PutReady] = []
            restarted = False
            hasher: BackgroundHash | None = None

            def on_ready(ready: PutReady) -> None:
                nonlocal remote_path, restarted, hasher
                first.append(ready)
                remote_path = ready.path      # normalised: immune to cwd after reconnect
                if ready.restarted:
                    restarted = True
                    notice(RESTARTED_NOTICE)
                if deferred and hasher is None:
                    # One hash for every attempt: it covers the whole file, not the offset.
                    hasher = BackgroundHash(fileobj.fileno(), before.size)

            def whole_file_sha256(timeout: float | None = None) -> str | None:
                assert hasher is not None
                return hasher.result(timeout)

            def attempt(_n: int) -> PutDone:
                nonlocal restarted
                busy_waits = iter(UPLOAD_BUSY_BACKOFF)
                while True:
                    try:
                        return upload(self._require(), fileobj, remote=remote_path,
                                      size=before.size, sha256=sha256, before=before,
                                      overwrite=overwrite, name=local, progress=progress,
                                      on_ready=on_ready,
                                      deferred_sha256=whole_file_sha256 if deferred else None)
                    except IntegrityError as exc:
                        if identity(fileobj) != before:
                            raise changed_during_upload(local) from exc
                        if not deferred or restarted or not first or first[-1].offset == 0:
                            raise
                        # The resumed prefix came from another version of the file;
                        # the server has discarded it, so the next put starts at 0.
                        restarted = True
                        notice(RESTARTED_NOTICE)
                    except ServerError as exc:
                        # Just after a drop the server may not have seen the old connection
                        # close yet and still holds the upload: give it a moment.
                        pause = next(busy_waits, None) if exc.code == "UPLOAD_BUSY" else None
                        if pause is None:
                            raise
                        time.sleep(pause)

            try:
                done = self._with_retries(retries, notice, attempt)
                if deferred:
                    sha256 = whole_file_sha256()
                    assert sha256 is not None
            finally:
                if hasher is not None:
                    hasher.stop()
            if identity(fileobj) != before:
                raise changed_during_upload(local)
        if deferred and done.sha256 is None:
            # A server without commit published it unverified: check what it stored.
            done = dataclasses.replace(done, sha256=self.hash(done.path).sha256)
        if done.size != before.size or (sha256 is not None and done.sha256 != sha256):
            raise IntegrityError("INTEGRITY", f"the server stored {done.size} bytes with "
                                 f"SHA-256 {done.sha256}, not what was sent")
        resumed_from = 0 if restarted else first[0].offset
        return PutResult(done.path, done.size, done.sha256, resumed_from, restarted,
                         local, len(first))

    def put_many(self, files: Iterable[str | os.PathLike[str]
                                       | tuple[str | os.PathLike[str], str]], *,
                 overwrite: bool = False, verify: bool = True, window: int = 96,
                 on_result: Callable[[str, PutResult | BaseException], None] | None = None,
                 ) -> list[PutResult | BaseException]:
        """Upload many files over this connection, pipelined.

        Each item is a local path (uploaded under its base name into the remote
        working folder) or a ``(local, remote)`` pair.  Files no bigger than the
        server's ``greeting.inline_max`` go as inline puts (protocol section 7.7):
        request and bytes are sent without waiting, with up to ``window`` puts
        awaiting their ``put.done``.  Bigger files, or all of them if the server
        takes no inline puts, go one by one through :meth:`put`.  With ``verify``
        each small file's SHA-256 is declared up front (hashing a small file is
        cheap) and the server refuses a corrupted one.

        Returns one entry per file, in order: its ``PutResult`` or the exception
        that failed it (``FtpError`` for the server's refusal, ``OSError`` for a
        local file).  Each file fails alone, except that a lost connection fails
        every file not yet answered (``ConnectionLost``); an inline put that was
        sent but not answered may or may not have been stored.  ``on_result``
        (if given) is called with the local name and the entry as each is known.
        """
        items = [(os.fspath(f), None) if not isinstance(f, tuple) else (os.fspath(f[0]), f[1])
                 for f in files]
        results: list[PutResult | BaseException | None] = [None] * len(items)

        def settle(index: int, local: str, outcome: PutResult | BaseException) -> None:
            results[index] = outcome
            if on_result is not None:
                on_result(local, outcome)

        def done(f: InlineFile, outcome: PutDone | FtpError) -> None:
            if isinstance(outcome, PutDone):
                settle(f.index, f.local, PutResult(outcome.path, outcome.size, outcome.sha256,
                                                   0, False, f.local, 1))
            else:
                settle(f.index, f.local, outcome)

        conn = self._require()
        limit = conn.greeting.inline_max if conn.greeting is not None else 0
        pipe = InlinePipe(conn, window, overwrite, done)
        try:
            for index, (local, remote) in enumerate(items):
                remote_path = remote or os.path.basename(local.rstrip(os.sep))
                try:
                    small = _read_small(local, limit)
                except OSError as exc:
                    settle(index, local, exc)
                    continue
                except IntegrityError as exc:
                    settle(index, local, exc)
                    continue
                if small is None:                  # too big for an inline put
                    pipe.drain()
                    try:
                        settle(index, local, self.put(local, remote_path, overwrite=overwrite,
                                                      verify=verify))
                    except ConnectionLost:
                        raise
                    except (FtpError, OSError) as exc:
                        settle(index, local, exc)
                    continue
                sha256 = hashlib.sha256(small).hexdigest() if verify else None
                pipe.send(InlineFile(index, local, remote_path, small, sha256))
            pipe.drain()
        except ConnectionLost as exc:
            for index, (local, _) in enumerate(items):
                if results[index] is None:
                    settle(index, local, exc)
        return results  # type: ignore[return-value]

    def get(self, remote: str, local: str | os.PathLike[str] | None = None, *,
            verify: bool = True, fsync: bool = False, progress: Progress | None = None,
            retries: int = 0, notice: Notice | None = None) -> GetResult:
        """Download into ``local + ".part"``, then rename it into place.

        An existing ``.part`` is resumed from its length.  With ``verify`` the
        whole file's SHA-256 (the ``.part`` prefix included) must equal the
        server's; if a resumed download does not, it starts over once from
        zero, and otherwise the ``.part`` is deleted and ``IntegrityError`` raised.

        The rename is atomic either way: nobody sees ``local`` until it holds
        the whole, verified file.  ``fsync`` also flushes the ``.part`` to disk
        before the rename, and the folder after it, so that the file survives a
        power failure or OS crash right after ``get`` returns.  It is off by
        default, as in rsync, scp and curl: without it the kernel writes the
        file back in its own time (after such a crash the file may be missing
        or incomplete; it is never a mix of two versions while the machine runs).
        """
        local = os.fspath(local) if local is not None else posixpath.basename(
            remote.rstrip("/"))
        if not local:
            raise ValueError(f"no local name for {remote!r}")
        notice = notice or _ignore
        part = part_path(local)
        starts: list[int] = []              # offset of every attempt that got get.ready
        restarted = False

        def attempt(_n: int) -> GetResult:
            nonlocal restarted
            while True:
                result = self._get_once(remote, local, part, verify, fsync, progress,
                                        notice, starts.append)
                restarted = restarted or result.restarted
                if result.sha256 is not None or not verify:
                    return result
                remove_quietly(part)
                if result.resumed_from == 0 or restarted:
                    raise IntegrityError("INTEGRITY", f"SHA-256 of the downloaded {remote!r} "
                                         "differs from the server's; the download was deleted")
                restarted = True
                notice(STALE_PART_NOTICE)

        result = self._with_retries(retries, notice, attempt)
        reused = 0 if restarted else starts[0]
        return GetResult(result.path, result.size, result.sha256, reused, local,
                         restarted, len(starts))

    def _get_once(self, remote: str, local: str, part: str, verify: bool, fsync: bool,
                  progress: Progress | None, notice: Notice,
                  on_start: Callable[[int], None]) -> GetResult:
        """One download attempt.  ``sha256`` None with ``verify`` means mismatch."""
        try:
            offset = os.stat(part).st_size
        except FileNotFoundError:
            offset = 0
        digest = None
        if verify:
            if offset:
                with open(part, "rb") as prefix:
                    digest = hash_file(prefix, offset)
            else:
                digest = hashlib.sha256()
        conn = self._require()
        try:
            rid, ready = start_download(conn, remote, offset, verify)
        except FtpError as exc:
            if exc.code != "OFFSET_MISMATCH" or not offset:
                raise
            remove_quietly(part)              # longer than the remote file: stale
            notice(STALE_PART_NOTICE)
            result = self._get_once(remote, local, part, verify, fsync, progress, notice,
                                    on_start)
            return dataclasses.replace(result, restarted=True)
        on_start(offset)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size != offset:
                # Only when needed: on ext4 a truncation to 0 makes close() start
                # writing the whole file back (auto_da_alloc), ~0.4 s per GiB.
                os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            receive_download(conn, rid, ready, lambda view: write_all(fd, view), digest,
                             progress, threaded_sink=True)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if digest is not None and digest.hexdigest() != ready.sha256:
            return GetResult(ready.path, ready.size, None, offset, local)
        commit(part, local, fsync=fsync)
        return GetResult(ready.path, ready.size, ready.sha256, offset, local)

    def get_stream(self, remote: str, sink: Sink, *, offset: int = 0, verify: bool = False,
                   progress: Progress | None = None, retries: int = 0,
                   notice: Notice | None = None) -> GetResult:
        """Download into ``sink(view)`` instead of a file (benchmarks discard the bytes).

        Each view is valid only during the call.  ``verify`` needs ``offset=0``:
        the digest covers the whole file.
        """
        if verify and offset:
            raise ValueError("verify needs the whole file: offset must be 0")
        notice = notice or _ignore
        digest = hashlib.sha256() if verify else None
        position = offset

        def counting_sink(view: memoryview) -> None:
            nonlocal position
            sink(view)
            position += len(view)

        def attempt(_n: int) -> GetResult:
            rid, ready = start_download(self._require(), remote, position, verify)
            receive_download(self._require(), rid, ready, counting_sink, digest, progress)
            return GetResult(ready.path, ready.size, ready.sha256, offset)

        result = self._with_retries(retries, notice, attempt)
        if digest is not None and digest.hexdigest() != result.sha256:
            raise IntegrityError("INTEGRITY", f"SHA-256 of the streamed {remote!r} differs "
                                 "from the server's")
        return result


def _read_small(local: str, limit: int) -> bytes | None:
    """The whole content of a regular file of at most ``limit`` bytes, else None.

    ``IntegrityError`` if the file changes while it is read.
    """
    with open(local, "rb") as fileobj:
        st = os.fstat(fileobj.fileno())
        if not stat_module.S_ISREG(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file", local)
        if st.st_size > limit:
            return None
        before = identity(fileobj)
        data = fileobj.read(limit + 1)
        if len(data) != before.size or identity(fileobj) != before:
            raise IntegrityError("INTEGRITY", f"local file {local!r} changed while it was "
                                 "being read; it was not uploaded, try again once it is stable")
        return data
