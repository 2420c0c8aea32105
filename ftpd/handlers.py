"""One function per command: validated request in, storage call, reply out.

A handler runs on the reactor thread.  Quick storage calls (stat, mkdir,
begin an upload) run inline; slow ones (password hashing, hashing a file,
listing a folder) go to the worker pool through ``conn.submit`` and reply from
the completion.  A handler that raises ``StorageError`` or ``ProtocolError``
gets an error reply from the dispatcher; the state only advances on success.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import protocol.messages as m
from protocol import PROTOCOL_VERSION, ProtocolError
from storage import AccountDisabled, AuthFailed, BadPassword, BadUsername, NoSuchUser, StorageError

from . import supervisor
from .connection import Connection, Download

if TYPE_CHECKING:
    from storage import Store

log = logging.getLogger("ftpd.handlers")

#: Seconds a login waits before asking the throttle again for a password-check slot.
ADMIT_RETRY = 0.05
#: A page of a listing stays well under the 64 KiB every peer must accept.
PAGE_BUDGET = 48 * 1024

Handler = Callable[[Connection, Any], None]
HANDLERS: dict[str, Handler] = {}


def handles(cmd: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[cmd] = fn
        return fn
    return register


def _store(conn: Connection) -> Store:
    return conn.server.store


# ---------------------------------------------------------------- session


@handles("hello")
def hello(conn: Connection, req: m.Hello) -> None:
    if req.protocol != PROTOCOL_VERSION:
        conn.fatal("VERSION_MISMATCH",
                   f"protocol {req.protocol} not supported; this server speaks {PROTOCOL_VERSION}",
                   req.id, {"supported": [PROTOCOL_VERSION]})
        return
    cfg = conn.server.config
    conn.data_frame = min(cfg.max_data_frame, req.max_data or cfg.max_data_frame)
    conn.advance("hello")
    conn.send(m.HelloOk(id=req.id, protocol=PROTOCOL_VERSION, max_data=conn.data_frame))


@handles("register")
def register(conn: Connection, req: m.Register) -> None:
    if not conn.server.config.allow_register:
        conn.reply_error(req.id, "REGISTRATION_DISABLED", "this server does not allow registration")
        return
    store = _store(conn)
    # Throttled per address like a failed login, so probing names costs what guessing does.
    locked = conn.server.throttle.locked(None, conn.ip)
    if locked:
        conn.reply_error(req.id, "LOCKED_OUT", f"too many attempts; try again in "
                         f"{int(locked) + 1} s", {"retry_after": int(locked) + 1})
        return
    delay = conn.server.throttle.register_attempt(conn.ip)

    def done(info: Any, error: BaseException | None) -> None:
        if error is not None and not isinstance(error, StorageError):
            raise error
        conn.server.timers.call_later(delay, lambda: answer(info, error))

    def answer(info: Any, error: StorageError | None) -> None:
        if conn.closed:
            return
        if error is not None:
            conn.reply_storage_error(req.id, error)
        else:
            log.info("register %s user=%s", conn.peer, info.name)
            conn.send(m.RegisterOk(id=req.id, user=info.name))
        conn.end_async()

    conn.submit(req.id, lambda: store.create_user(req.user, req.password), done, cpu=True)


@handles("login")
def login(conn: Connection, req: m.Login) -> None:
    server = conn.server
    throttle = server.throttle
    locked = throttle.locked(req.user, conn.ip, token=req.token is not None)
    if locked:
        log.info("login refused %s user=%s: locked out", conn.peer, req.user)
        conn.reply_error(req.id, "LOCKED_OUT",
                         f"too many failed logins; try again in {int(locked) + 1} s",
                         {"retry_after": int(locked) + 1})
        return
    store = _store(conn)
    if req.token is not None:
        try:
            info = store.verify_token(req.token)
            if req.user is not None and req.user != info.name:
                raise AuthFailed("invalid user name, password or token")
        except AuthFailed:
            _login_failed(conn, req)
            return
        _login_ok(conn, req, info.name)
        return

    if not throttle.admit(req.user, conn.ip):
        # As many checks as the lockout allows are running for this user or address:
        # wait for one to finish rather than hash a guess past the lockout.
        conn.begin_async()
        server.timers.call_later(ADMIT_RETRY, lambda: _retry_login(conn, req))
        return

    def done(info: Any, error: BaseException | None) -> None:
        throttle.release(req.user, conn.ip)
        if isinstance(error, AuthFailed | BadUsername | BadPassword | NoSuchUser):
            _login_failed(conn, req)
            return
        if isinstance(error, AccountDisabled):
            log.info("login refused %s user=%s: disabled", conn.peer, req.user)
            conn.reply_error(req.id, "ACCOUNT_DISABLED", "this account is disabled")
        elif error is not None:
            raise error
        else:
            _login_ok(conn, req, info.name)
        conn.end_async()

    try:
        conn.submit(req.id, lambda: store.verify_password(req.user, req.password), done,
                    if_closed=lambda *_: throttle.release(req.user, conn.ip), cpu=True)
    except BaseException:
        throttle.release(req.user, conn.ip)
        raise


def _retry_login(conn: Connection, req: m.Login) -> None:
    """A login that waited for the throttle's budget tries again."""
    if conn.closed:
        return
    conn.busy = False
    login(conn, req)
    if not conn.busy:          # answered at once (e.g. LOCKED_OUT): take up waiting requests
        conn.end_async()


