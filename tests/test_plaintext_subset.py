"""The same scenarios over a ``--plaintext`` daemon (``@pytest.mark.plaintext``).

The live-daemon fixtures speak TLS by default; these are existing tests of
tests/test_daemon_commands.py run once more with TLS off, so that the plain
transport (``os.sendfile`` downloads, clear-text frames) stays covered too.
Each is wrapped, not re-marked, so the originals still run over TLS.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest

from tests import test_daemon_commands as commands
from tests.test_daemon_commands import conn, daemon  # noqa: F401  (the scenarios' fixtures)


def plaintext(test: Callable[..., Any]) -> Callable[..., Any]:
    """``test`` again, marked ``plaintext`` (the original keeps its own marks)."""
    @functools.wraps(test)
    def again(*args: Any, **kwargs: Any) -> Any:
        return test(*args, **kwargs)
    again.pytestmark = [*getattr(test, "pytestmark", []),  # type: ignore[attr-defined]
                        pytest.mark.plaintext.mark]
    return again


test_greeting_plain = plaintext(commands.test_greeting_announces_protocol_version_and_limits)
test_login_plain = plaintext(commands.test_login_with_the_right_password_succeeds)
test_pipelined_plain = plaintext(commands.test_pipelined_requests_are_answered_in_order)
test_put_get_plain = plaintext(commands.test_put_then_get_round_trips_with_sha256)
test_resume_plain = plaintext(commands.test_put_resumes_from_the_daemons_offset_after_a_disconnect)
test_limit_plain = plaintext(commands.test_connections_over_the_per_address_limit_are_refused)
test_ls_paged_plain = plaintext(commands.test_ls_of_a_large_folder_comes_in_pages)
test_get_offset_plain = plaintext(commands.test_get_from_an_offset_sends_the_rest)
test_cancel_download_plain = plaintext(commands.test_cancel_mid_download_stops_at_a_frame_boundary)


@pytest.mark.plaintext
def test_the_marker_starts_plain_text_daemons(server_factory, inproc_server):
    for d in (server_factory(), inproc_server()):
        assert not d.tls
        with commands.Wire(d.host, d.port, tls=False) as wire:   # clear-text greeting
            assert wire.greeting.type == "greeting"


def test_without_the_marker_daemons_speak_tls(server_factory):
    d = server_factory()
    assert d.tls and d.fingerprint.startswith("SHA256:")
    with commands.Wire(d.host, d.port) as wire:                  # wrapped: port is TLS
        assert wire.sock.version() == "TLSv1.3"
