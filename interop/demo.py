"""`interop demo`: a small, generated, realistic data set loaded into a running server.

Patients with encounters, vital signs and lab results go through the store's write path (one
transaction Bundle per patient, every resource a conditional create on its identifier); HL7 v2
ADT^A01, ADT^A08 and ORU^R01 messages go through the server's real MLLP listener; with a PACS
configured, one DICOM study goes through the real upload endpoint (and, with the AI worker on,
is analysed). Idempotent: the data is generated from a fixed seed, conditional creates match what
is there, and messages whose control id is already in the inbox are not sent again.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from interop.settings import Settings

AUTHORITY = "DEMOHOSP"  # PID-3.4: the mapper makes it urn:hl7v2:authority:DEMOHOSP
MRN_SYSTEM = f"urn:hl7v2:authority:{AUTHORITY}"
ENCOUNTER_SYSTEM = "urn:interop:demo:encounter"
OBSERVATION_SYSTEM = "urn:interop:demo:observation"
LAB_SENDER = ("DEMOLAB", AUTHORITY)
ADT_SENDER = ("DEMOADT", AUTHORITY)
CLIENT_NAME = "interop-demo"
UID_SYSTEM = "urn:dicom:uid"  # mappers.dicom.study.UID_SYSTEM
LOINC, UCUM = "http://loinc.org", "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

PEOPLE = [
    ("Maria", "Garcia", "female"),
    ("James", "Okafor", "male"),
    ("Aiko", "Tanaka", "female"),
    ("Samuel", "Lindqvist", "male"),
    ("Fatima", "Haddad", "female"),
    ("Daniel", "Novak", "male"),
]
STREETS = ["Oak Street", "Maple Avenue", "Harbor Road", "Elm Lane", "Station Square", "Mill Way"]
# (LOINC, display, unit, low, high, decimals)
VITALS = [
    ("8867-4", "Heart rate", "/min", 58, 96, 0),
    ("9279-1", "Respiratory rate", "/min", 12, 20, 0),
    ("8310-5", "Body temperature", "Cel", 36.2, 37.6, 1),
    ("29463-7", "Body weight", "kg", 52, 98, 1),
]
LABS = [
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 72, 140, 0),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 11.5, 16.5, 1),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.3, 2),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1, 1),
]


@dataclass
class DemoPatient:
    mrn: str
    given: str
    family: str
    gender: str
    birth: date
    street: str
    phone: str
    visits: list[datetime] = field(default_factory=list)


def people(count: int = len(PEOPLE)) -> list[DemoPatient]:
    """The same patients every time (a fixed seed): what makes the demo idempotent."""
    rng = random.Random(20240501)
    out = []
    for n, (given, family, gender) in enumerate(PEOPLE[:count]):
        birth = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 60))
        first = datetime(2025, 3, 3, 8, 30) + timedelta(days=rng.randrange(0, 60), minutes=15 * n)
        visits = [first, first + timedelta(days=rng.randrange(20, 90), hours=2)]
        out.append(
            DemoPatient(
                f"DEMO-{1001 + n}", given, family, gender, birth,
                f"{rng.randrange(2, 180)} {STREETS[n % len(STREETS)]}",
                f"555-01{rng.randrange(10, 99)}", visits,
            )
        )  # fmt: skip
    return out


def _value(rng: random.Random, low: float, high: float, decimals: int) -> float:
    value = round(rng.uniform(low, high), decimals)
    return int(value) if decimals == 0 else value


def patient_bundle(p: DemoPatient) -> dict[str, Any]:
    """One transaction: the patient, their encounters, and each visit's vitals and labs."""
    rng = random.Random(p.mrn)
    pid = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, MRN_SYSTEM + p.mrn)}"
    entries = [
        _create(pid, "Patient", MRN_SYSTEM, p.mrn, {
            "resourceType": "Patient",
            "identifier": [{"system": MRN_SYSTEM, "value": p.mrn, "type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}],
            "name": [{"family": p.family, "given": [p.given]}],
            "gender": p.gender,
            "birthDate": p.birth.isoformat(),
            "telecom": [{"system": "phone", "value": p.phone, "use": "home"}],
            "address": [{"line": [p.street], "city": "Springfield", "postalCode": "01101"}],
        })
    ]  # fmt: skip
    for v, when in enumerate(p.visits, start=1):
        eid = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{p.mrn}/encounter/{v}')}"
        encounter_key = f"{p.mrn}-V{v}"
        entries.append(_create(eid, "Encounter", ENCOUNTER_SYSTEM, encounter_key, {
            "resourceType": "Encounter",
            "identifier": [{"system": ENCOUNTER_SYSTEM, "value": encounter_key}],
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB", "display": "ambulatory"},
            "type": [{"text": "Outpatient visit"}],
            "subject": {"reference": pid},
            "period": {"start": _instant(when), "end": _instant(when + timedelta(minutes=40))},
        }))  # fmt: skip
        for kind, rows, offset in (("vital-signs", VITALS, 5), ("laboratory", LABS, 30)):
            for code, display, unit, low, high, decimals in rows:
                key = f"{encounter_key}-{code}"
                entries.append(_create(f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}",
                    "Observation", OBSERVATION_SYSTEM, key, {
                    "resourceType": "Observation",
                    "identifier": [{"system": OBSERVATION_SYSTEM, "value": key}],
                    "status": "final",
                    "category": [{"coding": [{"system": CATEGORY, "code": kind}]}],
                    "code": {"coding": [{"system": LOINC, "code": code, "display": display}],
                             "text": display},
                    "subject": {"reference": pid},
                    "encounter": {"reference": eid},
                    "effectiveDateTime": _instant(when + timedelta(minutes=offset)),
                    "valueQuantity": {"value": _value(rng, low, high, decimals), "unit": unit,
                                      "system": UCUM, "code": unit},
                }))  # fmt: skip
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _create(full_url: str, rtype: str, system: str, value: str, resource: dict[str, Any]) -> dict:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": rtype, "ifNoneExist": f"identifier={system}|{value}"},
    }


