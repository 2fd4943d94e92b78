"""The terminology service: the specification's CodeSystems, ValueSets and ConceptMaps (and
the HL7 v2 tables, generated into data/), the v2-to-FHIR ConceptMaps the HL7 mapper uses, and
whatever an operator stored (which wins over a built-in resource of the same URL).

Everything is loaded lazily and cached: CodeSystem indexes, ValueSet expansions and their
membership sets (so `contains`, what `$validate-code` and the validator ask, is a set lookup).
Stored resources are read from the `resources` table; a change commits -> `invalidate` (a
Store change listener), and other processes notice within `recheck_seconds` (a cheap stamp
query), so an operator's PUT takes effect without a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources as package_files
from typing import Any

from sqlalchemy import Engine, false, func, select

from fhir_server import fhirjson
from fhir_server.errors import FhirError, bad_request, not_found
from fhir_server.schema import resources as R
from fhir_server.terminology.codesystem import CodeSystemIndex
from mappers.hl7v2.vocabulary import v2_to_fhir_maps

KINDS = ("CodeSystem", "ValueSet", "ConceptMap")
MAX_EXPANSION = 100_000  # codes in one expansion: bounded work per request


class NotExpandable(Exception):
    """A ValueSet draws on a code system this server does not hold (SNOMED CT, LOINC, ...)."""


@dataclass(frozen=True, slots=True)
class Code:
    system: str
    code: str
    display: str | None = None
    version: str | None = None
    inactive: bool = False
    abstract: bool = False


@dataclass(slots=True)
class Expansion:
    """A ValueSet's codes in order, and the systems it draws on that are not (fully) known:
    membership of a code of such a system cannot be decided (None), only confirmed."""

    codes: list[Code]
    unknown: frozenset[str]
    members: dict[tuple[str, str], Code] = field(default_factory=dict)
    by_code: dict[str, list[Code]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for c in self.codes:
            self.members.setdefault((c.system, c.code), c)
            self.by_code.setdefault(c.code, []).append(c)


@dataclass(slots=True)
class _Content:
    by_url: dict[str, dict[str, dict[str, Any]]]  # kind -> url -> resource
    by_id: dict[str, dict[str, dict[str, Any]]]  # kind -> id -> resource


def _index(items: Iterable[dict[str, Any]]) -> _Content:
    content = _Content({k: {} for k in KINDS}, {k: {} for k in KINDS})
    for resource in items:
        kind = resource.get("resourceType")
        if kind not in KINDS:
            continue
        if isinstance(resource.get("url"), str):
            content.by_url[kind].setdefault(resource["url"], resource)
        if isinstance(resource.get("id"), str):
            content.by_id[kind].setdefault(resource["id"], resource)
    return content


def _builtin_resources() -> list[dict[str, Any]]:
    data = package_files.files("fhir_server.terminology") / "data" / "r4_terminology.ndjson"
    with data.open("rb") as handle:
        lines = handle.read().splitlines()
    out = [fhirjson.loads(line) for line in lines[1:] if line.strip()]  # line 1: the note
    return [*v2_to_fhir_maps(), *out]


class Terminology:
    """The one terminology service of a process (see `fhir_server.terminology.service()`)."""

    def __init__(self, engine: Engine | None = None, recheck_seconds: float = 2.0) -> None:
        self.engine = engine
        self.recheck_seconds = recheck_seconds
        self._lock = threading.RLock()
        self._builtin: _Content | None = None
        self._stored: _Content | None = None
        self._stamp: tuple[Any, ...] | None = None
        self._checked = 0.0
        self._codesystems: dict[int, CodeSystemIndex] = {}
        self._expansions: dict[int, Expansion] = {}
        self._by_url: dict[str, Expansion | None] = {}  # `contains`: None = undecidable
        self._translations: dict[tuple[str, str, str], str | None] = {}

    # -- content -------------------------------------------------------------------------

    def invalidate(self, changed: Iterable[str] | None = None) -> None:
        """Forget stored content and every cache (a Store change listener: only when a
        CodeSystem, ValueSet or ConceptMap changed)."""
        if changed is not None and not set(changed) & set(KINDS):
            return
        with self._lock:
            self._stored = None
            self._codesystems, self._expansions, self._by_url = {}, {}, {}
            self._translations = {}
            self._checked = 0.0

    def _builtins(self) -> _Content:
        if self._builtin is None:
            with self._lock:
                if self._builtin is None:
                    self._builtin = _index(_builtin_resources())
        return self._builtin

    def ready(self) -> bool:
        """Will the next call answer from memory (the built-in content loaded, the stored
        content loaded and not due for its recheck), without touching the database?"""
        if self._builtin is None:
            return False
        if self.engine is None:
            return True
        return self._stored is not None and time.monotonic() - self._checked < self.recheck_seconds

    def _stored_content(self) -> _Content:
        if self.engine is None:
            return _EMPTY
        now = time.monotonic()
        if self._stored is not None and now - self._checked < self.recheck_seconds:
            return self._stored
        with self._lock:
            stamp = self._read_stamp()
            self._checked = time.monotonic()
            if self._stored is not None and stamp == self._stamp:
                return self._stored
            loaded = self._load_stored()
            self._codesystems, self._expansions, self._by_url = {}, {}, {}
            self._translations = {}
            self._stored, self._stamp = loaded, stamp
            return loaded

    def _read_stamp(self) -> tuple[Any, ...]:
        assert self.engine is not None
        query = select(func.count(), func.max(R.c.last_updated)).where(R.c.res_type.in_(KINDS))
        with self.engine.connect() as conn:
            return tuple(conn.execute(query).one())

    def _load_stored(self) -> _Content:
        assert self.engine is not None
        query = select(R.c.body).where(R.c.res_type.in_(KINDS), R.c.deleted == false())
        with self.engine.connect() as conn:
            bodies = [row[0] for row in conn.execute(query)]
        return _index(fhirjson.loads(body) for body in bodies if body)

    def resource(self, kind: str, url: str) -> dict[str, Any] | None:
        """The resource of that kind and canonical URL (`url|version` accepted): stored first,
        then built in."""
        url = url.split("|", 1)[0]
        found = self._stored_content().by_url[kind].get(url)
        return found if found is not None else self._builtins().by_url[kind].get(url)

    def within(self, find: Callable[[str, str], dict[str, Any] | None]) -> Terminology:
        """This service as one transaction sees it: `find(kind, url)` (what the transaction
        has stored, committed or not) before the built-in content; caches live with the view.
        The validator's question for a ValueSet stored earlier in the same Bundle."""
        return _Within(find, self._builtins())

    def resource_by_id(self, kind: str, res_id: str) -> dict[str, Any] | None:
        found = self._stored_content().by_id[kind].get(res_id)
        return found if found is not None else self._builtins().by_id[kind].get(res_id)

    def concept_maps(self) -> list[dict[str, Any]]:
        """Every ConceptMap, stored ones first (they win over a built-in of the same URL)."""
        stored = self._stored_content().by_url["ConceptMap"]
        builtin = self._builtins().by_url["ConceptMap"]
        return [*stored.values(), *(m for u, m in builtin.items() if u not in stored)]

    def translate_code(self, system: str, code: str, target: str) -> str | None:
        """The first code of `target` that some ConceptMap maps `system|code` to (cached)."""
        self._stored_content()
        key = (system, code, target)
        if key in self._translations:
            return self._translations[key]
        found = None
        for cm in self.concept_maps():
            for group in cm.get("group") or []:
                if group.get("source") != system or group.get("target") != target:
                    continue
                for element in group.get("element") or []:
                    if element.get("code") != code:
                        continue
                    for t in element.get("target") or []:
                        if t.get("code") and t.get("equivalence") not in ("unmatched", "disjoint"):
                            found = found or t["code"]
            if found:
                break
        self._translations[key] = found
        return found

    def display(self, system: str, code: str) -> str | None:
        cs = self.codesystem(system)
        concept = cs.get(code) if cs is not None else None
        return concept.display if concept is not None else None

    def codesystem(self, url: str) -> CodeSystemIndex | None:
        resource = self.resource("CodeSystem", url)
        if resource is None or resource.get("content") == "supplement":
            return None
        key = id(resource)
        found = self._codesystems.get(key)
        if found is None:
            found = CodeSystemIndex(resource)
            self._codesystems[key] = found
        return found

    # -- ValueSets -----------------------------------------------------------------------

    def expansion(self, valueset: dict[str, Any]) -> Expansion:
        """The ValueSet's codes (cached per resource)."""
        key = id(valueset)
        found = self._expansions.get(key)
        if found is None:
            found = self._expand(valueset, ())
            if valueset is self.resource("ValueSet", valueset.get("url", "")) or (
                valueset is self.resource_by_id("ValueSet", valueset.get("id", ""))
            ):
                self._expansions[key] = found  # only known resources: ids stay valid
        return found

    def valueset(self, url: str) -> dict[str, Any]:
        found = self.resource("ValueSet", url)
        if found is None:
            # a CodeSystem's own value set: `CodeSystem.valueSet`, or its URL used as one
            system = self._valueset_of_system(url.split("|", 1)[0])
            if system is not None:
                return system
            raise not_found(f"Unknown ValueSet '{url}'")
        return found

    def _valueset_of_system(self, url: str) -> dict[str, Any] | None:
        for content in (self._stored_content(), self._builtins()):
            for cs in content.by_url["CodeSystem"].values():
                if cs.get("valueSet") == url:
                    return {"resourceType": "ValueSet", "url": url,
                            "compose": {"include": [{"system": cs["url"]}]}}  # fmt: skip
        return None

    def _expand(self, vs: dict[str, Any], chain: tuple[str, ...]) -> Expansion:
        url = vs.get("url", "")
        if url and url in chain:
            raise bad_request(f"ValueSet '{url}' imports itself ({' -> '.join(chain)})")
        chain = (*chain, url)
        compose = vs.get("compose")
        if not compose:
            listed = (vs.get("expansion") or {}).get("contains")
            if listed is None:
                raise NotExpandable(f"ValueSet '{url}' has neither compose nor expansion")
            return Expansion(list(_flatten(listed)), frozenset())
        unknown: set[str] = set()
        included: dict[tuple[str, str], Code] = {}
        for part in compose.get("include") or []:
            codes, missing = self._part(part, chain)
            unknown |= missing
            for c in codes:
                included.setdefault((c.system, c.code), c)
            if len(included) > MAX_EXPANSION:
                raise FhirError(413, f"ValueSet '{url}' has too many codes to expand", "too-costly")
        for part in compose.get("exclude") or []:
            codes, missing = self._part(part, chain)
            unknown |= missing
            for c in codes:
                included.pop((c.system, c.code), None)
        if compose.get("inactive") is False:
            included = {k: c for k, c in included.items() if not c.inactive}
        return Expansion(list(included.values()), frozenset(unknown))

    def _part(self, part: dict[str, Any], chain: tuple[str, ...]) -> tuple[list[Code], set[str]]:
        """The codes one include/exclude selects: its system's (listed or filtered) codes,
        intersected with every value set it imports."""
        unknown: set[str] = set()
        selected: list[Code] | None = None
        system = part.get("system")
        if system:
            selected, missing = self._from_system(part, system)
            unknown |= missing
        for imported in part.get("valueSet") or []:
            exp = self._expand(self.valueset(imported), chain)
            unknown |= exp.unknown
            if selected is None:
                selected = list(exp.codes)
            else:
                selected = [c for c in selected if (c.system, c.code) in exp.members]
        return selected or [], unknown

    def _from_system(self, part: dict[str, Any], system: str) -> tuple[list[Code], set[str]]:
        cs = self.codesystem(system)
        listed = part.get("concept")
        version = part.get("version") or (cs.version if cs else None)
        if listed:
            out = []
            for item in listed:
                concept = cs.get(item["code"]) if cs else None
                if cs is not None and cs.complete and concept is None:
                    continue  # a code the system does not define is in no value set
                display = item.get("display") or (concept.display if concept else None)
                out.append(Code(system, concept.code if concept else item["code"], display,
                                version, bool(concept and concept.inactive),
                                bool(concept and concept.abstract)))  # fmt: skip
            return out, set()  # exactly these codes, whether or not the system is held
        if cs is None:
            return [], {system}
        codes = [
            Code(system, c.code, c.display, version, c.inactive, c.abstract)
            for c in cs.select(part.get("filter") or [])
        ]
        return codes, set() if cs.complete else {system}

    # -- the questions -------------------------------------------------------------------

    def codes(self, valueset_url: str) -> dict[str, frozenset[str]] | None:
        """The ValueSet's codes by system; None unless every one of them is known (what the
        validator asks of a ValueSet stored in the current transaction)."""
        self._stored_content()
        if valueset_url not in self._by_url:
            self.contains(valueset_url, None, "")
        exp = self._by_url.get(valueset_url)
        if exp is None or exp.unknown:
            return None
        out: dict[str, set[str]] = {}
        for code in exp.codes:
            out.setdefault(code.system, set()).add(code.code)
        return {system: frozenset(found) for system, found in out.items()}

    def contains(self, valueset_url: str, system: str | None, code: str) -> bool | None:
        """Is `system|code` in the ValueSet? None when that cannot be decided here (unknown
        value set, or a code system the server does not hold). The validator's question."""
        self._stored_content()  # notices stored changes (and then empties the caches)
        if valueset_url in self._by_url:
            exp = self._by_url[valueset_url]
        else:
            try:
                exp = self.expansion(self.valueset(valueset_url))
            except (FhirError, NotExpandable):
                exp = None
            self._by_url[valueset_url] = exp
        if exp is None:
            return None
        if system is None:
            if code in exp.by_code:
                return True
            return None if exp.unknown else False
        if (system, code) in exp.members:
            return True
        if system in exp.unknown:
            return None
        cs = self.codesystem(system)
        if cs is not None and not cs.case_sensitive:
            concept = cs.get(code)
            if concept is not None and (system, concept.code) in exp.members:
                return True
        return False


_EMPTY = _Content({k: {} for k in KINDS}, {k: {} for k in KINDS})


class _Within(Terminology):
    def __init__(self, find: Callable[[str, str], dict[str, Any] | None], builtin: _Content):
        super().__init__(None)
        self._find, self._builtin = find, builtin

    def resource(self, kind: str, url: str) -> dict[str, Any] | None:
        url = url.split("|", 1)[0]
        found = self._find(kind, url)
        return found if found is not None else self._builtins().by_url[kind].get(url)


def _flatten(items: list[dict[str, Any]]) -> Iterable[Code]:
    for item in items:
        if item.get("code") and item.get("system"):
            yield Code(item["system"], item["code"], item.get("display"), item.get("version"),
                       bool(item.get("inactive")), bool(item.get("abstract")))  # fmt: skip
        yield from _flatten(item.get("contains") or [])
