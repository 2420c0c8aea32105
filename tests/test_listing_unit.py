"""Listings stream a batch at a time, and ``hash`` answers for the file it opened
(issue 13, items 7, 8 and 12), checked on the session alone.

The fake pool runs worker jobs only when the test says so, one at a time, so
each step of a listing is seen: which batch is read by which job, what is
written before the next one is asked for, and what happens when the client's
output is full or the connection goes away in between.
"""

from __future__ import annotations

import gc
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

import protocol.messages as m
from ftpd import listing
from storage import SmallFile
from tests.test_session_unit import USER, FakeTransport, Harness

BATCH = 100         # listing.LIST_BATCH (1000) made small: the same steps, fewer files


def run_one(h: Harness) -> bool:
    """Run the oldest queued file job and its completion; False if none was queued."""
    if not h.pool.jobs:
        return False
    job, done = h.pool.jobs.pop(0)
    try:
        result, error = job(), None
    except BaseException as exc:
        result, error = None, exc
    done(result, error)
    return True


def home(h: Harness) -> Path:
    return Path(h.config.root) / "homes" / USER


def make_folder(h: Harness, count: int) -> list[str]:
    """``/big`` with ``count`` empty files, made on disk (as the administrator could)."""
    folder = home(h) / "big"
    folder.mkdir()
    # Long names (about 40 to a page), so that a batch spans two pages and a half.
    names = [f"f{i:05d}-{'x' * (190 + i % 7)}" for i in range(count)]
    for name in names:
        os.close(os.open(folder / name, os.O_CREAT | os.O_WRONLY, 0o600))
    return names


def ls_pages(h: Harness, req_id: int = 5) -> tuple[list[Any], int]:
    """Run a listing of /big to its end, one job at a time: (replies, jobs run)."""
    h.feed(m.Ls(id=req_id, path="/big"))
    jobs, replies = 0, []
    while run_one(h):
        jobs += 1
        replies += h.replies()
    return replies + h.replies(), jobs


def fds() -> int:
    gc.collect()                        # earlier tests' stores are not ours to count
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(listing, "LIST_BATCH", BATCH)
    harness = Harness(tmp_path / "root").logged_in()
    yield harness
    harness.store.close()