def _login_failed(conn: Connection, req: m.Login) -> None:
    """Delay this connection only, then say AUTH_FAILED."""
    delay = conn.server.throttle.failure(req.user, conn.ip)
    log.info("login failed %s user=%s delay=%.2fs", conn.peer, req.user or "(token)", delay)
    conn.begin_async()

    def reply() -> None:
        if conn.closed:
            return
        conn.reply_error(req.id, "AUTH_FAILED", "invalid user name, password or token")
        conn.end_async()

    conn.server.timers.call_later(delay, reply)


def _login_ok(conn: Connection, req: m.Login, user: str) -> None:
    server = conn.server
    server.throttle.success(user, conn.ip)
    token = server.store.issue_token(user, server.config.token_ttl) if req.want_token else None
    conn.user = user
    conn.cwd = "/"
    conn.advance("login")
    log.info("login ok %s user=%s via=%s", conn.peer, user, "token" if req.token else "password")
    conn.send(m.LoginOk(id=req.id, user=user, cwd="/", token=token))


@handles("logout")
def logout(conn: Connection, req: m.Logout) -> None:
    log.info("logout %s user=%s", conn.peer, conn.user)
    conn.user = None
    conn.cwd = "/"
    conn.advance("logout")
    conn.send(m.LogoutOk(id=req.id))


@handles("whoami")
def whoami(conn: Connection, req: m.Whoami) -> None:
    conn.send(m.WhoamiOk(id=req.id, user=conn.user))


@handles("ping")
def ping(conn: Connection, req: m.Ping) -> None:
    conn.send(m.Pong(id=req.id, payload=req.payload, worker=supervisor.current_worker))


@handles("quit")
def quit_(conn: Connection, req: m.Quit) -> None:
    conn.send(m.QuitOk(id=req.id))
    conn.close_when_flushed("quit")


# ---------------------------------------------------------------- files


@handles("pwd")
def pwd(conn: Connection, req: m.Pwd) -> None:
    conn.send(m.PwdOk(id=req.id, path=conn.cwd))


@handles("cd")
def cd(conn: Connection, req: m.Cd) -> None:
    conn.cwd = _store(conn).is_dir(conn.user, req.path, conn.cwd)
    conn.send(m.CdOk(id=req.id, path=conn.cwd))


def _entry(e: Any) -> m.Entry:
    return m.Entry(name=e.name, type=e.type, size=e.size, mtime=max(0.0, float(e.mtime)))


def _pages(make: Callable[[tuple[Any, ...], bool], m.Reply], items: list[Any],
           size_of: Callable[[Any], int]) -> Iterator[m.Reply]:
    """Split ``items`` into replies that each stay under PAGE_BUDGET bytes."""
    page: list[Any] = []
    used = 0
    for item in items:
        cost = size_of(item)
        if page and used + cost > PAGE_BUDGET:
            yield make(tuple(page), True)
            page, used = [], 0
        page.append(item)
        used += cost
    yield make(tuple(page), False)


