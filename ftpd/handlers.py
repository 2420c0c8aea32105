"""One function per command: validated request in, an outcome out.

A handler runs on the reactor thread.  Quick storage calls (stat, mkdir)
run inline and the handler returns the reply; slow ones (password hashing,
hashing a file, listing a folder, beginning an upload) are returned as a
``Deferred``: the job for a worker and the continuation that turns its result
into the reply.  A ``StorageError`` or ``ProtocolError`` raised by a handler
or a continuation becomes the error reply (``ftpd.errors``); the state only
advances on success.  Handlers see the session through ``HandlerSession``
(ftpd/jobs.py) and never mark it busy or resume it: the session does that
for every deferred outcome alike.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import protocol.messages as m
from protocol import PROTOCOL_VERSION, ProtocolError, encode
from protocol.digests import SHA256, choose
from storage import (
    AccountDisabled,
    AuthFailed,
    BadPassword,
    BadUsername,
    NoSuchUser,
    StorageError,
    StorageIOError,
)

from . import logs, supervisor
from .digests import negotiated
from .jobs import HANDLERS, Deferred, Finish, Outcome, handles
from .jobs import HandlerSession as Session
from .listing import entry_of  # (and ls, uploads, hash register themselves there)
from .transfers import DownloadProducer
from .walks import close_workdir, plain_path, walked

log = logging.getLogger("ftpd.handlers")

#: Seconds a login waits before asking the throttle again for a password-check slot.
ADMIT_RETRY = 0.05
#: Encoded replies kept per process (hello's, quit's and a token login's, by what they say).
FRAME_CACHE_SIZE = 256

_frames: dict[tuple[Any, ...], bytes] = {}


def _frame(key: tuple[Any, ...], make: Any) -> bytes:
    """The encoded frame of a reply that depends only on ``key``: made and encoded
    once (a reconnecting client's ``hello``, ``login`` and ``quit`` carry the same
    ids and get the same answers every time: about 30 us of building, validating
    and encoding per connection, issue 17).  Never a reply that carries a secret.
    Bounded: cleared when full."""
    frame = _frames.get(key)
    if frame is None:
        if len(_frames) >= FRAME_CACHE_SIZE:
            _frames.clear()
        frame = _frames[key] = encode(make())
    return frame



# ---------------------------------------------------------------- session


@handles("hello")
def hello(session: Session, req: m.Hello) -> Outcome:
    if req.protocol != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol {req.protocol} not supported; this server speaks {PROTOCOL_VERSION}",
            code="VERSION_MISMATCH", supported=[PROTOCOL_VERSION])
    cfg = session.ctx.config
    session.data_frame = min(cfg.max_data_frame, req.max_data or cfg.max_data_frame)
    # BLAKE3 only from a store that verifies and caches it (not the object store).
    session.digest = choose(req.digests, getattr(session.ctx.store, "digests", (SHA256,)))
    session.advance("hello")
    max_data, digest = session.data_frame, session.digest
    return _frame(("hello", req.id, max_data, digest), lambda: m.HelloOk(
        id=req.id, protocol=PROTOCOL_VERSION, max_data=max_data, streams=True, metadata=True,
        digest=digest))


@handles("register")
def register(session: Session, req: m.Register) -> Outcome:
    ctx = session.ctx
    if not ctx.config.allow_register:
        raise ProtocolError("this server does not allow registration",
                            code="REGISTRATION_DISABLED")
    store = ctx.store
    # Throttled per address like a failed login, so probing names costs what guessing does.
    locked = ctx.throttle.locked(None, session.ip)
    if locked:
        raise ProtocolError(f"too many attempts; try again in {int(locked) + 1} s",
                            code="LOCKED_OUT", retry_after=int(locked) + 1)
    delay = ctx.throttle.register_attempt(session.ip)

    def done(info: Any) -> Outcome:
        def answer(_: Any) -> Outcome:
            log.info("register %s user=%s", session.peer, info.name)
            return m.RegisterOk(id=req.id, user=info.name)
        return Deferred.after(delay, answer)

    def refused(error: BaseException) -> Outcome:
        if not isinstance(error, StorageError):
            raise error

        def answer(_: Any) -> Outcome:
            raise error
        return Deferred.after(delay, answer)

    return Deferred(lambda: store.create_user(req.user, req.password), done, failed=refused,
                    cpu=True)


@handles("login")
def login(session: Session, req: m.Login) -> Outcome:
    ctx = session.ctx
    throttle = ctx.throttle
    store = ctx.store
    if req.token is not None:
        # The token first (one indexed read, no hash), and with it the address's
        # lockout and the user name's record: one statement (``throttle.verify_token``).
        try:
            info, records = throttle.verify_token(store, req.token, session.ip)
            if req.user is not None and req.user != info.name:
                raise AuthFailed("invalid user name, password or token")
        except AuthFailed:
            _refuse_if_locked(session, req, throttle.locked(req.user, session.ip, token=True))
            return _login_failed(session, req)
        locked, user_state = throttle.token_login(info.name, session.ip, records)
        _refuse_if_locked(session, req, locked)
        return _login_ok(session, req, info, user_state)
    _refuse_if_locked(session, req, throttle.locked(req.user, session.ip))

    if not throttle.admit(req.user, session.ip):
        # As many checks as the lockout allows are running for this user or address:
        # wait for one to finish rather than hash a guess past the lockout.
        return Deferred.after(ADMIT_RETRY, lambda _: login(session, req))

    def release(*_: Any) -> None:
        throttle.release(req.user, session.ip)

    def failed(error: BaseException) -> Outcome:
        if isinstance(error, AuthFailed | BadUsername | BadPassword | NoSuchUser):
            return _login_failed(session, req)
        if isinstance(error, AccountDisabled):
            log.info("login refused %s user=%s: disabled", session.peer, req.user)
            raise ProtocolError("this account is disabled", code="ACCOUNT_DISABLED")
        raise error

    try:
        return Deferred(lambda: store.verify_password(req.user, req.password),
                        lambda info: _login_ok(session, req, info), failed=failed,
                        always=release, cpu=True)
    except BaseException:
        release()
        raise


def _refuse_if_locked(session: Session, req: m.Login, locked: float) -> None:
    """LOCKED_OUT (nothing recorded, nothing hashed) while a lockout binds this attempt."""
    if locked:
        log.info("login refused %s user=%s: locked out", session.peer, req.user)
        raise ProtocolError(f"too many failed logins; try again in {int(locked) + 1} s",
                            code="LOCKED_OUT", retry_after=int(locked) + 1)


def _login_failed(session: Session, req: m.Login) -> Outcome:
    """Delay this session only, then say AUTH_FAILED."""
    delay = session.ctx.throttle.failure(req.user, session.ip)
    log.info("login failed %s user=%s delay=%.2fs", session.peer, req.user or "(token)", delay)

    def reply(_: Any) -> Outcome:
        raise ProtocolError("invalid user name, password or token", code="AUTH_FAILED")

    return Deferred.after(delay, reply)


def _login_ok(session: Session, req: m.Login, info: Any, user_state: Any = None) -> Outcome:
    ctx = session.ctx
    user = info.name
    if not session.begin_login(user, info.uid, info.generation):     # issue 13, item 16
        log.info("login refused %s user=%s: %d sessions already", session.peer, user,
                 ctx.config.max_connections_per_user)
        raise ProtocolError(f"at most {ctx.config.max_connections_per_user} sessions at once "
                            "per user", code="TOO_MANY_CONNECTIONS")
    ctx.throttle.success(user, session.ip, (info.uid, info.generation), user_state)

    def logged_in(token: str | None) -> Outcome:
        session.user = user
        session.cwd = "/"
        session.advance("login")
        logs.info(log, "login ok %s user=%s via=%s", session.peer, user,
                  "token" if req.token else "password")
        if token is not None:                   # a new secret: never kept
            return m.LoginOk(id=req.id, user=user, cwd="/", token=token)
        return _frame(("login", req.id, user), lambda: m.LoginOk(id=req.id, user=user, cwd="/"))

    if not req.want_token:
        return logged_in(None)
    if getattr(ctx.store, "remote", False):
        # On the object backend a new token is a PostgreSQL insert: a worker's job,
        # never a round trip (or an outage's timeout) on the reactor.
        def failed(error: BaseException) -> Outcome:
            session.end_login()
            raise error
        return Deferred(lambda: ctx.store.issue_token(user, ctx.config.token_ttl),
                        logged_in, failed=failed, operation="login")
    return logged_in(ctx.store.issue_token(user, ctx.config.token_ttl))


@handles("logout")
def logout(session: Session, req: m.Logout) -> Outcome:
    log.info("logout %s user=%s", session.peer, session.user)
    session.end_login()
    session.user = None
    close_workdir(session.cwd)
    session.cwd = "/"
    session.advance("logout")
    return m.LogoutOk(id=req.id)


@handles("whoami")
def whoami(session: Session, req: m.Whoami) -> Outcome:
    return m.WhoamiOk(id=req.id, user=session.user)


@handles("ping")
def ping(session: Session, req: m.Ping) -> Outcome:
    return m.Pong(id=req.id, payload=req.payload, worker=supervisor.current_worker)


_QUIT = Finish("quit")


@handles("quit")
def quit_(session: Session, req: m.Quit) -> Outcome:
    return _frame(("quit", req.id), lambda: m.QuitOk(id=req.id)), _QUIT


# ---------------------------------------------------------------- files


@handles("pwd")
def pwd(session: Session, req: m.Pwd) -> Outcome:
    return m.PwdOk(id=req.id, path=plain_path(session.cwd))


@handles("cd")
def cd(session: Session, req: m.Cd) -> Outcome:
    # The new folder is held open (paths below it walk from it) and opened on a worker.
    store, user, cwd = session.ctx.store, session.user, session.cwd

    def opened(workdir: Any) -> Outcome:
        close_workdir(session.cwd)
        session.cwd = workdir
        return m.CdOk(id=req.id, path=workdir.path)

    return Deferred(lambda: store.open_workdir(user, req.path, cwd), opened,
                    if_closed=lambda workdir, _: close_workdir(workdir))


@handles("stat")
def stat(session: Session, req: m.Stat) -> Outcome:
    store, user, cwd = session.ctx.store, session.user, session.cwd
    return walked(cwd, (req.path,), lambda: store.stat(user, req.path, cwd),
                  lambda entry: m.StatOk(id=req.id, path=entry.path, entry=entry_of(entry)))


@handles("mkdir")
def mkdir(session: Session, req: m.Mkdir) -> Outcome:
    store, user, cwd = session.ctx.store, session.user, session.cwd

    def made(path: str) -> Outcome:
        _audit(session, "mkdir", path)
        return m.MkdirOk(id=req.id, path=path)
    return walked(cwd, (req.path,),
                  lambda: store.mkdir(user, req.path, cwd, parents=req.parents), made)


@handles("rmdir")
def rmdir(session: Session, req: m.Rmdir) -> Outcome:
    store, user, cwd = session.ctx.store, session.user, session.cwd

    def removed(path: str) -> Outcome:
        _audit(session, "rmdir", path)
        return m.RmdirOk(id=req.id, path=path)
    return walked(cwd, (req.path,), lambda: store.rmdir(user, req.path, cwd), removed)


@handles("rm")
def rm(session: Session, req: m.Rm) -> Outcome:
    store, user, cwd = session.ctx.store, session.user, session.cwd

    def removed(path: str) -> Outcome:
        _audit(session, "rm", path)
        return m.RmOk(id=req.id, path=path)
    return walked(cwd, (req.path,), lambda: store.remove(user, req.path, cwd), removed)


@handles("mv")
def mv(session: Session, req: m.Mv) -> Outcome:
    store, user, cwd = session.ctx.store, session.user, session.cwd

    def moved(paths: tuple[str, str]) -> Outcome:
        _audit(session, "mv", paths[0], paths[1])
        return m.MvOk(id=req.id, src=paths[0], dst=paths[1])
    return walked(cwd, (req.src, req.dst),
                  lambda: store.rename(user, req.src, req.dst, cwd, overwrite=req.overwrite),
                  moved)


def _audit(session: Session, action: str, path: str, dst: str | None = None) -> None:
    """The audit trail of changes to the tree (issue 15): who changed what, at INFO."""
    if dst is None:
        log.info("%s %s user=%s path=%s", action, session.peer, session.user, path)
    else:
        log.info("%s %s user=%s path=%s to=%s", action, session.peer, session.user, path, dst)


@handles("quota")
def quota(session: Session, req: m.Quota) -> Outcome:
    u = session.ctx.store.usage(session.user)
    return m.QuotaOk(id=req.id, used=u.used, reserved=u.reserved, limit=u.limit, free=u.free)


# ---------------------------------------------------------------- transfers


@handles("put")
def put(session: Session, req: m.Put) -> Outcome:
    ctx = session.ctx
    if ctx.stopping:
        raise ProtocolError("the server is shutting down", code="SHUTTING_DOWN")
    if req.inline:
        limit = ctx.config.inline_max
        refused = None if req.size <= limit else m.ErrorReply(
            id=req.id, code="BAD_REQUEST",
            message=f"an inline put may declare at most {limit} bytes; use a resumable put",
            details={"inline_max": limit})
        if refused is None and req.declared not in (None, SHA256, session.digest):
            refused = m.ErrorReply(id=req.id, code="BAD_REQUEST",
                                   message=f"digest {req.declared!r} was not negotiated at hello",
                                   details={"digest": session.digest})
        session.start_inline(req, refused)     # replies put.done (or the error) in order
        return None
    negotiated(session, req.declared or req.deferred)
    store, user, cwd = ctx.store, session.user, session.cwd
    assert user is not None
    # Taken now, not when the worker is done, so racing puts cannot pass the limit.
    if not ctx.uploads.take(user):
        raise ProtocolError(f"at most {ctx.config.max_uploads_per_user} uploads at once per user",
                            code="TOO_MANY_UPLOADS")

    def begun(upload: Any) -> Outcome:
        log.info("upload start %s user=%s path=%s size=%s offset=%d%s", session.peer, user,
                 upload.path, "stream" if req.stream else req.size, upload.offset,
                 " (restarted)" if upload.restarted else "")
        ready = m.PutReady(id=req.id, path=upload.path, offset=upload.offset,
                           restarted=upload.restarted)
        return ready, session.start_upload(req, upload)   # (a commit, if nothing is to come)

    def failed(error: BaseException) -> Outcome:
        ctx.uploads.free(user)
        raise error

    def closed_meanwhile(upload: Any, error: BaseException | None) -> None:
        ctx.uploads.free(user)
        if upload is not None:
            upload.release()          # nobody will write it now; it stays resumable

    def begin() -> Any:
        if req.stream:
            return store.begin_stream(user, req.path, cwd=cwd, overwrite=req.overwrite,
                                      size_hint=req.size_hint)
        if req.blake3 is not None:      # (only a store that lists BLAKE3 gets the keyword)
            return store.begin_upload(user, req.path, req.size, None, cwd=cwd,
                                      overwrite=req.overwrite, blake3=req.blake3)
        return store.begin_upload(user, req.path, req.size, req.sha256, cwd=cwd,
                                  overwrite=req.overwrite)

    # begin_upload writes the database and creates the partial: worker work.
    return Deferred(begin, begun, failed=failed, if_closed=closed_meanwhile)


@handles("get")
def get(session: Session, req: m.Get) -> Outcome:
    store, user, cwd = session.ctx.store, session.user, session.cwd
    algo = negotiated(session, req.digest)
    path = store.resolve(user, req.path, cwd)

    def open_file() -> tuple[int, int, tuple[str, int] | None]:
        fd, size = store.open_read(user, path, cwd)
        try:
            if req.offset > size:
                raise ProtocolError(f"offset {req.offset} is past the end ({size} bytes)",
                                    code="OFFSET_MISMATCH", expected=size, got=req.offset)
            # By the opened descriptor, never by the path: another session may replace the
            # file meanwhile, and get.ready must announce the SHA-256 of these very bytes.
            cached = store.cached_hash_fd(fd, algo) if req.verify else None
            if cached is not None and cached[1] != size:
                cached = None
        except BaseException:
            os.close(fd)
            raise
        return fd, size, cached

    def closed_meanwhile(result: Any, _: Any = None) -> None:
        if result is not None:
            os.close(result[0])

    return walked(cwd, (req.path,), open_file, lambda opened: _send_file(session, req, path,
                                                                          *opened, algo),
                  if_closed=closed_meanwhile)


def _send_file(session: Session, req: m.Get, path: str, fd: int, size: int,
               cached: tuple[str, int] | None, algo: str) -> Outcome:
    store = session.ctx.store

    def begin(digest: str | None) -> Outcome:
        mtime, mode = _metadata(fd)
        session.start_download(DownloadProducer(req, path, fd, size, req.offset,
                                                session.data_frame))
        sha256, blake3 = (None, digest) if algo != SHA256 else (digest, None)
        return m.GetReady(id=req.id, path=path, size=size, offset=req.offset, sha256=sha256,
                          mtime=mtime, mode=mode, blake3=blake3)

    if not req.verify or cached is not None:
        return begin(cached[0] if cached else None)

    def hashed(result: tuple[str, int]) -> Outcome:
        if result[1] != size:
            os.close(fd)
            raise StorageIOError("the file changed while it was being hashed; try again")
        return begin(result[0])

    def failed(error: BaseException) -> Outcome:
        os.close(fd)
        raise error

    def closed_meanwhile(*_: Any) -> None:
        os.close(fd)

    return Deferred(lambda: store.hash_fd(fd, algo), hashed, failed=failed,
                    if_closed=closed_meanwhile)


def _metadata(fd: int) -> tuple[float | None, int | None]:
    """The open file's modification time and permission bits, for ``get.ready``."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None, None
    return max(0.0, st.st_mtime), st.st_mode & 0o777


@handles("commit")
def commit(session: Session, req: m.Commit) -> Outcome:
    return session.commit_upload(req)   # put.done (or the error) when the worker is done


@handles("cancel")
def cancel(session: Session, req: m.Cancel) -> Outcome:
    return session.cancel_transfer(req)  # a download's is answered at a frame boundary


@handles("abort")
def abort(session: Session, req: m.Abort) -> Outcome:
    path = session.ctx.store.abort_upload(session.user, req.path, session.cwd)
    log.info("upload aborted %s user=%s path=%s", session.peer, session.user, path)
    return m.AbortOk(id=req.id, path=path)


missing = set(m.REQUESTS) - set(HANDLERS)
if missing:  # pragma: no cover - a development-time guard
    raise RuntimeError(f"commands without a handler: {sorted(missing)}")