def test_a_folder_larger_than_a_batch_is_read_one_batch_per_worker_job(h):
    names = make_folder(h, 2 * BATCH + BATCH // 2)
    replies, jobs = ls_pages(h)
    assert jobs == 3                                    # 100 + 100 + 50
    assert all(isinstance(r, m.LsOk) and r.id == 5 for r in replies)
    assert [r.more for r in replies] == [True] * (len(replies) - 1) + [False]
    got = [e.name for r in replies for e in r.entries]
    assert sorted(got) == sorted(names)                 # every entry once
    for start in range(0, len(got), BATCH):             # each batch sorted by name
        run = got[start:start + BATCH]
        assert run == sorted(run)


def test_a_folder_of_at_most_one_batch_comes_sorted_from_one_job(h):
    names = make_folder(h, BATCH - 1)
    replies, jobs = ls_pages(h)
    assert jobs == 1
    assert [e.name for r in replies for e in r.entries] == sorted(names)
    assert replies[-1].more is False


def test_a_folder_of_exactly_one_batch_ends_with_an_empty_last_page(h):
    make_folder(h, BATCH)
    replies, jobs = ls_pages(h)
    assert jobs == 2                # the second job learns that the folder has ended
    assert sum(len(r.entries) for r in replies) == BATCH and replies[-1].more is False


class _FullTransport(FakeTransport):
    """Reports ``queued`` bytes of output; pauses the session as the real one does."""

    queued = 0

    def get_write_buffer_size(self) -> int:
        return self.queued

    def wait_for_low_water(self) -> bool:
        if self.queued <= 64 * 1024:
            return False
        self.protocol.pause_writing()
        return True


def test_the_next_batch_is_read_only_once_the_output_has_drained_to_low_water(h):
    make_folder(h, 2 * BATCH + 1)
    transport = _FullTransport()
    h.session.transport = transport                     # the same session, a full socket
    transport.set_protocol(h.session)
    transport.queued = 200 * 1024                       # between the water marks
    h.feed(m.Ls(id=5, path="/big"))
    assert run_one(h)                                   # the first batch
    assert transport.out and not h.pool.jobs            # its pages written, no read ahead
    transport.queued = 0
    h.session.resume_writing()                          # drained to low water
    assert len(h.pool.jobs) == 1                        # now the next batch is read


def test_a_listing_left_mid_way_closes_its_folder_whether_or_not_a_read_runs(h):
    make_folder(h, 3 * BATCH)
    before = fds()
    h.feed(m.Ls(id=5, path="/big"))
    assert run_one(h) and h.pool.jobs                   # the second batch is queued
    h.transport.abort()                                 # the client is gone meanwhile
    assert run_one(h) and not h.pool.jobs               # it runs; nothing is read after it
    assert fds() == before                              # the folder is closed


def test_a_listing_dropped_between_reads_closes_its_folder(h):
    make_folder(h, 3 * BATCH)
    transport = _FullTransport()
    h.session.transport = transport
    transport.set_protocol(h.session)
    transport.queued = 1 << 20
    before = fds()
    h.feed(m.Ls(id=5, path="/big"))
    assert run_one(h) and not h.pool.jobs               # held: the output is full
    assert fds() > before                               # the folder, open between reads
    transport.abort()
    assert fds() == before


def test_a_batch_that_fails_to_read_ends_the_reply_with_an_error_for_its_id(h, monkeypatch):
    make_folder(h, 2 * BATCH + 1)
    real = h.store.iter_dir

    def failing_second(*args: Any) -> Any:
        pages = real(*args)
        yield next(pages)
        pages.close()
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(h.store, "iter_dir", failing_second)
    replies, _ = ls_pages(h)
    assert isinstance(replies[0], m.LsOk) and replies[0].more
    assert isinstance(replies[-1], m.ErrorReply)
    assert (replies[-1].id, replies[-1].code) == (5, "IO_ERROR")
    h.feed(m.Ping(id=9))                                # the session goes on
    assert isinstance(h.replies()[-1], m.Pong)


def test_an_error_before_the_first_page_is_the_only_reply(h):
    replies, jobs = ls_pages(h)                         # /big does not exist
    assert jobs == 1 and len(replies) == 1
    assert isinstance(replies[0], m.ErrorReply) and replies[0].code == "NOT_FOUND"


def test_uploads_are_read_from_the_catalogue_a_page_per_job_in_path_order(h, monkeypatch):
    monkeypatch.setattr(listing, "UPLOADS_BATCH", 10)
    paths = [f"/u{i:02d}" for i in range(25)]
    for path in reversed(paths):
        h.store.begin_upload(USER, path, 10, None).release()
    h.feed(m.Uploads(id=6))
    jobs, replies = 0, []
    while run_one(h):
        jobs += 1
        replies += h.replies()
    assert jobs == 3
    assert [u.path for r in replies for u in r.uploads] == paths
    assert [r.more for r in replies][-1] is False


# ---------------------------------------------------------------- item 12


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_hash_answers_for_the_file_it_opened_when_it_is_replaced_before_the_worker_runs(h):
    """The digest is read through the descriptor opened for the request: an overwrite
    that lands while the hash waits for a worker does not change which file the
    answer is about (it used to hash whatever then had the name)."""
    old, new = b"a" * 5000, b"b" * 3000
    (home(h) / "f").write_bytes(old)                    # never hashed: a cache miss
    h.feed(m.Hash(id=7, path="f"))
    assert h.pool.jobs                                  # the hash waits for a worker
    [done] = h.store.store_small_files(USER, [SmallFile("/f", new, sha(new), overwrite=True)])
    assert not isinstance(done, Exception)
    h.run_jobs()
    [reply] = h.replies()
    assert isinstance(reply, m.HashOk)
    assert (reply.sha256, reply.size) == (sha(old), len(old))
    assert h.store.cached_hash(USER, "/f") == (sha(new), len(new))   # the cache untouched


def test_hash_of_a_cached_file_needs_no_worker(h):
    data = b"cached"
    [done] = h.store.store_small_files(USER, [SmallFile("/c", data, sha(data))])
    assert not isinstance(done, Exception)
    h.feed(m.Hash(id=8, path="/c"))
    assert not h.pool.jobs
    [reply] = h.replies()
    assert (reply.sha256, reply.size) == (sha(data), len(data))


def test_hash_closes_what_it_opened(h):
    (home(h) / "f").write_bytes(b"x" * 100)
    before = fds()
    h.feed(m.Hash(id=7, path="f"))
    h.run_jobs()
    h.feed(m.Hash(id=8, path="f"))                      # now cached
    assert len(h.replies()) == 2 and fds() == before