def _entry_cost(e: m.Entry) -> int:
    return 80 + len(e.name.encode("utf-8", "replace")) * 6   # worst case: \\u escapes


@handles("ls")
def ls(conn: Connection, req: m.Ls) -> None:
    store, user, cwd = _store(conn), conn.user, conn.cwd

    def job() -> tuple[str, list[m.Entry]]:
        path = store.resolve(user, req.path, cwd)
        return path, [_entry(e) for e in store.list_dir(user, path, "/")]

    def done(result: Any, error: BaseException | None) -> None:
        if error is not None:
            raise error
        path, entries = result
        conn.start_pager(_pages(
            lambda page, more: m.LsOk(id=req.id, path=path, entries=page, more=more),
            entries, _entry_cost))
        conn.end_async()            # after the pager is in place: waiting requests stay behind it

    conn.submit(req.id, job, done)


@handles("stat")
def stat(conn: Connection, req: m.Stat) -> None:
    entry = _store(conn).stat(conn.user, req.path, conn.cwd)
    conn.send(m.StatOk(id=req.id, path=entry.path, entry=_entry(entry)))


@handles("mkdir")
def mkdir(conn: Connection, req: m.Mkdir) -> None:
    path = _store(conn).mkdir(conn.user, req.path, conn.cwd, parents=req.parents)
    conn.send(m.MkdirOk(id=req.id, path=path))


@handles("rmdir")
def rmdir(conn: Connection, req: m.Rmdir) -> None:
    path = _store(conn).rmdir(conn.user, req.path, conn.cwd)
    conn.send(m.RmdirOk(id=req.id, path=path))


@handles("rm")
def rm(conn: Connection, req: m.Rm) -> None:
    path = _store(conn).remove(conn.user, req.path, conn.cwd)
    conn.send(m.RmOk(id=req.id, path=path))


@handles("mv")
def mv(conn: Connection, req: m.Mv) -> None:
    src, dst = _store(conn).rename(conn.user, req.src, req.dst, conn.cwd, overwrite=req.overwrite)
    conn.send(m.MvOk(id=req.id, src=src, dst=dst))


@handles("quota")
def quota(conn: Connection, req: m.Quota) -> None:
    u = _store(conn).usage(conn.user)
    conn.send(m.QuotaOk(id=req.id, used=u.used, reserved=u.reserved, limit=u.limit, free=u.free))


@handles("hash")
def hash_(conn: Connection, req: m.Hash) -> None:
    store, user, cwd = _store(conn), conn.user, conn.cwd
    path = store.resolve(user, req.path, cwd)
    cached = store.cached_hash(user, path)
    if cached is not None:
        conn.send(m.HashOk(id=req.id, path=path, sha256=cached[0], size=cached[1]))
        return

    def done(result: Any, error: BaseException | None) -> None:
        if error is not None:
            raise error
        conn.send(m.HashOk(id=req.id, path=path, sha256=result[0], size=result[1]))
        conn.end_async()

    conn.submit(req.id, lambda: store.file_hash(user, path), done)


# ---------------------------------------------------------------- transfers


