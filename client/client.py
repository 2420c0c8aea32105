"""``Client``: a blocking, one-connection client with one method per command.

It keeps what is needed to rebuild a session after the connection drops --
the credentials given to ``login`` (the session token when the server issued
one), and the working folder -- so that ``put``/``get`` with ``retries=N``
can reconnect and resume where the bytes stopped: from the server's offset for
an upload, from the ``.part`` file's length for a download.  How a transfer
retries, restarts or parks is decided by its policy object
(``put_policy.PutPolicy``, ``get_policy.GetPolicy``, ``retry.Retry``); this
class only owns the connection and the session.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import posixpath
import sys
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

from protocol import BadRequest, encode
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

from .connection import DEFAULT_DIGESTS, Connection
from .errors import AuthError, ConnectionLost, FtpError, RequestError
from .files import STDIO, open_in_place, rename_target, write_all, writes_in_place
from .get_policy import STALE_PART_NOTICE, GetOptions, GetPolicy, StreamPolicy
from .mput import put_many
from .put_policy import RESTARTED_NOTICE, UPLOAD_BUSY_BACKOFF, PutOptions, PutPolicy
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
from .retry import Notice, ignore
from .transfer import Progress, Sink
from .trust import Security

__all__ = ["RESTARTED_NOTICE", "STALE_PART_NOTICE", "UPLOAD_BUSY_BACKOFF", "Client", "Notice"]

R = TypeVar("R", bound=Reply)


class Client:
    """A connection to the daemon.  Use as a context manager::

        with Client("127.0.0.1", 2121) as c:
            c.login("alice", "secret")
            c.put("big.iso")

    It owns the connection, the session (credentials kept in memory for
    ``reconnect``, the working folder) and the request ids.  It does not decide
    how a transfer copes with trouble: ``put``/``get`` hand that to a policy
    object, which reaches the socket only through this client's connection.
    """

    #: Seconds before the first reconnect; doubles per attempt, capped at 4 s.
    retry_backoff = 0.25

    def __init__(self, host: str = "127.0.0.1", port: int = 2121, *,
                 timeout: float | None = 30.0, tls: bool | None = None,
                 digests: tuple[str, ...] | None = None, **trust: Any) -> None:
        #: TLS and server authentication (client/trust.py): ``tls=False`` is plain
        #: text; ``trust`` takes cacert=, trust=, known_hosts=, prompt=, notice=.
        self.security = Security.make(tls, **trust)
        #: What hello offers to verify with.  Default SHA-256 only, so results carry
        #: ``sha256``; ``client.FAST_DIGESTS`` (BLAKE3, then SHA-256) verifies about
        #: twice as fast where the server has BLAKE3, and results then carry ``blake3``.
        self.digests = tuple(digests) if digests is not None else DEFAULT_DIGESTS
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
        self._open(wait=True)
        assert self._conn is not None and self._conn.greeting is not None
        return self._conn.greeting

    def _open(self, *, wait: bool) -> None:
        """A new connection; without ``wait`` its greeting is read with the first reply
        (see ``login``)."""
        self.close()
        self._conn = Connection.open(self.host, self.port, self.timeout,
                                     self.security.options, self.digests, wait=wait)

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def server_hung_up(self) -> bool:
        """Whether the server closed the idle connection (its idle timeout, a
        shutdown): checked without blocking; the connection is closed if so.

        Anything waiting unasked on an idle connection is the server saying
        goodbye (an error with no id, then EOF).
        """
        conn = self._conn
        if conn is None or conn.closed or not conn.pending():
            return False
        conn.close()
        return True

    @property
    def greeting(self) -> Greeting | None:
        return self._conn.greeting if self._conn else None

    def close(self) -> None:
        """Drop the connection without ceremony (the server keeps partials)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def reconnect_fresh(self) -> None:
        """A new connection with no session (after a refused login: some servers
        close after one)."""
        if not self.connected:
            self.connect()

    def reconnect(self) -> None:
        """A fresh connection with the same session: log in again, go back to cwd."""
        cwd = self.cwd
        if self._user is None and self._token is None:
            self.connect()
            return
        self._open(wait=False)          # the login below rides with hello
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

    def connect_login(self, user: str | None = None, password: str | None = None, *,
                      token: str | None = None, want_token: bool = False) -> Session:
        """``connect()`` then ``login()`` in one round trip fewer: the greeting is
        not waited for, so hello and the login leave together (with the end of the
        TLS handshake), and the greeting, hello's reply and the login's come back
        together.  The server is authenticated before either is sent, as always;
        what the greeting would refuse (a full server) is raised here.  In plain
        text it is ``connect()`` then ``login()``: the greeting is read first, so a
        plain-text client that reached a TLS port sends no credential
        (``TLS_REQUIRED``).  Replaces any old connection."""
        self._open(wait=False)
        return self.login(user, password, token=token, want_token=want_token)

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
            conn = self._require()
            request_id = conn.next_id()
            conn.send(_quit_frame(request_id))
            conn.reply(request_id, QuitOk)
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
        # A large folder comes in batches, each sorted (PROTOCOL.md, ls): sort the whole.
        entries = tuple(sorted((entry for page in pages for entry in page.entries),
                               key=lambda entry: entry.name))
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

    def hash(self, path: str, digest: str = "sha256") -> HashResult:
        """The remote file's SHA-256 (as ``sha256sum``), or its BLAKE3 with
        ``digest="blake3"`` (as ``b3sum``; a server that chose BLAKE3 at hello)."""
        r = self._call(Hash, HashOk, path=path, digest=None if digest == "sha256" else digest)
        return HashResult(r.path, r.size, r.sha256, r.blake3)

    # ------------------------------------------------------------ transfers

    def put(self, local: str | os.PathLike[str], remote: str | None = None, *,
            overwrite: bool = False, verify: bool = True, defer_hash: bool = True,
            progress: Progress | None = None, retries: int = 0,
            notice: Notice | None = None, times: bool = True, perms: bool = False) -> PutResult:
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
        ``times``/``perms`` send the modification time / permission bits for the
        server to keep (as ``rsync -t``/``-p``).
        The policy (restart, park, retry) is ``put_policy.PutPolicy``.
        """
        local = os.fspath(local)
        remote_path = remote or os.path.basename(local.rstrip(os.sep))
        options = PutOptions(overwrite, verify, defer_hash, progress, retries,
                             notice or ignore, times, perms)
        return PutPolicy(self, local, remote_path, options).run()

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
        return put_many(self, items, overwrite=overwrite, verify=verify, window=window,
                        on_result=on_result)

    def get(self, remote: str, local: str | os.PathLike[str] | None = None, *,
            verify: bool = True, fsync: bool = False, progress: Progress | None = None,
            retries: int = 0, notice: Notice | None = None, times: bool = True,
            perms: bool = False) -> GetResult:
        """Download into ``local + ".part"``, then rename it into place (with the
        remote modification time unless not ``times``; its mode with ``perms``).

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
        The policy (restart, retry) is ``get_policy.GetPolicy``.
        """
        local = os.fspath(local) if local is not None else posixpath.basename(
            remote.rstrip("/"))
        if not local:
            raise ValueError(f"no local name for {remote!r}")
        options = GetOptions(verify, fsync, progress, retries, notice or ignore, times, perms)
        if writes_in_place(local):
            return self._get_in_place(remote, local, options)
        return GetPolicy(self, remote, rename_target(local), options).run()

    def _get_in_place(self, remote: str, local: str, options: GetOptions) -> GetResult:
        """``-`` (stdout), a device or a FIFO: written straight, never renamed over.

        There is no ``.part`` to resume from and the bytes are out before the
        digest is known: a mismatch is reported (``IntegrityError``) after the fact,
        as ``curl`` does.
        """
        if local == STDIO:
            sys.stdout.flush()
        fd, owned = open_in_place(local)
        try:
            result = StreamPolicy(self, remote, lambda view: write_all(fd, view), 0,
                                  options).run()
            if options.fsync and owned:
                try:
                    os.fsync(fd)
                except OSError:             # a FIFO or a device: nothing to flush
                    pass
        finally:
            if owned:
                os.close(fd)
        return dataclasses.replace(result, local=local)

    def get_stream(self, remote: str, sink: Sink, *, offset: int = 0, verify: bool = False,
                   progress: Progress | None = None, retries: int = 0,
                   notice: Notice | None = None) -> GetResult:
        """Download into ``sink(view)`` instead of a file (benchmarks discard the bytes).

        Each view is valid only during the call.  ``verify`` needs ``offset=0``:
        the digest covers the whole file.
        """
        options = GetOptions(verify, False, progress, retries, notice or ignore)
        return StreamPolicy(self, remote, sink, offset, options).run()


@functools.lru_cache(maxsize=64)
def _quit_frame(request_id: int) -> bytes:
    """``quit``'s frame: the same bytes for the same id, which a reconnecting client
    uses every time (encoded once, not built, validated and encoded per connection,
    issue 17), as ``connection._hello_frame`` is."""
    return encode(Quit(id=request_id))
