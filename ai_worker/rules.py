"""Trigger rules: which models run on which studies (INTEROP_AI_RULES, a JSON list).

A rule matches an ImagingStudy when every condition it gives holds: `modality` (any of the
study's modalities), `body_part` (any series body site, code or display, case-insensitive),
`description` (a regular expression searched in the study and series descriptions). `model`
names the plugin to run; the plugin must also accept the study.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ai_worker.plugins.base import StudyInfo


@dataclass(frozen=True)
class Rule:
    model: str
    modalities: frozenset[str] = frozenset()
    body_parts: frozenset[str] = frozenset()
    description: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Rule:
        if not isinstance(raw, dict) or not isinstance(raw.get("model"), str):
            raise ValueError(f"an AI rule needs a 'model' name: {raw!r}")

        def many(key: str) -> frozenset[str]:
            value = raw.get(key) or []
            items = [value] if isinstance(value, str) else list(value)
            return frozenset(str(v).upper() for v in items)

        pattern = raw.get("description")
        return cls(
            model=raw["model"],
            modalities=many("modality"),
            body_parts=many("body_part"),
            description=re.compile(pattern, re.IGNORECASE) if pattern else None,
        )

    def matches(self, study: StudyInfo) -> bool:
        if self.modalities and not self.modalities & {m.upper() for m in study.modalities}:
            return False
        if self.body_parts and not self.body_parts & study.body_sites:
            return False
        return not (self.description and not self.description.search(study.description))


def parse_rules(raw: list[dict[str, Any]]) -> list[Rule]:
    return [Rule.parse(r) for r in raw]


def models_for(rules: list[Rule], study: StudyInfo) -> list[str]:
    """The models the rules ask for on this study, each once, in rule order."""
    seen: list[str] = []
    for rule in rules:
        if rule.model not in seen and rule.matches(study):
            seen.append(rule.model)
    return seen
