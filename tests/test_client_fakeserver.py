"""A tiny in-memory fake of the daemon, for testing the client on its own.

It speaks the real wire protocol (``protocol.MessageStream("server")`` and
``protocol.encode``) on a real socket, one thread per connection, and can be
told to misbehave in the ways a client must survive: drop the connection in
the middle of a transfer, lie about a SHA-256, send an oversized or surplus
DATA frame, go silent, refuse the connection, or predate ``commit``.  Every
request it receives is recorded in ``requests`` so tests can check what the
client asked for.

Test modules build their ``fake`` fixture with ``serve_fake``.
"""

from __future__ import annotations

import hashlib
import posixpath
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from protocol import DataChunk, MessageStream, ProtocolError, Rejected, data_header, encode
from protocol import messages as m


@dataclass
class Partial:
    size: int
    sha256: str | None
    data: bytearray = field(default_factory=bytearray)


@dataclass
class Upload:
    rid: int
    path: str
    partial: Partial
    deferred: bool = False          # defer_sha256: wait for commit after the last byte


@dataclass
class CommitSeen:
    """A commit that arrived during an upload, and what the server held then."""

    request: m.Commit
    held: int                       # bytes of the partial when the commit arrived
    size: int                       # the declared size
    sent: int                       # DATA bytes received on this connection so far


class Hangup(Exception):
    """Close this connection now (a simulated crash or network drop)."""


