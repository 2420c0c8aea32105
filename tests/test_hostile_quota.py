"""Quota races: many concurrent uploads by one user that together exceed the quota.

Reservations are taken at ``put`` (storage/uploads.py), so whatever the
interleaving, exactly the uploads that fit are accepted, the rest are refused
at ``put`` with QUOTA_EXCEEDED, and the final usage equals the committed bytes.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import protocol.messages as m
from tests.wire import Wire

USER, PASSWORD = "dave", "pw-dave"
QUOTA = 1 << 20
SIZE = 300 * 1024


def racer(daemon: Any, index: int, start: threading.Barrier, answered: threading.Barrier,
          results: dict[int, Any]) -> None:
    data = os.urandom(SIZE)
    with Wire(daemon.host, daemon.port, timeout=30) as wire:
        wire.logged_in(USER, PASSWORD)
        start.wait(10)
        reply = wire.call(m.Put(id=1, path=f"race-{index}.bin", size=SIZE,
                                sha256=hashlib.sha256(data).hexdigest()))
        # Hold every accepted upload open until all ten puts are answered, so the
        # reservations really overlap.
        answered.wait(10)
        if isinstance(reply, m.PutReady):
            wire.send_data(data, frame=64 * 1024)
            reply = wire.recv_reply()
        results[index] = reply


def test_concurrent_uploads_over_the_quota_admit_exactly_those_that_fit(server_factory):
    """Quota 1 MiB, ten simultaneous 300 KiB uploads (max_uploads_per_user=16): exactly
    three are accepted and committed, the other seven fail at put with QUOTA_EXCEEDED, and
    the quota command reports used == 3 x 300 KiB == the bytes in the home, nothing
    reserved."""
    daemon = server_factory(max_uploads_per_user=16)
    daemon.add_user(USER, PASSWORD, quota=QUOTA)
    start, answered = threading.Barrier(10), threading.Barrier(10)
    results: dict[int, Any] = {}
    threads = [threading.Thread(target=racer, args=(daemon, i, start, answered, results))
               for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 10, results
    done = [r for r in results.values() if isinstance(r, m.PutDone)]
    refused = [r for r in results.values() if isinstance(r, m.ErrorReply)]
    assert len(done) == QUOTA // SIZE == 3, results
    assert [(r.code, r.id) for r in refused] == [("QUOTA_EXCEEDED", 1)] * 7, refused
    home = daemon.root / "homes" / USER
    on_disk = sorted(p.name for p in home.iterdir())
    assert on_disk == sorted(r.path.lstrip("/") for r in done)
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        usage = wire.call(m.Quota(id=2))
    assert usage.used == sum(p.stat().st_size for p in home.iterdir()) == 3 * SIZE
    assert usage.reserved == 0 and usage.limit == QUOTA and usage.free == QUOTA - 3 * SIZE


def test_uploads_racing_to_the_last_free_bytes_never_overcommit(server_factory):
    """Quota 1 MiB, 20 connections each uploading 100 KiB files back to back as fast as
    they can until refused: the committed total never exceeds the quota, it is filled to
    within one file, and used equals the bytes on disk."""
    daemon = server_factory(max_uploads_per_user=32)
    daemon.add_user(USER, PASSWORD, quota=QUOTA)
    size = 100 * 1024
    start = threading.Barrier(20)
    outcomes: list[Any] = []

    def greedy(index: int) -> None:
        with Wire(daemon.host, daemon.port, timeout=30) as wire:
            wire.logged_in(USER, PASSWORD)
            start.wait(10)
            for n in range(12):
                reply = wire.put(f"greedy-{index}-{n}.bin", os.urandom(size))
                outcomes.append(reply)
                if not isinstance(reply, m.PutDone):
                    return

    threads = [threading.Thread(target=greedy, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    done = [r for r in outcomes if isinstance(r, m.PutDone)]
    errors = {r.code for r in outcomes if isinstance(r, m.ErrorReply)}
    assert errors == {"QUOTA_EXCEEDED"}, errors
    assert len(done) == QUOTA // size        # 10 fit, whatever the interleaving
    home = daemon.root / "homes" / USER
    with Wire(daemon.host, daemon.port) as wire:
        wire.logged_in(USER, PASSWORD)
        usage = wire.call(m.Quota(id=2))
    assert usage.used == sum(p.stat().st_size for p in home.iterdir()) == len(done) * size
    assert usage.reserved == 0
