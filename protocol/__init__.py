"""The wire protocol, sans I/O: frames, typed messages, error codes, session states.

Nothing here touches a socket, a file or a thread; the daemon and the client
both feed it bytes and get typed events back.  See docs/PROTOCOL.md.
"""

from . import messages as _messages
from .codec import MessageStream, Rejected, decode_reply, decode_request, encode
from .errors import (
    ERROR_CODES,
    FATAL_CODES,
    BadFrame,
    BadMessage,
    BadRequest,
    FrameTooLarge,
    ProtocolError,
    UnknownCommand,
)
from .framing import (
    DEFAULT_MAX_CONTROL,
    DEFAULT_MAX_DATA,
    HEADER_SIZE,
    ControlFrame,
    DataChunk,
    FrameDecoder,
    FrameType,
    data_header,
    encode_control,
    encode_data,
)
from .messages import *  # noqa: F403 -- the catalogue's __all__: every message class
from .messages import MAX_INT, PROTOCOL_VERSION, REPLIES, REQUESTS, Message, Reply, Request
from .state import TRANSITIONS, State, next_state, refusal_code

__all__ = [
    "DEFAULT_MAX_CONTROL", "DEFAULT_MAX_DATA", "ERROR_CODES", "FATAL_CODES", "HEADER_SIZE",
    "MAX_INT", "PROTOCOL_VERSION", "REPLIES", "REQUESTS", "TRANSITIONS", "BadFrame",
    "BadMessage", "BadRequest", "ControlFrame", "DataChunk", "FrameDecoder", "FrameTooLarge",
    "FrameType", "Message", "MessageStream", "ProtocolError", "Rejected", "Reply", "Request",
    "State", "UnknownCommand", "data_header", "decode_reply", "decode_request", "encode",
    "encode_control", "encode_data", "next_state", "refusal_code",
]
__all__ += [name for name in _messages.__all__ if name not in __all__]
