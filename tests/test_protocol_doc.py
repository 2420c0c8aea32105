"""docs/PROTOCOL.md cannot rot: everything the code defines must be in it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import protocol as p
from protocol.state import AUTHENTICATED_COMMANDS, State, next_state, refusal_code
from storage.names import MAX_PASSWORD_CHARS
from tests.error_sites import sites

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"
TEXT = DOC.read_text(encoding="utf-8")
EVENTS = [*p.REQUESTS, "inline", "data", "done", "end", "close"]


def section(heading: str) -> str:
    """The text under ``### heading`` up to the next heading."""
    match = re.search(rf"^### {re.escape(heading)}\n(.*?)(?=^#)", TEXT, re.M | re.S)
    assert match, f"no section '### {heading}' in {DOC.name}"
    return match.group(1)


@pytest.mark.parametrize("cmd", list(p.REQUESTS))
def test_every_command_has_its_own_section(cmd):
    section(cmd)


@pytest.mark.parametrize("reply_type", list(p.REPLIES))
def test_every_reply_type_appears(reply_type):
    assert f"`{reply_type}`" in TEXT


@pytest.mark.parametrize("code", list(p.ERROR_CODES))
def test_every_error_code_appears(code):
    assert f"`{code}`" in TEXT


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - {"id"}


@pytest.mark.parametrize("cmd", list(p.REQUESTS))
def test_every_field_of_a_command_and_its_replies_is_described_in_its_section(cmd):
    text = section(cmd)
    names = _fields(p.REQUESTS[cmd])
    for reply_type, cls in p.REPLIES.items():
        if reply_type == cmd or reply_type.startswith(cmd + "."):
            names |= _fields(cls)
    missing = sorted(n for n in names if f"`{n}" not in text)
    assert not missing, f"### {cmd} does not mention {missing}"


@pytest.mark.parametrize("cls", [p.Entry, p.UploadInfo, p.Greeting, p.ErrorReply],
                         ids=lambda c: c.__name__)
def test_every_field_of_the_records_greeting_and_error_is_described(cls):
    missing = sorted(n for n in _fields(cls) if f"| `{n}" not in TEXT)
    assert not missing, f"{cls.__name__} fields {missing} are not in a table"


def test_error_code_table_matches_error_codes_and_fatal_codes():
    for code, meaning in p.ERROR_CODES.items():
        row = f"| `{code}` | {'yes' if code in p.FATAL_CODES else 'no'} | {meaning} |"
        assert row in TEXT, f"error table row out of date: {row}"


def test_state_table_matches_protocol_state():
    states = list(State)
    assert "| event | " + " | ".join(s.name for s in states) + " |" in TEXT
    for event in EVENTS:
        cells = []
        for state in states:
            target = next_state(state, event)
            if target is None:
                cells.append(refusal_code(state, event))
            else:
                cells.append("stay" if target is state else f"→ {target.name}")
        row = f"| `{event}` | " + " | ".join(cells) + " |"
        assert row in TEXT, f"state table row out of date: {row}"


def test_limits_and_version_are_stated():
    for value in (p.DEFAULT_MAX_CONTROL, p.DEFAULT_MAX_DATA, p.MAX_INT):
        assert str(value) in TEXT
    assert p.HEADER_SIZE == 5 and "5-byte header" in TEXT
    assert f"protocol version | {p.PROTOCOL_VERSION}" in TEXT


def test_worked_example_bytes_are_what_the_encoder_produces():
    frame = p.encode(p.Ping(id=7, payload="hé"))
    hex_bytes = frame.hex(" ")
    start = TEXT.index("00 00 00 25")
    block = TEXT[start:TEXT.index("```", start)]
    shown = " ".join(re.findall(r"^((?:[0-9a-f]{2} )+)", block, re.M)).split()
    assert " ".join(shown) == hex_bytes
    assert p.encode_data(b"hello\n").hex(" ").replace(" ", "") in \
        TEXT.replace(" ", "").replace("\n", "")


# ---------------------------------------------------------------- section 6 error lists
#
# Each command's "Errors" in section 6 against the codes its handler can produce,
# derived from the source (tests/error_sites.py: the raise sites of the handler,
# the session's transfer code and the storage layer, transitively).

#: Codes the text above the commands promises for any request (section 6, Notation).
GENERIC = {"UNKNOWN_COMMAND", "BAD_REQUEST", "BAD_STATE", "AUTH_REQUIRED", "IO_ERROR",
           *p.FATAL_CODES}
