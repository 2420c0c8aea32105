"""docs/PROTOCOL.md cannot rot: everything the code defines must be in it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import protocol as p
from protocol.state import State, next_state, refusal_code

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
