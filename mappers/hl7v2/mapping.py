"""HL7 v2 message -> FHIR transaction Bundle, following the v2-to-FHIR IG.

Every resource is written by conditional PUT on a stable identifier, so a re-sent,
preliminary-then-final or corrected message updates the same resources (a new version)
instead of creating new ones:

- Patient: the first usable identifier of PID-3, then PID-2, then PID-4;
- ServiceRequest / DiagnosticReport: the order's filler number (OBR-3, else ORC-3), else
  its placer number (OBR-2, else ORC-2), as system|value when the EI names an authority;
- Observation: that order number + OBX-3 code + OBX-4 sub-id. Never MSH-10, message time,
  OBR-1/OBX-1 set ids or the position of the OBR group. When one OBR group repeats a code
  and sub-id (report lines, comments), the nth repeat is told apart by `#n`.

An identity written twice in one message is one entry: the later segment wins (a
DiagnosticReport keeps the results of every group of its order).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from mappers.hl7v2.datatypes import (
    address,
    codeable,
    dt,
    identifier_system,
    observation_value,
)
from mappers.hl7v2.parser import Message, Segment
from mappers.hl7v2.vocabulary import V2, Vocabulary, builtin

Resource = dict[str, Any]

# v2 table -> FHIR code translations are ConceptMaps read through a `Vocabulary`
# (vocabulary.py; the data in v2_to_fhir.json), never tables of this module.
OBSERVATION_STATUS = "http://hl7.org/fhir/observation-status"
REPORT_STATUS = "http://hl7.org/fhir/diagnostic-report-status"
REQUEST_STATUS = "http://hl7.org/fhir/request-status"
GENDER = "http://hl7.org/fhir/administrative-gender"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
ADT_ENCOUNTER_STATUS = {
    "A01": "in-progress", "A02": "in-progress", "A03": "finished", "A04": "arrived",
    "A05": "planned", "A08": None, "A11": "cancelled", "A13": "in-progress",
}  # fmt: skip
SUPPORTED = {
    "ORU^R01", "ORM^O01", "OML^O21",
    *(f"ADT^{t}" for t in ("A01", "A02", "A03", "A04", "A05", "A08", "A11", "A13", "A28",
                           "A31", "A40")),
}  # fmt: skip
ACT_CLASS = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_CLASS_DISPLAY = {"IMP": "inpatient encounter", "AMB": "ambulatory", "EMER": "emergency",
                     "PRENC": "pre-admission"}  # fmt: skip


class UnsupportedMessage(ValueError):
    """The message type is not mapped (ERR code 200/201 in the ACK)."""


class MappingError(ValueError):
    """The content cannot be mapped; the text says what to fix, `where` names the segment
    and field (ERR-2, e.g. ``PID^1^3``) and `code` the HL7 table 0357 error code."""

    def __init__(self, text: str, where: str = "", code: str = "207") -> None:
        super().__init__(text)
        self.where = where
        self.code = code


class _Builder:
    def __init__(
        self, msg: Message, systems: Mapping[str, str], tz: str, vocab: Vocabulary | None = None
    ) -> None:
        self.msg = msg
        self.vocab = vocab or builtin()
        self.systems = systems
        self.tz = tz
        self.entries: list[dict[str, Any]] = []
        self._shared: dict[str, str] = {}
        self._by_url: dict[str, dict[str, Any]] = {}

    def add(self, res: Resource, query: str | None) -> str:
        """An entry (conditional PUT on `query`, else POST); an identity already in the
        Bundle is written once, with the later resource."""
        if query:
            url = f"{res['resourceType']}?{query}"
            known = self._by_url.get(url)
            if known is not None:
                known["resource"] = res
                return str(known["fullUrl"])
        full = f"urn:uuid:{uuid.uuid4()}"
        req = {"method": "PUT", "url": url} if query else {
            "method": "POST", "url": res["resourceType"]}  # fmt: skip
        entry = {"fullUrl": full, "resource": res, "request": req}
        self.entries.append(entry)
        if query:
            self._by_url[url] = entry
        return full

    def written(self, res_type: str, query: str) -> Resource | None:
        """The resource this Bundle already writes under that identity, if any."""
        entry = self._by_url.get(f"{res_type}?{query}")
        return entry["resource"] if entry else None

    def shared(self, res: Resource, query: str) -> str:
        """A resource several segments point at (a performer): one entry per identity."""
        key = f"{res['resourceType']}?{query}"
        if key not in self._shared:
            self._shared[key] = self.add(res, query)
        return self._shared[key]

    def v2(self, table: str, code: str, target: str) -> str | None:
        """The FHIR code of `target` that v2 table `table`'s `code` translates to."""
        return self.vocab.translate(V2 + table, code, target) if code else None

    def system(self, authority: str) -> str:
        return identifier_system(authority, self.systems)