def _instant(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _hl7_time(when: datetime) -> str:
    return when.strftime("%Y%m%d%H%M%S")


def _pid(p: DemoPatient, street: str | None = None) -> str:
    sex = {"female": "F", "male": "M"}.get(p.gender, "U")
    return (f"PID|1||{p.mrn}^^^{AUTHORITY}^MR||{p.family}^{p.given}||{p.birth:%Y%m%d}|{sex}|||"
            f"{street or p.street}^^Springfield^^01101||{p.phone}")  # fmt: skip


def hl7_messages(p: DemoPatient) -> list[tuple[str, str, bytes]]:
    """(sender, control id, message): an admission, an address change and a lab result."""
    when = p.visits[-1]
    rng = random.Random(p.mrn + "/hl7")
    visit = f"V{p.mrn[5:]}{when:%m%d}"
    fields = (
        [
            "PV1",
            "1",
            "I",
            f"WARD1^101^A^{AUTHORITY}",
            "",
            "",
            "",
            "1234^Smith^Alex^^^Dr",
            "",
            "",
            "MED",
        ]
        + [""] * 8
        + [visit]
    )  # PV1-19: the visit number
    pv1 = "|".join(fields + [""] * 24 + [_hl7_time(when)])  # PV1-44: admitted at
    adt_head = "MSH|^~\\&|{app}|{fac}|INTEROP|{fac}|{t}||ADT^{ev}^ADT_A01|{ctrl}|P|2.5.1"
    out = []
    moved = f"{rng.randrange(2, 180)} {STREETS[(int(p.mrn[5:]) + 2) % len(STREETS)]}"
    for event, minutes, street in (("A01", 0, None), ("A08", 45, moved)):  # A08: a new address
        ctrl = f"{p.mrn}-ADT-{event}"
        t = _hl7_time(when + timedelta(minutes=minutes))
        lines = [
            adt_head.format(app=ADT_SENDER[0], fac=AUTHORITY, t=t, ev=event, ctrl=ctrl),
            f"EVN|{event}|{t}",
            _pid(p, street),
            pv1,
        ]
        out.append(("^".join(ADT_SENDER), ctrl, "\r".join(lines).encode()))
    ctrl = f"{p.mrn}-ORU-BMP"
    order = f"ORD{p.mrn[5:]}"
    t = _hl7_time(when + timedelta(hours=3))
    lines = [
        f"MSH|^~\\&|{LAB_SENDER[0]}|{AUTHORITY}|INTEROP|{AUTHORITY}|{t}||ORU^R01^ORU_R01|{ctrl}|P|2.5.1",
        _pid(p, moved),  # the lab already has the new address
        f"ORC|RE|{order}^{AUTHORITY}|{order}^{AUTHORITY}",
        f"OBR|1|{order}^{AUTHORITY}|{order}^{AUTHORITY}|51990-0^Basic metabolic panel^LN|||"
        f"{_hl7_time(when + timedelta(hours=1))}" + "|" * 15 + f"{t}||CH|F",
    ]  # fmt: skip
    for k, (code, display, unit, low, high, decimals) in enumerate(LABS, start=1):
        value = _value(rng, low, high, decimals)
        ref = f"{low}-{high}"
        lines.append(f"OBX|{k}|NM|{code}^{display}^LN||{value}|{unit}^^UCUM|{ref}||||F|||{t}")
    out.append(("^".join(LAB_SENDER), ctrl, "\r".join(lines).encode()))
    return out


# -- the command ----------------------------------------------------------------------------


def add_parser(commands: Any, parser: Callable[..., Any]) -> None:
    demo = parser(commands, "demo",
                  "load a small demo data set into a running server (idempotent)",
                  "./scripts/serve &  sleep 5; .venv/bin/interop demo")  # fmt: skip
    demo.add_argument(
        "--patients",
        type=int,
        default=len(PEOPLE),
        choices=range(1, 7),
        metavar="N",
        help=f"how many demo patients (1-{len(PEOPLE)}, default all)",
    )
    demo.add_argument("--mllp-host", help="the server's MLLP listener (INTEROP_MLLP_HOST)")
    demo.add_argument("--mllp-port", type=int, help="its port (INTEROP_MLLP_PORT)")
    demo.add_argument("--json", action="store_true", help="print one JSON object on stdout")


@dataclass
class Result:
    resources: Counter[str] = field(default_factory=Counter)  # outcome -> count
    messages: Counter[str] = field(default_factory=Counter)  # ACK code or "already in inbox"
    study: str = ""
    ai: str = ""
    client_id: str = ""


def run(args: argparse.Namespace, settings: Settings) -> int:
    from interop.cli import CliError
    from interop.progress import bar
    from interop.runtime import open_runtime

    host = args.mllp_host or settings.mllp_host
    port = args.mllp_port or settings.mllp_port
    if port == 0:
        raise CliError("the MLLP listener is off (INTEROP_MLLP_PORT=0): the demo sends HL7 to it")
    _reachable(host, port, CliError)
    patients = people(args.patients)
    messages = [m for p in patients for m in hl7_messages(p)]
    runtime = open_runtime(settings, write=True, pool_size=2)
    result = Result()
    try:
        result.client_id = _demo_client(runtime)
        with bar(args.json) as progress:
            task = progress.add_task("patients", total=len(patients), note="")
            for p in patients:
                _load_patient(runtime, p, result)
                progress.advance(task)
            task = progress.add_task("HL7 messages", total=len(messages), note="")
            known = _in_inbox(runtime, messages)
            with socket.create_connection((host, port), timeout=60) as sock:
                for sender, ctrl, raw in messages:
                    if (sender, ctrl) in known:
                        result.messages["already in the inbox"] += 1
                    else:
                        result.messages[_send(sock, raw)] += 1
                    progress.advance(task)
            if runtime.imaging_config() is not None:
                task = progress.add_task("DICOM study", total=1, note="")
                _study(runtime, settings, patients[0], result)
                progress.advance(task)
    finally:
        runtime.close()
    _report(args.json, settings, result, patients)
    failed = [code for code in result.messages if code not in ("AA", "CA", "already in the inbox")]
    return 1 if failed else 0


def _reachable(host: str, port: int, error: type[Exception]) -> None:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise error(
            f"no server listening for HL7 at {host}:{port} ({exc.strerror or type(exc).__name__})"
            ": start it first (./scripts/serve, in another terminal), then run the demo again"
        ) from exc


def _demo_client(runtime: Any) -> str:
    """The demo's backend client (its secret is never shown: `interop token` mints tokens)."""
    registry = runtime.auth_server().registry
    for client in registry.clients():
        if client.name == CLIENT_NAME:
            return str(client.client_id)
    client, _secret = registry.add_client(
        name=CLIENT_NAME, client_type="confidential-secret", redirect_uris=[],
        scope="system/*.cruds", jwks_url=None, jwks=None, launch_url=None,
        pkce_exempt=False, can_launch=False,
    )  # fmt: skip
    return str(client.client_id)


def _load_patient(runtime: Any, p: DemoPatient, result: Result) -> None:
    from fhir_server.store.audit import Actor

    actor = Actor(channel="demo", source="interop demo")
    for entry in runtime.store.apply(patient_bundle(p), actor):
        result.resources[entry.outcome] += 1


def _in_inbox(runtime: Any, messages: list[tuple[str, str, bytes]]) -> set[tuple[str, str]]:
    from sqlalchemy import select

    from hl7_listener.inbox import hl7_messages as table

    ids = [ctrl for _, ctrl, _ in messages]
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(table.c.sender, table.c.control_id).where(table.c.control_id.in_(ids))
        ).all()
    return {(r.sender, r.control_id) for r in rows}


