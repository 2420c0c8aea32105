"""The session state machine shared by server and client: one table.

``TRANSITIONS[state][event]`` is the state a session moves to when ``event``
succeeds in ``state``.  Events are command names, plus four pseudo-events the
server raises itself: ``"inline"`` (a ``put`` with ``inline: true`` was
accepted for reading), ``"data"`` (a DATA frame), ``"done"`` (a transfer
finished or failed; for an inline put: its last byte arrived) and ``"close"``.
A missing entry is the protocol error: the daemon answers ``BAD_STATE`` (or
``AUTH_REQUIRED`` for a command that is legal once logged in) and the state
does not change.

Commands that fail leave the state unchanged, with one exception the table
cannot express: a failed ``put``/``get`` never enters its transfer state.
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    GREETED = "greeted"            # greeting sent, waiting for hello
    ANONYMOUS = "anonymous"        # hello done, not logged in
    READY = "ready"                # logged in, idle
    UPLOADING = "uploading"        # put accepted; DATA frames flow client -> server
    DOWNLOADING = "downloading"    # get accepted; DATA frames flow server -> client
    RECEIVING = "receiving"        # an inline put's DATA frames are arriving
    CLOSED = "closed"


_S = State
_ALWAYS = {"ping": None, "quit": _S.CLOSED, "close": _S.CLOSED}
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
    _S.UPLOADING: {"data": None, "commit": None, "cancel": _S.READY, "done": _S.READY,
                   "close": _S.CLOSED},
    _S.RECEIVING: {"data": None, "done": _S.READY, "close": _S.CLOSED},
    _S.DOWNLOADING: {"cancel": _S.READY, "ping": None, "done": _S.READY, "close": _S.CLOSED},
    _S.CLOSED: {},
}

#: Commands that need a logged-in user; used to pick AUTH_REQUIRED over BAD_STATE.
AUTHENTICATED_COMMANDS = frozenset(TRANSITIONS[_S.READY]) - frozenset(_ALWAYS) - {"inline"}


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
