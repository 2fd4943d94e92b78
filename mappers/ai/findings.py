"""What a model says, as plain typed values: the input vocabulary of the write-back.

These live with the mapper, not the worker, so that mapping stays pure and testable without
pixels, numpy or a model: a plugin builds them, `mappers.ai` turns them into FHIR.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Coding:
    system: str
    code: str
    display: str = ""

    def fhir(self) -> dict[str, str]:
        out = {"system": self.system, "code": self.code}
        if self.display:
            out["display"] = self.display
        return out


@dataclass(frozen=True)
class Measurement:
    """A number with a UCUM unit, e.g. fat volume 1234.5 mL."""

    code: Coding
    value: float
    unit: str  # UCUM code, e.g. "mL", "[hnsf'U]", "%", "1"
    flag: str | None = None  # v3 ObservationInterpretation code (H, L, A) when flagged
    note: str = ""


@dataclass(frozen=True)
class CodedFinding:
    """A finding that is a code, e.g. body region 'Thoracic structure'."""

    code: Coding
    value: Coding
    flag: str | None = None
    note: str = ""


@dataclass(frozen=True)
class KeyImage:
    png: bytes
    title: str
    sop_uid: str = ""


@dataclass
class Findings:
    measurements: list[Measurement] = field(default_factory=list)
    coded: list[CodedFinding] = field(default_factory=list)
    impression: str = ""
    conclusion_codes: list[Coding] = field(default_factory=list)
    key_image: KeyImage | None = None


@dataclass(frozen=True)
class ModelInfo:
    """A model as the Device and the Task name it."""

    name: str
    version: str
    manufacturer: str = ""
    description: str = ""
