"""OpenEMR clinical rows -> FHIR: encounters, vitals, problems, allergies, medications.

Each resource carries an identifier built from the OpenEMR record (its uuid where the API
gives one, else its integer id) so a re-sync updates the same resource instead of adding one.
`subject` is whatever reference the caller gives (a `urn:uuid:` placeholder in a Bundle).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from mappers.openemr.patient import _datetime, _text
from mappers.openemr.systems import LOINC, RXNORM, UCUM, Systems, codings

Row = dict[str, Any]
Resource = dict[str, Any]
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"

# form_vitals column -> (LOINC, display, {stored unit: (UCUM code, unit text)}, default unit).
# OpenEMR stores lb, inches and degrees Fahrenheit; those stay as measured, with UCUM codes.
VITALS: dict[str, tuple[str, str, dict[str, tuple[str, str]], str]] = {
    "weight": ("29463-7", "Body weight", {"lb": ("[lb_av]", "lb"), "kg": ("kg", "kg")}, "lb"),
    "height": ("8302-2", "Body height", {"in": ("[in_i]", "in"), "cm": ("cm", "cm")}, "in"),
    "temperature": (
        "8310-5",
        "Body temperature",
        {"degf": ("[degF]", "°F"), "degc": ("Cel", "°C")},
        "degf",
    ),
    "pulse": ("8867-4", "Heart rate", {"": ("/min", "/min")}, ""),
    "respiration": ("9279-1", "Respiratory rate", {"": ("/min", "/min")}, ""),
    "oxygen_saturation": (
        "2708-6",
        "Oxygen saturation in Arterial blood",
        {"": ("%", "%")},
        "",
    ),
    "BMI": ("39156-5", "Body mass index (BMI) [Ratio]", {"": ("kg/m2", "kg/m2")}, ""),
    "head_circ": (
        "9843-4",
        "Head Occipital-frontal circumference",
        {"in": ("[in_i]", "in"), "cm": ("cm", "cm")},
        "in",
    ),
    "waist_circ": (
        "8280-0",
        "Waist Circumference at umbilicus by Tape measure",
        {"in": ("[in_i]", "in"), "cm": ("cm", "cm")},
        "in",
    ),
}
BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")
BP_PARTS = (
    ("bps", "8480-6", "Systolic blood pressure"),
    ("bpd", "8462-4", "Diastolic blood pressure"),
)


def _record_key(row: Row) -> str:
    return _text(row, "uuid") or _text(row, "id")


def _identifier(systems: Systems, kind: str, value: str) -> list[dict[str, str]]:
    return [{"system": systems.record(kind), "value": value}]


def encounter(row: Row, subject: str, systems: Systems) -> Resource:
    """`form_encounter` -> Encounter; OpenEMR encounters are recorded visits."""
    key = _record_key(row)
    if not key:
        raise ValueError("an OpenEMR encounter needs a uuid or an id")
    class_code = _text(row, "class_code") or "AMB"
    res: Resource = {
        "resourceType": "Encounter",
        "identifier": _identifier(systems, "encounter", key),
        "status": "finished",
        "class": {"system": ACT_CODE, "code": class_code},
        "subject": {"reference": subject},
    }
    if _text(row, "encounter"):
        res["identifier"].append(
            {"system": systems.record("encounter-number"), "value": _text(row, "encounter")}
        )
    if _text(row, "pc_catname"):
        res["type"] = [{"text": _text(row, "pc_catname")}]
    period = {}
    if start := _datetime(row.get("date"), systems.zone):
        period["start"] = start
    if end := _datetime(row.get("date_end"), systems.zone):
        period["end"] = end
    if period:
        res["period"] = period
    if _text(row, "reason"):
        res["reasonCode"] = [{"text": _text(row, "reason")}]
    if _text(row, "facility"):
        res["serviceProvider"] = {"display": _text(row, "facility")}
    return res


def _number(value: Any) -> Decimal | None:
    """Vitals are DECIMAL(12,6) strings; 0 means "not measured" in OpenEMR's forms."""
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    if number <= 0:
        return None
    return number.normalize() if number == number.to_integral() else number.normalize()


