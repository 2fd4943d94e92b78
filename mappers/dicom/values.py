"""DICOM value representations -> FHIR primitives: DA/TM/DT, PN, sex."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_TM = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")
_OFFSET = re.compile(r"^([+-])(\d{2})(\d{2})$")
EN_REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"
SEX = {"M": "male", "F": "female", "O": "other"}


def date(value: str) -> str | None:
    """DA (YYYYMMDD; the old YYYY.MM.DD too) -> FHIR date, None when not a real date."""
    match = _DA.match(value.replace(".", "").replace("-", "").strip())
    if not match:
        return None
    try:
        datetime(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None
    return f"{match[1]}-{match[2]}-{match[3]}"


def date_time(da: str, tm: str, offset: str = "", zone: str = "UTC") -> str | None:
    """DA + TM (+ TimezoneOffsetFromUTC) -> FHIR dateTime.

    FHIR requires a zone whenever a time is given: TimezoneOffsetFromUTC when present,
    else the configured zone for local times (the DICOM default is "local time").
    """
    day = date(da)
    if day is None:
        return None
    match = _TM.match(tm.replace(":", "").strip())
    if not match:
        return day
    hour, minute, second = int(match[1]), int(match[2] or 0), int(match[3] or 0)
    if hour > 23 or minute > 59 or second > 60:
        return day
    second = min(second, 59)
    fraction = f".{match[4]}" if match[4] else ""
    stamp = f"{day}T{hour:02d}:{minute:02d}:{second:02d}{fraction}"
    off = _OFFSET.match(offset.strip())
    if off:
        return f"{stamp}{off[1]}{off[2]}:{off[3]}"
    local = datetime(int(day[:4]), int(day[5:7]), int(day[8:10]), hour, minute, second)
    delta = local.replace(tzinfo=ZoneInfo(zone)).utcoffset()
    minutes = int(delta.total_seconds() // 60) if delta is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{stamp}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def human_name(pn: str) -> dict[str, Any] | None:
    """One PN component group `Family^Given^Middle^Prefix^Suffix` -> HumanName."""
    parts = [p.strip() for p in pn.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    name: dict[str, Any] = {}
    if family:
        name["family"] = family
    givens = [g for g in (given, middle) if g]
    if givens:
        name["given"] = givens
    if prefix:
        name["prefix"] = [prefix]
    if suffix:
        name["suffix"] = [suffix]
    return name or None


def display_name(pn: str) -> str:
    """A PN for display: 'Given Middle Family' style text, used for Reference.display."""
    name = human_name(pn)
    if not name:
        return ""
    words = [*name.get("prefix", []), *name.get("given", []), name.get("family", "")]
    words += name.get("suffix", [])
    return " ".join(w for w in words if w)


def names(groups: dict[str, str]) -> list[dict[str, Any]]:
    """All component groups: alphabetic first, ideographic and phonetic marked as such."""
    out = []
    for group, code in (("Alphabetic", None), ("Ideographic", "IDE"), ("Phonetic", "SYL")):
        name = human_name(groups.get(group, ""))
        if name is None:
            continue
        if code:
            name["extension"] = [{"url": EN_REPRESENTATION, "valueCode": code}]
        else:
            name["use"] = "official"
        out.append(name)
    return out


def gender(sex: str) -> str:
    """PatientSex M/F/O; anything else (empty, U, garbage) is 'unknown'."""
    return SEX.get(sex.strip().upper(), "unknown")