class FakeServer:
    def __init__(self, *, max_data: int = 1024 * 1024, register: bool = False) -> None:
        self.max_data = max_data
        self.register = register
        self.users: dict[str, str] = {"alice": "secret"}
        self.tokens: dict[str, str] = {}
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = {"/"}
        self.partials: dict[str, Partial] = {}
        self.requests: list[m.Request] = []
        self.put_offsets: list[int] = []           # offset of every put.ready sent
        self.commits: list[CommitSeen] = []        # every commit received during an upload
        self.quota_limit = 10**12
        # misbehaviour knobs
        self.greeting_error: str | None = None
        self.lie_sha = False
        self.corrupt_put = False
        self.oversize_frame = False
        self.extra_data = False
        self.drop_get_after: int | None = None     # one-shot: payload bytes, then hang up
        self.drop_put_after: int | None = None     # one-shot: received bytes, then hang up
        self.get_frame: int | None = None          # DATA frame size to send
        self.trickle: tuple[int, float] | None = None   # get: (bytes, seconds) per piece
        self.silent = False
        self.legacy = False                         # no commit: ignores defer_sha256
        self.ls_page = 1000
        self.extra_entries: list[m.Entry] = []
        self.fatal_on: dict[str, str] = {}          # cmd -> fatal code sent with id null
        self.lock = threading.RLock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.listener.getsockname()[:2]
        self.connections = 0
        self._socks: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    # ------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        for s in list(self._socks):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._socks.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def requests_of(self, cls: type) -> list[Any]:
        return [r for r in self.requests if isinstance(r, cls)]

    def _serve(self, sock: socket.socket) -> None:
        conn = _Conn(self, sock)
        try:
            conn.run()
        except (Hangup, OSError, ProtocolError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    # ------------------------------------------------------------ helpers for tests

    def put_file(self, path: str, data: bytes) -> None:
        self.files[path] = data
        parent = posixpath.dirname(path)
        while parent not in self.dirs:
            self.dirs.add(parent)
            parent = posixpath.dirname(parent)

    def used(self) -> int:
        return sum(len(d) for d in self.files.values())


class _Conn:
    def __init__(self, server: FakeServer, sock: socket.socket) -> None:
        self.srv = server
        self.sock = sock
        self.stream = MessageStream("server", max_data=server.max_data)
        self.user: str | None = None
        self.cwd = "/"
        self.client_max_data = 1024 * 1024
        self.upload: Upload | None = None
        self.received = 0

    def send(self, msg: m.Reply) -> None:
        self.sock.sendall(encode(msg))

    def error(self, rid: int | None, code: str, message: str = "") -> None:
        self.send(m.ErrorReply(id=rid, code=code, message=message or code.lower()))

    def path(self, p: str) -> str:
        return posixpath.normpath(posixpath.join(self.cwd, p)).replace("//", "/")

    def run(self) -> None:
        srv = self.srv
        if srv.greeting_error:
            self.error(None, srv.greeting_error, "go away")
            return
        self.send(m.Greeting(protocol=1, server="fake", max_control=65536,
                             max_data=srv.max_data, register=srv.register))
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                return
            for event in self.stream.feed(data):
                with srv.lock:
                    self.handle(event)

    def handle(self, event: Any) -> None:
        if isinstance(event, DataChunk):
            self.on_data(event.data)
            return
        if isinstance(event, Rejected):
            self.error(event.error.request_id, event.error.code, event.error.message)
            return
        srv = self.srv
        srv.requests.append(event)
        cmd = event.cmd
        if srv.silent and cmd != "hello":
            return
        if cmd in srv.fatal_on:
            self.error(None, srv.fatal_on[cmd], "fatal")
            raise Hangup
        if cmd == "commit" and srv.legacy:
            self.error(event.id, "UNKNOWN_COMMAND", "unknown command 'commit'")
            return
        if self.upload is not None:
            if cmd == "cancel":
                self.error(self.upload.rid, "CANCELLED", "cancelled")
                self.upload = None
                self.send(m.CancelOk(id=event.id))
            elif cmd == "commit":
                self.do_commit(event)
            else:
                self.error(event.id, "BAD_STATE", "uploading")
            return
        if cmd in ("commit", "cancel"):
            self.error(event.id, "BAD_STATE", "no transfer")
            return
        handler = getattr(self, "do_" + cmd.replace(".", "_"), None)
        if cmd not in ("hello", "login", "register", "ping", "quit", "whoami") \
                and self.user is None:
            self.error(event.id, "AUTH_REQUIRED", "log in first")
            return
        handler(event)

    # ------------------------------------------------------------ session

    def do_hello(self, r: m.Hello) -> None:
        self.client_max_data = min(self.srv.max_data, r.max_data or self.srv.max_data)
        self.send(m.HelloOk(id=r.id, protocol=1, max_data=self.client_max_data))

    def do_register(self, r: m.Register) -> None:
        if not self.srv.register:
            return self.error(r.id, "REGISTRATION_DISABLED")
        if r.user in self.srv.users:
            return self.error(r.id, "USER_EXISTS")
        self.srv.users[r.user] = r.password
        self.send(m.RegisterOk(id=r.id, user=r.user))

    def do_login(self, r: m.Login) -> None:
        srv = self.srv
        if r.token is not None:
            user = srv.tokens.get(r.token)
        else:
            user = r.user if srv.users.get(r.user or "") == r.password else None
        if user is None:
            return self.error(r.id, "AUTH_FAILED", "wrong user or password")
        self.user, self.cwd = user, "/"
        token = None
        if r.want_token:
            token = f"tok{len(srv.tokens)}"
            srv.tokens[token] = user
        self.send(m.LoginOk(id=r.id, user=user, cwd="/", token=token))

    def do_logout(self, r: m.Logout) -> None:
        self.user = None
        self.send(m.LogoutOk(id=r.id))

    def do_whoami(self, r: m.Whoami) -> None:
        self.send(m.WhoamiOk(id=r.id, user=self.user))

    def do_ping(self, r: m.Ping) -> None:
        self.send(m.Pong(id=r.id, payload=r.payload))

    def do_quit(self, r: m.Quit) -> None:
        self.send(m.QuitOk(id=r.id))
        raise Hangup

    # ------------------------------------------------------------ names

    def do_pwd(self, r: m.Pwd) -> None:
        self.send(m.PwdOk(id=r.id, path=self.cwd))

    def do_cd(self, r: m.Cd) -> None:
        p = self.path(r.path)
        if p not in self.srv.dirs:
            return self.error(r.id, "NOT_FOUND", f"no such folder {p}")
        self.cwd = p
        self.send(m.CdOk(id=r.id, path=p))

    def _entry(self, p: str) -> m.Entry | None:
        name = posixpath.basename(p) or "/"
        if p in self.srv.files:
            return m.Entry(name=name, type="file", size=len(self.srv.files[p]), mtime=1.0)
        if p in self.srv.dirs:
            return m.Entry(name=name, type="dir", size=0, mtime=1.0)
        return None

    def do_ls(self, r: m.Ls) -> None:
        p = self.path(r.path)
        if p not in self.srv.dirs:
            return self.error(r.id, "NOT_FOUND", f"no such folder {p}")
        names = sorted({posixpath.basename(x) for x in (*self.srv.files, *self.srv.dirs)
                        if x != "/" and posixpath.dirname(x) == p})
        entries = [self._entry(posixpath.join(p, n)) for n in names]
        entries += self.srv.extra_entries
        page = self.srv.ls_page
        chunks = [entries[i:i + page] for i in range(0, len(entries), page)] or [[]]
        for i, chunk in enumerate(chunks):
            self.send(m.LsOk(id=r.id, path=p, entries=tuple(chunk),
                             more=i < len(chunks) - 1))

    def do_stat(self, r: m.Stat) -> None:
        p = self.path(r.path)
        entry = self._entry(p)
        if entry is None:
            return self.error(r.id, "NOT_FOUND", f"no such file {p}")
        self.send(m.StatOk(id=r.id, path=p, entry=entry))

    def do_mkdir(self, r: m.Mkdir) -> None:
        p = self.path(r.path)
        if p in self.srv.dirs or p in self.srv.files:
            if r.parents and p in self.srv.dirs:
                return self.send(m.MkdirOk(id=r.id, path=p))
            return self.error(r.id, "EXISTS", f"{p} exists")
        if posixpath.dirname(p) not in self.srv.dirs and not r.parents:
            return self.error(r.id, "NOT_FOUND", "no parent")
        while p not in self.srv.dirs:
            self.srv.dirs.add(p)
            p = posixpath.dirname(p)
        self.send(m.MkdirOk(id=r.id, path=self.path(r.path)))

    def do_rmdir(self, r: m.Rmdir) -> None:
        p = self.path(r.path)
        if p not in self.srv.dirs:
            return self.error(r.id, "NOT_FOUND")
        self.srv.dirs.discard(p)
        self.send(m.RmdirOk(id=r.id, path=p))

    def do_rm(self, r: m.Rm) -> None:
        p = self.path(r.path)
        if self.srv.files.pop(p, None) is None:
            return self.error(r.id, "NOT_FOUND", f"no such file {p}")
        self.send(m.RmOk(id=r.id, path=p))

    def do_mv(self, r: m.Mv) -> None:
        src, dst = self.path(r.src), self.path(r.dst)
        if src not in self.srv.files:
            return self.error(r.id, "NOT_FOUND")
        if dst in self.srv.files and not r.overwrite:
            return self.error(r.id, "EXISTS", f"{dst} exists")
        self.srv.files[dst] = self.srv.files.pop(src)
        self.send(m.MvOk(id=r.id, src=src, dst=dst))

    def do_quota(self, r: m.Quota) -> None:
        used = self.srv.used()
        reserved = sum(p.size for p in self.srv.partials.values())
        limit = self.srv.quota_limit
        self.send(m.QuotaOk(id=r.id, used=used, reserved=reserved, limit=limit,
                            free=max(0, limit - used - reserved)))

    def do_hash(self, r: m.Hash) -> None:
        p = self.path(r.path)
        if p not in self.srv.files:
            return self.error(r.id, "NOT_FOUND")
        data = self.srv.files[p]
        self.send(m.HashOk(id=r.id, path=p, size=len(data),
                           sha256=hashlib.sha256(data).hexdigest()))

    def do_uploads(self, r: m.Uploads) -> None:
        infos = tuple(m.UploadInfo(path=p, size=u.size, offset=len(u.data), updated=1.0,
                                   sha256=u.sha256) for p, u in self.srv.partials.items())
        self.send(m.UploadsOk(id=r.id, uploads=infos))

    def do_abort(self, r: m.Abort) -> None:
        p = self.path(r.path)
        if self.srv.partials.pop(p, None) is None:
            return self.error(r.id, "NOT_FOUND", "no such upload")
        self.send(m.AbortOk(id=r.id, path=p))

    # ------------------------------------------------------------ transfers

    def do_put(self, r: m.Put) -> None:
        srv = self.srv
        p = self.path(r.path)
        if p in srv.files and not r.overwrite:
            return self.error(r.id, "EXISTS", f"{p} exists")
        if r.size > srv.quota_limit - srv.used():
            return self.error(r.id, "QUOTA_EXCEEDED", "quota exceeded")
        partial = srv.partials.get(p)
        restarted = False
        if partial is not None and (partial.size, partial.sha256) != (r.size, r.sha256):
            partial, restarted = None, True
        if partial is None:
            partial = srv.partials[p] = Partial(r.size, r.sha256)
        srv.put_offsets.append(len(partial.data))
        self.send(m.PutReady(id=r.id, path=p, offset=len(partial.data), restarted=restarted))
        self.upload = Upload(r.id, p, partial, deferred=r.defer_sha256 and not srv.legacy)
        self.maybe_finish()

    def do_commit(self, r: m.Commit) -> None:
        up = self.upload
        assert up is not None
        held = len(up.partial.data)
        self.srv.commits.append(CommitSeen(r, held, up.partial.size, self.received))
        if not up.deferred:
            return self.error(r.id, "BAD_STATE", "this upload declared its hash")
        if held < up.partial.size:
            self.send(m.ErrorReply(id=r.id, code="OFFSET_MISMATCH", message="early commit",
                                   details={"expected": up.partial.size, "got": held}))
            return
        self.finish(r.id, r.sha256)

    def on_data(self, data: memoryview) -> None:
        up = self.upload
        if up is None or len(up.partial.data) + len(data) > up.partial.size:
            self.error(None, "BAD_STATE", "unexpected data")
            raise Hangup
        up.partial.data += data
        self.received += len(data)
        drop = self.srv.drop_put_after
        if drop is not None and self.received >= drop:
            self.srv.drop_put_after = None
            raise Hangup
        self.maybe_finish()

    def maybe_finish(self) -> None:
        up = self.upload
        assert up is not None
        part = up.partial
        if len(part.data) < part.size or up.deferred:
            return
        self.finish(up.rid, part.sha256)

    def finish(self, rid: int, expected: str | None) -> None:
        """Verify against ``expected`` (if any), publish, answer ``rid``."""
        up = self.upload
        assert up is not None
        part = up.partial
        self.upload = None
        del self.srv.partials[up.path]
        data = bytes(part.data)
        sha = hashlib.sha256(data).hexdigest()
        if self.srv.corrupt_put or (expected is not None and expected != sha):
            return self.error(rid, "INTEGRITY", "sha256 mismatch")
        self.srv.put_file(up.path, data)
        self.send(m.PutDone(id=rid, path=up.path, size=len(data),
                            sha256=sha if expected else None))

    def do_get(self, r: m.Get) -> None:
        srv = self.srv
        p = self.path(r.path)
        if p not in srv.files:
            return self.error(r.id, "NOT_FOUND", f"no such file {p}")
        data = srv.files[p]
        if r.offset > len(data):
            return self.error(r.id, "OFFSET_MISMATCH", "offset past the end")
        sha = hashlib.sha256(data).hexdigest() if r.verify else None
        if srv.lie_sha and sha:
            sha = hashlib.sha256(b"lie" + data).hexdigest()
        self.send(m.GetReady(id=r.id, path=p, size=len(data), offset=r.offset, sha256=sha))
        frame = srv.get_frame or self.client_max_data
        if srv.oversize_frame:
            frame = self.client_max_data + 1
            self.sock.sendall(data_header(frame) + b"x" * frame)
            raise Hangup
        pos, sent = r.offset, 0
        while pos < len(data):
            chunk = data[pos:pos + frame]
            drop = srv.drop_get_after
            if drop is not None and sent + len(chunk) > drop:
                srv.drop_get_after = None
                self.sock.sendall(data_header(len(chunk)) + chunk[:drop - sent])
                time.sleep(0.05)
                raise Hangup
            if srv.trickle is not None:                # a slow link: piece by piece
                piece, pause = srv.trickle
                self.sock.sendall(data_header(len(chunk)))
                for at in range(0, len(chunk), piece):
                    time.sleep(pause)
                    self.sock.sendall(chunk[at:at + piece])
            else:
                self.sock.sendall(data_header(len(chunk)) + chunk)
            pos += len(chunk)
            sent += len(chunk)
        if srv.extra_data:
            self.sock.sendall(data_header(3) + b"abc")
        self.send(m.GetDone(id=r.id, path=p, size=len(data)))


def serve_fake(**config: Any) -> Iterator[FakeServer]:
    """Body of a ``fake`` fixture: each test module declares its own two-liner
    (an imported fixture would shadow the test arguments that use it).

    The fake speaks plain text, so while it runs ``Client()`` and ``ftpc``
    default to plain text, as they did before TLS was the default; the TLS
    client is tested against the real daemon and in test_tls_interop.py."""
    from client import trust

    server = FakeServer(**config)
    saved, trust.TLS_BY_DEFAULT = trust.TLS_BY_DEFAULT, False
    try:
        yield server
    finally:
        trust.TLS_BY_DEFAULT = saved
        server.close()