def _ident_query(system: str, value: str) -> str:
    return f"identifier={system}|{value}" if system else f"identifier={value}"


def ident_query(ident: Resource) -> str:
    """The conditional query an entry is written under: its first identifier."""
    return _ident_query(ident.get("system", ""), ident["value"])


PATIENT_ID_FIELDS = (3, 2, 4)  # PID-3 patient identifier list, PID-2 external, PID-4 alternate


def _cx(b: _Builder, rep: list[list[str]]) -> Resource | None:
    """CX -> Identifier (value, system from CX-4 authority, type from CX-5); None if empty."""
    value = rep[0][0]
    if not value:
        return None
    auth = (rep[3] if len(rep) > 3 else []) + ["", ""]
    authority = auth[1] or auth[0]  # universal id (OID) else namespace
    ident: Resource = {"value": value}
    system = b.system(authority) if authority else ""
    if system:
        ident["system"] = system
    kind = rep[4][0] if len(rep) > 4 else ""
    if kind:
        coding = {"system": V2 + "0203", "code": kind}
        display = b.vocab.display(V2 + "0203", kind)
        if display:
            coding["display"] = display
        ident["type"] = {"coding": [coding]}
    return ident


def patient_identifiers(b: _Builder, pid: Segment) -> list[Resource]:
    """Every usable identifier of PID-3, PID-2 and PID-4, in that order, without repeats."""
    idents: list[Resource] = []
    seen: set[tuple[str, str]] = set()
    for n in PATIENT_ID_FIELDS:
        for rep in pid.reps(n):
            ident = _cx(b, rep)
            if ident is None:
                continue
            key = (ident.get("system", ""), ident["value"])
            if key not in seen:
                seen.add(key)
                idents.append(ident)
    return idents


def patient(b: _Builder, pid: Segment) -> tuple[Resource, str]:
    """PID -> Patient; identity is its first usable identifier (PID-3, then PID-2, PID-4).
    Only a PID without any usable identifier is refused."""
    idents = patient_identifiers(b, pid)
    if not idents:
        raise MappingError(
            "PID-3 (and PID-2, PID-4) hold no patient identifier; one is required",
            "PID^1^3", "101",
        )  # fmt: skip
    res: Resource = {"resourceType": "Patient", "identifier": idents}
    names = []
    for rep in pid.reps(5):
        comp = [c[0] for c in rep]
        name: Resource = {}
        if comp[0]:
            name["family"] = comp[0]
        given = [g for g in comp[1:3] if g]
        if given:
            name["given"] = given
        if name:
            names.append(name)
    if names:
        res["name"] = names
    birth = dt(pid.get(7), b.tz)
    if birth:
        res["birthDate"] = birth[:10]
    gender = b.v2("0001", pid.get(8).upper(), GENDER)
    if gender:
        res["gender"] = gender
    addrs = [a for a in (address(rep) for rep in pid.reps(11)) if a]
    if addrs:
        res["address"] = addrs
    if pid.get(30) == "Y":
        res["deceasedBoolean"] = True
    return res, b.add(res, ident_query(idents[0]))


def encounter(b: _Builder, pv1: Segment, patient_ref: str, trigger: str) -> str | None:
    """PV1 -> Encounter identified by visit number (PV1-19)."""
    visit = pv1.get(19)
    if not visit:
        return None
    act = b.v2("0004", pv1.get(2), ACT_CLASS) or "AMB"
    cls = (act, ACT_CLASS_DISPLAY.get(act, act))
    status = ADT_ENCOUNTER_STATUS.get(trigger) or "unknown"
    if trigger == "A08" or not trigger:
        status = "finished" if pv1.get(45) else "in-progress"
    res: Resource = {
        "resourceType": "Encounter",
        "identifier": [{"value": visit, "type": {"coding": [{"code": "VN"}]}}],
        "status": status,
        "class": {"system": ACT_CLASS, "code": cls[0], "display": cls[1]},
        "subject": {"reference": patient_ref},
    }
    period = {k: v for k, v in (("start", dt(pv1.get(44), b.tz)),
                                ("end", dt(pv1.get(45), b.tz))) if v}  # fmt: skip
    if period:
        res["period"] = period
    return b.add(res, f"identifier={visit}")


