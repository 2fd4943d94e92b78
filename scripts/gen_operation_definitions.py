#!/usr/bin/env python3
"""Generate fhir_server/api/data/operation_definitions.ndjson: the official R4 (4.0.1)
OperationDefinitions of the operations this server implements, as HL7 publishes them in
profiles-resources.json (HL7, CC0), unchanged, one per line.

Why generated: the CapabilityStatement names each operation's OperationDefinition by its
canonical URL, and a client resolves it on this server (`GET OperationDefinition/{id}`,
`GET OperationDefinition?url=...`: fhir_server.api.definitions). The server's own operations
(AI review, bulk import, ...) carry their OperationDefinitions in code, next to where they
are registered.

Usage: scripts/gen_operation_definitions.py [DEFINITIONS_DIR]
       (default ../shared/reference/fhir-r4)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SOURCE_NOTE = (
    "generated from FHIR R4 4.0.1 profiles-resources.json (HL7, CC0) by "
    "scripts/gen_operation_definitions.py; do not edit by hand"
)
OUT = Path(__file__).resolve().parent.parent / "fhir_server" / "api" / "data"
# the R4 operations the server implements (fhir_server.api.validate, .compartment, .terminology)
IMPLEMENTED = (
    "Resource-validate",
    "Patient-everything",
    "ValueSet-expand",
    "ValueSet-validate-code",
    "CodeSystem-lookup",
    "CodeSystem-subsumes",
    "ConceptMap-translate",
)


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else Path("../shared/reference/fhir-r4")
    bundle = json.loads((src / "profiles-resources.json").read_text(encoding="utf-8"))
    found = {
        e["resource"]["id"]: e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "OperationDefinition"
    }
    missing = [i for i in IMPLEMENTED if i not in found]
    if missing:
        raise SystemExit(f"not in {src}/profiles-resources.json: {missing}")
    OUT.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"_source": SOURCE_NOTE})]  # line 1: where the rest came from
    lines += [json.dumps(found[i], ensure_ascii=False, separators=(",", ":")) for i in IMPLEMENTED]
    (OUT / "operation_definitions.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines) - 1} OperationDefinitions to {OUT / 'operation_definitions.ndjson'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
