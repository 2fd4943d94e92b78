"""Transaction Bundles shaped like Synthea's FHIR R4 output, generated from a seed (no download).

Why: Synthea is what most people load into a FHIR server first, and its Bundles stress the
write path differently from flat PUTs: every entry is a `POST` with a `urn:uuid:` fullUrl
that other entries reference, the shared Organizations, Locations and Practitioners are
conditional creates (`ifNoneExist`), and the patient Bundles point at them with ~450
conditional references (`Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|...`) that
the server must search to resolve. The shape follows Synthea's R4 exporter with
`exporter.fhir.transaction_bundle = true`: first `hospitalInformation*.json` (Organization,
Location) and `practitionerInformation*.json` (Practitioner, PractitionerRole), then one
Bundle per patient (Patient, Encounters with Conditions, vital-sign and lab Observations in
LOINC/UCUM, Procedures, MedicationRequests, Immunizations, a Claim and an
ExplanationOfBenefit per encounter and per prescription, a Provenance).

Usage: `python bench/synthea.py --patients 3 --out /tmp/synthea` writes the Bundles as files
(`bench/run.py` imports `generate`). The same seed always gives the same Bundles.
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SYNTHEA = "https://github.com/synthetichealth/synthea"
NPI = "http://hl7.org/fhir/sid/us-npi"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
# Encounters per patient: with the rest of the mix this gives ~450 conditional references.
DEFAULT_ENCOUNTERS = 32

# fmt: off
GIVENS = ["Ingrid", "Marcus", "Aaliyah", "Bennett", "Chiara", "Dmitri", "Esme", "Farah",
          "Gideon", "Hana", "Ivo", "Jolene", "Kenji", "Lorna", "Mateo", "Nadia", "Otto",
          "Priya", "Quinn", "Rosa", "Silas", "Tamsin", "Umar", "Vera", "Wendell", "Yara"]
FAMILIES = ["Jacobson", "Okafor", "Lindqvist", "Moreau", "Haddad", "Kowalski", "Nakamura",
            "Ferreira", "Gallagher", "Abernathy", "Schmitt", "Delgado", "Volkov", "Oyelaran",
            "Baptiste", "Marchetti", "Thornton", "Ibarra", "Castellano", "Whitfield"]
CITIES = [("Boston", "02108"), ("Worcester", "01601"), ("Springfield", "01101"),
          ("Lowell", "01850"), ("Cambridge", "02138"), ("Quincy", "02169"),
          ("Brockton", "02301"), ("Lynn", "01901"), ("Framingham", "01701")]
# (SNOMED code, display, v3 ActCode class)
ENCOUNTER_TYPES = [
    ("162673000", "General examination of patient (procedure)", "AMB"),
    ("185349003", "Encounter for check up (procedure)", "AMB"),
    ("185345009", "Encounter for symptom (procedure)", "AMB"),
    ("50849002", "Emergency room admission (procedure)", "EMER"),
    ("183452005", "Emergency hospital admission (procedure)", "IMP"),
    ("410620009", "Well child visit (procedure)", "AMB"),
]
CONDITIONS = [
    ("444814009", "Viral sinusitis (disorder)"),
    ("195662009", "Acute viral pharyngitis (disorder)"),
    ("10509002", "Acute bronchitis (disorder)"), ("38341003", "Hypertension (disorder)"),
    ("44054006", "Diabetes mellitus type 2 (disorder)"),
    ("55822004", "Hyperlipidemia (disorder)"),
    ("162864005", "Body mass index 30+ - obesity (finding)"),
    ("72892002", "Normal pregnancy (finding)"), ("40055000", "Chronic sinusitis (disorder)"),
    ("233604007", "Pneumonia (disorder)"), ("68496003", "Polyp of colon (disorder)"),
]
# (LOINC, display, UCUM unit, low, high)
VITALS = [
    ("8302-2", "Body Height", "cm", 150.0, 195.0),
    ("29463-7", "Body Weight", "kg", 45.0, 120.0),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 18.0, 38.0),
    ("8867-4", "Heart rate", "/min", 55.0, 110.0),
    ("9279-1", "Respiratory rate", "/min", 12.0, 22.0),
    ("72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported", "{score}", 0, 6),
]
LABS = [
    ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 65.0, 180.0),
    ("38483-4", "Creatinine [Mass/volume] in Blood", "mg/dL", 0.6, 1.6),
    ("6298-4", "Potassium [Moles/volume] in Blood", "mmol/L", 3.5, 5.2),
    ("2947-0", "Sodium [Moles/volume] in Blood", "mmol/L", 135.0, 146.0),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.5, 9.0),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 140.0, 260.0),
    ("2571-8", "Triglycerides", "mg/dL", 60.0, 300.0),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 11.0, 17.0),
]
PROCEDURES = [
    ("430193006", "Medication Reconciliation (procedure)"),
    ("710824005", "Assessment of health and social care needs (procedure)"),
    ("171207006", "Depression screening (procedure)"),
    ("73761001", "Colonoscopy (procedure)"), ("117015009", "Throat culture (procedure)"),
    ("76601001", "Intramuscular injection (procedure)"),
]
MEDICATIONS = [
    ("849574", "Naproxen sodium 220 MG Oral Tablet"), ("314231", "Simvastatin 10 MG Oral Tablet"),
    ("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"),
    ("314076", "lisinopril 10 MG Oral Tablet"), ("308182", "Amoxicillin 250 MG Oral Capsule"),
    ("313782", "Acetaminophen 325 MG Oral Tablet"),
]
VACCINES = [("140", "Influenza, seasonal, injectable, preservative free"),
            ("113", "Td (adult) preservative free"), ("133", "Pneumococcal conjugate PCV 13"),
            ("208", "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, 30 mcg/0.3mL")]
# fmt: on


@dataclass(frozen=True)
class Clinician:
    npi: str
    given: str
    family: str

    @property
    def display(self) -> str:
        return f"Dr. {self.given} {self.family}"


@dataclass(frozen=True)
class Provider:
    """An Organization with its Location and Practitioners, as Synthea's providers file has."""

    org_id: str
    name: str
    location_id: str
    city: str
    postal_code: str
    clinicians: tuple[Clinician, ...]