def _notes(segs: list[Segment]) -> list[Resource]:
    return [{"text": s.text(3)} for s in segs if s.text(3)]


def oru(b: _Builder) -> None:
    """ORU^R01: patient, visit, then per OBR group (ORC optional) a ServiceRequest and a
    DiagnosticReport with its Observations."""
    msg = b.msg
    pid = msg.first("PID")
    if pid is None:
        raise MappingError("ORU^R01 without a PID segment; a result needs a patient", "PID", "100")
    _, pref = patient(b, pid)
    pv1 = msg.first("PV1")
    eref = encounter(b, pv1, pref, "") if pv1 else None
    segs = msg.segments
    i = 0
    orc: Segment | None = None
    while i < len(segs):
        s = segs[i]
        if s.name == "ORC":
            orc = s
        if s.name != "OBR":
            i += 1
            continue
        group = [s]
        i += 1
        while i < len(segs) and segs[i].name not in ("OBR", "ORC", "PID"):
            group.append(segs[i])
            i += 1
        _result_group(b, group, orc, pid, pref, eref)
        orc = None


class OrderId(NamedTuple):
    """An EI order number as an Identifier: value, system (from its authority), type."""

    value: str
    system: str
    kind: str  # FILL or PLAC

    def identifier(self) -> Resource:
        ident: Resource = {"type": {"coding": [{"code": self.kind}]}, "value": self.value}
        if self.system:
            ident["system"] = self.system
        return ident

    @property
    def query(self) -> str:
        return _ident_query(self.system, self.value)


def _ei(b: _Builder, seg: Segment | None, n: int, kind: str) -> OrderId | None:
    reps = seg.reps(n) if seg is not None else []
    if not reps or not reps[0][0][0]:
        return None
    c = [x[0] for x in reps[0]] + ["", "", ""]
    authority = c[2] or c[1]  # universal id, else namespace
    return OrderId(c[0], b.system(authority) if authority else "", kind)


def _order_ids(
    b: _Builder, obr: Segment, orc: Segment | None
) -> tuple[OrderId | None, OrderId | None]:
    """(placer, filler): OBR-2/OBR-3, else ORC-2/ORC-3."""
    placer = _ei(b, obr, 2, "PLAC") or _ei(b, orc, 2, "PLAC")
    filler = _ei(b, obr, 3, "FILL") or _ei(b, orc, 3, "FILL")
    return placer, filler


def _order_key(
    b: _Builder, obr: Segment, orc: Segment | None, pid: Segment | None
) -> tuple[OrderId | None, OrderId | None, OrderId]:
    """(placer, filler, the order's identity): the filler number, else the placer number;
    an OBR without either is identified by patient + OBR-4 service + OBR-7 time, which a
    resend repeats (never by message id or position)."""
    placer, filler = _order_ids(b, obr, orc)
    key = filler or placer
    if key is None:
        who = patient_identifiers(b, pid)[0]["value"] if pid is not None else ""
        service = obr.get(4) or obr.get(4, 2)
        key = OrderId(f"{who}-{service}-{obr.get(7)}".strip("-"), "", "FILL")
    return placer, filler, key


def _service_request(
    b: _Builder,
    ids: tuple[OrderId | None, OrderId | None, OrderId],
    obr: Segment,
    pref: str,
    status: str,
    notes: list[Resource],
) -> str:
    placer, filler, key = ids
    idents = [i.identifier() for i in (placer, filler) if i is not None] or [key.identifier()]
    res: Resource = {
        "resourceType": "ServiceRequest",
        "identifier": idents,
        "status": status,
        "intent": "order",
        "subject": {"reference": pref},
    }
    code = codeable(obr.reps(4))
    if code:
        res["code"] = code
    if notes:
        res["note"] = notes
    return b.add(res, (placer or key).query)


