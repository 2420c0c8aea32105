"""Human-readable byte sizes ("1G", "500M", "1.5G") for quotas on the command line."""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["parse_size"]

# Binary units: administrators think of a "1G" quota as 2**30 bytes.
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGTPE]?)(?:I?B)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse ``"1024"``, ``"64K"``, ``"500M"``, ``"1.5G"``, ``"2GiB"`` into bytes.

    Units are binary (K = 1024) and case-insensitive; an optional ``B``/``iB``
    suffix is accepted.  Fractional results are rounded down to whole bytes.
    Raises ``ValueError`` for anything else (negative, empty, unknown unit).
    """
    if not isinstance(text, str):
        raise ValueError(f"size must be a string, not {type(text).__name__}")
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid size: {text!r}")
    number, unit = match.groups()
    # Fraction keeps "1.5G" exact instead of going through binary floats.
    return int(Fraction(number) * _UNITS[unit.upper()])
