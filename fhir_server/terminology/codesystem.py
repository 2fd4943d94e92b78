"""One CodeSystem indexed for lookups: concepts by code, their parents (nesting and the
`parent` property), and the filters ValueSet.compose can apply to them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import bad_request


@dataclass(slots=True)
class Concept:
    code: str
    display: str | None
    definition: str | None
    designations: list[dict[str, Any]]
    properties: list[dict[str, Any]]
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)

    def property_values(self, name: str) -> list[str]:
        return [_value_text(p) for p in self.properties if p.get("code") == name]

    @property
    def inactive(self) -> bool:
        for p in self.properties:
            if p.get("code") == "status" and p.get("valueCode") in ("retired", "inactive"):
                return True
            if p.get("code") == "inactive" and p.get("valueBoolean") is True:
                return True
        return False

    @property
    def abstract(self) -> bool:
        return any(
            p.get("code") in ("abstract", "notSelectable") and p.get("valueBoolean") is True
            for p in self.properties
        )


def _value_text(prop: dict[str, Any]) -> str:
    for key, value in prop.items():
        if key.startswith("value"):
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, dict):  # valueCoding
                return str(value.get("code", ""))
            return str(value)
    return ""


class CodeSystemIndex:
    """A CodeSystem resource made searchable. `complete` is False for content that lists only
    some of the system's codes (example, fragment, not-present): absence proves nothing."""

    def __init__(self, resource: dict[str, Any]) -> None:
        self.resource = resource
        self.url: str = resource.get("url", "")
        self.version: str | None = resource.get("version")
        self.name: str = resource.get("name") or resource.get("title") or self.url
        self.case_sensitive = resource.get("caseSensitive", True) is not False
        self.complete = resource.get("content", "complete") == "complete"
        self.concepts: dict[str, Concept] = {}
        self._folded: dict[str, str] = {}
        self._walk(resource.get("concept") or [], None)
        for concept in self.concepts.values():  # hierarchies told by a `parent` property
            for parent in concept.property_values("parent"):
                if parent in self.concepts and parent not in concept.parents:
                    concept.parents.append(parent)
                    self.concepts[parent].children.append(concept.code)
        self.hierarchical = any(c.parents for c in self.concepts.values())
        self._ancestors: dict[str, frozenset[str]] = {}

    def _walk(self, items: list[dict[str, Any]], parent: str | None) -> None:
        for item in items:
            code = item.get("code")
            if not isinstance(code, str):
                continue
            concept = self.concepts.get(code)
            if concept is None:
                concept = Concept(
                    code,
                    item.get("display"),
                    item.get("definition"),
                    list(item.get("designation") or []),
                    list(item.get("property") or []),
                )
                self.concepts[code] = concept
                self._folded.setdefault(code.lower(), code)
            if parent is not None and parent not in concept.parents:
                concept.parents.append(parent)
                self.concepts[parent].children.append(code)
            self._walk(item.get("concept") or [], code)

    def get(self, code: str) -> Concept | None:
        found = self.concepts.get(code)
        if found is None and not self.case_sensitive:
            folded = self._folded.get(code.lower())
            found = self.concepts.get(folded) if folded else None
        return found

    def ancestors(self, code: str) -> frozenset[str]:
        """Every concept `code` is a kind of (not itself)."""
        known = self._ancestors.get(code)
        if known is not None:
            return known
        seen: set[str] = set()
        stack = list(self.concepts[code].parents) if code in self.concepts else []
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.concepts[current].parents)
        result = frozenset(seen)
        self._ancestors[code] = result
        return result

    def descendants(self, code: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.concepts[code].children) if code in self.concepts else []
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.concepts[current].children)
        return seen

    def subsumes(self, a: str, b: str) -> str:
        """The $subsumes outcome of code A against code B."""
        if a == b:
            return "equivalent"
        if a in self.ancestors(b):
            return "subsumes"
        if b in self.ancestors(a):
            return "subsumed-by"
        return "not-subsumed"

    def select(self, filters: list[dict[str, Any]]) -> Iterator[Concept]:
        """The concepts meeting every filter of a ValueSet include (all, without filters)."""
        chosen: Iterable[str] = self.concepts.keys()
        for f in filters:
            chosen = self._filter(f, chosen)
        for code in chosen:
            yield self.concepts[code]

    def _filter(self, f: dict[str, Any], codes: Iterable[str]) -> list[str]:
        prop, op, value = f.get("property", ""), f.get("op", ""), str(f.get("value", ""))
        pool = list(codes)
        if prop in ("concept", "code"):
            if op in ("is-a", "descendent-of", "is-not-a", "generalizes"):
                if op == "generalizes":
                    wanted = (
                        set(self.ancestors(value)) | {value} if value in self.concepts else set()
                    )
                else:
                    wanted = self.descendants(value) if value in self.concepts else set()
                    if op != "descendent-of" and value in self.concepts:
                        wanted.add(value)
                if op == "is-not-a":
                    return [c for c in pool if c not in wanted]
                return [c for c in pool if c in wanted]
            if op == "=":
                return [c for c in pool if c == value]
            if op in ("in", "not-in"):
                listed = {v.strip() for v in value.split(",")}
                return [c for c in pool if (c in listed) == (op == "in")]
            if op == "regex":
                pattern = _regex(value)
                return [c for c in pool if pattern.fullmatch(c)]
        elif prop == "display":
            if op == "=":
                return [c for c in pool if self.concepts[c].display == value]
            if op == "regex":
                pattern = _regex(value)
                return [c for c in pool if pattern.fullmatch(self.concepts[c].display or "")]
        else:
            if op == "exists":
                has = value.lower() != "false"
                return [c for c in pool if bool(self.concepts[c].property_values(prop)) == has]
            if op == "=":
                return [c for c in pool if value in self.concepts[c].property_values(prop)]
            if op in ("in", "not-in"):
                listed = {v.strip() for v in value.split(",")}
                inside = op == "in"
                return [
                    c for c in pool
                    if bool(listed & set(self.concepts[c].property_values(prop))) == inside
                ]  # fmt: skip
            if op == "regex":
                pattern = _regex(value)
                return [
                    c for c in pool
                    if any(pattern.fullmatch(v) for v in self.concepts[c].property_values(prop))
                ]  # fmt: skip
        raise bad_request(f"The filter '{prop} {op} {value}' is not supported on {self.url}")


def _regex(value: str) -> re.Pattern[str]:
    if len(value) > 500:
        raise bad_request("A regex filter may have at most 500 characters")
    try:
        return re.compile(value)
    except re.error as exc:
        raise bad_request(f"Invalid regex filter '{value}': {exc}") from None