def _json_number(number: Decimal) -> int | float:
    return int(number) if number == number.to_integral() else float(number)


def vitals(
    row: Row, subject: str, systems: Systems, encounter_ref: str | None = None
) -> list[Resource]:
    """One `form_vitals` row -> vital-signs Observations (one per measured value, BP as a panel)."""
    key = _record_key(row)
    if not key:
        raise ValueError("an OpenEMR vitals form needs a uuid or an id")
    when = _datetime(row.get("date"), systems.zone)
    out: list[Resource] = []

    def observation(code: str, display: str) -> Resource:
        obs: Resource = {
            "resourceType": "Observation",
            "identifier": _identifier(systems, "vital", f"{key}-{code}"),
            "status": "final",
            "category": [
                {
                    "coding": [
                        {"system": OBS_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}
                    ]
                }
            ],
            "code": {
                "coding": [{"system": LOINC, "code": code, "display": display}],
                "text": display,
            },
            "subject": {"reference": subject},
        }
        if encounter_ref:
            obs["encounter"] = {"reference": encounter_ref}
        if when:
            obs["effectiveDateTime"] = when
        return obs

    for column, (code, display, units, default) in VITALS.items():
        value = _number(row.get(column))
        if value is None:
            continue
        stored = _text(row, f"{column}_unit").lower() or default
        ucum, unit = units.get(stored, units[default])
        obs = observation(code, display)
        obs["valueQuantity"] = {
            "value": _json_number(value),
            "unit": unit,
            "system": UCUM,
            "code": ucum,
        }
        out.append(obs)
    components = []
    for column, code, display in BP_PARTS:
        value = _number(row.get(column))
        if value is not None:
            components.append(
                {
                    "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
                    "valueQuantity": {
                        "value": _json_number(value),
                        "unit": "mmHg",
                        "system": UCUM,
                        "code": "mm[Hg]",
                    },
                }
            )
    if components:
        panel = observation(*BP_PANEL)
        panel["component"] = components
        out.append(panel)
    return out


def _codeable(row: Row, extra: list[dict[str, str]] | None = None) -> dict[str, Any]:
    coding = codings(_text(row, "diagnosis")) + (extra or [])
    concept: dict[str, Any] = {"text": _text(row, "title") or "unnamed"}
    if coding:
        concept["coding"] = coding
    return concept


def _ended(row: Row, zone: str) -> str | None:
    return _datetime(row.get("enddate"), zone)


def condition(row: Row, subject: str, systems: Systems) -> Resource:
    """`lists` type medical_problem -> Condition (problem-list item, ICD-10 from `diagnosis`)."""
    key = _record_key(row)
    if not key:
        raise ValueError("an OpenEMR medical problem needs a uuid or an id")
    ended = _ended(row, systems.zone)
    res: Resource = {
        "resourceType": "Condition",
        "identifier": _identifier(systems, "medical_problem", key),
        "clinicalStatus": {
            "coding": [{"system": CONDITION_CLINICAL, "code": "resolved" if ended else "active"}]
        },
        "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "problem-list-item"}]}],
        "code": _codeable(row),
        "subject": {"reference": subject},
    }
    verification = _text(row, "verification").lower()
    if verification in ("unconfirmed", "provisional", "differential", "confirmed", "refuted",
                        "entered-in-error"):  # fmt: skip
        res["verificationStatus"] = {
            "coding": [{"system": CONDITION_VERIFICATION, "code": verification}]
        }
    if onset := _datetime(row.get("begdate"), systems.zone):
        res["onsetDateTime"] = onset
    if ended:
        res["abatementDateTime"] = ended
    if _text(row, "comments"):
        res["note"] = [{"text": _text(row, "comments")}]
    return res


