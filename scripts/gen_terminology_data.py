#!/usr/bin/env python3
"""Generate fhir_server/terminology/data/ from the FHIR R4 definitions.

Why generated: valuesets.json, v2-tables.json and conceptmaps.json are ~15 MB, mostly
narrative HTML; the terminology service needs only the CodeSystems' concepts (code, display,
definition, designations, properties, nesting), the ValueSets' compose/expansion and the
ConceptMaps' groups. HL7 publishes FHIR under CC0, so the derived data is carried in the
repository, one resource per line (readable diffs when regenerated).

Usage: scripts/gen_terminology_data.py [DEFINITIONS_DIR]   (default ../shared/reference/fhir-r4)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SOURCE_NOTE = (
    "generated from FHIR R4 4.0.1 valuesets.json, v2-tables.json and conceptmaps.json "
    "(HL7, CC0) by scripts/gen_terminology_data.py; do not edit by hand"
)
OUT = Path(__file__).resolve().parent.parent / "fhir_server" / "terminology" / "data"
KEEP = {
    "CodeSystem": ("id", "url", "version", "name", "title", "status", "caseSensitive",
                   "valueSet", "hierarchyMeaning", "content", "supplements", "property",
                   "filter", "concept"),
    "ValueSet": ("id", "url", "version", "name", "title", "status", "compose", "expansion"),
    "ConceptMap": ("id", "url", "version", "name", "title", "status", "sourceUri",
                   "sourceCanonical", "targetUri", "targetCanonical", "group"),
}  # fmt: skip
CONCEPT_KEEP = ("code", "display", "definition", "designation", "property", "concept")


def _concept(c: dict[str, Any]) -> dict[str, Any]:
    out = {k: c[k] for k in CONCEPT_KEEP if k in c and k != "concept"}
    if "designation" in out:  # language and value are what $lookup answers
        out["designation"] = [
            {k: d[k] for k in ("language", "use", "value") if k in d} for d in out["designation"]
        ]
    if c.get("concept"):
        out["concept"] = [_concept(x) for x in c["concept"]]
    return out


def compact(resource: dict[str, Any]) -> dict[str, Any]:
    kind = resource["resourceType"]
    out: dict[str, Any] = {"resourceType": kind}
    for key in KEEP[kind]:
        if key in resource:
            out[key] = resource[key]
    if kind == "CodeSystem" and "concept" in out:
        out["concept"] = [_concept(c) for c in out["concept"]]
    if kind == "ValueSet" and "expansion" in out:
        expansion = out["expansion"]
        out["expansion"] = {k: expansion[k] for k in ("total", "contains") if k in expansion}
    return out


def generate(src: Path) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for name in ("valuesets.json", "v2-tables.json", "conceptmaps.json"):
        bundle = json.loads((src / name).read_text(encoding="utf-8"))
        for entry in bundle.get("entry", []):
            resource = entry["resource"]
            key = (resource["resourceType"], resource.get("url", ""))
            if resource["resourceType"] not in KEEP or key in seen:
                continue  # first definition of a URL wins (valuesets.json before v2-tables)
            seen.add(key)
            resources.append(compact(resource))
    return resources


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else Path("../shared/reference/fhir-r4")
    OUT.mkdir(parents=True, exist_ok=True)
    resources = generate(src)
    lines = [json.dumps({"_source": SOURCE_NOTE})]
    lines += [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in resources]
    target = OUT / "r4_terminology.ndjson"
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {target}: {len(resources)} resources")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