@handles("put")
def put(conn: Connection, req: m.Put) -> None:
    server = conn.server
    if server.stopping:
        raise ProtocolError("the server is shutting down", code="SHUTTING_DOWN")
    if req.inline:
        limit = server.config.inline_max
        refusal = None if req.size <= limit else m.ErrorReply(
            id=req.id, code="BAD_REQUEST",
            message=f"an inline put may declare at most {limit} bytes; use a resumable put",
            details={"inline_max": limit})
        conn.start_inline(req, refusal)     # replies put.done (or the error) in order
        return
    store, user, cwd = _store(conn), conn.user, conn.cwd
    # Taken now, not when the worker is done, so racing puts cannot pass the limit.
    if not server.take_upload_slot(user):
        raise ProtocolError(
            f"at most {server.config.max_uploads_per_user} uploads at once per user",
            code="TOO_MANY_UPLOADS")

    def done(upload: Any, error: BaseException | None) -> None:
        if error is not None:
            server.free_upload_slot(user)
            raise error
        log.info("upload start %s user=%s path=%s size=%d offset=%d%s", conn.peer, user,
                 upload.path, req.size, upload.offset,
                 " (restarted)" if upload.restarted else "")
        conn.send(m.PutReady(id=req.id, path=upload.path, offset=upload.offset,
                             restarted=upload.restarted))
        conn.busy = False             # the begin is over ...
        conn.start_upload(req, upload)
        if not conn.busy:             # ... unless a commit started right away (nothing to send)
            conn.end_async()

    def closed_meanwhile(upload: Any, error: BaseException | None) -> None:
        server.free_upload_slot(user)
        if upload is not None:
            upload.release()          # nobody will write it now; it stays resumable

    # begin_upload writes the database and creates the partial: worker work.
    conn.submit(req.id, lambda: store.begin_upload(user, req.path, req.size, req.sha256,
                                                   cwd=cwd, overwrite=req.overwrite),
                done, if_closed=closed_meanwhile)


@handles("get")
def get(conn: Connection, req: m.Get) -> None:
    store, user = _store(conn), conn.user
    path = store.resolve(user, req.path, conn.cwd)
    fd, size = store.open_read(user, path)
    try:
        if req.offset > size:
            raise ProtocolError(f"offset {req.offset} is past the end ({size} bytes)",
                                code="OFFSET_MISMATCH", expected=size, got=req.offset)
        cached = store.cached_hash(user, path) if req.verify else None
        if cached is not None and cached[1] != size:
            cached = None
    except BaseException:
        os.close(fd)
        raise

    def begin(sha256: str | None) -> None:
        conn.send(m.GetReady(id=req.id, path=path, size=size, offset=req.offset, sha256=sha256))
        conn.start_download(Download(req, path, fd, size, req.offset, conn.data_frame))

    if not req.verify or cached is not None:
        begin(cached[0] if cached else None)
        return

    def done(result: Any, error: BaseException | None) -> None:
        if error is None and result[1] != size:
            error = StorageError("the file changed while it was being hashed; try again")
        if error is not None:
            os.close(fd)
            raise error
        begin(result[0])
        conn.end_async()            # waiting requests stay behind the download

    def job() -> tuple[str, int]:
        return store.file_hash(user, path)

    try:
        conn.submit(req.id, job, done)
    except BaseException:
        os.close(fd)
        raise


@handles("commit")
def commit(conn: Connection, req: m.Commit) -> None:
    conn.commit_deferred(req)        # replies put.done (or the error) when the worker is done


@handles("cancel")
def cancel(conn: Connection, req: m.Cancel) -> None:
    if conn.upload is not None:
        conn.cancel_upload(req)
        conn.send(m.CancelOk(id=req.id))
    elif conn.download is not None:
        conn.cancel_download(req)       # replies at the next frame boundary


@handles("uploads")
def uploads(conn: Connection, req: m.Uploads) -> None:
    infos = [m.UploadInfo(path=p.path, size=p.size, offset=p.offset,
                          updated=max(0.0, float(p.updated)), sha256=p.sha256)
             for p in _store(conn).list_uploads(conn.user)]
    conn.start_pager(_pages(
        lambda page, more: m.UploadsOk(id=req.id, uploads=page, more=more),
        infos, lambda info: 200 + len(info.path.encode("utf-8", "replace")) * 6))


@handles("abort")
def abort(conn: Connection, req: m.Abort) -> None:
    path = _store(conn).abort_upload(conn.user, req.path, conn.cwd)
    log.info("upload aborted %s user=%s path=%s", conn.peer, conn.user, path)
    conn.send(m.AbortOk(id=req.id, path=path))


missing = set(m.REQUESTS) - set(HANDLERS)
if missing:  # pragma: no cover - a development-time guard
    raise RuntimeError(f"commands without a handler: {sorted(missing)}")
