"""Identifier and code systems: where an OpenEMR record's identity and codes live in FHIR.

OpenEMR ids are only unique inside one installation (and one site), so every identifier system
is configurable; the defaults name the site so two OpenEMR sites never collide.
"""

from __future__ import annotations

from dataclasses import dataclass

# `lists.diagnosis` / `prescriptions.rxnorm_drugcode` code-type prefixes -> FHIR code systems.
CODE_SYSTEMS = {
    "ICD10": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10-CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD9": "http://hl7.org/fhir/sid/icd-9-cm",
    "SNOMED": "http://snomed.info/sct",
    "SNOMED-CT": "http://snomed.info/sct",
    "SNOMEDCT": "http://snomed.info/sct",
    "RXCUI": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "CPT4": "http://www.ama-assn.org/go/cpt",
    "LOINC": "http://loinc.org",
}
RXNORM = CODE_SYSTEMS["RXCUI"]
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


@dataclass(frozen=True)
class Systems:
    """Identifier systems for one OpenEMR installation."""

    pid: str
    uuid: str
    mrn: str
    records: str  # prefix: `{records}:encounter`, `{records}:vital`, ...
    zone: str = "UTC"  # OpenEMR stores local date-times without an offset

    @classmethod
    def for_site(
        cls,
        site: str = "default",
        pid: str = "",
        uuid: str = "",
        mrn: str = "",
        zone: str = "UTC",
    ) -> Systems:
        prefix = f"urn:openemr:{site}"
        return cls(
            pid or f"{prefix}:pid", uuid or f"{prefix}:uuid", mrn or f"{prefix}:mrn", prefix, zone
        )

    def record(self, kind: str) -> str:
        return f"{self.records}:{kind}"

    @property
    def patient_systems(self) -> frozenset[str]:
        """The systems whose presence says "this Patient is known to OpenEMR"."""
        return frozenset({self.pid, self.uuid})


def codings(value: str | None) -> list[dict[str, str]]:
    """`ICD10:I10;SNOMED-CT:38341003` -> FHIR Codings; unknown code types keep their text."""
    out: list[dict[str, str]] = []
    for part in (value or "").replace(",", ";").split(";"):
        part = part.strip()
        if not part:
            continue
        kind, sep, code = part.partition(":")
        if not sep:
            continue
        system = CODE_SYSTEMS.get(kind.strip().upper())
        if system and code.strip():
            out.append({"system": system, "code": code.strip()})
    return out