@dataclass(frozen=True)
class World:
    providers: tuple[Provider, ...]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _coding(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _conditional(res_type: str, system: str, value: str, display: str) -> dict[str, str]:
    return {"reference": f"{res_type}?identifier={system}|{value}", "display": display}


def _org_ref(p: Provider) -> dict[str, str]:
    return _conditional("Organization", SYNTHEA, p.org_id, p.name)


def _loc_ref(p: Provider) -> dict[str, str]:
    return _conditional("Location", SYNTHEA, p.location_id, p.name)


def _prac_ref(c: Clinician) -> dict[str, str]:
    return _conditional("Practitioner", NPI, c.npi, c.display)


def _instant(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S-05:00")


def _entry(resource: dict[str, Any], if_none_exist: str | None = None) -> dict[str, Any]:
    request: dict[str, str] = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource, "request": request}


def make_world(seed: int, organizations: int = 12, clinicians_per_org: int = 4) -> World:
    """The providers every patient Bundle refers to (Synthea picks them by the patient's town)."""
    rng = random.Random(f"synthea-world-{seed}")
    providers = []
    npi = 9_999_990_000
    for i in range(organizations):
        city, postal = CITIES[i % len(CITIES)]
        kind = ("HOSPITAL", "MEDICAL CENTER", "URGENT CARE", "FAMILY PRACTICE")[i % 4]
        clinicians = []
        for _ in range(clinicians_per_org):
            npi += rng.randint(1, 97)
            clinicians.append(Clinician(str(npi), rng.choice(GIVENS), rng.choice(FAMILIES)))
        providers.append(
            Provider(_uuid(rng), f"{city.upper()} {kind} {i}", _uuid(rng), city, postal,
                     tuple(clinicians))
        )  # fmt: skip
    return World(tuple(providers))


def hospital_information(world: World) -> dict[str, Any]:
    """Synthea's hospitalInformation Bundle: Organizations and Locations, conditional creates."""
    entries = []
    for p in world.providers:
        address = {"line": [f"{100 + len(p.name)} Main Street"], "city": p.city, "state": "MA",
                   "postalCode": p.postal_code, "country": "US"}  # fmt: skip
        org = {
            "resourceType": "Organization",
            "id": p.org_id,
            "meta": {"profile": [US_CORE + "us-core-organization"]},
            "identifier": [{"system": SYNTHEA, "value": p.org_id}],
            "active": True,
            "type": [
                _coding(
                    "http://terminology.hl7.org/CodeSystem/organization-type",
                    "prov",
                    "Healthcare Provider",
                )
            ],  # fmt: skip
            "name": p.name,
            "telecom": [{"system": "phone", "value": "617-555-0100"}],
            "address": [address],
        }
        loc = {
            "resourceType": "Location",
            "id": p.location_id,
            "meta": {"profile": [US_CORE + "us-core-location"]},
            "identifier": [{"system": SYNTHEA, "value": p.location_id}],
            "status": "active",
            "name": p.name,
            "address": address,
            "position": {"longitude": -71.06, "latitude": 42.36},
            "managingOrganization": {"reference": f"urn:uuid:{p.org_id}", "display": p.name},
        }
        entries.append(_entry(org, f"identifier={SYNTHEA}|{p.org_id}"))
        entries.append(_entry(loc, f"identifier={SYNTHEA}|{p.location_id}"))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def practitioner_information(world: World) -> dict[str, Any]:
    """Synthea's practitionerInformation Bundle: Practitioners and their PractitionerRoles."""
    rng = random.Random(f"synthea-practitioners-{len(world.providers)}")
    entries = []
    for p in world.providers:
        for c in p.clinicians:
            prac_id = _uuid(rng)
            prac = {
                "resourceType": "Practitioner",
                "id": prac_id,
                "meta": {"profile": [US_CORE + "us-core-practitioner"]},
                "identifier": [{"system": NPI, "value": c.npi}],
                "active": True,
                "name": [{"family": c.family, "given": [c.given], "prefix": ["Dr."]}],
                "telecom": [
                    {"system": "email", "value": f"{c.given}.{c.family}@example.com", "use": "work"}
                ],  # fmt: skip
                "gender": rng.choice(("male", "female")),
            }
            role = {
                "resourceType": "PractitionerRole",
                "id": _uuid(rng),
                "meta": {"profile": [US_CORE + "us-core-practitionerrole"]},
                "practitioner": {"reference": f"urn:uuid:{prac_id}", "display": c.display},
                "organization": _org_ref(p),
                "code": [
                    _coding("http://nucc.org/provider-taxonomy", "208D00000X", "General Practice")
                ],  # fmt: skip
                "location": [_loc_ref(p)],
            }
            entries.append(_entry(prac, f"identifier={NPI}|{c.npi}"))
            entries.append(_entry(role))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


class _PatientBuilder:
    """Builds one patient's Bundle; every random choice comes from the one seeded `rng`."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.entries: list[dict[str, Any]] = []
        self.patient_id = _uuid(rng)
        self.home = rng.choice(world.providers)

    def add(self, resource: dict[str, Any]) -> str:
        self.entries.append(_entry(resource))
        return f"urn:uuid:{resource['id']}"

    def patient(self, born: datetime) -> None:
        rng = self.rng
        given, family = rng.choice(GIVENS), rng.choice(FAMILIES)
        gender = rng.choice(("male", "female"))
        self.add({
            "resourceType": "Patient",
            "id": self.patient_id,
            "meta": {"profile": [US_CORE + "us-core-patient"]},
            "text": {"status": "generated",
                     "div": '<div xmlns="http://www.w3.org/1999/xhtml">Generated by '
                            "<a href=\"https://github.com/synthetichealth/synthea\">Synthea</a>"
                            "</div>"},
            "extension": [
                {"url": US_CORE + "us-core-birthsex", "valueCode": gender[0].upper()},
                {"url": "http://synthetichealth.github.io/synthea/disability-adjusted-life-years",
                 "valueDecimal": round(rng.uniform(0, 5), 6)},
            ],
            "identifier": [
                {"system": SYNTHEA, "value": self.patient_id},
                {"type": _coding("http://terminology.hl7.org/CodeSystem/v2-0203", "MR",
                                 "Medical Record Number"),
                 "system": "http://hospital.smarthealthit.org", "value": self.patient_id},
                {"type": _coding("http://terminology.hl7.org/CodeSystem/v2-0203", "SS",
                                 "Social Security Number"),
                 "system": "http://hl7.org/fhir/sid/us-ssn",
                 "value": f"999-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"},
            ],
            "name": [{"use": "official", "family": f"{family}{rng.randint(100, 999)}",
                      "given": [f"{given}{rng.randint(100, 999)}"]}],
            "telecom": [{"system": "phone", "value": f"555-{rng.randint(100, 999)}-"
                         f"{rng.randint(1000, 9999)}", "use": "home"}],
            "gender": gender,
            "birthDate": born.strftime("%Y-%m-%d"),
            "address": [{"line": [f"{rng.randint(1, 999)} Synthetic Way"], "city": self.home.city,
                         "state": "MA", "postalCode": self.home.postal_code, "country": "US"}],
            "maritalStatus": _coding("http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                                     "M", "Married"),
            "multipleBirthBoolean": False,
            "communication": [{"language": _coding("urn:ietf:bcp:47", "en-US",
                                                   "English (United States)")}],
        })  # fmt: skip

    def encounter(self, start: datetime) -> None:
        rng = self.rng
        provider = self.home if rng.random() < 0.8 else rng.choice(self.world.providers)
        clinician = rng.choice(provider.clinicians)
        code, display, klass = rng.choice(ENCOUNTER_TYPES)
        end = start + timedelta(minutes=rng.choice((15, 30, 45, 60, 240)))
        period = {"start": _instant(start), "end": _instant(end)}
        subject = {"reference": f"urn:uuid:{self.patient_id}"}
        enc_id = _uuid(rng)
        enc = self.add({
            "resourceType": "Encounter",
            "id": enc_id,
            "meta": {"profile": [US_CORE + "us-core-encounter"]},
            "identifier": [{"use": "official", "system": SYNTHEA, "value": enc_id}],
            "status": "finished",
            "class": {"system": ACT_CODE, "code": klass},
            "type": [_coding(SNOMED, code, display)],
            "subject": subject,
            "participant": [{
                "type": [_coding("http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                 "PPRF", "primary performer")],
                "period": period,
                "individual": _prac_ref(clinician),
            }],
            "period": period,
            "location": [{"location": _loc_ref(provider)}],
            "serviceProvider": _org_ref(provider),
        })  # fmt: skip
        context = {"subject": subject, "encounter": {"reference": enc}}
        conditions = []
        if rng.random() < 0.6:
            c_code, c_display = rng.choice(CONDITIONS)
            conditions.append(self.add({
                "resourceType": "Condition",
                "id": _uuid(rng),
                "meta": {"profile": [US_CORE + "us-core-condition"]},
                "clinicalStatus": _coding(
                    "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"),
                "verificationStatus": _coding(
                    "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed",
                    "Confirmed"),
                "category": [_coding("http://terminology.hl7.org/CodeSystem/condition-category",
                                     "encounter-diagnosis", "Encounter Diagnosis")],
                "code": _coding(SNOMED, c_code, c_display),
                **context,
                "onsetDateTime": _instant(start),
                "recordedDate": _instant(start),
            }))  # fmt: skip
        self.observations(context, start, vitals=klass == "AMB", labs=rng.random() < 0.4)
        procedures = []
        if rng.random() < 0.4:
            p_code, p_display = rng.choice(PROCEDURES)
            procedures.append((p_code, p_display))
            self.add(
                {
                    "resourceType": "Procedure",
                    "id": _uuid(rng),
                    "meta": {"profile": [US_CORE + "us-core-procedure"]},
                    "status": "completed",
                    "code": _coding(SNOMED, p_code, p_display),
                    **context,
                    "performedPeriod": period,
                    "location": _loc_ref(provider),
                }
            )
        if rng.random() < 0.3:
            v_code, v_display = rng.choice(VACCINES)
            self.add(
                {
                    "resourceType": "Immunization",
                    "id": _uuid(rng),
                    "meta": {"profile": [US_CORE + "us-core-immunization"]},
                    "status": "completed",
                    "vaccineCode": _coding(CVX, v_code, v_display),
                    "patient": subject,
                    "encounter": {"reference": enc},
                    "occurrenceDateTime": _instant(start),
                    "primarySource": True,
                    "location": _loc_ref(provider),
                }
            )
        items = [(SNOMED, code, display, enc)] + [(SNOMED, c, d, enc) for c, d in procedures]
        claim = self.claim(provider, clinician, period, items, conditions, "professional", None)
        self.eob(provider, clinician, period, items, claim, "professional")
        if rng.random() < 0.6:
            self.medication(context, provider, clinician, start, period, conditions)

    def observations(self, context: dict[str, Any], start: datetime, vitals: bool,
                     labs: bool) -> None:  # fmt: skip
        rng = self.rng
        chosen: list[tuple[str, str, str, float, float, str]] = []
        if vitals:
            chosen += [(*v, "vital-signs") for v in VITALS]
        if labs:
            chosen += [(*v, "laboratory") for v in LABS]
        results = []
        for code, display, unit, low, high, category in chosen:
            ref = self.add({
                "resourceType": "Observation",
                "id": _uuid(self.rng),
                "meta": {"profile": [US_CORE + ("vital-signs" if category == "vital-signs"
                                                else "us-core-observation-lab")]},
                "status": "final",
                "category": [_coding(OBS_CATEGORY, category, category.replace("-", " ").title())],
                "code": _coding(LOINC, code, display),
                **context,
                "effectiveDateTime": _instant(start),
                "issued": _instant(start),
                "valueQuantity": _quantity(round(rng.uniform(low, high), 1), unit),
            })  # fmt: skip
            if category == "laboratory":
                results.append({"reference": ref, "display": display})
        if results:  # the lab panel's report, as Synthea writes one per panel
            self.add({
                "resourceType": "DiagnosticReport",
                "id": _uuid(rng),
                "meta": {"profile": [US_CORE + "us-core-diagnosticreport-lab"]},
                "status": "final",
                "category": [_coding("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB",
                                     "Laboratory")],
                "code": _coding(LOINC, "24323-8", "Comprehensive metabolic 2000 panel"),
                **context,
                "effectiveDateTime": _instant(start),
                "issued": _instant(start),
                "result": results,
            })  # fmt: skip
        if vitals:
            self.add({
                "resourceType": "Observation",
                "id": _uuid(rng),
                "meta": {"profile": [US_CORE + "blood-pressure"]},
                "status": "final",
                "category": [_coding(OBS_CATEGORY, "vital-signs", "Vital signs")],
                "code": _coding(LOINC, "85354-9", "Blood pressure panel"),
                **context,
                "effectiveDateTime": _instant(start),
                "component": [
                    {"code": _coding(LOINC, "8462-4", "Diastolic Blood Pressure"),
                     "valueQuantity": _quantity(float(rng.randint(60, 95)), "mm[Hg]")},
                    {"code": _coding(LOINC, "8480-6", "Systolic Blood Pressure"),
                     "valueQuantity": _quantity(float(rng.randint(100, 150)), "mm[Hg]")},
                ],
            })  # fmt: skip

    def medication(self, context: dict[str, Any], provider: Provider, clinician: Clinician,
                   start: datetime, period: dict[str, str],
                   conditions: list[str]) -> None:  # fmt: skip
        rng = self.rng
        m_code, m_display = rng.choice(MEDICATIONS)
        request: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "id": _uuid(rng),
            "meta": {"profile": [US_CORE + "us-core-medicationrequest"]},
            "status": rng.choice(("active", "stopped")),
            "intent": "order",
            "medicationCodeableConcept": _coding(RXNORM, m_code, m_display),
            **context,
            "authoredOn": _instant(start),
            "requester": _prac_ref(clinician),
            "dosageInstruction": [{"sequence": 1, "timing": {"repeat": {"frequency": 1,
                                   "period": 1, "periodUnit": "d"}}, "asNeededBoolean": False,
                                   "doseAndRate": [{"doseQuantity": {"value": 1}}]}],
        }  # fmt: skip
        if conditions:
            request["reasonReference"] = [{"reference": conditions[0]}]
        med = self.add(request)
        items = [(RXNORM, m_code, m_display, context["encounter"]["reference"])]
        claim = self.claim(provider, clinician, period, items, [], "pharmacy", med)
        self.eob(provider, clinician, period, items, claim, "pharmacy")

    def claim(self, provider: Provider, clinician: Clinician, period: dict[str, str],
              items: list[tuple[str, str, str, str]], conditions: list[str], kind: str,
              prescription: str | None) -> str:  # fmt: skip
        rng = self.rng
        claim: dict[str, Any] = {
            "resourceType": "Claim",
            "id": _uuid(rng),
            "status": "active",
            "type": _coding(CLAIM_TYPE, kind, kind.title()),
            "use": "claim",
            "patient": {"reference": f"urn:uuid:{self.patient_id}"},
            "billablePeriod": period,
            "created": period["end"],
            "provider": _org_ref(provider),
            "priority": _coding("http://terminology.hl7.org/CodeSystem/processpriority",
                                "normal", "Normal"),
            "facility": _loc_ref(provider),
            "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "Medicaid"}}],
            "item": [{"sequence": i + 1, "productOrService": _coding(s, c, d),
                      "encounter": [{"reference": e}]} for i, (s, c, d, e) in enumerate(items)],
            "total": {"value": round(rng.uniform(50, 1500), 2), "currency": "USD"},
        }  # fmt: skip
        if conditions:
            claim["diagnosis"] = [{"sequence": i + 1, "diagnosisReference": {"reference": c}}
                                  for i, c in enumerate(conditions)]  # fmt: skip
        if prescription:
            claim["prescription"] = {"reference": prescription}
        return self.add(claim)

    def eob(self, provider: Provider, clinician: Clinician, period: dict[str, str],
            items: list[tuple[str, str, str, str]], claim: str, kind: str) -> None:  # fmt: skip
        rng = self.rng
        total = round(rng.uniform(50, 1500), 2)
        patient = {"reference": f"urn:uuid:{self.patient_id}"}
        self.add({
            "resourceType": "ExplanationOfBenefit",
            "id": _uuid(rng),
            "contained": [
                {"resourceType": "ServiceRequest", "id": "referral", "status": "completed",
                 "intent": "order", "subject": patient, "requester": _prac_ref(clinician)},
                {"resourceType": "Coverage", "id": "coverage", "status": "active",
                 "type": {"text": "Medicaid"}, "beneficiary": patient,
                 "payor": [{"display": "Medicaid"}]},
            ],
            "identifier": [{"system": "https://bluebutton.cms.gov/resources/variables/clm_id",
                            "value": claim.removeprefix("urn:uuid:")}],
            "status": "active",
            "type": _coding(CLAIM_TYPE, kind, kind.title()),
            "use": "claim",
            "patient": patient,
            "billablePeriod": period,
            "created": period["end"],
            "insurer": {"display": "Medicaid"},
            "provider": _prac_ref(clinician),
            "referral": {"reference": "#referral"},
            "facility": _loc_ref(provider),
            "claim": {"reference": claim},
            "outcome": "complete",
            "careTeam": [{"sequence": 1, "provider": _prac_ref(clinician),
                          "role": _coding("http://terminology.hl7.org/CodeSystem/claimcareteamrole",
                                          "primary", "Primary provider")}],
            "insurance": [{"focal": True, "coverage": {"reference": "#coverage",
                                                       "display": "Medicaid"}}],
            "item": [{"sequence": i + 1, "productOrService": _coding(s, c, d),
                      "servicedPeriod": period, "encounter": [{"reference": e}]}
                     for i, (s, c, d, e) in enumerate(items)],
            "total": [{"category": _coding(
                "http://terminology.hl7.org/CodeSystem/adjudication", "submitted",
                "Submitted Amount"), "amount": {"value": total, "currency": "USD"}}],
            "payment": {"amount": {"value": round(total * 0.8, 2), "currency": "USD"}},
        })  # fmt: skip

    def provenance(self, when: datetime) -> None:
        clinician = self.home.clinicians[0]
        self.add({
            "resourceType": "Provenance",
            "id": _uuid(self.rng),
            "target": [{"reference": e["fullUrl"]} for e in self.entries],
            "recorded": _instant(when),
            "agent": [{
                "type": _coding("http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                "author", "Author"),
                "who": _prac_ref(clinician),
                "onBehalfOf": _org_ref(self.home),
            }],
        })  # fmt: skip


def patient_bundle(
    world: World, seed: int, index: int, encounters: int = DEFAULT_ENCOUNTERS
) -> dict[str, Any]:
    """One patient's transaction Bundle; (seed, index) decides every value in it."""
    rng = random.Random(f"synthea-patient-{seed}-{index}")
    builder = _PatientBuilder(world, rng)
    end = datetime(2024, 6, 1, 9, 0, tzinfo=UTC)
    born = end - timedelta(days=rng.randint(18 * 365, 90 * 365))
    builder.patient(born)
    span = (end - born).total_seconds()
    starts = sorted(
        born + timedelta(seconds=rng.uniform(0.05, 1.0) * span) for _ in range(encounters)
    )
    for start in starts:
        builder.encounter(start.replace(microsecond=0))
    builder.provenance(end)
    return {"resourceType": "Bundle", "type": "transaction", "entry": builder.entries}


def generate(
    seed: int = 1, patients: int = 10, encounters: int = DEFAULT_ENCOUNTERS
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(shared Bundles to load first, one Bundle per patient), as Synthea writes them."""
    world = make_world(seed)
    shared = [hospital_information(world), practitioner_information(world)]
    return shared, [patient_bundle(world, seed, i, encounters) for i in range(patients)]


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def conditional_references(bundle: dict[str, Any]) -> list[str]:
    """Every `Type?search` reference in the Bundle's resources (contained ones too)."""
    return [
        ref
        for entry in bundle["entry"]
        for ref in _references(entry["resource"])
        if "?" in ref and not ref.startswith(("http:", "https:"))
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--patients", type=int, default=3)
    parser.add_argument("--encounters", type=int, default=DEFAULT_ENCOUNTERS)
    parser.add_argument("--out", type=Path, required=True, help="directory for the JSON files")
    ns = parser.parse_args(argv)
    shared, bundles = generate(ns.seed, ns.patients, ns.encounters)
    ns.out.mkdir(parents=True, exist_ok=True)
    names = ["hospitalInformation.json", "practitionerInformation.json"]
    for name, bundle in zip(names, shared, strict=True):
        (ns.out / name).write_text(json.dumps(bundle, indent=1))
    for i, bundle in enumerate(bundles):
        (ns.out / f"patient-{i:05d}.json").write_text(json.dumps(bundle, indent=1))
        print(f"patient-{i:05d}.json: {len(bundle['entry'])} entries, "
              f"{len(conditional_references(bundle))} conditional references")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
