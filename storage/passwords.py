"""scrypt password hashing with self-describing stored hashes.

Stored form: ``scrypt$<n>$<r>$<p>$<salt_b64>$<hash_b64>``.  Keeping the cost
parameters next to each hash lets the defaults be raised later without breaking
existing accounts.  Every scrypt invocation goes through :class:`PasswordHasher`
so that ``calls`` counts them exactly (the daemon's tests count hash calls
instead of measuring time).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from dataclasses import dataclass

__all__ = ["PasswordHasher", "ScryptParams", "parse_params"]

_SALT_BYTES = 16
_KEY_BYTES = 32
_SCHEME = "scrypt"


@dataclass(frozen=True)
class ScryptParams:
    n: int
    r: int
    p: int

    def __post_init__(self) -> None:
        for field, value in (("n", self.n), ("r", self.r), ("p", self.p)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"scrypt {field} must be a positive integer")
        if self.n < 2 or self.n & (self.n - 1):
            raise ValueError("scrypt n must be a power of 2 greater than 1")

    @property
    def maxmem(self) -> int:
        """Memory OpenSSL needs (128*r*(n+2) for V plus 128*r*p for B) with 1 MiB slack.

        OpenSSL's default cap (32 MiB) would reject n >= 2**15 with r = 8.
        """
        return 128 * self.r * (self.n + 2) + 128 * self.r * self.p + (1 << 20)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _parse(encoded: str) -> tuple[ScryptParams, bytes, bytes] | None:
    try:
        scheme, n, r, p, salt, key = encoded.split("$")
        if scheme != _SCHEME:
            return None
        params = ScryptParams(int(n), int(r), int(p))
        return params, base64.b64decode(salt, validate=True), base64.b64decode(key, validate=True)
    except (ValueError, TypeError):
        return None


def parse_params(encoded: str) -> ScryptParams | None:
    """The cost parameters of a stored hash (None if it is not one of ours)."""
    parsed = _parse(encoded)
    return None if parsed is None else parsed[0]


class PasswordHasher:
    """Hashes and verifies passwords with scrypt, counting every invocation."""

    def __init__(self, params: ScryptParams) -> None:
        self.params = params
        self._calls = 0
        self._lock = threading.Lock()
        # A stand-in for unknown users: random salt and key, so verifying against it
        # costs one scrypt like a real account and can never succeed.
        self._dummies: dict[ScryptParams, tuple[ScryptParams, bytes, bytes]] = {}
        self._dummy = self._dummy_for(params)

    #: Characters after the parameters in a stored hash: ``$``, salt, ``$``, key (base64).
    salt_and_key_chars = 1 + len(_b64(bytes(_SALT_BYTES))) + 1 + len(_b64(bytes(_KEY_BYTES)))

    def _dummy_for(self, params: ScryptParams) -> tuple[ScryptParams, bytes, bytes]:
        with self._lock:
            dummy = self._dummies.get(params)
            if dummy is None:
                if len(self._dummies) >= 16:
                    self._dummies.clear()
                dummy = (params, os.urandom(_SALT_BYTES), os.urandom(_KEY_BYTES))
                self._dummies[params] = dummy
            return dummy

    @property
    def calls(self) -> int:
        with self._lock:
            return self._calls

    def _scrypt(self, password: str, salt: bytes, params: ScryptParams) -> bytes:
        with self._lock:
            self._calls += 1
        return hashlib.scrypt(
            password.encode("utf-8", "surrogatepass"), salt=salt, n=params.n, r=params.r,
            p=params.p, maxmem=params.maxmem, dklen=_KEY_BYTES,
        )

    def hash(self, password: str) -> str:
        """New stored hash with a fresh random salt and the current parameters."""
        salt = os.urandom(_SALT_BYTES)
        key = self._scrypt(password, salt, self.params)
        p = self.params
        return f"{_SCHEME}${p.n}${p.r}${p.p}${_b64(salt)}${_b64(key)}"

    def verify(self, password: str, encoded: str | None,
               unknown_params: ScryptParams | None = None) -> bool:
        """Exactly one scrypt call whatever the input; ``encoded=None`` means unknown user.

        An unknown user is checked against a stand-in hash with ``unknown_params``
        (default: the configured ones), so that it costs what a real account does."""
        parsed = _parse(encoded) if encoded is not None else None
        if parsed is not None:
            params, salt, expected = parsed
        elif unknown_params is None or unknown_params == self.params:
            params, salt, expected = self._dummy
        else:
            params, salt, expected = self._dummy_for(unknown_params)
        try:
            key = self._scrypt(password, salt, params)
        except (ValueError, MemoryError):
            # Unusable stored parameters: fail closed (the call was still counted).
            return False
        return hmac.compare_digest(key, expected) and parsed is not None