def _send(sock: socket.socket, raw: bytes) -> str:
    from hl7_listener.mllp import EB, frame

    sock.sendall(frame(raw))
    buf = b""
    while EB not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return "no ACK"
        buf += chunk
    ack = buf.strip(b"\x0b\x1c\r").decode("utf-8", "replace")
    msa = next((s for s in ack.split("\r") if s.startswith("MSA")), "MSA|??")
    return msa.split("|")[1] if "|" in msa else "??"


def _study(runtime: Any, settings: Settings, p: DemoPatient, result: Result) -> None:
    """One CT study for the first patient, through POST /imaging/upload (skipped when the
    study is already there); with the AI worker on, `$analyze` it."""
    import httpx

    from dicomweb_bridge import samples
    from interop import features

    uid = "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, p.mrn + "/study").int)
    base = settings.effective_base_url
    token = _token(runtime, result.client_id)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=60, headers=headers) as http:
        found = http.get(
            f"{base}/ImagingStudy", params={"identifier": f"{UID_SYSTEM}|urn:oid:{uid}"}
        )
        if found.status_code == 200 and found.json().get("entry"):
            result.study = (
                f"ImagingStudy/{found.json()['entry'][0]['resource']['id']} (already there)"
            )
            return
        patient = http.get(f"{base}/Patient", params={"identifier": f"{MRN_SYSTEM}|{p.mrn}"})
        entries = patient.json().get("entry", []) if patient.status_code == 200 else []
        spec = samples.StudySpec(
            patient_id=p.mrn, patient_name=f"{p.family}^{p.given}", issuer=AUTHORITY,
            sex=p.gender[0].upper(), birth_date=f"{p.birth:%Y%m%d}", study_uid=uid,
            description="Demo CT chest", series=(("CT", 3),), study_date=f"{p.visits[-1]:%Y%m%d}",
        )  # fmt: skip
        files = [("file", (f"ct{n}.dcm", samples.to_bytes(ds), "application/dicom"))
                 for n, ds in enumerate(samples.study(spec))]  # fmt: skip
        data = {"patient": f"Patient/{entries[0]['resource']['id']}"} if entries else {}
        answer = http.post(base.rsplit("/fhir", 1)[0] + "/imaging/upload", files=files, data=data)
        if answer.status_code >= 400:
            result.study = f"upload refused ({answer.status_code}): {answer.text[:200]}"
            return
        studies = [f"ImagingStudy/{s.get('id')}" for s in answer.json().get("imagingStudies", [])]
        result.study = ", ".join(str(s) for s in studies) or "uploaded"
        if features.AI.available and settings.ai_worker_threads > 0 and studies:
            study_id = str(studies[0]).rsplit("/", 1)[-1]
            ai = http.post(f"{base}/ImagingStudy/{study_id}/$analyze",
                           json={"resourceType": "Parameters", "parameter": []})  # fmt: skip
            result.ai = "requested" if ai.status_code < 300 else f"refused ({ai.status_code})"


