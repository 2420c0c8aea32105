"""Re-check that the suite catches the non-storage mutations of issue 19.

Each mutation is a (file, old text, new text) triple in ``MUTATIONS`` below,
with the tests that must go red.  For each one the script copies the project
into a throwaway folder (``cp -r``), runs the listed tests there (they must
pass), applies the change -- the old text must occur exactly once, so a
refactor that moves it is reported, not silently skipped -- runs them again
and prints ``caught`` (they failed) or ``MISSED`` (they passed).  The checkout
itself is never touched.

    .venv/bin/python -m tests.mutations.daemon                        # issue 19's four
    .venv/bin/python -m tests.mutations.daemon --close-paths          # and the close paths'
    .venv/bin/python -m tests.mutations.daemon fresh-count-removed    # the ones named

Exit status: 0 when every mutation was caught, 1 otherwise.  After a refactor
of the files named here, update the triples (docs/TESTING.md, "Mutations").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: What is copied: the code and the tests (not .venv, data folders or reports).
COPIED = ("protocol", "storage", "ftpd", "client", "tests", "pyproject.toml")


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "closed-meanwhile-noop", "ftpd/handlers.py",
        "    def closed_meanwhile(upload: Any, error: BaseException | None) -> None:\n"
        "        server.free_upload_slot(user)\n"
        "        if upload is not None:\n"
        "            upload.release()          # nobody will write it now; it stays resumable\n",
        "    def closed_meanwhile(upload: Any, error: BaseException | None) -> None:\n"
        "        pass\n",
        ("tests/test_daemon_load.py::"
         "test_a_client_that_hangs_up_during_a_slow_put_leaves_the_upload_free",),
    ),
    Mutation(
        "lockout-skipped-for-tokens", "ftpd/handlers.py",
        "    locked = throttle.locked(req.user, conn.ip, token=req.token is not None)\n"
        "    if locked:\n",
        "    locked = throttle.locked(req.user, conn.ip, token=req.token is not None)\n"
        "    if locked and req.token is None:\n",
        ("tests/test_hostile_lockout.py::"
         "test_a_token_login_is_refused_from_a_locked_out_address",),
    ),
    # Issue 19's "fresh count after a served lockout removed" no longer applies: issue 13
    # replaced the fresh count by decay ("once served, the next failure locks again unless
    # failures decayed meanwhile", SECURITY.md).  Its successor: failures never decay.
    Mutation(
        "failures-never-decay", "storage/logins.py",
        "    if decay > 0 and failures > 0 and now > since:\n",
        "    if False:\n",
        ("tests/test_throttle_records.py::test_address_failures_decay_one_per_period",),
    ),
    Mutation(
        "closed-by-peer-lies", "tests/wire.py",
        "        except TimeoutError:\n"
        "            return False\n",
        "        except TimeoutError:\n"
        "            return False\n"
        "        except Exception:\n"
        "            return True\n",
        ("tests/test_helpers_honest.py",),
    ),
)


CLOSE = "tests/test_close_paths.py::"
#: The close and error paths of issue 19's fourth point: one mutation each, run with
#: ``--close-paths`` (they take a few minutes more).
CLOSE_PATH_MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "force-timer-off", "ftpd/connection.py",
        "        if self.force_timer is None:\n",
        "        if False:\n",
        (CLOSE + "test_a_closing_connection_whose_peer_does_not_read_is_cut_after_the_"
                 "drain_limit",),
    ),
    Mutation(
        "error-frame-inside-data", "ftpd/connection.py",
        "            if aborted_mid_frame:\n",
        "            if False:\n",
        (CLOSE + "test_a_fatal_error_inside_a_download_frame_ends_the_stream_without_an_"
                 "error_frame",),
    ),
    Mutation(
        "internal-not-fatal", "ftpd/connection.py",
        '            log.exception("connection %s failed; closing it", self.peer)\n'
        '            self.fatal("INTERNAL", "internal server error")\n',
        '            log.exception("connection %s failed; closing it", self.peer)\n',
        (CLOSE + "test_a_bug_in_a_request_handler_is_an_internal_error_and_a_close",),
    ),
    Mutation(
        "completion-internal-not-fatal", "ftpd/connection.py",
        '                log.exception("completion failed on %s", self.peer)\n'
        '                self.fatal("INTERNAL", "internal server error")\n',
        '                log.exception("completion failed on %s", self.peer)\n',
        (CLOSE + "test_a_bug_in_a_worker_jobs_completion_is_an_internal_error_and_a_close",),
    ),
    Mutation(
        "stall-ignored", "ftpd/connection.py",
        '            return self.last_progress + cfg.stall_timeout, "transfer stalled"\n',
        '            return self.last_request + cfg.idle_timeout, "idle"\n',
        (CLOSE + "test_a_stalled_transfer_times_out",),
    ),
    Mutation(
        "pread-wrong-offset", "ftpd/connection.py",
        "256 * 1024), download.pos)\n",
        "256 * 1024), download.pos + 1)\n",
        (CLOSE + "test_a_download_arrives_whole_with_and_without_sendfile",),
    ),
    Mutation(
        "shrink-pread-not-closed", "ftpd/connection.py",
        "            if not chunk:\n"
        '                self.close("file shrank during download")\n'
        "                return -1\n",
        "            if not chunk:\n"
        "                return -1\n",
        (CLOSE + "test_a_file_that_shrinks_during_its_download_ends_the_stream",),
    ),
    Mutation(
        "partial-send-dropped", "ftpd/connection.py",
        "            out[0] = memoryview(chunk)[sent:]\n",
        "            out.pop(0)\n",
        (CLOSE + "test_replies_the_socket_takes_only_in_part_arrive_whole",),
    ),
    Mutation(
        "emfile-spins", "ftpd/server.py",
        "                    self._pause_accepting(1.0)\n"
        "                    return\n",
        "                    continue\n",
        (CLOSE + "test_accepting_pauses_when_the_daemon_runs_out_of_descriptors",),
    ),
    Mutation(
        "checkpoint-on-reactor", "ftpd/server.py",
        "            self.pool.submit(self.store.checkpoint, self._checkpoint_done)\n",
        "            self._checkpoint_done(self.store.checkpoint(), None)\n",
        (CLOSE + "test_the_database_is_checkpointed_periodically_on_a_worker",),
    ),
    Mutation(
        "checkpoint-failure-silent", "ftpd/server.py",
        '            log.warning("database checkpoint failed: %s", error)\n',
        "            pass\n",
        (CLOSE + "test_a_failed_checkpoint_is_logged_and_the_daemon_goes_on",),
    ),
    Mutation(
        "edquot-unmapped", "storage/confine.py",
        "    if code in (errno.ENOSPC, errno.EDQUOT):\n",
        "    if code == errno.ENOSPC:\n",
        (CLOSE + "test_no_space_on_any_write_path_of_a_put_is_no_space",),
    ),
    Mutation(
        "inline-error-not-io", "ftpd/connection.py",
        '                reply = ErrorReply(id=req.id, code="IO_ERROR",\n'
        '                                   message=f"commit failed: {outcome}")\n',
        '                reply = ErrorReply(id=req.id, code="INTERNAL",\n'
        '                                   message=f"commit failed: {outcome}")\n',
        (CLOSE + "test_a_failed_inline_store_is_io_error_for_each_put",),
    ),
    Mutation(
        "commit-unexpected-not-logged", "ftpd/connection.py",
        '                log.error("commit of %s failed", upload.path, exc_info=error)\n',
        "",
        (CLOSE + "test_an_unexpected_error_in_a_commit_is_io_error_and_logged",),
    ),
)


def copy_project(into: Path) -> None:
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            subprocess.run(["cp", "-r", str(source), str(into / name)], check=True)
        else:
            shutil.copy2(source, into / name)
    for junk in into.rglob("__pycache__"):
        shutil.rmtree(junk, ignore_errors=True)


def apply(mutation: Mutation, root: Path) -> None:
    path = root / mutation.file
    text = path.read_text("utf-8")
    count = text.count(mutation.old)
    if count != 1:
        raise SystemExit(f"{mutation.name}: the old text occurs {count} times in "
                         f"{mutation.file}; update MUTATIONS after the refactor")
    path.write_text(text.replace(mutation.old, mutation.new), "utf-8")


def pytest_in(root: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(root)}
    env.pop("COVERAGE_PROCESS_START", None)
    # The copy's packages must win over the editable install of the checkout.
    probe = subprocess.run([sys.executable, "-c", "import ftpd; print(ftpd.__file__)"],
                           cwd=root, env=env, capture_output=True, text=True, check=True)
    if not probe.stdout.strip().startswith(str(root)):
        raise SystemExit(f"the copy's ftpd is not the one imported: {probe.stdout}")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-x", *tests],
                            cwd=root, env=env, capture_output=True, text=True, timeout=900)
    output = (result.stdout + result.stderr).strip()
    if result.returncode not in (0, 1):
        raise SystemExit(f"pytest could not run {tests} (exit {result.returncode}):\n{output}")
    return result.returncode, "\n".join(output.splitlines()[-3:])


def run(mutation: Mutation) -> tuple[bool, float, str]:
    """(caught, seconds the mutant's run took, the tail of pytest's output).

    The tests must pass on the untouched copy first: a test that fails anyway
    proves nothing about the mutation.
    """
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutation.name}-") as tmp:
        root = Path(tmp)
        copy_project(root)
        status, tail = pytest_in(root, mutation.tests)
        if status != 0:
            raise SystemExit(f"{mutation.name}: the tests fail without the mutation:\n{tail}")
        apply(mutation, root)
        start = time.monotonic()
        status, tail = pytest_in(root, mutation.tests)
        return status == 1, time.monotonic() - start, tail


def main(argv: list[str]) -> int:
    known = MUTATIONS
    if "--close-paths" in argv:
        argv = [a for a in argv if a != "--close-paths"]
        known = MUTATIONS + CLOSE_PATH_MUTATIONS
    chosen = [mu for mu in known if not argv or mu.name in argv]
    unknown = set(argv) - {mu.name for mu in known}
    if unknown:
        raise SystemExit(f"unknown mutations: {sorted(unknown)}")
    missed = 0
    for mutation in chosen:
        caught, took, tail = run(mutation)
        missed += not caught
        verdict = "caught" if caught else "MISSED"
        print(f"{verdict:7} {mutation.name:28} {took:6.1f}s  {mutation.file}", flush=True)
        if not caught:
            print("        " + tail.replace("\n", "\n        "), flush=True)
    print(f"{len(chosen) - missed} of {len(chosen)} mutations caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