def _result_group(
    b: _Builder,
    group: list[Segment],
    orc: Segment | None,
    pid: Segment | None,
    pref: str,
    eref: str | None,
) -> None:
    obr = group[0]
    ids = _order_key(b, obr, orc, pid)
    key = ids[2]
    lead = 1
    while lead < len(group) and group[lead].name == "NTE":
        lead += 1
    # NTEs right after the OBR annotate the order (R4 DiagnosticReport has no note)
    sr = _service_request(b, ids, obr, pref, "completed", _notes(group[1:lead]))
    obs_refs: list[Resource] = []
    last: Resource | None = None
    specimens: list[str] = []
    results: list[Resource] = []
    repeats: dict[tuple[str, str], int] = {}
    for seg in group[lead:]:
        if seg.name == "OBX":
            ident = (obx_code(seg), seg.get(4))
            repeats[ident] = repeats.get(ident, 0) + 1
            last, ref = observation(b, seg, key, repeats[ident], pref, eref)
            if specimens:  # an OBX of the SPECIMEN group describes that specimen
                last["focus"] = [{"reference": specimens[-1]}]
                last["specimen"] = {"reference": specimens[-1]}
            else:
                obs_refs.append({"reference": ref})
                results.append(last)
        elif seg.name == "NTE" and last is not None:
            last.setdefault("note", []).extend(_notes([seg]))
        elif seg.name == "SPM":
            specimens.append(specimen(b, seg, pref, key.value))
            last = None
    if len(specimens) == 1:
        for res in results:
            res["specimen"] = {"reference": specimens[0]}
    rep: Resource = {
        "resourceType": "DiagnosticReport",
        "identifier": [key.identifier()],
        "basedOn": [{"reference": sr}],
        "status": b.v2("0123", obr.get(25), REPORT_STATUS) or "unknown",
        "code": codeable(obr.reps(4)) or {"text": "unknown"},
        "subject": {"reference": pref},
    }
    if eref:
        rep["encounter"] = {"reference": eref}
    if obr.get(24):
        rep["category"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                        "code": obr.get(24)}]}]  # fmt: skip
    eff = dt(obr.get(7), b.tz)
    if eff:
        rep["effectiveDateTime"] = eff
    issued = dt(obr.get(22), b.tz)
    if issued and len(issued) > 10:
        rep["issued"] = issued
    earlier = b.written("DiagnosticReport", key.query)  # the same order in an earlier group
    if earlier is not None:
        obs_refs = _union(earlier.get("result", []), obs_refs)
        mine = [{"reference": r} for r in specimens]
        specimens = [r["reference"] for r in _union(earlier.get("specimen", []), mine)]
    if obs_refs:
        rep["result"] = obs_refs
    if specimens:
        rep["specimen"] = [{"reference": r} for r in specimens]
    b.add(rep, key.query)


def _union(first: list[Resource], then: list[Resource]) -> list[Resource]:
    seen = {r["reference"] for r in first}
    return [*first, *(r for r in then if r["reference"] not in seen)]


def obx_code(obx: Segment) -> str:
    """The OBX-3 code an Observation is identified by (identifier, else alternate id)."""
    return obx.get(3) or obx.get(3, 4)


def observation(
    b: _Builder, obx: Segment, order: OrderId, repeat: int, pref: str, eref: str | None
) -> tuple[Resource, str]:
    """OBX -> Observation; identity is the order number + OBX-3 code + OBX-4 sub-id (+ #n
    for the nth repeat of that code and sub-id within the group)."""
    # A missing OBX-3 is kept (text "unknown") rather than losing the whole message.
    code = codeable(obx.reps(3)) or {"text": "unknown"}
    value = f"{order.value}-{obx_code(obx)}"
    if obx.get(4):
        value += f"-{obx.get(4)}"
    if repeat > 1:
        value += f"#{repeat}"
    ident: Resource = {"value": value}
    if order.system:
        ident["system"] = order.system
    res: Resource = {
        "resourceType": "Observation",
        "identifier": [ident],
        "status": b.v2("0085", obx.get(11), OBSERVATION_STATUS) or "unknown",
        "code": code,
        "subject": {"reference": pref},
    }
    if eref:
        res["encounter"] = {"reference": eref}
    res.update(observation_value(obx, b.tz))
    if obx.get(7):
        res["referenceRange"] = [{"text": obx.text(7)}]
    interp = [r[0][0] for r in obx.reps(8) if r[0][0]]
    if interp:
        res["interpretation"] = [{"coding": [_interpretation(b, c)]} for c in interp]
    eff = dt(obx.get(14), b.tz)
    if eff:
        res["effectiveDateTime"] = eff
    performers = _performers(b, obx)
    if performers:
        res["performer"] = performers
    return res, b.add(res, ident_query(ident))


