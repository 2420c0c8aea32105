"""The session state table (protocol/state.py): what each state accepts and where it leads."""

from __future__ import annotations

import pytest

import protocol as p
from protocol.state import AUTHENTICATED_COMMANDS, TRANSITIONS, State, next_state, refusal_code

S = State
PSEUDO_EVENTS = ("inline", "data", "done", "end", "close")
EVENTS = [*p.REQUESTS, *PSEUDO_EVENTS]
FILE_COMMANDS = ("pwd", "cd", "ls", "stat", "mkdir", "rmdir", "rm", "mv", "uploads", "abort",
                 "quota", "hash")
LIVE = [s for s in State if s is not S.CLOSED]


def test_every_state_has_a_row_and_every_event_is_a_command_or_a_pseudo_event():
    assert set(TRANSITIONS) == set(State)
    for row in TRANSITIONS.values():
        assert set(row) <= set(EVENTS)


def test_every_state_command_pair_maps_to_a_state_or_is_refused():
    for state in State:
        for event in EVENTS:
            target = next_state(state, event)
            if target is None:
                assert refusal_code(state, event) in ("BAD_STATE", "AUTH_REQUIRED")
            else:
                assert isinstance(target, State)


def test_refusal_codes_are_non_fatal_error_codes():
    for code in ("BAD_STATE", "AUTH_REQUIRED"):
        assert code in p.ERROR_CODES and code not in p.FATAL_CODES


def test_every_command_is_accepted_in_some_state():
    for cmd in p.REQUESTS:
        assert any(next_state(state, cmd) is not None for state in State), cmd


def test_hello_is_accepted_only_first_and_leads_to_anonymous():
    assert next_state(S.GREETED, "hello") is S.ANONYMOUS
    for state in State:
        if state is not S.GREETED:
            assert next_state(state, "hello") is None
            assert refusal_code(state, "hello") == "BAD_STATE"


def test_hello_twice_is_bad_state():
    after_hello = next_state(S.GREETED, "hello")
    assert next_state(after_hello, "hello") is None
    assert refusal_code(after_hello, "hello") == "BAD_STATE"


def test_nothing_but_hello_ping_and_quit_before_hello():
    allowed = {e for e in EVENTS if next_state(S.GREETED, e) is not None}
    assert allowed == {"hello", "ping", "quit", "end", "close"}
    for cmd in AUTHENTICATED_COMMANDS:
        assert refusal_code(S.GREETED, cmd) == "BAD_STATE"


@pytest.mark.parametrize("cmd", [*FILE_COMMANDS, "put", "get", "logout"])
def test_commands_needing_a_user_before_login_are_auth_required(cmd):
    assert next_state(S.ANONYMOUS, cmd) is None
    assert refusal_code(S.ANONYMOUS, cmd) == "AUTH_REQUIRED"


def test_put_before_login_is_auth_required():
    assert refusal_code(S.ANONYMOUS, "put") == "AUTH_REQUIRED"


def test_login_leads_to_ready_and_logout_back_to_anonymous():
    assert next_state(S.ANONYMOUS, "login") is S.READY
    assert next_state(S.READY, "logout") is S.ANONYMOUS


def test_login_and_register_only_while_anonymous():
    for cmd in ("login", "register"):
        for state in State:
            if state is not S.ANONYMOUS:
                assert next_state(state, cmd) is None
                assert refusal_code(state, cmd) == "BAD_STATE"
    assert next_state(S.ANONYMOUS, "register") is S.ANONYMOUS      # it does not log in


def test_whoami_works_anonymous_and_logged_in():
    assert next_state(S.ANONYMOUS, "whoami") is S.ANONYMOUS
    assert next_state(S.READY, "whoami") is S.READY


@pytest.mark.parametrize("cmd", FILE_COMMANDS)
def test_file_commands_keep_a_logged_in_session_ready(cmd):
    assert next_state(S.READY, cmd) is S.READY


def test_put_starts_uploading_and_get_starts_downloading():
    assert next_state(S.READY, "put") is S.UPLOADING
    assert next_state(S.READY, "get") is S.DOWNLOADING


def test_data_frames_are_accepted_only_while_uploading_or_receiving_an_inline_put():
    for state in State:
        expected = state if state in (S.UPLOADING, S.RECEIVING) else None
        assert next_state(state, "data") is expected
        if expected is None:
            assert refusal_code(state, "data") == "BAD_STATE"


@pytest.mark.parametrize("transfer", [S.UPLOADING, S.DOWNLOADING])
def test_a_transfer_ends_in_ready_when_done_or_cancelled(transfer):
    assert next_state(transfer, "done") is S.READY
    assert next_state(transfer, "cancel") is S.READY