def allergy(row: Row, subject: str, systems: Systems) -> Resource:
    """`lists` type allergy -> AllergyIntolerance (RxNorm from `diagnosis` such as RXCUI:7980)."""
    key = _record_key(row)
    if not key:
        raise ValueError("an OpenEMR allergy needs a uuid or an id")
    ended = _ended(row, systems.zone)
    res: Resource = {
        "resourceType": "AllergyIntolerance",
        "identifier": _identifier(systems, "allergy", key),
        "clinicalStatus": {
            "coding": [{"system": ALLERGY_CLINICAL, "code": "inactive" if ended else "active"}]
        },
        "code": _codeable(row),
        "patient": {"reference": subject},
    }
    verification = _text(row, "verification").lower()
    if verification in ("unconfirmed", "confirmed", "refuted", "entered-in-error"):
        res["verificationStatus"] = {
            "coding": [{"system": ALLERGY_VERIFICATION, "code": verification}]
        }
    if onset := _datetime(row.get("begdate"), systems.zone):
        res["onsetDateTime"] = onset
    if _text(row, "reaction"):
        res["reaction"] = [{"manifestation": [{"text": _text(row, "reaction")}]}]
    return res


def _rxnorm(code: str) -> list[dict[str, str]]:
    """`rxnorm_drugcode` is a bare RXCUI or `RXCUI:123`; either way an RxNorm coding."""
    code = code.strip()
    if not code:
        return []
    if ":" in code:
        return [c for c in codings(code) if c["system"] == RXNORM]
    return [{"system": RXNORM, "code": code}]


def medication(row: Row, subject: str, systems: Systems) -> Resource:
    """`lists` type medication (the medication list) -> MedicationRequest, intent plan."""
    key = _record_key(row)
    if not key:
        raise ValueError("an OpenEMR medication needs a uuid or an id")
    ended = _ended(row, systems.zone)
    res: Resource = {
        "resourceType": "MedicationRequest",
        "identifier": _identifier(systems, "medication", key),
        "status": "completed" if ended else "active",
        "intent": _text(row, "request_intent") or "plan",
        "medicationCodeableConcept": _codeable(row),
        "subject": {"reference": subject},
    }
    if res["intent"] not in ("proposal", "plan", "order", "original-order", "reflex-order",
                             "filler-order", "instance-order", "option"):  # fmt: skip
        res["intent"] = "plan"
    if start := _datetime(row.get("begdate"), systems.zone):
        res["authoredOn"] = start
    if _text(row, "drug_dosage_instructions"):
        res["dosageInstruction"] = [{"text": _text(row, "drug_dosage_instructions")}]
    return res


def prescription(row: Row, subject: str, systems: Systems) -> Resource:
    """`prescriptions` -> MedicationRequest, intent order, RxNorm where the row has a code."""
    key = _record_key(row)
    if not key:
        raise ValueError("an OpenEMR prescription needs a uuid or an id")
    concept: dict[str, Any] = {"text": _text(row, "drug") or "unnamed"}
    if coding := _rxnorm(_text(row, "rxnorm_drugcode")):
        concept["coding"] = coding
    active = _text(row, "active") in ("1", "", "true")
    res: Resource = {
        "resourceType": "MedicationRequest",
        "identifier": _identifier(systems, "prescription", key),
        "status": "active" if active else "stopped",
        "intent": "order",
        "medicationCodeableConcept": concept,
        "subject": {"reference": subject},
    }
    if authored := _datetime(row.get("date_added"), systems.zone) or _datetime(
        row.get("start_date"), systems.zone
    ):
        res["authoredOn"] = authored
    dosage = _text(row, "drug_dosage_instructions") or " ".join(
        x for x in (_text(row, "dosage"), _text(row, "route")) if x
    )
    if dosage:
        res["dosageInstruction"] = [{"text": dosage}]
    if _text(row, "note"):
        res["note"] = [{"text": _text(row, "note")}]
    return res
