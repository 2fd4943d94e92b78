"""How the HL7 v2 mapper turns v2 table codes into FHIR codes: through a `Vocabulary`.

The translations are ConceptMaps (`v2_to_fhir.json` beside this module: 0001 sex, 0004
patient class, 0038/0119 order status and control, 0078 abnormal flags, 0085 and 0123 result
status). The server's terminology service loads the same file, so a channel hands the mapper
the service (`fhir_server.terminology.V2Vocabulary`): one source of truth, where an operator's
stored ConceptMap with the same URL takes effect without a restart and v2 table displays
(0203 identifier types, ...) come from the HL7 tables. Without one (pure use, tests) the
mapper reads the file itself (`TableVocabulary`).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, Protocol

V2 = "http://terminology.hl7.org/CodeSystem/v2-"
V2_TO_FHIR = Path(__file__).with_name("v2_to_fhir.json")


class Vocabulary(Protocol):
    def translate(self, system: str, code: str, target: str) -> str | None:
        """The code of `target` that `system|code` maps to; None when unmapped."""

    def display(self, system: str, code: str) -> str | None:
        """The display of `system|code`; None when the code system does not define it."""


def v2_to_fhir_maps() -> list[dict[str, Any]]:
    """The ConceptMaps of the v2-to-FHIR translations (data, read fresh each call)."""
    bundle = json.loads(V2_TO_FHIR.read_text(encoding="utf-8"))
    return [entry["resource"] for entry in bundle["entry"]]


class TableVocabulary:
    """The built-in ConceptMaps as plain tables; knows no displays beyond their own."""

    def __init__(self, maps: list[dict[str, Any]]) -> None:
        self._codes: dict[tuple[str, str, str], str] = {}
        self._displays: dict[tuple[str, str], str] = {}
        for cm in maps:
            for group in cm.get("group", []):
                for element in group.get("element", []):
                    key = (group["source"], element["code"])
                    if element.get("display"):
                        self._displays[key] = element["display"]
                    for target in element.get("target", []):
                        if target.get("equivalence") not in ("unmatched", "disjoint"):
                            self._codes.setdefault((*key, group["target"]), target["code"])

    def translate(self, system: str, code: str, target: str) -> str | None:
        return self._codes.get((system, code, target))

    def display(self, system: str, code: str) -> str | None:
        return self._displays.get((system, code))


@cache
def builtin() -> TableVocabulary:
    return TableVocabulary(v2_to_fhir_maps())
