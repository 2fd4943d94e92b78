"""Request limits: bounded work per request, checked in the few places every request passes.

Every FHIR body is read through `read_body` (size), parsed through `parse_json` (depth, nodes,
array length, strings a database can store), every stored resource is checked again by
`check_document` (mapped HL7/DICOM/OpenEMR content never passed a parser here), every search
through `check_search` (parameters, OR values), every JSON Patch through `apply_json_patch`
(operations, growth of the document while it is patched), and every numeric parameter through
`parse_int`. What breaks a limit is a 4xx OperationOutcome, never a 500 or a stall.

The limits are process-wide, like the settings they come from (`configure` at app start).
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from fhir_server import fhirjson
from fhir_server.errors import FhirError, bad_request

MAX_SEARCH_VALUE_CHARS = 8192  # one search value; a URL is bounded by the HTTP server anyway
MAX_INT = 2**31 - 1  # _count, _offset, version ids: what every database integer column holds


@dataclass(frozen=True, slots=True)
class Limits:
    """The named limits (settings `INTEROP_MAX_*`, `INTEROP_DB_STATEMENT_TIMEOUT_MS`)."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_upload_bytes: int = 512 * 1024 * 1024  # $bulk-upload, streamed to a file
    max_json_depth: int = 64
    max_json_nodes: int = 250_000
    max_array_items: int = 10_000
    max_patch_operations: int = 1_000
    max_search_params: int = 32
    max_search_values: int = 200
    statement_timeout_ms: int = 10_000


_current = Limits()


def configure(limits: Limits) -> None:
    global _current
    _current = limits


def current() -> Limits:
    return _current


def too_costly(diagnostics: str, status: int = 400) -> FhirError:
    return FhirError(status, diagnostics, "too-costly")


# -- bodies ------------------------------------------------------------------------------------


