"""v2 data types -> FHIR data types (the IG's datatype maps), kept apart from segments."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from mappers.hl7v2.parser import Segment

Reps = list[list[list[str]]]

_CODE_SYSTEMS = {
    "LN": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "UCUM": "http://unitsofmeasure.org",
    "I9CDX": "http://hl7.org/fhir/sid/icd-9-cm",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "CPT": "http://www.ama-assn.org/go/cpt",
}
_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2}(?:\.\d{1,4})?)?([+-]\d{4})?$")
UCUM = "http://unitsofmeasure.org"
# Units that are valid UCUM as written by most lab systems.
_UCUM_OK = re.compile(r"^[A-Za-z0-9%/.*\[\]{}()'^-]+$")


def coding_system(name: str) -> str:
    """Name of coding system (CWE-3) -> FHIR system URI (HL7 tables as v2-NNNN)."""
    if name in _CODE_SYSTEMS:
        return _CODE_SYSTEMS[name]
    m = re.fullmatch(r"HL7(\d{4})", name)
    if m:
        return f"http://terminology.hl7.org/CodeSystem/v2-{m.group(1)}"
    if re.fullmatch(r"\d+(\.\d+)+", name):
        return f"urn:oid:{name}"
    return ""


def identifier_system(authority: str, table: Mapping[str, str]) -> str:
    """Assigning authority -> identifier system via the configured table; OIDs as urn:oid."""
    if authority in table:
        return table[authority]
    if re.fullmatch(r"\d+(\.\d+)+", authority):
        return f"urn:oid:{authority}"
    return f"urn:hl7v2:authority:{authority}" if authority else ""


def address(xad: list[list[str]]) -> dict[str, Any]:
    """XAD (street^other^city^state^zip^country) -> Address; {} when empty."""
    c = [x[0] for x in xad] + [""] * 6
    parts = (("city", c[2]), ("state", c[3]), ("postalCode", c[4]), ("country", c[5]))
    addr: dict[str, Any] = {k: v for k, v in parts if v}
    lines = [x for x in c[:2] if x]
    if lines:
        addr["line"] = lines
    return addr


def codeable(reps: Reps) -> dict[str, Any] | None:
    """CE/CWE/CNE (first repetition) -> CodeableConcept with primary and alternate codings."""
    if not reps:
        return None
    c = [x[0] for x in reps[0]] + [""] * 6
    codings = []
    for code, display, system in ((c[0], c[1], c[2]), (c[3], c[4], c[5])):
        if not code:
            continue
        coding: dict[str, Any] = {"code": code}
        uri = coding_system(system)
        if uri:
            coding["system"] = uri
        if display:
            coding["display"] = display
        codings.append(coding)
    out: dict[str, Any] = {}
    if codings:
        out["coding"] = codings
    text = c[8] if len(c) > 8 and c[8] else c[1]
    if text:
        out["text"] = text
    return out or None


def dt(value: str, tz: str = "UTC") -> str:
    """v2 DTM/TS -> FHIR dateTime at the precision given; no offset -> the configured zone."""
    value = value.strip()
    m = _TS.match(value)
    if not m:
        return ""
    y, mo, d, h, mi, s, off = m.groups()
    if not mo:
        return y
    if not d:
        return f"{y}-{mo}"
    if not h:
        return f"{y}-{mo}-{d}"
    sec = s or "00"
    if off:
        offset = f"{off[:3]}:{off[3:]}"
    else:
        naive = datetime(int(y), int(mo), int(d), int(h), int(mi or 0), int(float(sec)))
        o = naive.replace(tzinfo=ZoneInfo(tz)).strftime("%z")
        offset = "Z" if o in ("+0000", "") else f"{o[:3]}:{o[3:]}"
    if len(sec) == 2 or "." not in sec:
        sec = sec[:2]
    return f"{y}-{mo}-{d}T{h}:{mi or '00'}:{sec}{offset}"


def _number(text: str) -> Decimal | int | None:
    """An NM value: an int, or a Decimal keeping the sender's precision (`250.50` stays
    `250.50`: FHIR decimals are not floats); anything else (empty, `inf`, text) is None."""
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def quantity(num: str, unit_reps: Reps) -> dict[str, Any] | None:
    n = _number(num)
    if n is None:
        return None
    q: dict[str, Any] = {"value": n}
    if unit_reps:
        c = [x[0] for x in unit_reps[0]] + [""] * 3
        code, text, system = c[0], c[1], c[2]
        if code:
            q["unit"] = text or code
            if system in ("UCUM", "") and _UCUM_OK.match(code):
                q["system"] = UCUM
                q["code"] = code
    return q


def observation_value(obx: Segment, tz: str) -> dict[str, Any]:
    """OBX-2/OBX-5 -> value[x] (or components when OBX-5 repeats)."""
    kind = obx.get(2).upper()
    reps = obx.reps(5)
    if not reps:
        return {}
    values = [_one_value(kind, obx, r, tz) for r in reps]
    values = [v for v in values if v]
    if not values:
        return {}
    if len(values) == 1:
        return values[0]
    return {"component": [{"code": {"text": f"{obx.get(3, 2) or obx.get(3)} [{i + 1}]"}, **v}
                          for i, v in enumerate(values)]}  # fmt: skip


def _one_value(kind: str, obx: Segment, rep: list[list[str]], tz: str) -> dict[str, Any]:
    comps = [c[0] for c in rep]
    d = obx.delims
    raw = d.component.join(comps)
    if kind == "NM":
        q = quantity(comps[0], obx.reps(6))
        return {"valueQuantity": q} if q else {"valueString": raw}
    if kind in ("ST", "TX", "FT"):
        return {"valueString": raw}
    if kind in ("CE", "CWE", "CNE", "CF"):
        cc = codeable([rep])
        return {"valueCodeableConcept": cc} if cc else {}
    if kind == "SN":
        return _structured_numeric(comps + [""] * 4, obx)
    if kind in ("DT", "DTM", "TS"):
        v = dt(comps[0], tz)
        return {"valueDateTime": v} if v else {"valueString": raw}
    if kind == "TM":
        m = re.match(r"^(\d{2})(\d{2})?(\d{2})?", comps[0])
        if m:
            return {"valueTime": f"{m.group(1)}:{m.group(2) or '00'}:{m.group(3) or '00'}"}
        return {"valueString": raw}
    if kind == "NR":
        rng = {k: {"value": n} for k, n in (("low", _number(comps[0])),
               ("high", _number(comps[1] if len(comps) > 1 else ""))) if n is not None}  # fmt: skip
        return {"valueRange": rng} if rng else {}
    return {"valueString": raw} if raw else {}


def _structured_numeric(c: list[str], obx: Segment) -> dict[str, Any]:
    """SN: comparator + num, range (num1-num2), ratio (num1:num2 or num1/num2)."""
    comp, n1, sep, n2 = c[0], c[1], c[2], c[3]
    if sep in ("-",) and n2:
        low, high = quantity(n1, obx.reps(6)), quantity(n2, obx.reps(6))
        rng = {k: v for k, v in (("low", low), ("high", high)) if v}
        return {"valueRange": rng} if rng else {}
    if sep in (":", "/") and n2:
        num, den = _number(n1), _number(n2)
        if num is not None and den is not None:
            return {"valueRatio": {"numerator": {"value": num}, "denominator": {"value": den}}}
    q = quantity(n1, obx.reps(6))
    if q is None:
        return {}
    if comp in ("<", ">", "<=", ">="):
        q["comparator"] = comp
    return {"valueQuantity": q}
