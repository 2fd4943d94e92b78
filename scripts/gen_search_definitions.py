#!/usr/bin/env python3
"""Generate the compact search tables in fhir_server/search/data/ from the FHIR R4 definitions.

Why generated: the official Bundle of 1,378 SearchParameter resources is ~10 MB of mostly
narrative; the server needs only code, type, the per-type FHIRPath branch and targets. HL7
publishes FHIR under CC0, so the derived tables are carried in the repository.

Usage: scripts/gen_search_definitions.py [DEFINITIONS_DIR]   (default ../shared/reference/fhir-r4)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SOURCE_NOTE = (
    "generated from FHIR R4 4.0.1 search-parameters.json and compartmentdefinition-patient.json "
    "(HL7, CC0) by scripts/gen_search_definitions.py; do not edit by hand"
)
COMMON_BASES = ("Resource", "DomainResource")
# the common parameters the server offers (fhir_server.search.registry.COMMON_PARAMS)
COMMON_PARAMS = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")
# Concrete R4 resource types that are neither the base nor the target of any standard search
# parameter nor listed in the Patient compartment definition, so they cannot be derived from
# these two files. Checked against the R4 resource list (http://hl7.org/fhir/R4/resourcelist.html).
TYPES_WITHOUT_DEFINITIONS = ("Binary", "Bundle", "Parameters")

# R4 4.0.1 errata: DocumentReference-relationship names its components' expressions the wrong way
# round (`relatesto` is the reference at `target`, `relation` the token at `code`).
COMPONENT_FIXES = {("DocumentReference-relationship", "relatesto"): "target",
                   ("DocumentReference-relationship", "relation"): "code"}  # fmt: skip

OUT_DIR = Path(__file__).resolve().parent.parent / "fhir_server" / "search" / "data"


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath union at top-level ' | ' (never inside parentheses or quotes)."""
    parts: list[str] = []
    depth = 0
    quote = False
    start = 0
    i = 0
    while i < len(expression):
        ch = expression[i]
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        elif not quote and depth == 0 and expression.startswith(" | ", i):
            parts.append(expression[start:i].strip())
            start = i + 3
            i += 3
            continue
        i += 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def branches_for(expression: str, base: str) -> str:
    """Keep only the union branches that apply to `base` (start with 'Base.' or '(Base.')."""
    keep = [
        b
        for b in split_union(expression)
        if b == base or b.startswith(base + ".") or b.startswith("(" + base + ".")
    ]
    return " | ".join(keep)


def generate(src: Path) -> dict[str, Any]:
    """Build the tables; returned (rather than written) so tests could reuse it."""
    bundle = json.loads((src / "search-parameters.json").read_text(encoding="utf-8"))
    by_url = {e["resource"]["url"]: e["resource"] for e in bundle["entry"]}
    compartment = json.loads(
        (src / "compartmentdefinition-patient.json").read_text(encoding="utf-8")
    )
    params: dict[str, dict[str, dict[str, Any]]] = {}
    types: set[str] = set(TYPES_WITHOUT_DEFINITIONS)
    warnings: list[str] = []
    for entry in bundle["entry"]:
        sp = entry["resource"]
        expression = sp.get("expression", "")
        targets = sorted(sp.get("target", []))
        types.update(t for t in targets if t not in COMMON_BASES)
        for base in sp["base"]:
            key = "Resource" if base in COMMON_BASES else base
            if key != "Resource":
                types.add(base)
            expr = expression if key == "Resource" else branches_for(expression, base)
            if expression and not expr and len(sp["base"]) == 1:
                # e.g. InsurancePlan-name is 'name | alias': paths relative to the resource
                expr = expression
            if expression and not expr:
                warnings.append(f"{sp['id']}: no branch of the expression applies to {base}")
            item: dict[str, Any] = {"type": sp["type"], "expression": expr}
            if targets:
                item["target"] = targets
            if sp.get("component"):
                # [code, type, expression relative to each element the composite selects]
                item["components"] = [
                    [by_url[c["definition"]]["code"], by_url[c["definition"]]["type"],
                     COMPONENT_FIXES.get((sp["id"], by_url[c["definition"]]["code"]),
                                         c["expression"])]
                    for c in sp["component"]
                ]  # fmt: skip
            params.setdefault(key, {})[sp["code"]] = item
    patient: dict[str, list[str]] = {}
    for res in compartment.get("resource", []):
        types.add(res["code"])
        if res.get("param"):
            patient[res["code"]] = list(res["param"])
    ordered: dict[str, Any] = {"_source": SOURCE_NOTE}
    ordered.update({k: dict(sorted(v.items())) for k, v in sorted(params.items())})
    for w in warnings:
        print("warning:", w, file=sys.stderr)
    # the official SearchParameters of what the server offers (every type's own parameters,
    # the common ones of COMMON_PARAMS), unchanged: the CapabilityStatement cites them by URL
    offered = [
        sp
        for sp in (e["resource"] for e in bundle["entry"])
        if sp["type"] != "special"
        and (any(b not in COMMON_BASES for b in sp["base"]) or sp["code"] in COMMON_PARAMS)
    ]
    return {
        "search_parameter_definitions.ndjson": offered,
        "search_parameters.json": ordered,
        "resource_types.json": sorted(types),
        "patient_compartment.json": {"_source": SOURCE_NOTE, **dict(sorted(patient.items()))},
    }


def main(argv: list[str]) -> int:
    """Write the tables into fhir_server/search/data/."""
    src = Path(argv[1]) if len(argv) > 1 else Path("../shared/reference/fhir-r4")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, data in generate(src).items():
        text = json.dumps(data, indent=None, separators=(",", ":"), ensure_ascii=False)
        if name.endswith(".ndjson"):  # line 1: where the rest came from
            lines = [json.dumps({"_source": SOURCE_NOTE})]
            lines += [json.dumps(d, ensure_ascii=False, separators=(",", ":")) for d in data]
            text = "\n".join(lines)
        elif name == "search_parameters.json":
            # one resource type per line keeps diffs of a regenerated table readable
            lines = [json.dumps({"_source": SOURCE_NOTE})[:-1]]
            for k, v in data.items():
                if k != "_source":
                    lines.append(f",{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}")
            text = "\n".join(lines) + "}"
        (OUT_DIR / name).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {OUT_DIR / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
