"""Terminology: CodeSystems, ValueSets and ConceptMaps of the R4 specification, the HL7 v2
tables and the stored ones (`service.Terminology`), the operations over them
(`operations`), and the small API other code asks:

- `contains(valueset_url, system, code) -> bool | None` (the validator's required bindings;
  None: cannot be decided here, e.g. a SNOMED CT value set), and `codes(valueset_url)` (the
  whole set by system, or None);
- `V2Vocabulary`: what the HL7 v2 mapper translates v2 table codes through.

`service()` is the process's default instance; the composition root (`interop`) configures
it with the database (`configure`) so stored resources count.
"""

from __future__ import annotations

from sqlalchemy import Engine

from fhir_server.terminology.service import Expansion, NotExpandable, Terminology

__all__ = ["Expansion", "NotExpandable", "Terminology", "V2Vocabulary", "configure",
           "contains", "service"]  # fmt: skip

_default = Terminology()


def service() -> Terminology:
    return _default


def configure(engine: Engine | None) -> Terminology:
    """Make the default service read stored terminology from this database."""
    global _default
    if _default.engine is not engine:
        _default = Terminology(engine)
    return _default


def contains(valueset_url: str, system: str | None, code: str) -> bool | None:
    """Is `system|code` in the ValueSet `valueset_url` (`url|version` accepted)? None when
    this server cannot tell (unknown value set, or a code system it does not hold)."""
    return _default.contains(valueset_url, system, code)


class V2Vocabulary:
    """The HL7 v2 mapper's `Vocabulary` over a terminology service: translations from the
    ConceptMaps (the built-in v2-to-FHIR ones, or an operator's), displays from the tables."""

    def __init__(self, terminology: Terminology | None = None) -> None:
        self._terminology = terminology

    @property
    def terminology(self) -> Terminology:
        return self._terminology or _default

    def translate(self, system: str, code: str, target: str) -> str | None:
        return self.terminology.translate_code(system, code, target)

    def display(self, system: str, code: str) -> str | None:
        return self.terminology.display(system, code)
