"""The plugin interface: what a model says about itself, which studies it takes, its findings.

Findings are typed so that the write-back (mappers/ai) can turn them into FHIR without
knowing the model: a measurement carries a UCUM unit, a coded finding a terminology code,
the impression is free text, a key image is a PNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ai_worker.pixels.volume import Volume
from mappers.ai.findings import CodedFinding, Coding, Findings, KeyImage, Measurement

__all__ = ["CodedFinding", "Coding", "Findings", "KeyImage", "Measurement", "ModelPlugin"]

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
INTEROP_AI = "urn:interop:ai"  # codes the shipped plugins define themselves


@dataclass(frozen=True)
class StudyInfo:
    """What a rule and a plugin know of a study before pixels: from the ImagingStudy."""

    study_id: str  # ImagingStudy id in our store
    study_uid: str  # DICOM StudyInstanceUID
    patient: str | None  # "Patient/ID"
    modalities: frozenset[str]
    body_sites: frozenset[str]  # series body-site codes and displays, upper case
    description: str
    series: tuple[tuple[str, str], ...] = ()  # (SeriesInstanceUID, modality)

    @classmethod
    def from_imaging_study(cls, study: dict[str, Any]) -> StudyInfo:
        modalities = {c.get("code", "") for c in study.get("modality") or []}
        sites: set[str] = set()
        series = []
        for s in study.get("series") or []:
            mod = (s.get("modality") or {}).get("code", "")
            modalities.add(mod)
            series.append((str(s.get("uid", "")), mod))
            site = s.get("bodySite") or {}
            sites |= {str(site.get(k, "")).upper() for k in ("code", "display") if site.get(k)}
        uid = ""
        for ident in study.get("identifier") or []:
            value = str(ident.get("value", ""))
            if ident.get("system") == "urn:dicom:uid" or value.startswith("urn:oid:"):
                uid = value.removeprefix("urn:oid:")
        subject = (study.get("subject") or {}).get("reference")
        descriptions = [study.get("description") or ""] + [
            s.get("description") or "" for s in study.get("series") or []
        ]
        return cls(
            study_id=str(study.get("id", "")),
            study_uid=uid,
            patient=subject if isinstance(subject, str) and subject else None,
            modalities=frozenset(m for m in modalities if m),
            body_sites=frozenset(sites),
            description=" | ".join(d for d in descriptions if d),
            series=tuple(series),
        )


@runtime_checkable
class ModelPlugin(Protocol):
    """A model the worker can run. `name` + `version` identify it (and its Device)."""

    name: str
    version: str
    manufacturer: str
    description: str  # goes into the Device: say what it is and is not fit for
    modalities: frozenset[str]  # the series a volume may be built from

    def accepts(self, study: StudyInfo) -> bool:
        """Whether the study is one this model is meant for (checked before any pixel)."""

    def run(self, volume: Volume, study: StudyInfo) -> Findings:
        """Analyse one volume; raise ai_worker.errors.BadInput for input it cannot use."""
