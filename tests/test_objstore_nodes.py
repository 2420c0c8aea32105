"""Two ``ftpd serve`` nodes on two ports sharing one PostgreSQL and one bucket.

Real daemons (subprocesses), real SeaweedFS and PostgreSQL: a client whose
node dies resumes on the other, downloads work from either node, and two
writers of one path on two nodes never both write.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("boto3", reason="needs the objstore extra: pip install -e '.[objstore]'")
pytest.importorskip("psycopg", reason="needs the objstore extra: pip install -e '.[objstore]'")

import protocol.messages as m
from storage.objstore.store import ObjectStore
from storage.store import DEFAULT_FOLDER_COST
from tests.daemon import TEST_SCRYPT_N
from tests.objstore_services import S3_ACCESS_KEY, S3_SECRET_KEY, unique_name
from tests.wire import Wire

MIB = 1 << 20
PASSWORD = "node-test-pw"


class Cluster:
    """The settings every node shares, and a store to look at the shared state."""

    def __init__(self, metadata_url: str, blob_url: str) -> None:
        self.settings = {"metadata_url": metadata_url, "blob_url": blob_url}
        self.store = ObjectStore(metadata_url, blob_url, scrypt_n=TEST_SCRYPT_N)

    def user(self) -> str:
        name = unique_name("n")
        self.store.create_user(name, PASSWORD, quota=1 << 30)
        return name

    def wait_offset(self, user: str, path: str, deadline: float = 60.0) -> int:
        """The recorded offset of ``path``'s upload, once it is past 0 (a part is durable)."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            offsets = [p.offset for p in self.store.list_uploads(user) if p.path == path]
            if offsets and offsets[0] > 0:
                return offsets[0]
            time.sleep(0.05)
        raise AssertionError(f"no part of {path} was recorded within {deadline}s")


