"""Model-based test: random sequences of upload and tree operations, with crashes.

A ``RuleBasedStateMachine`` drives one Store against an in-memory model.  After
every step it checks that quota accounting matches (used + reserved <= limit),
committed content equals the model's, partial offsets equal the bytes really
written, and nothing exists outside ``homes/`` and ``staging/``.

The same machine drives the object backend (``ObjectStorageMachine``: real
PostgreSQL and SeaweedFS).  There an upload resumes from the parts it sent,
not from every byte written (``Partial.sent``), and the checks of files on
disk do not apply.  It names its CI budget, ``examples(3, ci=3)``: 3 histories
of 30 steps locally and in CI alike (each step is several network round trips,
~2 s a history; 200 would take minutes), without shrinking.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from storage import (
    Exists,
    IntegrityError,
    NotFound,
    OffsetMismatch,
    QuotaExceeded,
    Store,
    Upload,
    UploadBusy,
)
from storage.partials import part_name
from tests.conftest import examples
from tests.storage_backends import open_object_store, read_back, reset_object_store

USER = "u"
QUOTA = 3000
TTL = 1000.0
PATHS = ["/a", "/b", "/d/c"]
# Distinct sizes, so a (size, sha) declaration always means one payload.
PAYLOADS = [random.Random(n).randbytes(n) for n in (0, 1, 100, 700, 1500, 2500)]
#: ``run`` holds only the writers' lock files (storage.registry), never user data.
ROOT_NAMES = {"users.db", "users.db-wal", "users.db-shm", "homes", "staging", "run"}
TMP_BASE = "/dev/shm" if os.path.isdir("/dev/shm") else None  # cheap fsync


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Partial:
    content: bytes
    declared: str | None
    overwrite: bool
    written: int
    reserved: int
    #: Bytes the store keeps if the writer goes (the object backend: parts sent).
    sent: int = 0


class Clock:
    """Fake time; starts at real time because partial mtimes also count as activity."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class StorageMachine(RuleBasedStateMachine):
    #: The local backend keeps every byte written in its partial file.
    LOCAL = True

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="storage-sm-", dir=TMP_BASE)
        self.root = os.path.join(self.tmp, "root")
        self.outside = os.path.join(self.tmp, "outside")
        os.mkdir(self.outside)
        with open(os.path.join(self.outside, "sentinel"), "wb") as f:
            f.write(b"untouched")
        self.clock = Clock()
        self.store = self._open()
        self.store.create_user(USER, "pw", quota=QUOTA)
        self.store.mkdir(USER, "/d")
        self.files: dict[str, bytes] = {}
        self.partials: dict[str, Partial] = {}
        self.active: dict[str, Upload] = {}

    def _open(self) -> Store:
        # The model counts file bytes only: its folder /d costs nothing here.
        return Store(self.root, scrypt_n=2**4, partial_ttl=TTL, clock=self.clock, folder_cost=0)

    def teardown(self) -> None:
        try:
            for path, data in self.files.items():       # every blob, once an example
                assert read_back(self.store, USER, path) == data
        finally:
            self.store.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _held(self, part: Partial) -> int:
        """Where an upload resumes once its writer is gone."""
        return part.written if self.LOCAL else part.sent

    def _writer_gone(self, part: Partial) -> None:
        part.written = self._held(part)

    # ----- rules
    @rule(path=st.sampled_from(PATHS), payload=st.integers(0, len(PAYLOADS) - 1),
          declare=st.sampled_from(["right", "wrong", "none"]), overwrite=st.booleans())
    def begin(self, path: str, payload: int, declare: str, overwrite: bool) -> None:
        content = PAYLOADS[payload]
        declared = {"right": sha(content), "wrong": sha(b"not it"), "none": None}[declare]
        self._begin(path, content, declared, overwrite)

    @rule(path=st.sampled_from(PATHS), payload=st.integers(0, len(PAYLOADS) - 1),
          overwrite=st.booleans())
    def upload_whole_file(self, path: str, payload: int, overwrite: bool) -> None:
        """begin + write everything + commit as one step, so replacements are common."""
        self.begin(path, payload, "right", overwrite)
        if path in self.active and self.partials[path].content == PAYLOADS[payload]:
            index = sorted(self.active).index(path)
            self.write(index, "rest")
            self.commit(index)

    @precondition(lambda self: set(self.partials) - set(self.active))
    @rule(index=st.integers(0, 5), overwrite=st.booleans())
    def resume(self, index: int, overwrite: bool) -> None:
        """Begin again with the same declaration as a released (or crashed) partial."""
        idle = sorted(set(self.partials) - set(self.active))
        path = idle[index % len(idle)]
        part = self.partials[path]
        self._begin(path, part.content, part.declared, overwrite)

    def _begin(self, path: str, content: bytes, declared: str | None, overwrite: bool) -> None:
        if path in self.files and not overwrite:
            with pytest.raises(Exists):
                self.store.begin_upload(USER, path, len(content), declared, overwrite=overwrite)
            return
        if path in self.active:
            with pytest.raises(UploadBusy):
                self.store.begin_upload(USER, path, len(content), declared, overwrite=overwrite)
            return
        need = len(content)     # the whole size, also over an old file (issue 13, item 3)
        others = sum(p.reserved for q, p in self.partials.items() if q != path)
        used = sum(map(len, self.files.values()))
        if used + others + need > QUOTA:
            with pytest.raises(QuotaExceeded) as info:
                self.store.begin_upload(USER, path, len(content), declared, overwrite=overwrite)
            assert info.value.details == {"free": max(0, QUOTA - used - others), "needed": need}
            event("begin: quota exceeded")
            return
        prev = self.partials.get(path)
        resume = prev is not None and len(prev.content) == len(content) \
            and prev.declared == declared
        up = self.store.begin_upload(USER, path, len(content), declared, overwrite=overwrite)
        expected_offset = self._held(prev) if resume else 0
        assert (up.offset, up.restarted) == (expected_offset, prev is not None and not resume)
        event(f"begin: {'resumed' if resume else 'restarted' if prev else 'new'}"
              f"{' non-empty' if expected_offset else ''}")
        self.partials[path] = Partial(content, declared, overwrite, expected_offset, need,
                                      sent=expected_offset)
        self.active[path] = up

    def _pick(self, index: int) -> str:
        return sorted(self.active)[index % len(self.active)]

    @precondition(lambda self: self.active)
    @rule(index=st.integers(0, 5), portion=st.sampled_from(["rest", "half", "few", "too much"]))
    def write(self, index: int, portion: str) -> None:
        path = self._pick(index)
        part, up = self.partials[path], self.active[path]
        rest = len(part.content) - part.written
        length = {"rest": rest, "half": rest // 2, "few": min(rest, 7),
                  "too much": rest + 1}[portion]
        data = (part.content + b"\xee")[part.written: part.written + length]
        if length > rest:
            with pytest.raises(OffsetMismatch):
                up.write(data)
        else:
            assert up.write(data) == length
            part.written += length
        assert up.offset == part.written

    @precondition(lambda self: self.active)
    @rule(index=st.integers(0, 5), delta=st.sampled_from([-3, -1, 1, 50]))
    def write_at_wrong_offset(self, index: int, delta: int) -> None:
        path = self._pick(index)
        part, up = self.partials[path], self.active[path]
        with pytest.raises(OffsetMismatch):
            up.write_at(part.written + delta, b"zz")
        assert up.offset == part.written

    @precondition(lambda self: self.active)
    @rule(index=st.integers(0, 5))
    def release(self, index: int) -> None:
        path = self._pick(index)
        self.active.pop(path).release()
        self._writer_gone(self.partials[path])

    @precondition(lambda self: self.active)
    @rule(index=st.integers(0, 5))
    def write_half_and_disconnect(self, index: int) -> None:
        """The common real-life interruption, as one step so resumes get exercised."""
        self.write(index, "half")
        self.release(index)

    @precondition(lambda self: self.active)
    @rule(index=st.integers(0, 5))
    def commit(self, index: int) -> None:
        path = self._pick(index)
        part, up = self.partials[path], self.active[path]
        if part.written != len(part.content):
            with pytest.raises(IntegrityError):
                up.commit()
            return
        if part.declared is not None and part.declared != sha(part.content):
            with pytest.raises(IntegrityError):
                up.commit()
            del self.partials[path], self.active[path]
            return
        if path in self.files and not part.overwrite:
            with pytest.raises(Exists):
                up.commit()
            del self.active[path]       # released by the failed commit, still resumable
            part.sent = part.written    # (the object backend sent every part first)
            return
        result = up.commit()
        event(f"commit: ok{' replacing' if path in self.files else ''}")
        # A declared SHA-256 is verified and echoed; without one nothing is hashed.
        expected_sha = sha(part.content) if part.declared is not None else None
        assert (result.path, result.size, result.sha256) == (
            path, len(part.content), expected_sha)
        self.files[path] = part.content
        del self.partials[path], self.active[path]

    @rule(path=st.sampled_from(PATHS))
    def abort(self, path: str) -> None:
        if path in self.active:
            with pytest.raises(UploadBusy):
                self.store.abort_upload(USER, path)
        elif path not in self.partials:
            with pytest.raises(NotFound):
                self.store.abort_upload(USER, path)
        else:
            assert self.store.abort_upload(USER, path) == path
            del self.partials[path]

    @rule(path=st.sampled_from(PATHS))
    def remove(self, path: str) -> None:
        if path not in self.files:
            with pytest.raises(NotFound):
                self.store.remove(USER, path)
        else:
            self.store.remove(USER, path)
            del self.files[path]

    @rule(src=st.sampled_from(PATHS), dst=st.sampled_from(PATHS), overwrite=st.booleans())
    def rename(self, src: str, dst: str, overwrite: bool) -> None:
        if src not in self.files:
            with pytest.raises(NotFound):
                self.store.rename(USER, src, dst, overwrite=overwrite)
        elif src != dst and dst in self.files and not overwrite:
            with pytest.raises(Exists):
                self.store.rename(USER, src, dst, overwrite=overwrite)
        else:
            assert self.store.rename(USER, src, dst, overwrite=overwrite) == (src, dst)
            self.files[dst] = self.files.pop(src)

    @rule()
    def expire(self) -> None:
        self.clock.now += 10 * TTL
        stale = [p for p in self.partials if p not in self.active]
        assert self.store.expire_uploads() == len(stale)
        event(f"expire: {bool(stale)}")
        for path in stale:
            del self.partials[path]

    @rule()
    def crash_and_reopen(self) -> None:
        event(f"crash with {len(self.active)} active, {len(self.partials)} partials")
        self.store.close()  # no release: writers just vanish
        for path in self.active:
            self._writer_gone(self.partials[path])
        self.active.clear()
        self.store = self._open()

    # ----- invariants
    @invariant()
    def quota_accounting_matches(self) -> None:
        usage = self.store.usage(USER)
        assert usage.used == sum(map(len, self.files.values()))
        assert usage.reserved == sum(p.reserved for p in self.partials.values())
        assert usage.used + usage.reserved <= usage.limit == QUOTA

    @invariant()
    def committed_content_matches(self) -> None:
        for path in PATHS:
            if path in self.files and not self.LOCAL:
                # One metadata read per file here (a GET per file and step would double the
                # machine's time); the blobs themselves are read back at the end.
                data = self.files[path]
                assert self.store.cached_hash(USER, path) == (sha(data), len(data))
            elif path in self.files:
                assert read_back(self.store, USER, path) == self.files[path]
            else:
                with pytest.raises(NotFound):
                    self.store.stat(USER, path)
        top = {e.name for e in self.store.list_dir(USER, "/")}
        assert top == {"d"} | {p[1:] for p in self.files if p.count("/") == 1}

    @invariant()
    def partial_offsets_are_the_bytes_written(self) -> None:
        listed = {p.path: (p.size, p.offset, p.sha256) for p in self.store.list_uploads(USER)}
        assert listed == {path: (len(p.content), self._held(p), p.declared)
                          for path, p in self.partials.items()}
        if not self.LOCAL:
            return
        staging = os.path.join(self.root, "staging", USER)
        for path, p in self.partials.items():
            name = os.path.join(staging, part_name(path))
            real = os.path.getsize(name) if os.path.exists(name) else 0
            assert p.written == real <= len(p.content)
            with open(name, "rb") if os.path.exists(name) else open(os.devnull, "rb") as f:
                assert f.read() == p.content[: p.written]

    @invariant()
    def nothing_outside_homes_and_staging(self) -> None:
        if not self.LOCAL:
            return
        assert sorted(os.listdir(self.tmp)) == ["outside", "root"]
        assert os.listdir(self.outside) == ["sentinel"]
        assert set(os.listdir(self.root)) <= ROOT_NAMES
        if os.path.isdir(os.path.join(self.root, "run")):
            assert os.listdir(os.path.join(self.root, "run")) == ["writers.lock"]
        assert os.listdir(os.path.join(self.root, "homes")) == [USER]
        assert os.listdir(os.path.join(self.root, "staging")) == [USER]
        staged = set(os.listdir(os.path.join(self.root, "staging", USER)))
        assert staged <= {part_name(p) for p in self.partials}


