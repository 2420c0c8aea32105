"""bench/fsync_latency.py: the small-write loop and every flush mode of the writers run."""

from __future__ import annotations

import os

import pytest

from bench import fsync_latency


@pytest.mark.parametrize("mode", fsync_latency.MODES)
def test_each_flush_mode_writes_a_whole_durable_file(tmp_path, monkeypatch, mode):
    monkeypatch.setattr(fsync_latency, "FLUSH_EVERY", 1 << 20)
    path = str(tmp_path / "big")
    written = fsync_latency.write_file(path, mode, 3, float("inf"), b"x" * (1 << 20))
    assert written == 3 << 20 and os.path.getsize(path) == 3 << 20


def test_the_small_writes_are_timed_and_the_folder_removed(tmp_path):
    times = fsync_latency.measure("fdatasync", 1.0, 0, str(tmp_path))
    assert times and times == sorted(times) and all(t > 0 for t in times)
    assert list(tmp_path.iterdir()) == []


def test_a_mode_that_does_not_exist_is_a_usage_error():
    with pytest.raises(SystemExit):
        fsync_latency.main(["nosuchmode"])