def _token(runtime: Any, client_id: str) -> str:
    server = runtime.auth_server()
    return str(server.tokens.access_token(
        client_id=client_id, subject=client_id, scope="system/*.cruds",
        lifetime=server.config.backend_token_seconds,
    ))  # fmt: skip


def _report(as_json: bool, settings: Settings, result: Result, patients: list[DemoPatient]) -> None:
    base = settings.effective_base_url
    root = base.rsplit("/fhir", 1)[0]
    if as_json:
        print(json.dumps({
            "resources": dict(result.resources), "messages": dict(result.messages),
            "study": result.study, "ai": result.ai, "client_id": result.client_id,
            "patients": [p.mrn for p in patients],
        }))  # fmt: skip
        return
    r, m = result.resources, result.messages
    print(
        f"resources: {r['created']} created, {r['matched']} already there"
        + "".join(f", {n} {k}" for k, n in r.items() if k not in ("created", "matched"))
    )
    print("HL7 messages: " + ", ".join(f"{n} {k}" for k, n in sorted(m.items())))
    if result.study:
        print(f"DICOM study: {result.study}" + (f"; AI analysis {result.ai}" if result.ai else ""))
    first = patients[0]
    auth = "" if settings.auth == "off" else ' -H "Authorization: Bearer $TOKEN"'
    print(f"""
What to look at:
  TOKEN=$(.venv/bin/interop token --client {result.client_id} --scope 'system/*.rs')
  curl -s{auth} '{base}/Patient?identifier={MRN_SYSTEM}|{first.mrn}'
  curl -s{auth} '{base}/Observation?patient.identifier={MRN_SYSTEM}|{first.mrn}&category=laboratory'
  .venv/bin/interop hl7 list --sender {"^".join(LAB_SENDER)}
  the console: {root}/console""")  # noqa: E501
    sys.stdout.flush()