# The example database comes from the profile (--hypothesis-profile); the number of
# examples too, except under ci, where 200 histories of 40 steps (8,000 storage
# operations) keep this one test near half a minute of CI's ten.
StorageMachine.TestCase.settings = settings(
    max_examples=examples(min(100, settings.default.max_examples), ci=200),
    stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
TestStorageMachine = StorageMachine.TestCase


class ObjectStorageMachine(StorageMachine):
    """The same model on the object backend (``urls`` set by the test below)."""

    LOCAL = False
    urls: tuple[str, str] = ("", "")

    def _open(self) -> Store:
        store = open_object_store(self.urls, scrypt_n=2**4, partial_ttl=TTL, clock=self.clock,
                                  folder_cost=0)      # as the local one: file bytes only
        if not hasattr(self, "store"):          # a new example starts from empty tables
            reset_object_store(store)
        return store

    #: A reopen builds a new S3 client and pools (~0.3 s): a few per example show the
    #: recovery, more would dominate the machine's time.
    MAX_CRASHES = 2

    @precondition(lambda self: getattr(self, "crashes", 0) < self.MAX_CRASHES)
    @rule()
    def crash_and_reopen(self) -> None:
        self.crashes = getattr(self, "crashes", 0) + 1
        super().crash_and_reopen()


#: Object-backend histories, locally and in CI (see the module docstring).
OBJECT_EXAMPLES = examples(3, ci=3)


def test_the_storage_machine_on_the_object_backend(objstore_urls):
    ObjectStorageMachine.urls = objstore_urls
    # No shrinking: on real services it takes minutes; a failure shows its whole run.
    run_state_machine_as_test(ObjectStorageMachine, settings=settings(
        max_examples=OBJECT_EXAMPLES, stateful_step_count=30, deadline=None, database=None,
        phases=[Phase.explicit, Phase.generate], suppress_health_check=[HealthCheck.too_slow]))