async def read_body(
    headers: dict[str, str], chunks: AsyncIterator[bytes], limit: int | None = None
) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed the limit."""
    limit = current().max_body_bytes if limit is None else limit
    _check_length(headers, limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _body_too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


async def spool_body(headers: dict[str, str], chunks: AsyncIterator[bytes]) -> IO[bytes]:
    """A large body (a `$bulk-upload`) streamed to a temporary file, never held in memory."""
    limit = current().max_upload_bytes
    _check_length(headers, limit)
    spool = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)  # noqa: SIM115 - returned open
    size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise _body_too_large(limit)
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool  # type: ignore[return-value]


def copy_to(source: IO[bytes], path: Any) -> None:
    with open(path, "wb") as target:
        shutil.copyfileobj(source, target, 1024 * 1024)


def _check_length(headers: dict[str, str], limit: int) -> None:
    declared = headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _body_too_large(limit)


def _body_too_large(limit: int) -> FhirError:
    return too_costly(f"The request body exceeds the limit of {limit} bytes", 413)


# -- JSON documents ------------------------------------------------------------------------------


def parse_json(body: bytes) -> Any:
    """Parse a JSON body and check it against the document limits (`check_document`)."""
    try:
        document = fhirjson.loads(body)
    except ValueError as exc:  # malformed JSON, or bytes that are not UTF-8
        raise bad_request(f"Malformed JSON: {exc}") from None
    # A NUL or a lone surrogate in parsed JSON can only come from a `\u` escape (raw control
    # characters and bytes that are not UTF-8 fail to parse): without one, every string is
    # storable and only the structure needs the walk.
    strings = not isinstance(body, bytes) or b"\\u" in body
    check_document(document, strings=strings)
    return document


def check_document(document: Any, what: str = "The JSON document", strings: bool = True) -> None:
    """Depth, node count and array length within the limits; every string (and key) storable
    (unless `strings` is False: the caller knows they are).

    Iterative, so no depth of input reaches Python's recursion limit; a string is refused when
    it holds NUL (PostgreSQL text cannot) or a lone surrogate (not UTF-8).
    """
    limits = _current
    max_depth, max_items, max_nodes = (
        limits.max_json_depth,
        limits.max_array_items,
        limits.max_json_nodes,
    )
    nodes = 1
    stack: list[tuple[Any, int]] = []
    if type(document) is dict or type(document) is list:
        stack.append((document, 1))
    elif type(document) is str and strings:
        _check_string(document, what)
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise FhirError(400, f"{what} is nested deeper than {max_depth} levels", "structure")
        if type(node) is dict:
            values: Any = node.values()
            if strings:
                for key in node:
                    if "\x00" in key or not key.isascii():
                        _check_string(key, what)
        else:
            values = node
            if len(node) > max_items:
                raise too_costly(
                    f"{what} has an array of {len(node)} items; at most {max_items} are allowed",
                    413,
                )
        nodes += len(node)
        if nodes > max_nodes:
            raise too_costly(f"{what} has more than {max_nodes} elements", 413)
        for value in values:
            kind = type(value)
            if kind is str:
                if strings and ("\x00" in value or not value.isascii()):
                    _check_string(value, what)
            elif kind is dict or kind is list:
                stack.append((value, depth + 1))


def _check_string(value: str, what: str) -> None:
    if "\x00" in value:
        raise bad_request(f"{what} holds a string with a NUL character (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"{what} holds a string that is not valid Unicode") from None


def count_nodes(value: Any, budget: int) -> int:
    """Nodes of `value`, stopping as soon as the count passes `budget`."""
    count = 0
    stack = [value]
    while stack:
        node = stack.pop()
        count += 1
        if count > budget:
            return count
        if type(node) is dict:
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
    return count


def apply_json_patch(
    resource: dict[str, Any],
    operations: list[Any],
    apply_one: Callable[[Any, dict[str, Any]], Any],
    resolve: Callable[[Any, str], Any],
) -> Any:
    """Apply a JSON Patch op by op, refusing it before the document grows past the limits.

    `copy` duplicates a subtree, so twenty of them can build a million copies: the size of
    what each operation adds is counted before it runs (`resolve` finds a `from` subtree,
    `apply_one` applies a single operation), so such a patch stops at the limit, not after.
    """
    limits = _current
    if len(operations) > limits.max_patch_operations:
        raise too_costly(
            f"A JSON Patch may hold at most {limits.max_patch_operations} operations", 422
        )
    budget = limits.max_json_nodes
    size = count_nodes(resource, budget)
    document: Any = resource
    for op in operations:
        if isinstance(op, dict):
            kind = op.get("op")
            if kind in ("add", "replace"):
                size += count_nodes(op.get("value"), budget)
            elif kind == "copy" and isinstance(op.get("from"), str):
                size += count_nodes(resolve(document, op["from"]), budget)
            if size > budget:
                raise too_costly(
                    f"The JSON Patch would grow the resource past {budget} elements", 422
                )
        document = apply_one(document, op)
    return document


# -- searches and numbers ------------------------------------------------------------------------


def check_search(items: Sequence[tuple[str, str]]) -> None:
    """At most `max_search_params` parameters and `max_search_values` OR values per search."""
    limits = _current
    if len(items) > limits.max_search_params:
        raise too_costly(
            f"A search may have at most {limits.max_search_params} parameters, "
            f"this one has {len(items)}"
        )
    values = 0
    for name, value in items:
        if "\x00" in name or "\x00" in value:
            raise bad_request(f"Search parameter '{name[:64]}' holds a NUL character")
        if len(value) > MAX_SEARCH_VALUE_CHARS or len(name) > 256:
            raise too_costly(
                f"Search parameter '{name[:64]}' is longer than {MAX_SEARCH_VALUE_CHARS} characters"
            )
        values += value.count(",") + 1
    if values > limits.max_search_values:
        raise too_costly(
            f"A search may have at most {limits.max_search_values} values in all, "
            f"this one has {values}"
        )


def parse_int(name: str, value: str, low: int = 0, high: int = MAX_INT) -> int:
    """An integer parameter in [low, high]; anything else (huge, negative, not digits) is 400."""
    text = value.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 12:
        raise bad_request(f"{name} must be an integer from {low} to {high}, not '{value[:64]}'")
    number = int(text)
    if not low <= number <= high:
        raise bad_request(f"{name} must be an integer from {low} to {high}, not '{value[:64]}'")
    return number


# -- database time -------------------------------------------------------------------------------

_deadline = threading.local()


@contextmanager
def deadline() -> Iterator[None]:
    """Bound the SQLite statements of this block (PostgreSQL: `statement_timeout`, per
    connection); the progress handler installed by `sqlite_progress_handler` interrupts them."""
    timeout = _current.statement_timeout_ms
    previous = getattr(_deadline, "at", None)
    _deadline.at = time.monotonic() + timeout / 1000 if timeout > 0 else None
    try:
        yield
    finally:
        _deadline.at = previous


def sqlite_progress_handler() -> int:
    """Called by SQLite every few thousand VM steps: nonzero interrupts the statement."""
    at = getattr(_deadline, "at", None)
    return 1 if at is not None and time.monotonic() > at else 0


def database_error(exc: BaseException) -> FhirError | None:
    """A database error caused by the request, as the OperationOutcome it deserves.

    A cancelled statement (PostgreSQL `statement_timeout`, SQLite interrupted by `deadline`) is
    503 too-costly; a value the database refuses (PostgreSQL class 22, data exception) is 400.
    Anything else is a server error (None).
    """
    orig = getattr(exc, "orig", exc)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate == "57014" or (
        isinstance(orig, sqlite3.OperationalError) and "interrupted" in str(orig)
    ):
        return FhirError(
            503,
            "The request took longer than the server allows for one query "
            f"({_current.statement_timeout_ms} ms); narrow the search",
            "too-costly",
        )
    if (isinstance(sqlstate, str) and sqlstate.startswith("22")) or _is_dbapi(orig, "DataError"):
        return bad_request("The database cannot store or compare a value of this request")
    if isinstance(orig, OverflowError):
        return bad_request("A number in this request is out of range")
    return None


def _is_dbapi(exc: BaseException, name: str) -> bool:
    """`exc` is the DBAPI exception class `name` of psycopg or sqlite3."""
    return any(
        cls.__name__ == name and cls.__module__.split(".")[0] in ("psycopg", "sqlite3")
        for cls in type(exc).__mro__
    )