#: Codes a logged-in command can derive that cannot reach the wire, with the reason.
LOGGED_IN_UNREACHABLE = {
    "BAD_USERNAME": "the store checks the session's own user name, which is always valid",
    "NO_SUCH_USER": "only for an account deleted while its session is open (section 14)",
}
#: Per command: derivable codes that cannot happen, and why (each must stay derivable).
UNREACHABLE = {
    "register": {
        "BAD_PASSWORD": "the message layer's password rule (1-1024 characters) is the "
                        "store's, so BAD_REQUEST comes first (section 13)",
        "BAD_PATH": "creating the account's own folders under the server root",
        "EXISTS": "creating the account's own folders under the server root",
        "NOT_A_DIRECTORY": "creating the account's own folders under the server root",
        "NOT_FOUND": "creating the account's own folders under the server root",
    },
    "login": {"NO_SUCH_USER": "the handler answers it AUTH_FAILED, like a wrong password"},
    "cd": {"IS_A_DIRECTORY": "the working folder is opened read-only with O_DIRECTORY, which "
                             "never says EISDIR (open(2) lists it for write access)"},
    "put": {"NOT_EMPTY": "renaming a file into place never says ENOTEMPTY (only a folder "
                         "onto a folder does)"},
    "commit": {"NOT_EMPTY": "renaming a file into place never says ENOTEMPTY",
               "UPLOAD_BUSY": "a failed stream is discarded by its own writer, which holds "
                              "the claim (the analysis follows UploadManager.abort by name)"},
    "cancel": {**{code: "discarding a stream's partial in the server's own staging folder"
                  for code in ("BAD_PATH", "IS_A_DIRECTORY", "NOT_A_DIRECTORY", "NOT_FOUND")},
               "UPLOAD_BUSY": "a cancelled stream is discarded by its own writer, which holds "
                              "the claim"},
    "rmdir": {"QUOTA_EXCEEDED": "a removed folder only gives its folder_cost back"},
    "mv": {"QUOTA_EXCEEDED": "an empty folder replaced by mv only gives its folder_cost back"},
    "uploads": {"BAD_PATH": "the server's own staging folder",
                "NOT_A_DIRECTORY": "the server's own staging folder",
                "NOT_FOUND": "the server's own staging folder"},
    "abort": {"IS_A_DIRECTORY": "unlinking a partial in the server's own staging folder",
              "NOT_A_DIRECTORY": "unlinking a partial in the server's own staging folder"},
}
#: Codes a command's section names that another command produces for it.
ANSWERED_BY = {"put": {"CANCELLED": "cancel"}, "get": {"CANCELLED": "cancel"}}


def documented_errors(cmd: str) -> set[str]:
    """The codes named in ``### cmd`` from its first "Errors" on."""
    text = section(cmd)
    start = text.find("Errors")
    if start < 0:
        return set()
    return {c for c in re.findall(r"`([A-Z_]+)`", text[start:]) if c in p.ERROR_CODES}


def unreachable(cmd: str) -> dict[str, str]:
    logged_in = cmd in AUTHENTICATED_COMMANDS or cmd in ("put", "get", "commit", "cancel")
    return {**(LOGGED_IN_UNREACHABLE if logged_in else {}), **UNREACHABLE.get(cmd, {})}


@pytest.mark.parametrize("cmd", list(p.REQUESTS))
def test_every_code_a_command_can_produce_is_in_its_error_list(cmd):
    derived = sites().command_codes(cmd)
    missing = sorted(derived - GENERIC - set(unreachable(cmd)) - documented_errors(cmd))
    assert not missing, f"### {cmd}: the daemon can answer {missing}, the document does not say"


@pytest.mark.parametrize("cmd", list(p.REQUESTS))
def test_every_code_in_a_commands_error_list_can_be_produced(cmd):
    derived = sites().command_codes(cmd)
    elsewhere = {code for code, by in ANSWERED_BY.get(cmd, {}).items()
                 if code in sites().command_codes(by)}
    extra = sorted(documented_errors(cmd) - derived - GENERIC - elsewhere)
    assert not extra, f"### {cmd} lists {extra}, which no code path of it produces"


@pytest.mark.parametrize("cmd", sorted(UNREACHABLE))
def test_every_unreachable_code_named_above_is_still_derivable(cmd):
    stale = sorted(set(UNREACHABLE[cmd]) - sites().command_codes(cmd))
    assert not stale, f"{cmd}: {stale} no longer derivable; drop them from UNREACHABLE"


def test_the_message_layers_password_rule_is_the_stores():
    """Why BAD_PASSWORD never reaches the wire (section 13)."""
    for cls in (p.REQUESTS["register"], p.REQUESTS["login"]):
        meta = next(f for f in dataclasses.fields(cls) if f.name == "password").metadata
        assert (meta.get("min_len"), meta.get("max_len")) == (1, MAX_PASSWORD_CHARS)
