"""The session alone: bytes in, bytes out, through a fake transport.

No socket, no selector, no daemon process: worker jobs run when the test says
so, and the clock is the test's.  This is the level where the state machine
and the error paths are checked one step at a time (as h11 tests its
connection object).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import protocol.messages as m
import storage
from ftpd.config import Config
from ftpd.context import SessionContext
from ftpd.handlers import HANDLERS
from ftpd.session import Session
from ftpd.throttle import LoginThrottle
from ftpd.timers import TimerHeap
from protocol import (
    DataChunk,
    MessageStream,
    State,
    data_header,
    encode,
    encode_control,
    encode_data,
)
from protocol.errors import ERROR_CODES
from storage import Store
from storage.errors import StorageIOError
from tests.daemon import TEST_SCRYPT_N

USER, PASSWORD = "ada", "correct horse"


class FakePool:
    """Jobs wait until ``run`` (completions then run on the test's thread, as on the reactor)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, Any]] = []

    def submit(self, job: Any, done: Any) -> None:
        self.jobs.append((job, done))

    def run(self) -> int:
        ran = 0
        while self.jobs:
            job, done = self.jobs.pop(0)
            try:
                result, error = job(), None
            except BaseException as exc:
                result, error = None, exc
            done(result, error)
            ran += 1
        return ran


class FakeTransport:
    """The transport interface with an in-memory socket that takes everything."""

    peer, ip = "127.0.0.1:5000", "127.0.0.1"

    def __init__(self) -> None:
        self.out = bytearray()
        self.reading = False
        self.closing = False
        self.lost = False
        self.protocol: Any = None

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def start(self) -> None:
        self.reading = True

    def write(self, data: bytes | memoryview) -> None:
        if not self.lost:
            self.out += data

    write_more = write                   # (a frame header: MSG_MORE on a real socket)

    def send_file(self, fd: int, offset: int, count: int) -> int:
        chunk = os.pread(fd, count, offset)
        if not chunk:
            raise EOFError("file shrank")
        self.out += chunk
        return len(chunk)

    def get_write_buffer_size(self) -> int:
        return 0

    def wait_for_low_water(self) -> bool:
        return False                     # nothing is ever queued

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading and not self.closing

    def close(self) -> None:
        self.closing = True
        self.abort()                     # everything is "sent" at once

    def abort(self) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(None)

    def is_closing(self) -> bool:
        return self.closing or self.lost


class Harness:
    def __init__(self, root: Path, **settings: Any) -> None:
        self.config = Config(root=root, **settings).validate()
        self.store = Store(root, scrypt_n=TEST_SCRYPT_N)
        self.pool, self.auth_pool = FakePool(), FakePool()
        self.now = 1000.0
        self.timers = TimerHeap(clock=lambda: self.now)
        throttle = LoginThrottle(base=0.5, max_delay=8, threshold=10, lockout=300,
                                 clock=lambda: self.now)
        self.forgotten: list[Session] = []
        self.ctx = SessionContext(self.config, self.store, self.pool, self.auth_pool,
                                  self.timers, throttle, HANDLERS, self.forgotten.append)
        self.transport = FakeTransport()
        self.session = Session(self.ctx, self.transport)       # type: ignore[arg-type]
        self.transport.set_protocol(self.session)
        self.reader = MessageStream("client")
        self.session.start(b"")

    def feed(self, *messages: Any) -> None:
        data = b"".join(x if isinstance(x, bytes) else encode(x) for x in messages)
        self.session.data_received(memoryview(data))

    def replies(self) -> list[Any]:
        events = self.reader.feed(bytes(self.transport.out))
        self.transport.out.clear()
        return [e if not isinstance(e, DataChunk) else bytes(e.data) for e in events]

    def run_jobs(self) -> None:
        while self.pool.run() + self.auth_pool.run():
            pass

    def advance_clock(self, seconds: float) -> None:
        self.now += seconds
        self.timers.run_due()

    def logged_in(self) -> Harness:
        self.store.create_user(USER, PASSWORD)
        self.feed(m.Hello(id=1, protocol=1), m.Login(id=2, user=USER, password=PASSWORD))
        self.run_jobs()
        assert [type(r) for r in self.replies()] == [m.HelloOk, m.LoginOk]
        return self


@pytest.fixture
def h(tmp_path: Path) -> Any:
    harness = Harness(tmp_path / "root")
    yield harness
    harness.store.close()


def test_hello_moves_a_greeted_session_to_anonymous(h):
    h.feed(m.Hello(id=1, protocol=1))
    assert isinstance(h.replies()[0], m.HelloOk)
    assert h.session.state is State.ANONYMOUS


def test_a_command_before_hello_is_bad_state_and_changes_nothing(h):
    h.feed(m.Pwd(id=3))
    [reply] = h.replies()
    assert (reply.code, reply.id) == ("BAD_STATE", 3)
    assert h.session.state is State.GREETED and not h.transport.is_closing()


def test_a_file_command_while_anonymous_is_auth_required(h):
    h.feed(m.Hello(id=1, protocol=1), m.Ls(id=2))
    assert h.replies()[1].code == "AUTH_REQUIRED"


def test_garbage_gets_a_fatal_error_without_id_and_closes(h):
    h.feed(encode_control(b"this is not json"))
    [reply] = h.replies()
    assert reply.code == "BAD_MESSAGE" and reply.id is None
    assert h.session.state is State.CLOSED and h.forgotten == [h.session]


def _remote_store_token_login(h: Any, issue: Any) -> list[Any]:
    """A password login asking for a token, on a store that says it is remote."""
    h.store.create_user(USER, PASSWORD)
    h.store.remote = True
    made: list[Any] = []

    def issue_token(*args: Any) -> Any:
        made.append(args)
        return issue(*args)
    h.store.issue_token = issue_token
    h.feed(m.Hello(id=1, protocol=1),
           m.Login(id=2, user=USER, password=PASSWORD, want_token=True))
    h.auth_pool.run()                                   # the password check
    return made


def test_on_a_remote_store_the_new_token_is_made_on_a_worker_not_on_the_reactor(h):
    made = _remote_store_token_login(h, h.store.issue_token)
    assert made == [] and [type(r) for r in h.replies()] == [m.HelloOk]
    assert h.pool.jobs                                  # waiting for a file worker
    h.run_jobs()
    [reply] = h.replies()
    assert isinstance(reply, m.LoginOk) and reply.token and len(made) == 1
    assert h.store.verify_token(reply.token).name == USER


def test_on_a_remote_store_a_token_that_cannot_be_made_gives_the_session_slot_back(h):
    def fail(*args: Any) -> Any:
        raise StorageIOError("the database is away")
    _remote_store_token_login(h, fail)
    h.run_jobs()
    [_, reply] = h.replies()
    assert isinstance(reply, m.ErrorReply) and reply.code == "IO_ERROR"
    assert h.ctx.user_slots.held(USER) == 0
    assert h.session.state is State.ANONYMOUS


def test_a_password_check_stops_reading_and_later_requests_wait_in_order(h):
    h.store.create_user(USER, PASSWORD)
    h.feed(m.Hello(id=1, protocol=1), m.Login(id=2, user=USER, password=PASSWORD),
           m.Ping(id=3), m.Whoami(id=4))
    assert [type(r) for r in h.replies()] == [m.HelloOk]
    assert not h.transport.is_reading()
    h.run_jobs()
    assert [(type(r), r.id) for r in h.replies()] == [(m.LoginOk, 2), (m.Pong, 3),
                                                      (m.WhoamiOk, 4)]
    assert h.transport.is_reading() and h.session.state is State.READY


def test_a_wrong_password_is_answered_after_the_throttle_delay(h):
    h.store.create_user(USER, PASSWORD)
    h.feed(m.Hello(id=1, protocol=1), m.Login(id=2, user=USER, password="wrong"))
    h.run_jobs()
    assert [type(r) for r in h.replies()] == [m.HelloOk]
    h.advance_clock(0.6)
    [reply] = h.replies()
    assert (reply.code, reply.id) == ("AUTH_FAILED", 2)
    assert h.session.state is State.ANONYMOUS and h.transport.is_reading()


def test_quit_answers_then_closes_through_closing(h):
    h.feed(m.Hello(id=1, protocol=1), m.Quit(id=2), m.Ping(id=3))
    assert [type(r) for r in h.replies()] == [m.HelloOk, m.QuitOk]
    assert h.transport.closing and h.session.state is State.CLOSED


def test_a_data_frame_outside_an_upload_is_fatal_bad_state(h):
    h.logged_in()
    h.feed(encode_data(b"stray"))
    [reply] = h.replies()
    assert (reply.code, reply.id) == ("BAD_STATE", None)
    assert h.session.state is State.CLOSED


def test_a_storage_error_becomes_its_own_code(h):
    h.logged_in()
    h.feed(m.Stat(id=5, path="/missing"))
    [reply] = h.replies()
    assert (reply.code, reply.id) == ("NOT_FOUND", 5)
    assert h.session.state is State.READY


def test_an_upload_goes_uploading_committing_ready(h):
    h.logged_in()
    h.feed(m.Put(id=7, path="f", size=5))
    h.run_jobs()
    assert isinstance(h.replies()[0], m.PutReady)
    assert h.session.state is State.UPLOADING
    h.feed(encode_data(b"hello"), m.Ping(id=8))
    assert h.session.state is State.COMMITTING and not h.transport.is_reading()
    assert h.replies() == []                            # the ping waits for the commit
    h.run_jobs()
    done, pong = h.replies()
    assert isinstance(done, m.PutDone) and done.size == 5 and isinstance(pong, m.Pong)
    assert h.session.state is State.READY and h.session.upload is None
    assert h.ctx.uploads.active[USER] == 0


def test_more_data_than_declared_is_fatal(h):
    h.logged_in()
    h.feed(m.Put(id=7, path="f", size=3))
    h.run_jobs()
    h.replies()
    h.feed(encode_data(b"toolong"))
    [reply] = h.replies()
    assert reply.code == "BAD_STATE" and h.session.state is State.CLOSED
    assert h.ctx.uploads.active[USER] == 0              # the slot came back


def test_a_download_sends_its_frames_then_get_done(h):
    h.logged_in()
    h.feed(m.Put(id=7, path="f", size=5))
    h.run_jobs()
    h.feed(encode_data(b"hello"))
    h.run_jobs()
    h.replies()
    h.feed(m.Get(id=9, path="f", verify=False))
    ready, data, done = h.replies()
    assert isinstance(ready, m.GetReady) and data == b"hello" and isinstance(done, m.GetDone)
    assert h.session.state is State.READY


def test_the_idle_watchdog_ends_the_session_with_timeout(h):
    h.logged_in()
    h.advance_clock(h.config.idle_timeout + 1)
    [reply] = h.replies()
    assert reply.code == "TIMEOUT" and h.session.state is State.CLOSED


def test_end_of_stream_with_nothing_running_closes(h):
    h.feed(m.Hello(id=1, protocol=1))
    h.session.eof_received()
    assert h.session.state is State.CLOSED


def test_end_of_stream_mid_upload_closes_and_frees_the_slot(h):
    h.logged_in()
    h.feed(m.Put(id=7, path="f", size=10))
    h.run_jobs()
    h.feed(data_header(10) + b"half")
    h.session.eof_received()
    assert h.session.state is State.CLOSED and h.ctx.uploads.active[USER] == 0


def test_paused_output_stops_reading_and_resumed_output_restarts_it(h):
    h.feed(m.Hello(id=1, protocol=1))
    h.session.pause_writing()
    assert not h.transport.is_reading()
    h.session.resume_writing()
    assert h.transport.is_reading()


def _storage_error_classes() -> list[type]:
    found, todo = [], [storage.StorageError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


def test_every_storage_error_code_is_a_protocol_error_code():
    classes = _storage_error_classes()
    assert classes
    missing = sorted({c.code for c in classes if c.code not in ERROR_CODES})
    assert not missing, f"storage codes the protocol does not know: {missing}"
    assert set(storage.ERRORS_BY_CODE) <= set(ERROR_CODES)


#: Old flags of the one-class connection that the state table now expresses.
TABLE_FLAGS = {"busy", "committing", "closing", "closed", "draining", "eof", "hashing",
               "flushing", "pumping", "resuming", "inline_slot", "receiving", "uploading",
               "downloading", "greeted", "logged_in", "ready"}
#: The only booleans a session may hold: facts about the peer, which no state expresses.
PEER_FACTS = {"output_paused", "peer_eof"}


def _bool_slots(session: Session) -> set[str]:
    names = {n for cls in type(session).__mro__ for n in getattr(cls, "__slots__", ())}
    return {n for n in names if isinstance(getattr(session, n, None), bool)}


def test_the_session_has_no_flag_for_what_the_state_table_expresses(h):
    names = {n for cls in type(h.session).__mro__ for n in getattr(cls, "__slots__", ())}
    assert not names & TABLE_FLAGS
    assert _bool_slots(h.session) <= PEER_FACTS
    h.logged_in()
    h.feed(m.Put(id=7, path="f", size=5))
    h.run_jobs()
    assert _bool_slots(h.session) <= PEER_FACTS        # mid-upload too
    for state in State:                                 # the table knows these, not flags
        assert state.name.lower() not in names


def test_the_replies_of_a_stored_group_of_inline_puts_leave_in_one_write(h):
    h.logged_in()
    writes: list[bytes] = []
    real = h.transport.write

    def recording(data: bytes | memoryview) -> None:
        writes.append(bytes(data))
        real(data)

    h.transport.write = recording                            # type: ignore[method-assign]
    h.feed(*[x for i in range(5) for x in (
        m.Put(id=10 + i, path=f"f{i}", size=3, inline=True), encode_data(b"abc"))])
    h.run_jobs()
    per_write = [len(MessageStream("client").feed(w)) for w in writes]
    assert sum(per_write) == 5
    assert max(per_write) >= 4          # the puts stored together are answered together
    assert all(isinstance(r, m.PutDone) for r in h.replies())
