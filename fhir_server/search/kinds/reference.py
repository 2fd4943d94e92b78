"""reference parameters: `[Type/]id`, an absolute URL, or a canonical (R4 §3.1.1.4.10); a type
modifier (`subject:Patient=1`) narrows the target type. Chaining is generic (query.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, and_, false

from fhir_server.errors import bad_request
from fhir_server.schema import idx_reference
from fhir_server.search.kinds.base import IndexRows, Kind
from fhir_server.search.kinds.escape import unescape
from fhir_server.search.registry import resource_types


def split_reference(ref: str, base_url: str | None = None) -> tuple[str | None, str | None]:
    """(type, id) of a reference string: 'Type/id', 'Type/id/_history/v', or an absolute URL.

    A URL under `base_url` is local; another absolute URL still yields its last 'Type/id' when
    Type is an R4 resource type. Contained ('#x'), urn: and odd strings give (None, None).
    """
    if base_url:
        base = base_url.rstrip("/") + "/"
        if ref.startswith(base):
            ref = ref[len(base) :]
    if not ref or ref[0] == "#" or ref.startswith("urn:"):
        return None, None
    ref = ref.split("?", 1)[0]
    parts = ref.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if "://" not in ref and len(parts) != 2:
        return None, None
    if len(parts) >= 2 and 0 < len(parts[-1]) <= 64 and parts[-2] in resource_types():
        return parts[-2], parts[-1]  # a longer id is no FHIR id (and no index key)
    return None, None


def build(code: str, values: list[Any], rows: IndexRows, base: str | None) -> None:
    out = rows.references
    for v in values:
        if type(v) is dict:
            ref = v.get("reference")
            if type(ref) is str and ref:
                out.append((code, *split_reference(ref, base), ref))
            elif (
                type(v.get("resourceType")) is str
                and type(v.get("id")) is str
                and len(v["resourceType"]) <= 64
                and len(v["id"]) <= 64
            ):
                # Bundle.entry[0].resource: an inline resource stands for its own reference
                out.append((code, v["resourceType"], v["id"], f"{v['resourceType']}/{v['id']}"))
            # a Reference with only an identifier is not indexed (no :identifier support)
        elif type(v) is str and v:  # canonical / uri
            out.append((code, None, None, v))


class Target(NamedTuple):
    """What one search value asks for: a whole URL, or a target id (of a type, if given)."""

    url: str | None = None
    type: str | None = None
    id: str | None = None
    nothing: bool = False  # a type modifier contradicting the value's own type


def target(code: str, modifier: str, value: str, base: str) -> Target:
    """The one reading of a reference search value, for the SQL and the in-memory test."""
    if modifier and modifier not in resource_types():
        raise bad_request(
            f"Modifier ':{modifier}' is not supported on reference parameter '{code}'"
        )
    value = unescape(value)
    if base and value.startswith(base + "/"):
        value = value[len(base) + 1 :]
    if "://" in value or value.startswith("urn:"):
        return Target(url=value)
    parts = value.split("/")
    if len(parts) >= 2 and parts[-2] in resource_types():
        if modifier and modifier != parts[-2]:
            return Target(nothing=True)
        return Target(type=parts[-2], id=parts[-1])
    if len(parts) == 4 and parts[2] == "_history" and parts[0] in resource_types():
        return Target(type=parts[0], id=parts[1])
    return Target(type=modifier or None, id=value)


def condition(code: str, c: Any, modifier: str, value: str, base: str) -> ColumnElement[bool]:
    t = target(code, modifier, value, base)
    if t.nothing:
        return false()
    if t.url is not None:
        return c.url == t.url  # type: ignore[no-any-return]
    if t.type is None:
        return c.target_id == t.id  # type: ignore[no-any-return]
    return and_(c.target_id == t.id, c.target_type == t.type)


def match(code: str, rows: Sequence[tuple[Any, ...]], modifier: str, value: str, base: str) -> bool:
    t = target(code, modifier, value, base)
    if t.nothing:
        return False
    if t.url is not None:
        return any(url == t.url for *_, url in rows)
    return any(
        row_id == t.id and (t.type is None or row_type == t.type) for _, row_type, row_id, _ in rows
    )


def direct(code: str, value: str, base: str) -> tuple[str, list[Any]] | None:
    if base and value.startswith(base + "/"):
        value = value[len(base) + 1 :]
    if "://" in value or value.startswith("urn:"):
        return "t.url = ?", [value]
    parts = value.split("/")
    if len(parts) == 2 and parts[0] in resource_types():
        return "t.target_type = ? AND t.target_id = ?", parts
    if len(parts) == 1:
        return "t.target_id = ?", parts
    return None


KIND = Kind(
    "reference",
    "references",
    idx_reference,
    build,
    condition,
    match,
    ("target_id", "target_id"),
    0,
    direct,
)
