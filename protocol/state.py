"""The session state machine shared by server and client: one table.

``TRANSITIONS[state][event]`` is the state a session moves to when ``event``
succeeds in ``state``.  Events are command names, plus five pseudo-events the
server raises itself: ``"inline"`` (a ``put`` with ``inline: true`` was
accepted for reading), ``"data"`` (a DATA frame), ``"done"`` (a transfer
finished or failed; for an inline put: its last byte arrived), ``"end"`` (the
session ends once its queued output is out: a fatal error, a shutdown, the
peer's end of stream) and ``"close"`` (the connection is gone).  ``"commit"``
is also raised by the server itself when the last byte of an upload that did
not defer its hash arrives: either way the upload is then being committed.

The daemon's whole lifecycle lives here, not in flags: ``COMMITTING`` (a
worker verifies and publishes the upload; requests wait) and ``CLOSING``
(nothing more is read; queued output drains, then the socket closes) are
states like the others.
A missing entry is the protocol error: the daemon answers ``BAD_STATE`` (or
``AUTH_REQUIRED`` for a command that is legal once logged in) and the state
does not change.

Commands that fail leave the state unchanged, with one exception the table
cannot express: a failed ``put``/``get`` never enters its transfer state.
(A ``commit`` refused for its offset or its upload's mode is such a failure.)
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    GREETED = "greeted"            # greeting sent, waiting for hello
    ANONYMOUS = "anonymous"        # hello done, not logged in
    READY = "ready"                # logged in, idle
    UPLOADING = "uploading"        # put accepted; DATA frames flow client -> server
    COMMITTING = "committing"      # every byte is in; a worker verifies and publishes the file
    DOWNLOADING = "downloading"    # get accepted; DATA frames flow server -> client
    RECEIVING = "receiving"        # an inline put's DATA frames are arriving
    CLOSING = "closing"            # nothing more is read; queued output drains, then close
    CLOSED = "closed"

    #: Members are singletons compared by identity: hashed by identity too, in C.
    #: (``Enum.__hash__`` is a Python call, made at every look-up in the table and in
    #: ``SERVING``: several per request, issue 17.)
    __hash__ = object.__hash__


_S = State
_ALWAYS = {"ping": None, "quit": _S.CLOSING, "end": _S.CLOSING, "close": _S.CLOSED}
_ENDING = {"end": _S.CLOSING, "close": _S.CLOSED}
_FILE_COMMANDS = ("whoami", "pwd", "cd", "ls", "stat", "mkdir", "rmdir", "rm", "mv",
                  "uploads", "abort", "quota", "hash")


def _row(**moves: State | None) -> dict[str, State | None]:
    """None as a target means 'stay in the same state'."""
    return {**_ALWAYS, **moves}


TRANSITIONS: dict[State, dict[str, State | None]] = {
    _S.GREETED: _row(hello=_S.ANONYMOUS),
    _S.ANONYMOUS: _row(register=None, login=_S.READY, whoami=None),
    _S.READY: _row(**dict.fromkeys(_FILE_COMMANDS), logout=_S.ANONYMOUS,
                   put=_S.UPLOADING, get=_S.DOWNLOADING, inline=_S.RECEIVING),
    _S.UPLOADING: {"data": None, "commit": _S.COMMITTING, "cancel": _S.READY, "done": _S.READY,
                   **_ENDING},
    _S.COMMITTING: {"done": _S.READY, **_ENDING},
    _S.RECEIVING: {"data": None, "done": _S.READY, **_ENDING},
    _S.DOWNLOADING: {"cancel": _S.READY, "ping": None, "done": _S.READY, **_ENDING},
    # A commit running when the session ends still finishes ("done"), and stays closing.
    _S.CLOSING: {"done": None, "end": None, "close": _S.CLOSED},
    _S.CLOSED: {},
}

#: Commands that need a logged-in user; used to pick AUTH_REQUIRED over BAD_STATE.
AUTHENTICATED_COMMANDS = frozenset(TRANSITIONS[_S.READY]) - frozenset(_ALWAYS) - {"inline"}
#: States in which requests are read and handled (elsewhere they wait, or are never read).
SERVING = frozenset({_S.GREETED, _S.ANONYMOUS, _S.READY, _S.UPLOADING, _S.DOWNLOADING,
                     _S.RECEIVING})


def next_state(state: State, event: str) -> State | None:
    """The state after ``event``, or None if the event is illegal in ``state``.

    (A legal event that keeps the state returns ``state`` itself.)
    """
    row = TRANSITIONS[state]
    if event not in row:
        return None
    target = row[event]
    return state if target is None else target


def refusal_code(state: State, event: str) -> str:
    """The error code for an illegal event."""
    if state in (State.GREETED, State.ANONYMOUS) and event in AUTHENTICATED_COMMANDS:
        return "AUTH_REQUIRED" if state is State.ANONYMOUS else "BAD_STATE"
    return "BAD_STATE"
