"""FHIR JSON in and out with decimals kept as sent.

R4 says a decimal's precision is part of its value (`1.50` is not `1.5`) and forbids IEEE
floats, so a decimal literal is read as a `FhirDecimal`: a `decimal.Decimal` (what the
validator and the search index compare) that remembers the literal's exact text, written back
verbatim by `dumps`. orjson parses first (it cannot keep a literal's text, but it is fast);
only a document in which it found a float (a decimal, or an integer past 64 bits) is parsed
again by the standard library's C scanner with a `parse_float` hook. Reads and searches serve
stored bytes and parse nothing. Every place that parses or writes resource JSON uses
`loads`/`dumps` from here.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

JSONDecodeError = json.JSONDecodeError  # orjson.JSONDecodeError is a subclass of it

_MAX_INT = 2**64  # what orjson (and so every other reader of our bodies) holds in an integer


class FhirDecimal(Decimal):
    """A JSON decimal: compares and computes as a `Decimal`, serializes as its literal text."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> FhirDecimal:
        value = super().__new__(cls, text)
        value.text = text
        return value

    def __repr__(self) -> str:
        return f"FhirDecimal('{self.text}')"

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[Any, ...]:
        return (FhirDecimal, (self.text,))

    def __copy__(self) -> FhirDecimal:
        return self

    def __deepcopy__(self, memo: Any) -> FhirDecimal:
        return self


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _integer(text: str) -> int | FhirDecimal:
    value = int(text)
    if -_MAX_INT < value < _MAX_INT:
        return value
    return FhirDecimal(text)  # a decimal written without a fraction, kept as text


_decoder = json.JSONDecoder(
    parse_float=FhirDecimal, parse_int=_integer, parse_constant=_constant, strict=True
)


def _has_float(document: Any) -> bool:
    """Did orjson meet a decimal literal anywhere (it reads each one as a float)?"""
    stack = [document]
    while stack:
        node = stack.pop()
        values = node.values() if type(node) is dict else node
        for value in values:
            kind = type(value)
            if kind is float:
                return True
            if kind is dict or kind is list:
                stack.append(value)
    return False


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON; decimals become `FhirDecimal`s keeping their text. Raises ValueError
    (a `JSONDecodeError` for malformed JSON) like `orjson.loads`."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "number" not in str(exc):
            raise
        try:  # a decimal a double cannot hold (1e400) is still a decimal
            return _slow(data)
        except ValueError:
            raise exc from None
    if type(document) is float or (type(document) in (dict, list) and _has_float(document)):
        return _slow(data)
    return document


def _slow(data: bytes | bytearray | memoryview | str) -> Any:
    if isinstance(data, memoryview | bytearray):
        data = bytes(data)
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if text.startswith("\ufeff"):
        raise JSONDecodeError("Unexpected UTF-8 BOM", text, 0)
    try:
        return _decoder.decode(text)
    except RecursionError:  # deeper than Python's stack allows (orjson stops at 1024)
        raise JSONDecodeError("JSON is nested too deeply", text, 0) from None


def _default(value: Any) -> Any:
    if isinstance(value, FhirDecimal):
        return orjson.Fragment(value.text)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"{value} is not a JSON number")
        return orjson.Fragment(str(value))
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps(value: Any, option: int | None = None) -> bytes:
    """orjson's serialization, with every `Decimal` written as its text (a `FhirDecimal`
    exactly as it was read)."""
    if option is None:
        return orjson.dumps(value, default=_default)
    return orjson.dumps(value, default=_default, option=option)


def copy(value: Any) -> Any:
    """A deep copy of parsed JSON (dicts, lists, scalars); decimals are immutable, shared."""
    if type(value) is dict:
        return {k: copy(v) for k, v in value.items()}
    if type(value) is list:
        return [copy(v) for v in value]
    return value
