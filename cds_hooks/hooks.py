"""The CDS services: what each is, its prefetch templates, and how it turns FHIR data into
cards. Every card comes from FHIR resources only, so the same service answers for data that
came from HL7 feeds, Orthanc, OpenEMR or the AI worker.

- `ai-findings-review` (patient-view): a card per AI DiagnosticReport still preliminary (not
  yet approved or rejected), indicator from the worst interpretation among its findings, with
  a SMART link opening the imaging review app on the report;
- `critical-labs` (patient-view): a card per critical lab result (interpretation HH, LL or AA,
  or a value outside the configured critical range) received in the last N days and not yet
  acknowledged; the card's "Acknowledge" suggestion, accepted through the feedback endpoint,
  acknowledges that version of the result (feedback.py);
- `imaging-order-duplicate-select` (order-select) and `imaging-order-duplicate` (order-sign):
  a draft imaging ServiceRequest whose modality and body site match an ImagingStudy of the
  same patient within the window gets a warning, a suggestion deleting the draft, and a link
  to the existing study.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from cds_hooks.cards import card, card_uuid, concept_text, quantity_text, smart_link
from cds_hooks.config import CdsConfig
from cds_hooks.data import HookData, bad_request, fhir_id
from cds_hooks.feedback import OVERRIDE_SYSTEM, acknowledged
from mappers.ai.writeback import FLAGS, OBSERVATION_SYSTEM, REPORT_SYSTEM

V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V2_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v2-0078"
CRITICAL = frozenset({"HH", "LL", "AA"})
NOT_NORMAL = frozenset({"H", "L", "A", "POS", "DET", "R", "HU", "LU", ">", "<"})
LOINC = "http://loinc.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
DEAD = frozenset({"entered-in-error", "cancelled"})


@dataclass
class HookCall:
    service: str
    hook: str
    context: dict[str, Any]
    patient: str
    data: HookData
    issued: list[dict[str, Any]] = field(default_factory=list)  # (uuid, focus) of each card

    def keep(self, uid: str, reference: str, version: str) -> None:
        self.issued.append(
            {"uuid": uid, "reference": reference, "version": version, "patient": self.patient}
        )


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    title: str
    description: str
    prefetch: dict[str, str]
    run: Callable[[CdsConfig, HookCall], list[dict[str, Any]]]

    def discovery(self) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": self.prefetch,
        }


# -- helpers ------------------------------------------------------------------------------------


def _ref(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def _version(resource: dict[str, Any]) -> str:
    return str((resource.get("meta") or {}).get("versionId") or "")


def _about(resource: dict[str, Any], patient: str) -> bool:
    """A prefetched resource may be about someone else: only the hook's patient counts."""
    subject = (resource.get("subject") or resource.get("patient") or {}).get("reference")
    return subject in (f"Patient/{patient}", None) and resource.get("id") is not None


def _codes(concepts: Any) -> list[tuple[str, str]]:
    out = []
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        for coding in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
            if isinstance(coding, dict) and coding.get("code"):
                out.append((str(coding.get("system") or ""), str(coding["code"])))
    return out


def _flags(obs: dict[str, Any]) -> set[str]:
    return {
        code
        for system, code in _codes(obs.get("interpretation"))
        if system in ("", V3_INTERPRETATION, V2_INTERPRETATION)
    }


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _since(days: int) -> tuple[datetime, str]:
    cutoff = datetime.now(UTC) - timedelta(days=days)
    return cutoff, cutoff.strftime("%Y-%m-%dT%H:%M:%SZ")


def _app_link(config: CdsConfig, label: str, reference: str) -> dict[str, Any]:
    url = f"{config.public_root}{config.app_path}?{urlencode({'focus': reference})}"
    return smart_link(label, url, json.dumps({"focus": reference}))


# -- AI findings awaiting review ---------------------------------------------------------------


