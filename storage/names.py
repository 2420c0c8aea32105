"""Validation of user names and passwords.

User names become directory names under ``homes/`` and ``staging/``, so they are
checked against a strict pattern before any use: ``^[a-z0-9][a-z0-9_.-]{0,31}$``
(1-32 characters; lower-case ASCII letters, digits, ``_``, ``.``, ``-``; the first
character a letter or digit, which also rules out ``.`` and ``..``).
"""

from __future__ import annotations

import re

from .errors import BadPassword, BadUsername

__all__ = ["MAX_PASSWORD_CHARS", "USERNAME_PATTERN", "is_valid_username", "check_password",
           "check_username"]

USERNAME_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,31}"
_USERNAME_RE = re.compile(USERNAME_PATTERN)
MAX_PASSWORD_CHARS = 1024


def is_valid_username(name: object) -> bool:
    # fullmatch, not "$": "$" would also accept a trailing newline.
    return isinstance(name, str) and _USERNAME_RE.fullmatch(name) is not None


def check_username(name: object) -> str:
    """Return ``name`` if it is a valid user name, else raise ``BadUsername``."""
    if not is_valid_username(name):
        raise BadUsername(
            "user names are 1-32 characters of a-z 0-9 _ . - starting with a letter or digit",
            name=name if isinstance(name, str) else None,
        )
    return name  # type: ignore[return-value]


def check_password(password: object) -> str:
    """Return ``password`` if it is 1..1024 characters of encodable text, else ``BadPassword``."""
    if not isinstance(password, str) or not 1 <= len(password) <= MAX_PASSWORD_CHARS:
        raise BadPassword(f"passwords are 1 to {MAX_PASSWORD_CHARS} characters")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise BadPassword("password is not valid Unicode text")
    return password