def _interpretation(b: _Builder, flag: str) -> Resource:
    """An OBX-8 abnormal flag (table 0078) as v3 ObservationInterpretation where that
    defines it, else as the v2 code itself."""
    code = b.v2("0078", flag, V3_INTERPRETATION)
    if code is not None:
        return {"system": V3_INTERPRETATION, "code": code}
    coding = {"system": V2 + "0078", "code": flag}
    display = b.vocab.display(V2 + "0078", flag)
    if display:
        coding["display"] = display
    return coding


def _performers(b: _Builder, obx: Segment) -> list[Resource]:
    """OBX-15 producer and OBX-23/24 performing organization -> Organization; OBX-16
    responsible observer and OBX-25 medical director -> Practitioner (IG OBX map)."""
    out: list[Resource] = []
    for rep in obx.reps(15)[:1]:
        c = [x[0] for x in rep] + [""] * 3
        if c[0]:
            producer: Resource = {"resourceType": "Organization", "identifier": [{"value": c[0]}]}
            if c[1]:
                producer["name"] = c[1]
            out.append({"reference": b.shared(producer, f"identifier={c[0]}")})
    for rep in obx.reps(23)[:1]:
        performing = organization(b, rep, obx.reps(24)[:1])
        if performing:
            out.append(performing)
    for field in (16, 25):
        for rep in obx.reps(field):
            who = practitioner(b, rep)
            if who:
                out.append(who)
    unique = {orjson.dumps(p): p for p in out}
    return list(unique.values())


def practitioner(b: _Builder, xcn: list[list[str]]) -> Resource | None:
    """XCN -> a Practitioner identified by XCN-1 (+ XCN-9 authority), else a display only."""
    c = [x[0] for x in xcn] + [""] * 9
    name: Resource = {}
    if c[1]:
        name["family"] = c[1]
    given = [g for g in c[2:4] if g]
    if given:
        name["given"] = given
    display = " ".join(g for g in [*given, c[1]] if g)
    if not c[0]:
        return {"display": display} if display else None
    hd = (xcn[8] if len(xcn) > 8 else []) + ["", ""]
    authority = hd[1] or hd[0]  # XCN-9: namespace id ^ universal id
    system = b.system(authority) if authority else ""
    ident: Resource = {"value": c[0], **({"system": system} if system else {})}
    res: Resource = {"resourceType": "Practitioner", "identifier": [ident]}
    if name:
        res["name"] = [name]
    ref: Resource = {"reference": b.shared(res, _ident_query(system, c[0]))}
    if display:
        ref["display"] = display
    return ref


def organization(b: _Builder, xon: list[list[str]], xad: list[list[list[str]]]) -> Resource | None:
    """XON (name, XON-10 or XON-3 id) -> Organization by identifier, else a display only."""
    c = [x[0] for x in xon] + [""] * 10
    ident = c[9] or c[2]
    if not ident:
        return {"display": c[0]} if c[0] else None
    res: Resource = {"resourceType": "Organization", "identifier": [{"value": ident}]}
    if c[0]:
        res["name"] = c[0]
    addrs = [a for a in (address(rep) for rep in xad) if a]
    if addrs:
        res["address"] = addrs
    ref: Resource = {"reference": b.shared(res, f"identifier={ident}")}
    if c[0]:
        ref["display"] = c[0]
    return ref


def specimen(b: _Builder, spm: Segment, pref: str, order_key: str) -> str:
    """SPM -> Specimen identified by SPM-2 (or the order and SPM set id)."""
    ident = spm.get(2, 1) or spm.get(2, 2) or f"{order_key}-SPM{spm.get(1) or 1}"
    res: Resource = {
        "resourceType": "Specimen",
        "identifier": [{"value": ident}],
        "subject": {"reference": pref},
    }
    typ = codeable(spm.reps(4))
    if typ:
        res["type"] = typ
    collected = dt(spm.get(17), b.tz)
    if collected:
        res["collection"] = {"collectedDateTime": collected}
    return b.shared(res, f"identifier={ident}")


