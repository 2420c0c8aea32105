"""The storage suite on both backends: ``backend`` is ``local`` or ``object``.

A storage test that goes through the ``Store`` facade builds its store with
``make_store(**kwargs)`` (or takes a ``store`` fixture built on it), and so
runs twice: ``[local]`` on ``storage.Store`` in a temporary folder,
``[object]`` on ``storage.objstore.store.ObjectStore`` over the session's real
PostgreSQL and SeaweedFS (tests/objstore_services.py; no mocks).

Cost is kept small: the services start once per session, each test module
gets one database and one bucket, and one ``ObjectStore`` per set of
settings is kept for the module; each test starts it from empty tables (a
``DELETE`` per table, a few ms) with its own clock, instead of a new database and a new
store (~150 ms).  A store the test closed, and every further store a test
opens (a reopen, as after a restart), is a new one.  Upload ids keep
counting across tests, so an upload lock left by one test never meets an
upload of the next.

A test that is inherently about the local backend (files on disk, OFD locks,
fsync order, SQLite) says so in a comment and takes ``@local_only``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from storage import Store

__all__ = ["BACKENDS", "local_only", "object_only"]

BACKENDS = ("local", "object")

#: Runs the test on the local backend only; say why in a comment next to it.
local_only = pytest.mark.parametrize("backend", ["local"], indirect=True)
#: Runs the test on the object backend only.
object_only = pytest.mark.parametrize("backend", ["object"], indirect=True)

#: Every table of the object backend's schema (storage/objstore/schema.py), in an order
#: that deletes referencing rows first.
_TABLES = "upload_parts, uploads, tokens, throttle, hashes, garbage, entries, users"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``local`` or ``object``."""
    return request.param


@pytest.fixture(scope="module")
def objstore_urls(request: pytest.FixtureRequest) -> tuple[str, str]:
    """``(metadata_url, blob_url)``: one database and one bucket for a test module."""
    pytest.importorskip("boto3", reason="needs the objstore extra")
    pytest.importorskip("psycopg", reason="needs the objstore extra")
    pg_url = request.getfixturevalue("pg_database")
    s3 = request.getfixturevalue("s3_service")
    bucket = request.getfixturevalue("s3_bucket")
    return pg_url, f"s3://{bucket}?endpoint={s3.endpoint}&region=us-east-1"


def open_object_store(urls: tuple[str, str], **kwargs: Any) -> Any:
    """An ``ObjectStore`` on ``urls`` with the test keys and the smallest part size."""
    from storage.objstore.blobs import MIN_PART_SIZE
    from storage.objstore.store import ObjectStore
    from tests.objstore_services import S3_ACCESS_KEY, S3_SECRET_KEY

    kwargs.setdefault("part_size", MIN_PART_SIZE)
    return ObjectStore(*urls, blob_config_overrides={"access_key": S3_ACCESS_KEY,
                                                     "secret_key": S3_SECRET_KEY},
                       **kwargs)


def reset_object_store(store: Any) -> None:
    """Empty every table: ``DELETE`` (far cheaper than ``TRUNCATE`` on tiny tables),
    and not the sequences: upload ids, and so upload lock keys, never repeat."""
    with store.meta.db.tx() as conn:
        for table in _TABLES.split(", "):
            conn.execute(f"DELETE FROM {table}")


class _Clock:
    """The kept store's clock: each test points it at its own (fake or real) one."""

    def __init__(self) -> None:
        self.target: Callable[[], float] = time.time

    def __call__(self) -> float:
        return self.target()


class _KeptStores:
    """One open ``ObjectStore`` per settings for a module (see the module docstring)."""

    def __init__(self, urls: tuple[str, str]) -> None:
        self.urls = urls
        self.stores: dict[tuple[tuple[str, Any], ...], tuple[Any, _Clock]] = {}

    def get(self, kwargs: dict[str, Any]) -> Any:
        clock = kwargs.pop("clock", time.time)
        key = tuple(sorted(kwargs.items()))
        kept = self.stores.get(key)
        if kept is None or kept[0]._closed:
            kept = (open_object_store(self.urls, clock=_Clock(), **kwargs), _Clock())
            kept[0].meta.clock = kept[1]
            self.stores[key] = kept
        store, switch = kept
        switch.target = clock
        reset_object_store(store)
        return store

    def done(self, store: Any) -> None:
        """End of a test: its writers stop (their uploads are gone with the tables)."""
        for upload in list(store._writers):
            upload.release()

    def close(self) -> None:
        for store, _ in self.stores.values():
            store.close()


@pytest.fixture(scope="module")
def _kept_object_stores(objstore_urls: tuple[str, str]) -> Iterator[_KeptStores]:
    kept = _KeptStores(objstore_urls)
    yield kept
    kept.close()


@pytest.fixture
def make_store(backend: str, request: pytest.FixtureRequest, tmp_path: Any
               ) -> Iterator[Callable[..., Any]]:
    """``make_store(**kwargs)`` opens this test's store (``Store``'s keyword arguments).

    Called again it opens the same data again (the same root, or the same
    database and bucket): a reopened store, as after a restart.  Every store it
    opened is closed at the end of the test (the module's kept object store
    only has its writers stopped).
    """
    opened: list[Any] = []
    kept: _KeptStores | None = None
    if backend == "object":
        kept = request.getfixturevalue("_kept_object_stores")

    def make(**kwargs: Any) -> Any:
        if kept is None:
            store = Store(os.fspath(tmp_path / "root"), **kwargs)
        elif not opened:
            store = kept.get(dict(kwargs))
        else:
            store = open_object_store(kept.urls, **kwargs)
        opened.append(store)
        return store

    yield make
    for n, store in enumerate(opened):
        if kept is not None and n == 0:
            kept.done(store)
        else:
            store.close()


def read_back(store: Any, user: str, path: str, cwd: str = "/") -> bytes:
    """The whole content of a file through ``open_read``, whichever the backend
    (a descriptor from the local one, a blob to GET from the object one)."""
    source, size = store.open_read(user, path, cwd)
    if isinstance(source, int):
        try:
            return os.pread(source, size + 1, 0)
        finally:
            os.close(source)
    return b"".join(source.blobs.read(source.blob, end=size))


def resumable(store: Any, written: int) -> int:
    """Where an upload resumes after ``written`` bytes were written and flushed: every
    byte on the local backend (they are in the partial file), the whole parts sent on the
    object backend (the rest of the spool is the client's to send again)."""
    part_size = getattr(store, "part_size", None)
    return written if part_size is None else written - written % part_size