@pytest.fixture
def cluster(pg_database: str, s3_service: Any, s3_bucket: str,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    # The daemons inherit the credentials from the environment, as in a deployment.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    c = Cluster(pg_database, f"s3://{s3_bucket}?endpoint={s3_service.endpoint}&region=us-east-1")
    yield c
    c.store.close()


def _data(size: int, seed: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 4096
    return (block * (size // len(block) + 1))[:size]


def _wire(node: Any, user: str, want_token: bool = False) -> tuple[Wire, Any]:
    w = Wire(node.host, node.port, timeout=60)
    reply = w.login(user, PASSWORD, want_token=want_token)
    assert isinstance(reply, m.LoginOk), reply
    return w, reply


@pytest.mark.slow
def test_upload_killed_on_one_node_resumes_on_the_other(server_factory: Any,
                                                        cluster: Cluster) -> None:
    a = server_factory(**cluster.settings)
    b = server_factory(**cluster.settings)
    user = cluster.user()
    data = _data(20 * MIB, seed=1)
    w, login = _wire(a, user, want_token=True)
    ready = w.put("/big.bin", data, stop_at=18 * MIB)
    assert isinstance(ready, m.PutReady) and ready.offset == 0
    recorded = cluster.wait_offset(user, "/big.bin")      # the first 16 MiB part is durable
    a.kill()                                              # SIGKILL: the node is gone
    w.close()

    w2 = Wire(b.host, b.port, timeout=60)
    assert isinstance(w2.call(m.Login(id=w2.next_id(), token=login.token)), m.LoginOk)
    done = w2.put("/big.bin", data)                       # from B's offset
    assert isinstance(done, m.PutDone), done
    assert done.sha256 == hashlib.sha256(data).hexdigest()
    assert recorded > 0
    got_ready, got, got_done = w2.get("/big.bin")
    assert isinstance(got_done, m.GetDone) and got == data
    w2.close()


def test_the_resume_offset_on_the_other_node_is_the_recorded_one(server_factory: Any,
                                                                  cluster: Cluster) -> None:
    a = server_factory(**cluster.settings)
    b = server_factory(**cluster.settings)
    user = cluster.user()
    data = _data(17 * MIB, seed=4)
    w, _ = _wire(a, user)
    w.put("/r.bin", data, stop_at=16 * MIB + 1000)
    recorded = cluster.wait_offset(user, "/r.bin")
    a.kill()
    w.close()
    w2, _ = _wire(b, user)
    ready = w2.call(m.Put(id=w2.next_id(), path="/r.bin", size=len(data),
                          sha256=hashlib.sha256(data).hexdigest()))
    assert isinstance(ready, m.PutReady)
    assert ready.offset == recorded == 16 * MIB
    w2.close()


def test_download_from_one_node_while_the_other_is_down(server_factory: Any,
                                                        cluster: Cluster) -> None:
    a = server_factory(**cluster.settings)
    b = server_factory(**cluster.settings)
    user = cluster.user()
    data = _data(3 * MIB + 17, seed=2)
    w, _ = _wire(a, user)
    assert isinstance(w.put("/d.bin", data), m.PutDone)
    w.close()
    a.kill()
    w2, _ = _wire(b, user)
    ready, got, done = w2.get("/d.bin")
    assert isinstance(done, m.GetDone) and got == data
    assert ready.sha256 == hashlib.sha256(data).hexdigest()
    ready, tail, done = w2.get("/d.bin", offset=MIB + 5, verify=False)
    assert isinstance(done, m.GetDone) and tail == data[MIB + 5:]
    w2.close()


def test_two_writers_of_one_path_on_two_nodes_only_one_writes(server_factory: Any,
                                                              cluster: Cluster) -> None:
    a = server_factory(**cluster.settings)
    b = server_factory(**cluster.settings)
    user = cluster.user()
    first, second = _data(MIB, seed=5), _data(MIB, seed=5)
    wa, _ = _wire(a, user)
    wb, _ = _wire(b, user)
    ready = wa.put("/same.bin", first, stop_at=1000)      # A holds the upload
    assert isinstance(ready, m.PutReady)
    refused = wb.put("/same.bin", second)
    assert isinstance(refused, m.ErrorReply) and refused.code == "UPLOAD_BUSY"
    wa.send_data(first[1000:])
    assert isinstance(wa.recv_reply(), m.PutDone)
    assert cluster.store.file_hash(user, "/same.bin")[0] == hashlib.sha256(first).hexdigest()
    wa.close()
    wb.close()


def test_tree_operations_through_a_node(server_factory: Any, cluster: Cluster) -> None:
    a = server_factory(**cluster.settings)
    user = cluster.user()
    w, _ = _wire(a, user)
    assert isinstance(w.call(m.Mkdir(id=w.next_id(), path="/x/y", parents=True)), m.MkdirOk)
    assert isinstance(w.call(m.Cd(id=w.next_id(), path="/x")), m.CdOk)
    assert isinstance(w.put("f.txt", b"hello"), m.PutDone)
    moved = w.call(m.Mv(id=w.next_id(), src="/x", dst="/z"))
    assert isinstance(moved, m.MvOk)
    listing = w.call(m.Ls(id=w.next_id(), path="/z"))
    assert sorted(e.name for e in listing.entries) == ["f.txt", "y"]
    assert w.call(m.Stat(id=w.next_id(), path="/z/f.txt")).entry.size == 5
    assert isinstance(w.call(m.Rm(id=w.next_id(), path="/z/f.txt")), m.RmOk)
    # What is left: the two folders, each costing a block as on the local backend.
    assert w.call(m.Quota(id=w.next_id())).used == 2 * DEFAULT_FOLDER_COST
    w.close()
    log = a.log()
    assert "listening on" in log
    assert cluster.settings["metadata_url"] not in log and S3_SECRET_KEY not in log


def test_the_quota_race_across_two_nodes_never_oversubscribes(server_factory: Any,
                                                              cluster: Cluster) -> None:
    a = server_factory(**cluster.settings)
    b = server_factory(**cluster.settings)
    user = cluster.user()
    cluster.store.set_quota(user, 3 * 1000)
    wires = [_wire(node, user)[0] for node in (a, b, a, b, a, b, a, b)]
    for i, w in enumerate(wires):          # all sent before any answer is read
        w.send(m.Put(id=w.next_id(), path=f"/q{i}", size=1000, sha256=None))
    replies = [w.recv_reply() for w in wires]
    ready = [r for r in replies if isinstance(r, m.PutReady)]
    refused = [r for r in replies if isinstance(r, m.ErrorReply)]
    assert len(ready) == 3 and len(refused) == 5
    assert {r.code for r in refused} == {"QUOTA_EXCEEDED"}
    usage = cluster.store.usage(user)
    assert usage.reserved == 3000 and usage.reserved + usage.used <= usage.limit
    for w in wires:
        w.close()


def test_an_unfinished_upload_is_aborted_through_another_node(server_factory: Any,
                                                              cluster: Cluster) -> None:
    a = server_factory(**cluster.settings)
    b = server_factory(**cluster.settings)
    user = cluster.user()
    wa, _ = _wire(a, user)
    wa.put("/gone.bin", b"x" * 5000, stop_at=100)
    wa.close()                                         # A releases the lock
    wb, _ = _wire(b, user)
    deadline = time.monotonic() + 10
    while True:                                        # until A's release has landed
        reply = wb.call(m.Abort(id=wb.next_id(), path="/gone.bin"))
        if isinstance(reply, m.AbortOk) or time.monotonic() > deadline:
            break
        assert reply.code == "UPLOAD_BUSY", reply
        time.sleep(0.05)
    assert isinstance(reply, m.AbortOk), reply
    assert cluster.store.list_uploads(user) == [] and cluster.store.usage(user).reserved == 0
    wb.close()


def test_a_user_name_lockout_counts_over_both_nodes_and_ftpd_user_unlock_ends_it(
        server_factory: Any, cluster: Cluster) -> None:
    from ftpd.cli import main
    from tests.test_hostile_support import SourceWire

    throttle = {"lockout_threshold": 3, "lockout_seconds": 600, "auth_delay_base": 0.01,
                "auth_delay_max": 0.05}
    a = server_factory(**cluster.settings, **throttle)
    b = server_factory(**cluster.settings, **throttle)
    user = cluster.user()

    def attempt(node: Any, source: str, password: str) -> Any:
        with SourceWire(node.host, node.port, source) as w:
            return w.login(user, password)

    # One wrong guess from each of three addresses (no address reaches the threshold),
    # two on A and one on B: together they lock the user name on both nodes.
    for node, source in ((a, "127.0.0.51"), (a, "127.0.0.52"), (b, "127.0.0.53")):
        reply = attempt(node, source, "wrong")
        assert isinstance(reply, m.ErrorReply) and reply.code == "AUTH_FAILED", reply
    deadline = time.monotonic() + 10              # each node writes its count after replying
    while cluster.store.meta.db.one(
            "SELECT failures FROM throttle WHERE kind = 0 AND key = %s", (user,)) != \
            {"failures": 3}:
        assert time.monotonic() < deadline, "the failures never reached the database"
        time.sleep(0.02)
    refused = attempt(b, "127.0.0.54", PASSWORD)  # B itself saw one failure only
    assert isinstance(refused, m.ErrorReply) and refused.code == "LOCKED_OUT", refused
    urls = ["--metadata", cluster.settings["metadata_url"], "--blobs",
            cluster.settings["blob_url"]]
    assert main(["user", "unlock", user, *urls]) == 0
    assert isinstance(attempt(a, "127.0.0.54", PASSWORD), m.LoginOk)
