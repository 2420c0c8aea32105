"""How long a small durable write waits while big files are written: no daemon at all.

    python -m bench.fsync_latency [--seconds 12] [--writers 4] [MODE ...]

The ``latency`` scenario's inline put must be on disk before ``put.done``; this
measures what that costs on the machine itself, under the same kind of load:
``--writers`` threads each write 512 MiB files (1 MiB writes, pass after pass),
and the main thread loops "create a 4 KiB file, write, ``fsync`` it, ``fsync``
its folder" (what ``Store.store_small_files`` does for one file) every 20 ms,
for ``--seconds``.  Each MODE says how the writers make their bytes durable
as they go, before one ``fdatasync`` at the end of each file:

* ``fdatasync``: every 16 MiB (what the daemon's uploads do: ``writeback_bytes``);
* ``sfr-write``: ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` every 16 MiB (start the
  write-back, do not wait);
* ``sfr-wait``: the same with ``WAIT_BEFORE | WRITE | WAIT_AFTER``;
* ``none``: nothing until the end of the file;
* ``idle``: ``fdatasync`` every 16 MiB from writers in the idle I/O class
  (``ioprio_set``), so that the small writes should go first.

Prints p50/p90/p99/max of the small write per mode.  Files go to a temporary
folder (``--dir``, default the system's), removed afterwards; every loop is
bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import sys
import tempfile
import threading
import time

MODES = ("fdatasync", "sfr-write", "sfr-wait", "none", "idle")
MIB = 1 << 20
FILE_MIB = 512
FLUSH_EVERY = 16 * MIB
_SFR_WAIT_BEFORE, _SFR_WRITE, _SFR_WAIT_AFTER = 1, 2, 4
_SYS_IOPRIO_SET = 251            # x86-64
_IOPRIO_WHO_PROCESS, _IOPRIO_CLASS_IDLE = 1, 3

_libc = ctypes.CDLL(None, use_errno=True)


def _sync_file_range(fd: int, offset: int, count: int, flags: int) -> None:
    if _libc.sync_file_range(fd, ctypes.c_longlong(offset), ctypes.c_longlong(count),
                             ctypes.c_uint(flags)) != 0:
        raise OSError(ctypes.get_errno(), "sync_file_range")


def _idle_io_class() -> None:
    """This thread's I/O in the idle class (Linux; ignored where it fails)."""
    _libc.syscall(_SYS_IOPRIO_SET, _IOPRIO_WHO_PROCESS, threading.get_native_id(),
                  _IOPRIO_CLASS_IDLE << 13)


def _writer(folder: str, index: int, mode: str, stop: float) -> None:
    if mode == "idle":
        _idle_io_class()
    block = os.urandom(MIB)
    while time.monotonic() < stop:
        write_file(os.path.join(folder, f"big{index}"), mode, FILE_MIB, stop, block)


def write_file(path: str, mode: str, mib: int, stop: float, block: bytes) -> int:
    """One big file of up to ``mib`` MiB (less if ``stop`` comes), made durable as
    ``mode`` says; returns the bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        written = flushed = 0
        for _ in range(mib):
            if time.monotonic() >= stop:
                break
            os.write(fd, block)
            written += len(block)
            if written - flushed < FLUSH_EVERY:
                continue
            if mode in ("fdatasync", "idle"):
                os.fdatasync(fd)
            elif mode == "sfr-write":
                _sync_file_range(fd, flushed, written - flushed, _SFR_WRITE)
            elif mode == "sfr-wait":
                _sync_file_range(fd, flushed, written - flushed,
                                 _SFR_WAIT_BEFORE | _SFR_WRITE | _SFR_WAIT_AFTER)
            flushed = written
        os.fdatasync(fd)
        return written
    finally:
        os.close(fd)


def measure(mode: str, seconds: float, writers: int, parent: str | None) -> list[float]:
    """Milliseconds of each small durable write while ``writers`` write big files."""
    folder = tempfile.mkdtemp(prefix="fsync-latency-", dir=parent)
    stop = time.monotonic() + seconds
    threads = [threading.Thread(target=_writer, args=(folder, i, mode, stop), daemon=True)
               for i in range(writers)]
    for t in threads:
        t.start()
    small, times, n = os.urandom(4096), [], 0
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        while time.monotonic() < stop:
            start = time.perf_counter()
            fd = os.open(os.path.join(folder, f"small{n % 50}"),
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, small)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.fsync(dir_fd)
            times.append((time.perf_counter() - start) * 1000)
            n += 1
            time.sleep(0.02)
    finally:
        os.close(dir_fd)
        for t in threads:
            t.join(seconds + 120)
        shutil.rmtree(folder, ignore_errors=True)
    return sorted(times)


def _pct(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * q))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fsync_latency",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("modes", nargs="*", default=list(MODES), choices=MODES,
                        metavar="MODE", help=f"any of {', '.join(MODES)} (default: all)")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--dir", default=None, help="where the files go (default: TMPDIR)")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 600 or not 0 <= args.writers <= 32:
        parser.error("--seconds must be 1..600 and --writers 0..32")
    for mode in args.modes:
        ms = measure(mode, args.seconds, args.writers, args.dir)
        print(f"{mode:10s} n={len(ms):4d}  p50 {_pct(ms, 0.5):7.1f} ms  p90 {_pct(ms, 0.9):7.1f}"
              f"  p99 {_pct(ms, 0.99):7.1f}  max {ms[-1]:7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
