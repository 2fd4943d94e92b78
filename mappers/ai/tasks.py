"""The model's Device and the FHIR Task that tracks one analysis through its lifecycle.

Task.status follows FHIR's Task state machine (requested -> in-progress -> completed |
failed); `businessStatus` says which step a running job is at (fetching, decoding, inferring,
writing), which is what a clinician watching the study wants to know.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from mappers.ai.findings import ModelInfo

MODEL_SYSTEM = "urn:interop:ai:model"
STEP_SYSTEM = "urn:interop:ai:step"
SOFTWARE = {"system": "http://snomed.info/sct", "code": "706689003",
            "display": "Application program software"}  # fmt: skip
STEPS = ("queued", "fetching", "decoding", "inferring", "writing", "done", "failed")


def device_id(model: ModelInfo) -> str:
    """A stable id per model name and version: the Device is written with PUT, idempotently."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", f"ai-{model.name}-{model.version}")[:56].strip("-")
    digest = hashlib.sha1(f"{model.name}@{model.version}".encode()).hexdigest()[:7]
    return f"{slug}-{digest}"


def device_resource(model: ModelInfo) -> dict[str, Any]:
    device: dict[str, Any] = {
        "resourceType": "Device",
        "id": device_id(model),
        "identifier": [{"system": MODEL_SYSTEM, "value": f"{model.name}@{model.version}"}],
        "status": "active",
        "deviceName": [{"name": model.name, "type": "model-name"}],
        "type": {"coding": [SOFTWARE], "text": "AI model"},
        "version": [{"value": model.version}],
    }
    if model.manufacturer:
        device["manufacturer"] = model.manufacturer
    if model.description:
        device["note"] = [{"text": model.description}]
    return device


def model_code(model: ModelInfo) -> dict[str, Any]:
    coding = {"system": MODEL_SYSTEM, "code": model.name, "version": model.version}
    return {"coding": [coding], "text": f"AI analysis by {model.name} {model.version}"}


def step(name: str) -> dict[str, Any]:
    return {"coding": [{"system": STEP_SYSTEM, "code": name}], "text": name}


def task_resource(
    study: dict[str, Any],
    model: ModelInfo,
    now: str,
    requester: dict[str, Any] | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """A new Task: status requested, focus the ImagingStudy, owner the model's Device."""
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "businessStatus": step("queued"),
        "code": model_code(model),
        "focus": {"reference": f"ImagingStudy/{study['id']}"},
        "owner": {"reference": f"Device/{device_id(model)}"},
        "authoredOn": now,
        "lastModified": now,
    }
    subject = (study.get("subject") or {}).get("reference")
    if subject:
        task["for"] = {"reference": subject}
    if requester:
        task["requester"] = requester
    if reason:
        task["reasonCode"] = {"text": reason}
    return task


def task_model(task: dict[str, Any]) -> tuple[str, str] | None:
    """(model name, version or '') named by a Task's code, or None if it is not an AI Task."""
    for coding in (task.get("code") or {}).get("coding") or []:
        if coding.get("system") == MODEL_SYSTEM and coding.get("code"):
            return str(coding["code"]), str(coding.get("version") or "")
    return None


def task_progress(task: dict[str, Any], name: str, now: str) -> dict[str, Any]:
    """The Task at a new step of a running job (in-progress)."""
    out = dict(task)
    out["status"] = "in-progress"
    out["businessStatus"] = step(name)
    out["lastModified"] = now
    period = dict(out.get("executionPeriod") or {})
    period.setdefault("start", now)
    out["executionPeriod"] = period
    out.pop("statusReason", None)
    return out


def task_failed(task: dict[str, Any], reason: str, now: str) -> dict[str, Any]:
    out = dict(task)
    out["status"] = "failed"
    out["businessStatus"] = step("failed")
    out["statusReason"] = {"text": reason[:1000]}
    out["lastModified"] = now
    period = dict(out.get("executionPeriod") or {})
    period.setdefault("start", now)
    period["end"] = now
    out["executionPeriod"] = period
    return out


def task_completed(task: dict[str, Any], report_ref: str, now: str) -> dict[str, Any]:
    out = dict(task)
    out["status"] = "completed"
    out["businessStatus"] = step("done")
    out["lastModified"] = now
    out.pop("statusReason", None)
    period = dict(out.get("executionPeriod") or {})
    period.setdefault("start", now)
    period["end"] = now
    out["executionPeriod"] = period
    out["output"] = [
        {"type": {"text": "DiagnosticReport"}, "valueReference": {"reference": report_ref}}
    ]
    return out