def ai_findings(config: CdsConfig, call: HookCall) -> list[dict[str, Any]]:
    p = call.patient
    found = call.data.get(
        "aiReports",
        "DiagnosticReport",
        [
            ("patient", p),
            ("status", "preliminary"),
            ("_include", "DiagnosticReport:result"),
            ("_count", "200"),
        ],
    )
    by_ref = {_ref(r): r for r in found}
    reports = [
        r
        for r in found
        if r.get("resourceType") == "DiagnosticReport"
        and r.get("status") == "preliminary"
        and _about(r, p)
        and any(i.get("system") == REPORT_SYSTEM for i in r.get("identifier") or [])
    ]
    wanted = [str(x.get("reference", "")) for r in reports for x in r.get("result") or []]
    missing = [
        ref.split("/", 1)[1]
        for ref in wanted
        if ref.startswith("Observation/") and ref not in by_ref
    ]
    for obs in call.data.by_id("Observation", missing):
        by_ref[_ref(obs)] = obs
    devices = {
        str((o.get("device") or {}).get("reference", ""))
        for o in by_ref.values()
        if o.get("resourceType") == "Observation"
    }
    device_ids = [d.split("/", 1)[1] for d in devices if d.startswith("Device/")]
    if device_ids:  # the models: Devices without a patient, read as the server
        for device in call.data.own.search("Device", [("_id", ",".join(device_ids))]):
            by_ref[_ref(device)] = device
    cards = []
    for report in sorted(reports, key=lambda r: str(r.get("issued") or ""), reverse=True):
        results = [
            by_ref[ref]
            for ref in (str(x.get("reference", "")) for x in report.get("result") or [])
            if ref in by_ref
        ]
        cards.append(_ai_card(config, call, report, results, by_ref))
    return cards


