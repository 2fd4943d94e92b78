"""The CDS Hooks service's view of the operator's settings (built by `interop.runtime`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import outbound

# Critical (panic) limits of common tests, by LOINC code, in the unit the value must carry to be
# compared (a value in another unit is never compared: no card is better than a wrong one).
DEFAULT_CRITICAL_RANGES: dict[str, dict[str, Any]] = {
    "2823-3": {"low": 2.8, "high": 6.2, "unit": "mmol/L", "name": "Potassium"},
    "6298-4": {"low": 2.8, "high": 6.2, "unit": "mmol/L", "name": "Potassium (blood)"},
    "2951-2": {"low": 120, "high": 160, "unit": "mmol/L", "name": "Sodium"},
    "2345-7": {"low": 40, "high": 500, "unit": "mg/dL", "name": "Glucose"},
    "718-7": {"low": 6, "high": 20, "unit": "g/dL", "name": "Hemoglobin"},
    "777-3": {"low": 20, "high": 1000, "unit": "10*3/uL", "name": "Platelets"},
    "17861-6": {"low": 6, "high": 13, "unit": "mg/dL", "name": "Calcium"},
    "6598-7": {"high": 0.1, "unit": "ug/L", "name": "Troponin T"},
}


@dataclass(frozen=True, slots=True)
class CriticalRange:
    low: float | None
    high: float | None
    unit: str


@dataclass(frozen=True)
class CdsConfig:
    """`public_root`: this server's public origin (the FHIR base without /fhir), which the
    service URLs in discovery and the JWT `aud` are built from."""

    public_root: str
    fhir_base: str
    auth_enabled: bool = True
    lab_days: int = 7
    imaging_window_days: int = 30
    jwt_max_seconds: int = 300
    critical_ranges: dict[str, CriticalRange] = field(default_factory=dict)
    jwks_fetch: outbound.Policy | None = None
    app_path: str = "/apps/imaging/launch"

    def service_url(self, service_id: str) -> str:
        return f"{self.public_root}/cds-services/{service_id}"


def parse_ranges(text: str) -> dict[str, CriticalRange]:
    """INTEROP_CDS_CRITICAL_RANGES (JSON) or the built-in table; a malformed entry fails at
    start with what to fix, never silently."""
    raw: Any = json.loads(text) if text.strip() else DEFAULT_CRITICAL_RANGES
    if not isinstance(raw, dict):
        raise ValueError("INTEROP_CDS_CRITICAL_RANGES must be a JSON object {code: {...}}")
    out = {}
    for code, spec in raw.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("unit"), str):
            raise ValueError(f"INTEROP_CDS_CRITICAL_RANGES[{code!r}] needs a 'unit' string")
        low, high = spec.get("low"), spec.get("high")
        for bound in (low, high):
            if bound is not None and not isinstance(bound, int | float):
                raise ValueError(f"INTEROP_CDS_CRITICAL_RANGES[{code!r}]: low/high are numbers")
        if low is None and high is None:
            raise ValueError(f"INTEROP_CDS_CRITICAL_RANGES[{code!r}] needs low or high")
        out[str(code)] = CriticalRange(low, high, spec["unit"])
    return out


def public_root(fhir_base: str) -> str:
    return fhir_base[: -len("/fhir")] if fhir_base.endswith("/fhir") else fhir_base.rstrip("/")
