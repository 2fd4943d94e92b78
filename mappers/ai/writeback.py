"""Findings -> one transaction Bundle: DiagnosticReport, Observations, Device, Provenance, and
the Task marked completed, so the result and the end of the job commit together or not at all.

The report and each Observation are written with a conditional PUT on an identifier derived
from the study and the model name: analysing the study again (or with a newer model version)
makes a new version of the same report, never a second report.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from mappers.ai.findings import CodedFinding, Findings, Measurement, ModelInfo
from mappers.ai.tasks import device_id, device_resource, task_completed

REPORT_SYSTEM = "urn:interop:ai:report"
OBSERVATION_SYSTEM = "urn:interop:ai:observation"
UCUM = "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
IMAGING_REPORT = {"system": "http://loinc.org", "code": "18748-4",
                  "display": "Diagnostic imaging study"}  # fmt: skip
RAD = {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD",
       "display": "Radiology"}  # fmt: skip
IMAGING = {"system": "http://terminology.hl7.org/CodeSystem/observation-category",
           "code": "imaging", "display": "Imaging"}  # fmt: skip
FLAGS = {"H": "High", "L": "Low", "A": "Abnormal", "N": "Normal", "HH": "Critical high",
         "LL": "Critical low", "AA": "Critical abnormal", "POS": "Positive"}  # fmt: skip


def report_identifier(study_id: str, model_name: str) -> str:
    return f"{study_id}/{model_name}"


def _uuid(*parts: str) -> str:
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()
    return f"urn:uuid:{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def _interpretation(flag: str | None) -> list[dict[str, Any]] | None:
    if not flag:
        return None
    return [
        {"coding": [{"system": INTERPRETATION, "code": flag, "display": FLAGS.get(flag, flag)}]}
    ]


def _observation(
    finding: Measurement | CodedFinding,
    study: dict[str, Any],
    device: str,
    ident: str,
    now: str,
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": OBSERVATION_SYSTEM, "value": ident}],
        "status": "preliminary",
        "category": [{"coding": [IMAGING]}],
        "code": {
            "coding": [finding.code.fhir()],
            "text": finding.code.display or finding.code.code,
        },
        "effectiveDateTime": now,
        "issued": now,
        "derivedFrom": [{"reference": f"ImagingStudy/{study['id']}"}],
        "device": {"reference": device},
    }
    subject = (study.get("subject") or {}).get("reference")
    if subject:
        obs["subject"] = {"reference": subject}
    if isinstance(finding, Measurement):
        obs["valueQuantity"] = {
            "value": finding.value,
            "unit": finding.unit,
            "system": UCUM,
            "code": finding.unit,
        }
    else:
        obs["valueCodeableConcept"] = {
            "coding": [finding.value.fhir()],
            "text": finding.value.display or finding.value.code,
        }
    interpretation = _interpretation(finding.flag)
    if interpretation:
        obs["interpretation"] = interpretation
    if finding.note:
        obs["note"] = [{"text": finding.note}]
    return obs


def _conditional_put(full_url: str, resource: dict[str, Any], system: str, value: str) -> dict:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {
            "method": "PUT",
            "url": f"{resource['resourceType']}?identifier={system}|{value}",
        },
    }


def result_bundle(
    task: dict[str, Any],
    study: dict[str, Any],
    model: ModelInfo,
    findings: Findings,
    now: str,
) -> dict[str, Any]:
    """The transaction that records an analysis and completes its Task (which has an id)."""
    device_ref = f"Device/{device_id(model)}"
    key = report_identifier(study["id"], model.name)
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": device_ref,
            "resource": device_resource(model),
            "request": {"method": "PUT", "url": device_ref},
        }
    ]
    observation_urls = []
    all_findings: list[Measurement | CodedFinding] = [*findings.measurements, *findings.coded]
    for finding in all_findings:
        ident = f"{key}/{finding.code.code}"
        url = _uuid(OBSERVATION_SYSTEM, ident)
        observation_urls.append(url)
        obs = _observation(finding, study, device_ref, ident, now)
        entries.append(_conditional_put(url, obs, OBSERVATION_SYSTEM, ident))
    report_url = _uuid(REPORT_SYSTEM, key)
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": REPORT_SYSTEM, "value": key}],
        "status": "preliminary",
        "category": [{"coding": [RAD]}],
        "code": {"coding": [IMAGING_REPORT], "text": f"AI analysis ({model.name})"},
        "effectiveDateTime": now,
        "issued": now,
        "imagingStudy": [{"reference": f"ImagingStudy/{study['id']}"}],
        "result": [{"reference": url} for url in observation_urls],
    }
    subject = (study.get("subject") or {}).get("reference")
    if subject:
        report["subject"] = {"reference": subject}
    if findings.impression:
        report["conclusion"] = findings.impression
    if findings.conclusion_codes:
        report["conclusionCode"] = [{"coding": [c.fhir()]} for c in findings.conclusion_codes]
    if findings.key_image is not None:
        report["presentedForm"] = [
            {
                "contentType": "image/png",
                "data": base64.b64encode(findings.key_image.png).decode("ascii"),
                "title": findings.key_image.title,
                "creation": now,
            }
        ]
    if not report["result"]:
        report.pop("result")
    entries.append(_conditional_put(report_url, report, REPORT_SYSTEM, key))
    entries.append(
        {
            "fullUrl": _uuid("Provenance", key, now, str(task.get("id"))),
            "resource": provenance(
                [report_url, *observation_urls],
                now,
                {"reference": device_ref},
                "author",
                entity=f"ImagingStudy/{study['id']}",
                activity=("http://terminology.hl7.org/CodeSystem/v3-DataOperation", "CREATE"),
            ),
            "request": {"method": "POST", "url": "Provenance"},
        }
    )
    done = task_completed(task, report_url, now)
    entries.append({"resource": done, "request": {"method": "PUT", "url": f"Task/{task['id']}"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def provenance(
    targets: list[str],
    now: str,
    who: dict[str, Any],
    agent_type: str,
    entity: str | None = None,
    activity: tuple[str, str] | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """Who did what to which resources (agent types from provenance-participant-type)."""
    prov: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": [{"reference": t} for t in targets],
        "recorded": now,
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": agent_type,
                        }
                    ]
                },
                "who": who,
            }
        ],
    }
    if activity:
        prov["activity"] = {"coding": [{"system": activity[0], "code": activity[1]}]}
    if entity:
        prov["entity"] = [{"role": "source", "what": {"reference": entity}}]
    if reason:
        prov["reason"] = [{"text": reason}]
    return prov