def _ai_card(
    config: CdsConfig,
    call: HookCall,
    report: dict[str, Any],
    results: list[dict[str, Any]],
    by_ref: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    flags = set().union(*(_flags(o) for o in results)) if results else set()
    indicator = "critical" if flags & CRITICAL else "warning" if flags & NOT_NORMAL else "info"
    model = _model(report, results, by_ref)
    conclusion = str(report.get("conclusion") or "").strip()
    summary = (
        f"AI finding awaiting review: {conclusion}"
        if conclusion
        else (f"AI analysis by {model} awaiting review")
    )
    lines = [
        f"Preliminary AI report by **{model}**; it is not part of the record until a "
        "physician approves it.",
        "",
    ]
    for obs in results:
        flag = ", ".join(FLAGS.get(f, f) for f in sorted(_flags(obs)))
        lines.append(
            f"- {concept_text(obs.get('code')) or 'finding'}: {quantity_text(obs)}"
            + (f" ({flag})" if flag else "")
        )
    studies = [str(s.get("reference")) for s in report.get("imagingStudy") or []]
    if studies:
        lines += ["", f"Study: {', '.join(studies)}"]
    ref = _ref(report)
    uid = card_uuid(call.service, ref, _version(report))
    call.keep(uid, ref, _version(report))
    return card(
        uid,
        summary,
        indicator,
        f"{model} (AI)",
        "\n".join(lines),
        links=[_app_link(config, "Review the AI report with its images", ref)],
    )


def _model(
    report: dict[str, Any], results: list[dict[str, Any]], by_ref: dict[str, dict[str, Any]]
) -> str:
    for obs in results:
        device = by_ref.get(str((obs.get("device") or {}).get("reference", "")))
        if device:
            name = next((n.get("name") for n in device.get("deviceName") or []), None)
            version = next((v.get("value") for v in device.get("version") or []), None)
            if name:
                return f"{name} {version}".strip() if version else str(name)
    text = concept_text(report.get("code"))
    return text[len("AI analysis (") : -1] if text.startswith("AI analysis (") else "AI model"


# -- critical lab results ----------------------------------------------------------------------

LAB_OVERRIDES = [
    {
        "system": OVERRIDE_SYSTEM,
        "code": "already-addressed",
        "display": "Already aware and addressed",
    },
    {
        "system": OVERRIDE_SYSTEM,
        "code": "suspected-error",
        "display": "Result suspected erroneous; repeat ordered",
    },
]


def _received(obs: dict[str, Any]) -> datetime | None:
    return (
        _instant(obs.get("issued"))
        or _instant((obs.get("meta") or {}).get("lastUpdated"))
        or _instant(obs.get("effectiveDateTime"))
    )


def critical_reason(config: CdsConfig, obs: dict[str, Any]) -> str | None:
    """Why a result is critical ('critical high', 'above the critical limit 6.2 mmol/L'),
    or None."""
    flags = _flags(obs) & CRITICAL
    if flags:
        return ", ".join(FLAGS[f].lower() for f in sorted(flags))
    q = obs.get("valueQuantity")
    if not isinstance(q, dict):
        return None
    value = q.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    for system, code in _codes(obs.get("code")):
        limits = config.critical_ranges.get(code) if system in (LOINC, "") else None
        if limits is None or limits.unit not in (q.get("code"), q.get("unit")):
            continue
        if limits.low is not None and value < limits.low:
            return f"below the critical limit {limits.low:g} {limits.unit}"
        if limits.high is not None and value > limits.high:
            return f"above the critical limit {limits.high:g} {limits.unit}"
    return None


def critical_labs(config: CdsConfig, call: HookCall) -> list[dict[str, Any]]:
    p = call.patient
    cutoff, since = _since(config.lab_days)
    found = call.data.get(
        "observations",
        "Observation",
        [
            ("patient", p),
            ("_lastUpdated", f"ge{since}"),
            ("_sort", "-_lastUpdated"),
            ("_count", "1000"),
        ],
    )
    critical = []
    for obs in found:
        if obs.get("resourceType") != "Observation" or obs.get("status") in DEAD:
            continue
        if not _about(obs, p) or any(
            i.get("system") == OBSERVATION_SYSTEM for i in obs.get("identifier") or []
        ):  # AI findings are the review card's
            continue
        received = _received(obs)
        if received is None or received < cutoff:
            continue
        why = critical_reason(config, obs)
        if why is not None:
            critical.append((received, obs, why))
    done = acknowledged(call.data.own, [_ref(o) for _, o, _ in critical])
    cards = []
    for received, obs, why in sorted(critical, key=lambda c: c[0], reverse=True):
        ref, version = _ref(obs), _version(obs)
        if version in done.get(ref, set()) or (not version and ref in done):
            continue
        name = concept_text(obs.get("code")) or "lab result"
        value = quantity_text(obs)
        uid = card_uuid(call.service, ref, version)
        call.keep(uid, ref, version)
        detail = [f"**{name}: {value}** ({why})", ""]
        ranges = [r.get("text") for r in obs.get("referenceRange") or [] if r.get("text")]
        if ranges:
            detail.append(f"Reference range: {ranges[0]}")
        taken = obs.get("effectiveDateTime")
        detail.append(
            f"Collected: {taken or 'unknown'}; received: {received.strftime('%Y-%m-%d %H:%M UTC')}"
        )
        suggestion = {
            "label": "Acknowledge this critical result",
            "isRecommended": True,
            "uuid": card_uuid(call.service, ref, version, "acknowledge"),
        }
        cards.append(
            card(
                uid,
                f"Critical result: {name} {value} ({why})",
                "critical",
                "Lab results",
                "\n".join(detail),
                suggestions=[suggestion],
                override_reasons=LAB_OVERRIDES,
            )
        )
    return cards


# -- duplicate imaging orders -------------------------------------------------------------------

ORDER_OVERRIDES = [
    {
        "system": OVERRIDE_SYSTEM,
        "code": "clinically-indicated",
        "display": "Repeat imaging clinically indicated",
    },
    {
        "system": OVERRIDE_SYSTEM,
        "code": "prior-inadequate",
        "display": "Prior study inadequate or unavailable",
    },
]


def _modalities(request: dict[str, Any]) -> set[str]:
    concepts = [
        request.get("code"),
        *(request.get("category") or []),
        *(request.get("orderDetail") or []),
    ]
    return {code for system, code in _codes(concepts) if system == DCM}


def _sites(codings: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(system, code) of coded sites, ('', display lowered) of the uncoded."""
    out = set()
    for c in codings:
        if c.get("code"):
            out.add((str(c.get("system") or ""), str(c["code"])))
        elif c.get("display") or c.get("text"):
            out.add(("", str(c.get("display") or c.get("text")).strip().lower()))
    return out


def _order_sites(request: dict[str, Any]) -> set[tuple[str, str]]:
    codings: list[dict[str, Any]] = []
    for concept in request.get("bodySite") or []:
        if not isinstance(concept, dict):
            continue
        codings.extend(c for c in concept.get("coding") or [] if isinstance(c, dict))
        if concept.get("text") and not concept.get("coding"):
            codings.append({"display": concept["text"]})
    return _sites(codings)


def _study_parts(study: dict[str, Any]) -> tuple[set[str], set[tuple[str, str]]]:
    modalities = {str(m.get("code")) for m in study.get("modality") or [] if m.get("code")}
    sites: list[dict[str, Any]] = []
    for series in study.get("series") or []:
        if (series.get("modality") or {}).get("code"):
            modalities.add(str(series["modality"]["code"]))
        if isinstance(series.get("bodySite"), dict):
            sites.append(series["bodySite"])
    return modalities, _sites(sites)


def _drafts(call: HookCall) -> list[dict[str, Any]]:
    bundle = call.context.get("draftOrders")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request("context.draftOrders must be a FHIR Bundle of the draft orders")
    found = [e.get("resource") for e in bundle.get("entry") or [] if isinstance(e, dict)]
    orders: list[dict[str, Any]] = [
        o
        for o in found
        if isinstance(o, dict)
        and o.get("resourceType") == "ServiceRequest"
        and o.get("id")
        and o.get("status", "draft") == "draft"
    ]
    if call.hook == "order-select":
        selections = call.context.get("selections")
        if not isinstance(selections, list):
            raise bad_request("context.selections must list the selected orders")
        chosen = {str(s) for s in selections}
        orders = [o for o in orders if _ref(o) in chosen]
    return orders


def duplicate_orders(config: CdsConfig, call: HookCall) -> list[dict[str, Any]]:
    orders = [(o, _modalities(o), _order_sites(o)) for o in _drafts(call)]
    orders = [(o, m, s) for o, m, s in orders if m and s]
    if not orders:
        return []
    cutoff, since = _since(config.imaging_window_days)
    found = call.data.get(
        "studies",
        "ImagingStudy",
        [
            ("patient", call.patient),
            ("started", f"ge{since}"),
            ("_sort", "-started"),
            ("_count", "1000"),
        ],
    )
    studies = []
    for study in found:
        started = _instant(study.get("started"))
        if (
            study.get("resourceType") == "ImagingStudy"
            and study.get("status") not in DEAD
            and _about(study, call.patient)
            and started is not None
            and started >= cutoff
        ):
            studies.append((started, study, *_study_parts(study)))
    studies.sort(key=lambda s: s[0], reverse=True)
    cards = []
    for order, modalities, sites in orders:
        matches = [
            (started, study, mods & modalities)
            for started, study, mods, where in studies
            if mods & modalities and where & sites
        ]
        if matches:
            cards.append(_duplicate_card(config, call, order, matches))
    return cards


def _duplicate_card(
    config: CdsConfig,
    call: HookCall,
    order: dict[str, Any],
    matches: list[tuple[datetime, dict[str, Any], set[str]]],
) -> dict[str, Any]:
    started, study, modalities = matches[0]
    days = (datetime.now(UTC) - started).days
    modality = "/".join(sorted(modalities))
    site = next((concept_text(b) for b in order.get("bodySite") or [] if concept_text(b)), "")
    what = f"{modality} {site}".strip()
    when = "today" if days == 0 else f"{days} day{'s' if days != 1 else ''} ago"
    order_ref, study_ref = _ref(order), _ref(study)
    uid = card_uuid(call.service, order_ref, study_ref)
    call.keep(uid, order_ref, study_ref)
    detail = [
        f"A comparable study ({what}) was done {when}, on "
        f"{started.strftime('%Y-%m-%d')}: {study.get('description') or study_ref}."
    ]
    if len(matches) > 1:
        detail.append(
            f"{len(matches) - 1} more comparable stud"
            f"{'y' if len(matches) == 2 else 'ies'} in the last "
            f"{config.imaging_window_days} days."
        )
    suggestion = {
        "label": f"Cancel the new {what} order",
        "uuid": card_uuid(call.service, order_ref, study_ref, "cancel"),
        "isRecommended": True,
        "actions": [
            {
                "type": "delete",
                "description": f"Remove the draft order {order_ref}",
                "resourceId": [order_ref],
            }
        ],
    }
    return card(
        uid,
        f"Possible duplicate: {what} already done {when}",
        "warning",
        "Imaging history",
        "\n\n".join(detail),
        suggestions=[suggestion],
        links=[_app_link(config, "Open the existing study", study_ref)],
        override_reasons=ORDER_OVERRIDES,
    )


# -- the catalogue -----------------------------------------------------------------------------

PATIENT = "{{context.patientId}}"
DUPLICATE_PREFETCH = {"studies": f"ImagingStudy?patient={PATIENT}&_sort=-started&_count=200"}
SERVICES = {
    s.id: s
    for s in (
        Service(
            "ai-findings-review",
            "patient-view",
            "AI findings awaiting review",
            "A card per preliminary AI imaging report of the patient, linking to the review app",
            {
                "aiReports": f"DiagnosticReport?patient={PATIENT}&status=preliminary"
                "&_include=DiagnosticReport:result&_count=200"
            },
            ai_findings,
        ),
        Service(
            "critical-labs",
            "patient-view",
            "Unacknowledged critical lab results",
            "Critical lab results (HH/LL/AA or beyond critical limits) of the last days that "
            "no one has acknowledged yet",
            {"observations": f"Observation?patient={PATIENT}&_sort=-_lastUpdated&_count=500"},
            critical_labs,
        ),
        Service(
            "imaging-order-duplicate-select",
            "order-select",
            "Duplicate imaging order",
            "Warns when a selected imaging order repeats a recent study (modality and body site)",
            DUPLICATE_PREFETCH,
            duplicate_orders,
        ),
        Service(
            "imaging-order-duplicate",
            "order-sign",
            "Duplicate imaging order",
            "Warns when an imaging order being signed repeats a recent study",
            DUPLICATE_PREFETCH,
            duplicate_orders,
        ),
    )
}


def patient_of(context: Any) -> str:
    if not isinstance(context, dict):
        raise bad_request("context must be a JSON object")
    return fhir_id(context.get("patientId"), "patientId")