def test_commit_is_accepted_only_while_uploading_and_starts_committing():
    # A commit that fails with OFFSET_MISMATCH or BAD_STATE leaves the upload running;
    # one that ends the upload (put.done, INTEGRITY) is the "done" event of COMMITTING.
    for state in State:
        expected = S.COMMITTING if state is S.UPLOADING else None
        assert next_state(state, "commit") is expected
        if expected is None:
            assert refusal_code(state, "commit") == "BAD_STATE"
    assert "commit" not in AUTHENTICATED_COMMANDS      # never AUTH_REQUIRED: it is no idle command


def test_cancel_without_a_transfer_is_bad_state():
    for state in (S.GREETED, S.ANONYMOUS, S.READY, S.CLOSED):
        assert next_state(state, "cancel") is None
        assert refusal_code(state, "cancel") == "BAD_STATE"


@pytest.mark.parametrize("transfer", [S.UPLOADING, S.DOWNLOADING])
def test_other_requests_during_a_transfer_are_bad_state(transfer):
    allowed = {"cancel", "ping"} if transfer is S.DOWNLOADING else {"cancel", "commit"}
    for cmd in p.REQUESTS:
        if cmd not in allowed:
            assert next_state(transfer, cmd) is None, cmd
            assert refusal_code(transfer, cmd) == "BAD_STATE"


def test_ping_is_answered_everywhere_but_during_an_upload():
    for state in LIVE:
        if state in (S.COMMITTING, S.CLOSING):
            continue            # no request is handled there: it waits, or is never read
        expected = None if state in (S.UPLOADING, S.RECEIVING) else state
        assert next_state(state, "ping") is expected


def test_quit_closes_outside_transfers():
    for state in (S.GREETED, S.ANONYMOUS, S.READY):
        assert next_state(state, "quit") is S.CLOSING       # then CLOSED once its reply is out
    for state in (S.UPLOADING, S.DOWNLOADING):
        assert next_state(state, "quit") is None


def test_the_connection_closing_ends_every_live_state():
    for state in LIVE:
        assert next_state(state, "close") is S.CLOSED


def test_a_closed_session_accepts_nothing():
    for event in EVENTS:
        assert next_state(S.CLOSED, event) is None
        assert refusal_code(S.CLOSED, event) == "BAD_STATE"


def test_every_state_is_reachable_from_greeted():
    seen, todo = {S.GREETED}, [S.GREETED]
    while todo:
        state = todo.pop()
        for event in EVENTS:
            target = next_state(state, event)
            if target is not None and target not in seen:
                seen.add(target)
                todo.append(target)
    assert seen == set(State)



def test_an_inline_put_is_received_from_ready_and_ends_in_ready():
    assert next_state(S.READY, "inline") is S.RECEIVING
    assert next_state(S.RECEIVING, "data") is S.RECEIVING
    assert next_state(S.RECEIVING, "done") is S.READY
    for state in LIVE:
        if state is not S.READY:
            assert next_state(state, "inline") is None


def test_no_request_is_accepted_while_an_inline_put_is_receiving():
    for cmd in p.REQUESTS:
        assert next_state(S.RECEIVING, cmd) is None, cmd
        assert refusal_code(S.RECEIVING, cmd) == "BAD_STATE"


def test_a_commit_ends_in_ready_or_leaves_a_closing_session_closing():
    assert next_state(S.COMMITTING, "done") is S.READY
    assert next_state(S.CLOSING, "done") is S.CLOSING


def test_no_request_is_handled_while_committing_or_closing():
    for state in (S.COMMITTING, S.CLOSING):
        for cmd in p.REQUESTS:
            assert next_state(state, cmd) is None, (state, cmd)


def test_the_server_can_end_every_live_session_and_closing_only_closes():
    for state in LIVE:
        assert next_state(state, "end") is S.CLOSING
    assert {e for e in EVENTS if next_state(S.CLOSING, e) not in (None, S.CLOSING)} == {"close"}


def test_looking_a_state_up_in_the_table_makes_no_python_call_but_next_states():
    """States hash in C (issue 17): a look-up in the table or in ``SERVING`` costs no
    ``Enum.__hash__`` call."""
    from protocol.state import SERVING
    from tests.call_counting import python_calls

    seen: list[object] = []
    calls = python_calls(lambda: seen.extend((next_state(State.READY, "ls"),
                                              State.READY in SERVING)))
    calls.remove("<lambda>")
    assert seen == [State.READY, True]
    assert calls == ["next_state"], calls
