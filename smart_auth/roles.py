"""The role table: the most a `user/` scope can grant to a user of each role.

An operator replaces it with a JSON file (`INTEROP_AUTH_ROLES_FILE`) mapping a role to a list of
v2 resource permissions such as `"*.rs"` or `"Observation.cruds"`.
"""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_ROLES: dict[str, list[str]] = {
    "admin": ["*.cruds"],
    "operator": ["*.rs"],  # runs the interfaces: reads everything, replays messages
    "physician": ["*.cruds"],
    "radiologist": ["*.rs", "ImagingStudy.cruds", "DiagnosticReport.cruds", "Observation.cruds"],
    "lab": ["*.rs", "Observation.cruds", "DiagnosticReport.cruds", "Specimen.cruds"],
    "nurse": ["*.rs", "Observation.crus", "Encounter.rus"],
    "patient": ["*.rs"],
    "external": ["*.rs"],
}

RoleTable = dict[str, dict[str, frozenset[str]]]


def load_roles(path: str = "") -> RoleTable:
    """The role table as {role: {type or '*': permissions}}; a bad file stops the start."""
    raw = json.loads(Path(path).read_text()) if path else DEFAULT_ROLES
    table: RoleTable = {}
    for role, grants in raw.items():
        caps: dict[str, frozenset[str]] = {}
        for grant in grants:
            res_type, _, perms = grant.partition(".")
            if not res_type or not perms or set(perms) - set("cruds"):
                raise ValueError(f"role '{role}': '{grant}' is not like 'Observation.rs'")
            caps[res_type] = caps.get(res_type, frozenset()) | frozenset(perms)
        table[role] = caps
    return table


def role_cap(table: RoleTable, role: str | None, res_type: str) -> frozenset[str]:
    caps = table.get(role or "", {})
    return caps.get("*", frozenset()) | caps.get(res_type, frozenset())
