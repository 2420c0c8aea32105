"""The schema engine behind the message catalogue: typed, validated, JSON-mapped records.

A message class is a frozen dataclass deriving from ``Message``; its type
annotations say the JSON type of each field and ``fld(...)`` puts the field's
rules (ranges, lengths, patterns, choices) in its metadata.  This module turns
those into one check per field, worked out once per class, and maps records to
and from JSON objects.  It knows no message by name: the catalogue is
:mod:`protocol.messages`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import BadRequest

__all__ = ["Message", "fld"]

_MISSING = dataclasses.MISSING


def fld(default: Any = _MISSING, *, min: int | None = None, max: int | None = None,
        max_len: int | None = None, min_len: int | None = None,
        pattern: re.Pattern[str] | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with validation rules in its metadata."""
    meta = {"min": min, "max": max, "max_len": max_len, "min_len": min_len,
            "pattern": pattern, "choices": choices}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class _Rule:
    name: str
    base: type
    optional: bool
    item: type | None          # element class of a tuple[...] field
    meta: dict[str, Any]
    has_default: bool


@dataclass(frozen=True)
class _Schema:
    """What a message class needs at run time, worked out once per class.

    Every message sent or received is validated, so the rules are turned into
    one small closure per field (``checks``) instead of being interpreted
    field by field, rule by rule, on every message.
    """

    rules: tuple[_Rule, ...]
    checks: tuple[tuple[str, Callable[[Any], None]], ...]
    plain: tuple[str, ...]             # fields that go to and from JSON as they are
    nested: tuple[_Rule, ...]          # records and lists of records
    scalars: tuple[str, ...]           # lists of strings (Hello.digests): tuples in Python
    required: tuple[str, ...]          # fields the JSON object must have


_SCHEMAS: dict[type, _Schema] = {}


def _schema(cls: type) -> _Schema:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        rules = _build_rules(cls)
        schema = _SCHEMAS[cls] = _Schema(
            rules=rules,
            checks=tuple((rule.name, _compile_check(cls, rule)) for rule in rules),
            plain=tuple(rule.name for rule in rules if rule.item is None),
            nested=tuple(rule for rule in rules if rule.item is not None
                         and issubclass(rule.item, Message)),
            scalars=tuple(rule.name for rule in rules if rule.item is not None
                          and not issubclass(rule.item, Message)),
            required=tuple(rule.name for rule in rules
                           if not rule.has_default and not rule.optional))
    return schema


def _build_rules(cls: type) -> tuple[_Rule, ...]:
    hints = typing.get_type_hints(cls)
    built = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        if optional:
            hint = next(a for a in args if a is not type(None))
        item = None
        origin = typing.get_origin(hint)
        if origin is tuple:
            item, hint = typing.get_args(hint)[0], tuple
        elif origin is dict:
            hint = dict
        elif isinstance(hint, type) and issubclass(hint, Message):
            item = hint          # a nested record, e.g. StatOk.entry
        has_default = f.default is not _MISSING or f.default_factory is not _MISSING
        built.append(_Rule(f.name, hint, optional, item, dict(f.metadata), has_default))
    return tuple(built)