def adt(b: _Builder, trigger: str) -> None:
    """ADT events: upsert Patient and Encounter; A40 links the merged patient."""
    pid = b.msg.first("PID")
    if pid is None:
        raise MappingError(f"ADT^{trigger} without a PID segment", "PID", "100")
    pres, pref = patient(b, pid)
    if trigger == "A40":
        mrg = b.msg.first("MRG")
        if mrg is None or not mrg.get(1):
            raise MappingError(
                "ADT^A40 needs MRG-1 (the prior patient identifier)", "MRG^1^1", "101"
            )
        auth = mrg.get(1, 4, 2) or mrg.get(1, 4, 1)
        system = b.system(auth) if auth else ""
        old: Resource = {
            "resourceType": "Patient",
            "identifier": [{"value": mrg.get(1), **({"system": system} if system else {})}],
            "active": False,
            "link": [{"other": {"reference": pref}, "type": "replaced-by"}],
        }
        oref = b.add(old, _ident_query(system, mrg.get(1)))
        pres["link"] = [{"other": {"reference": oref}, "type": "replaces"}]
        return
    pv1 = b.msg.first("PV1")
    if pv1 is not None and trigger not in ("A28", "A31"):
        encounter(b, pv1, pref, trigger)


def to_bundle(
    msg: Message,
    *,
    systems: Mapping[str, str] | None = None,
    tz: str = "UTC",
    source: str = "",
    received: str = "",
    vocabulary: Vocabulary | None = None,
) -> Resource:
    """Map a parsed message to a FHIR transaction Bundle (MessageHeader + Provenance).

    Missing optional header fields are left out, never written as empty values: no MSH-10
    means no Provenance entity, no MSH-7 means `received` (the inbox time) is recorded."""
    mtype = msg.message_type
    if mtype not in SUPPORTED:
        raise UnsupportedMessage(f"message type {mtype or '(empty)'} is not supported")
    b = _Builder(msg, systems or {}, tz, vocabulary)
    code, _, trigger = mtype.partition("^")
    if code == "ORU":
        oru(b)
    elif code == "ADT":
        adt(b, trigger)
    else:
        orders(b)
    targets = [{"reference": e["fullUrl"]} for e in b.entries]
    header: Resource = {
        "resourceType": "MessageHeader",
        "eventCoding": {
            "system": "http://terminology.hl7.org/CodeSystem/v2-0003",
            "code": trigger or code,
        },  # fmt: skip
        "source": {"name": msg.msh.get(3) or "unknown", "endpoint": source or "mllp:unknown"},
        "focus": targets,
    }
    b.add(header, None)
    recorded = dt(msg.msh.get(7), tz) or received or _now()
    if "T" not in recorded:  # an instant needs a time: a date-only MSH-7 is its midnight
        recorded = recorded + "-01-01"[len(recorded) - 4 :] + "T00:00:00Z"
    prov: Resource = {
        "resourceType": "Provenance",
        "target": targets or [{"display": "none"}],
        "recorded": recorded,
        "agent": [{"who": {"display": msg.msh.get(4) or msg.msh.get(3) or "unknown"}}],
    }
    if msg.control_id:
        prov["entity"] = [{"role": "source", "what": {"identifier": {"value": msg.control_id}}}]
    b.add(prov, None)
    return {"resourceType": "Bundle", "type": "transaction", "entry": b.entries}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def orders(b: _Builder) -> None:
    """ORM^O01 / OML^O21: ServiceRequest per ORC/OBR with status from ORC-1/ORC-5."""
    pid = b.msg.first("PID")
    if pid is None:
        raise MappingError("order message without a PID segment", "PID", "100")
    _, pref = patient(b, pid)
    orc: Segment | None = None
    order = "order"
    for seg in b.msg.segments:
        if seg.name == "ORC":
            orc = seg
        elif seg.name == "SPM" and orc is not None:
            specimen(b, seg, pref, order)
        elif seg.name == "OBR":
            st = _order_status(b, orc)
            ids = _order_key(b, seg, orc, pid)
            order = ids[2].value
            _service_request(b, ids, seg, pref, st or "active", [])


def _order_status(b: _Builder, orc: Segment | None) -> str | None:
    """ServiceRequest.status from ORC-5 (order status, 0038), else ORC-1 (order control)."""
    if orc is None:
        return None
    if orc.get(5):
        return b.v2("0038", orc.get(5), REQUEST_STATUS)
    return b.v2("0119", orc.get(1), REQUEST_STATUS)


def patient_key(msg: Message, systems: Mapping[str, str] | None = None) -> str:
    """The key one patient's messages are ordered under: their first usable identifier
    (PID-3, PID-2, PID-4, as the Patient is matched); "" when there is none."""
    pid = msg.first("PID")
    if pid is None:
        return ""
    idents = patient_identifiers(_Builder(msg, systems or {}, "UTC"), pid)
    return ident_query(idents[0]) if idents else ""
