"""One hostile user against the object backend's limits, from two nodes at once.

The folder cost and the cap on unfinished uploads are checked in the same
PostgreSQL transaction that locks the user's row, so two nodes (two
``ObjectStore`` instances on one database, as two ``ftpd`` processes) racing
near a limit can never both pass it.  The single-node behaviour, the same on
both backends, is in tests/test_storage_quota_hardening.py.

Real PostgreSQL and SeaweedFS (tests/objstore_services.py); kept to a few tests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from storage import NotFound, QuotaExceeded, SmallFile, StorageError, TooManyPartials, faults
from storage.store import DEFAULT_FOLDER_COST
from tests.objstore_services import S3_ACCESS_KEY, S3_SECRET_KEY, unique_name
from tests.storage_backends import object_only

USER = "mallory"
#: Threads per node; each node's pool has 8 connections.
THREADS = 4


def two_nodes(make_store: Callable[..., Any], quota: int, **kw: Any) -> tuple[Any, Any]:
    """Two ``ObjectStore`` instances on one database and bucket, ``USER`` at ``quota``."""
    first = make_store(scrypt_n=2**4, **kw)
    first.create_user(USER, "pw", quota=quota)
    return first, make_store(scrypt_n=2**4, **kw)


def race(nodes: tuple[Any, Any], attempt: Callable[[Any, str], None]) -> list[BaseException]:
    """``attempt(node, name)`` from ``THREADS`` threads per node, released together,
    each with three names of its own; returns what they raised."""
    barrier = threading.Barrier(2 * THREADS, timeout=30)
    raised: list[BaseException] = []

    def run(node: Any, thread: int) -> None:
        barrier.wait()
        for n in range(3):
            try:
                attempt(node, f"/t{thread}-{n}")
            except BaseException as exc:      # noqa: BLE001 -- collected for the test
                raised.append(exc)

    threads = [threading.Thread(target=run, args=(nodes[i % 2], i)) for i in range(2 * THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return raised


@object_only
def test_two_nodes_making_folders_near_the_quota_never_oversubscribe_it(make_store):
    nodes = two_nodes(make_store, 5 * DEFAULT_FOLDER_COST + 100)
    raised = race(nodes, lambda node, name: node.mkdir(USER, name))
    assert len(nodes[1].list_dir(USER, "/")) == 5
    assert nodes[1].usage(USER).used == 5 * DEFAULT_FOLDER_COST
    assert len(raised) == 2 * THREADS * 3 - 5
    assert all(isinstance(exc, QuotaExceeded) for exc in raised)


@object_only
def test_two_nodes_declaring_uploads_never_pass_the_partials_cap(make_store):
    nodes = two_nodes(make_store, 1 << 20, max_partials=5)
    raised = race(nodes, lambda node, name: node.begin_upload(USER, name, 10, None).release())
    kept = nodes[1].list_uploads(USER)
    assert len(kept) == 5
    assert len(raised) == 2 * THREADS * 3 - 5
    assert all(isinstance(exc, TooManyPartials) for exc in raised)
    nodes[0].begin_upload(USER, kept[0].path, 10, None).release()   # a resume still works


@object_only
def test_an_inline_put_whose_folder_goes_meanwhile_leaves_no_upload_behind(make_store):
    # Inline puts are not counted against max_partials; so none may stay behind.
    store = make_store(scrypt_n=2**4)
    store.create_user(USER, "pw", quota=1 << 20)
    store.mkdir(USER, "/d")

    def remove_the_folder(name: str) -> None:
        if name == "object.after_complete":
            store.rmdir(USER, "/d")          # another session's rmdir, before publication

    previous = faults.set_hook(remove_the_folder)
    try:
        [result] = store.store_small_files(USER, [SmallFile("/d/f", b"data")])
    finally:
        faults.set_hook(previous)
    assert isinstance(result, NotFound)
    assert store.list_uploads(USER) == []
    assert store.usage(USER).reserved == 0


def test_the_daemon_passes_its_partials_and_folder_settings_to_the_object_store(
        objstore_urls: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from ftpd.backend import open_store
    from ftpd.config import Config

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    config = Config(root=tmp_path, metadata_url=objstore_urls[0], blob_url=objstore_urls[1],
                    max_partials_per_user=2, folder_cost=7, scrypt_n=2**4).validate()
    store = open_store(config)
    try:
        user = unique_name("cfg")
        store.create_user(user, "pw-cfg-1", quota=1000)
        store.mkdir(user, "/a")
        assert store.usage(user).used == 7
        for name in ("p1", "p2"):
            store.begin_upload(user, f"/{name}", 1, None).release()
        with pytest.raises(StorageError) as info:
            store.begin_upload(user, "/p3", 1, None)
        assert info.value.code == "TOO_MANY_PARTIALS"
    finally:
        store.close()