def _compile_check(cls: type, rule: _Rule) -> Callable[[Any], None]:
    """One field's rules as a closure: ``check(value)`` raises ``BadRequest`` or returns."""
    where = f"{getattr(cls, 'cmd', None) or getattr(cls, 'type', cls.__name__)}.{rule.name}"
    base, optional, item = rule.base, rule.optional, rule.item
    meta = rule.meta
    lo, hi = meta.get("min"), meta.get("max")
    max_len, min_len = meta.get("max_len"), meta.get("min_len")
    pattern, choices = meta.get("pattern"), meta.get("choices")
    fullmatch = pattern.fullmatch if pattern is not None else None

    def fail(message: str) -> None:
        raise BadRequest(f"{where} {message}")

    def check_type(value: Any) -> bool:
        """False for None (allowed), True for a value of the right type; raises otherwise."""
        if value is None:
            if not optional:
                fail("is required")
            return False
        if type(value) is not base and not (base is float and type(value) is int):
            fail(f"must be {base.__name__}, not {type(value).__name__}")
        return True

    if base is int or base is float:
        def check(value: Any) -> None:
            if type(value) is not int and not check_type(value):
                return
            if type(value) is float and not math.isfinite(value):
                # 1e400 parses as inf: the encoder could never send it back (allow_nan=False).
                fail("must be a finite number")
            if lo is not None and value < lo:
                fail(f"must be >= {lo}")
            if hi is not None and value > hi:
                fail(f"must be <= {hi}")
    elif base is str:
        def check(value: Any) -> None:
            if type(value) is not str and not check_type(value):
                return
            if max_len is not None and len(value) > max_len:
                fail(f"is longer than {max_len} characters")
            if min_len is not None and len(value) < min_len:
                fail("must not be empty")
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    fail("is not valid Unicode (lone surrogate)")
            if fullmatch is not None and not fullmatch(value):
                fail("is malformed")
            if choices is not None and value not in choices:
                fail(f"must be one of {', '.join(choices)}")
    elif base is dict:
        def check(value: Any) -> None:
            if not check_type(value):
                return
            # Free-form JSON (ErrorReply.details): it must be encodable again, so no
            # infinities, lone surrogates or non-JSON objects.
            try:
                json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
            except (TypeError, ValueError, RecursionError):
                fail("is not encodable as JSON")
    elif base is tuple:
        def check(value: Any) -> None:
            if not check_type(value):
                return
            # A list of strings carries its rules per element (length, pattern) and
            # ``max`` as the most elements it may hold.
            if hi is not None and len(value) > hi:
                fail(f"holds more than {hi} elements")
            for element in value:
                if type(element) is not item:
                    fail(f"holds a {type(element).__name__}")
                if item is str:
                    if max_len is not None and len(element) > max_len:
                        fail(f"holds a string longer than {max_len} characters")
                    if fullmatch is not None and not fullmatch(element):
                        fail("holds a malformed string")
    else:
        def check(value: Any) -> None:
            check_type(value)
    return check


class Message:
    """Base of every control message."""

    def __post_init__(self) -> None:
        schema = _SCHEMAS.get(type(self)) or _schema(type(self))
        for name, check in schema.checks:
            check(getattr(self, name))
        self._check()

    def _check(self) -> None:
        """Cross-field rules; subclasses override."""

    def to_wire(self) -> dict[str, Any]:
        schema = _SCHEMAS.get(type(self)) or _schema(type(self))
        out: dict[str, Any] = {}
        for name in schema.plain:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for name in schema.scalars:
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value)
        for rule in schema.nested:
            value = getattr(self, rule.name)
            if value is None:
                continue
            if rule.base is tuple:
                out[rule.name] = [element.to_wire() for element in value]
            else:
                out[rule.name] = value.to_wire()
        return out

    @classmethod
    def from_wire(cls, obj: Any) -> Any:
        if type(obj) is not dict:
            raise BadRequest(f"{cls.__name__} must be a JSON object")
        schema = _SCHEMAS.get(cls) or _schema(cls)
        for name in schema.required:
            if name not in obj:
                raise BadRequest(f"{cls.__name__}: missing field {name!r}")
        kwargs = {name: obj[name] for name in schema.plain if name in obj}
        for name in schema.scalars:
            if name in obj:
                value = obj[name]
                if type(value) is not list and value is not None:
                    raise BadRequest(f"{cls.__name__}.{name} must be a list")
                kwargs[name] = None if value is None else tuple(value)
        for rule in schema.nested:
            if rule.name not in obj:
                continue
            value = obj[rule.name]
            if rule.base is tuple:
                if type(value) is not list:
                    raise BadRequest(f"{cls.__name__}.{rule.name} must be a list")
                value = tuple(rule.item.from_wire(element) for element in value)  # type: ignore[union-attr]
            elif value is not None:
                value = rule.item.from_wire(value)  # type: ignore[union-attr]
            kwargs[rule.name] = value
        return cls(**kwargs)
