"""Coverage-guided fuzzing of the sans-IO decoders (protocol/framing.py, protocol/codec.py).

    python -m tests.fuzz_decoder -max_total_time=120        # what `make fuzz` runs
    python -m tests.fuzz_decoder -runs=100000 corpus_dir/   # any libFuzzer flag works

Without a corpus folder argument, a fresh one is seeded with valid and broken frames.

With atheris installed (``pip install -e '.[fuzz]'``) libFuzzer drives the input;
without it the same checks run over a bounded random-and-mutated input loop
(``-max_total_time=N`` and ``-runs=N`` are honoured; default 30 s), so the harness
is useful everywhere.

Each input picks a target -- ``FrameDecoder``, ``MessageStream("server")`` or
``MessageStream("client")`` -- small or default frame limits, and a split point.
The bytes are fed whole to one decoder and in two pieces to another, then EOF.
The checks:

* nothing but ``ProtocolError`` ever escapes (any other exception is a crash);
* ``buffered`` never exceeds the control limit, whatever was fed;
* after a framing error the decoder is dead: feeding again raises the same error;
* ``FrameDecoder`` gives the same frames and the same error however the bytes
  were cut; ``MessageStream`` gives the same events when the input is clean,
  and fails (with some protocol error) for one cut iff it fails for the other;
* every request or reply it decodes re-encodes to a frame that decodes to an
  equal message.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from typing import Any

from protocol import (
    DataChunk,
    FrameDecoder,
    MessageStream,
    ProtocolError,
    Rejected,
    decode_reply,
    decode_request,
    encode,
)
from protocol import messages as m
from protocol.framing import HEADER, HEADER_SIZE, ControlFrame

LIMITS = (16, 64, 1024, 64 * 1024)
TARGETS = ("frames", "server", "client")


def _dead_check(decoder: Any, error: ProtocolError) -> None:
    """A decoder that raised stays dead and raises the same error."""
    for attempt in (lambda: decoder.feed(b"\x00\x00\x00\x01\x01{"), decoder.feed_eof):
        try:
            attempt()
        except ProtocolError as again:
            assert again is error or (again.code == error.code), (again, error)
        else:
            raise AssertionError("a failed decoder accepted more input")


def _bounded(decoder: Any) -> None:
    frames = decoder.frames if isinstance(decoder, MessageStream) else decoder
    assert frames.buffered <= max(frames.max_control, HEADER_SIZE - 1), \
        (frames.buffered, frames.max_control)


def _normalise(events: list[Any]) -> list[Any]:
    """Frame-level view: control payloads/messages as they are, DATA chunks merged per frame."""
    out: list[Any] = []
    open_data = False
    for e in events:
        if isinstance(e, DataChunk):
            if open_data:
                out[-1] = ("D", out[-1][1] + bytes(e.data))
            else:
                out.append(("D", bytes(e.data)))
            open_data = not e.frame_end
            continue
        open_data = False
        if isinstance(e, ControlFrame):
            out.append(("C", e.payload))
        elif isinstance(e, Rejected):
            out.append(("R", e.error.code, e.error.message, e.error.request_id))
        else:
            out.append(("M", e))
    return out


def _run(target: str, limit: int, pieces: list[bytes]) -> tuple[list[Any], str | None]:
    """Feed ``pieces`` then EOF; returns (normalised events, error code or None)."""
    if target == "frames":
        decoder: Any = FrameDecoder(max_control=limit, max_data=limit)
    else:
        decoder = MessageStream(target, max_control=limit, max_data=limit)  # type: ignore[arg-type]
    events: list[Any] = []
    try:
        for piece in pieces:
            # DataChunk views point into ``piece``, which ``pieces`` keeps alive.
            events.extend(decoder.feed(piece))
            _bounded(decoder)
        decoder.feed_eof()
    except ProtocolError as exc:
        assert exc.code in ("BAD_FRAME", "FRAME_TOO_LARGE", "BAD_MESSAGE"), exc
        _bounded(decoder)
        if exc.code != "BAD_MESSAGE":
            # Framing errors kill the decoder for good (the stream cannot resynchronise);
            # BAD_MESSAGE is per frame, and the caller closes the connection.
            _dead_check(decoder, exc)
        return _normalise(events), exc.code
    return _normalise(events), None


def _roundtrip(events: list[Any], target: str) -> None:
    for e in events:
        if e[0] != "M":
            continue
        message = e[1]
        payload = encode(message)[HEADER_SIZE:]
        again = decode_request(payload) if target == "server" else decode_reply(payload)
        assert again == message, (message, again)


def check(data: bytes) -> None:
    """The fuzz target: one input, all the checks above."""
    if len(data) < 3:
        return
    target = TARGETS[data[0] % 3]
    limit = LIMITS[(data[0] // 3) % len(LIMITS)]
    body = data[3:]
    split = int.from_bytes(data[1:3], "big") % (len(body) + 1)
    whole, whole_err = _run(target, limit, [body])
    cut, cut_err = _run(target, limit, [body[:split], body[split:]])
    if target == "frames":
        assert whole_err == cut_err, (whole_err, cut_err)
        if whole_err is None:
            assert whole == cut
    else:
        assert (whole_err is None) == (cut_err is None), (whole_err, cut_err)
        if whole_err is None:
            assert whole == cut
        _roundtrip(whole, target)
        _roundtrip(cut, target)


# ---------------------------------------------------------------- inputs without libFuzzer


def _seed_messages() -> list[bytes]:
    frames = [
        encode(m.Hello(id=1, protocol=1, client="fuzz", max_data=65536)),
        encode(m.Login(id=2, user="alice", password="pw", want_token=True)),
        encode(m.Put(id=3, path="a/b.bin", size=10, sha256="0" * 64, overwrite=True)),
        encode(m.Get(id=4, path="x", offset=3)), encode(m.Mv(id=5, src="a", dst="b")),
        encode(m.Ping(id=6, payload="\u00e9\u2025")), encode(m.Cancel(id=7)),
        encode(m.Greeting(protocol=1, server="ftpd", max_control=65536, max_data=1 << 20)),
        encode(m.ErrorReply(id=None, code="BAD_STATE", message="no", details={"a": [1]})),
        encode(m.LsOk(id=8, path="/", entries=(m.Entry(name="f", type="file", size=1,
                                                       mtime=1.5),), more=True)),
        encode(m.PutReady(id=3, path="/a", offset=0)), encode(m.GetDone(id=4, path="/x", size=3)),
        HEADER.pack(4, 2) + b"data", HEADER.pack(0, 1), HEADER.pack(2**32 - 1, 2),
        HEADER.pack(2, 1) + b"[]", HEADER.pack(3, 9) + b"abc",
        HEADER.pack(7, 1) + b"\xff\xfe{}\x00\x01\x02", HEADER.pack(12, 1) + b"[" * 12,
    ]
    return frames


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(0, 4)):
        choice = rng.random()
        if not buf or choice < 0.2:
            i = rng.randint(0, len(buf))
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif choice < 0.5:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif choice < 0.7:
            i = rng.randrange(len(buf))
            buf[i] = rng.choice([0, 1, 2, 0x7F, 0x80, 0xFF])
        elif choice < 0.85:
            del buf[rng.randrange(len(buf)):]
        else:
            i = rng.randrange(len(buf))
            buf[i:i] = buf[: rng.randint(0, min(64, len(buf)))]
    return bytes(buf)


def random_input(rng: random.Random, seeds: list[bytes]) -> bytes:
    prefix = bytes([rng.randrange(256), rng.randrange(256), rng.randrange(256)])
    if rng.random() < 0.2:
        return prefix + rng.randbytes(rng.randint(0, 512))
    stream = b"".join(rng.choice(seeds) for _ in range(rng.randint(1, 6)))
    return prefix + _mutate(rng, stream)


def run_random(seconds: float, runs: int, seed: int | None = None) -> int:
    """The fallback loop: bounded by ``seconds`` and ``runs``; returns executions."""
    rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "big"))
    seeds = _seed_messages()
    deadline = time.monotonic() + seconds
    done = 0
    while done < runs and time.monotonic() < deadline:
        data = random_input(rng, seeds)
        try:
            check(data)
        except BaseException:
            sys.stderr.write(f"failing input: {data!r}\n")
            raise
        done += 1
    return done


def _seed_corpus() -> str:
    """A fresh corpus folder seeded with valid and broken frames for every target."""
    folder = tempfile.mkdtemp(prefix="fuzz_decoder_corpus_")
    for i, frame in enumerate(_seed_messages()):
        for target in range(3):
            with open(os.path.join(folder, f"seed-{i}-{target}"), "wb") as fh:
                fh.write(bytes([target + 9, 0, len(frame) // 2]) + frame)
    return folder


def _flag(argv: list[str], name: str, default: float) -> float:
    for arg in argv:
        if arg.startswith(f"-{name}="):
            return float(arg.split("=", 1)[1])
    return default


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is None or "-no_atheris=1" in argv:
        seconds = _flag(argv, "max_total_time", 30)
        runs = int(_flag(argv, "runs", 10**12))
        start = time.monotonic()
        done = run_random(seconds, runs)
        print(f"fuzz_decoder (no atheris, random loop): {done} executions in "
              f"{time.monotonic() - start:.1f} s, no failures")
        return 0
    if not [a for a in argv[1:] if not a.startswith("-")]:
        argv.append(_seed_corpus())
    atheris.instrument_all()
    atheris.Setup(argv, check)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
