#!/usr/bin/env python3
"""Generate the R4 validation tables in fhir_server/validation/data/ from the FHIR definitions.

Why generated: the official StructureDefinitions are ~37 MB of mostly narrative; the validator
needs per element only cardinality, types, binding and invariants (fhir_server.validation.
structure.reduce), and per bound ValueSet only its codes. HL7 publishes FHIR under CC0, so the
derived tables are carried in the repository.

Outputs:
- definitions.json: every R4 resource and data type reduced (plus the primitive types' regexes);
- valuesets.json: the codes of every ValueSet an R4 element binds (required, extensible,
  preferred), expanded from the specification's CodeSystems; a ValueSet that draws on a code
  system the specification does not carry in full (SNOMED CT, LOINC, UCUM, BCP-47, a
  `fragment` CodeSystem, ...) is listed under "_unexpanded" with the reason;
- uscore.json: the US Core 5.0.1 profiles, reduced the same way.

Usage: scripts/gen_validation_definitions.py [DEFINITIONS_DIR]
       (default ../shared/reference/fhir-r4)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fhir_server.validation.structure import reduce  # noqa: E402

SOURCE_NOTE = (
    "generated from FHIR R4 4.0.1 profiles-resources.json, profiles-types.json, valuesets.json "
    "and US Core 5.0.1 StructureDefinitions (HL7, CC0) by scripts/gen_validation_definitions.py; "
    "do not edit by hand"
)
OUT_DIR = Path(__file__).resolve().parent.parent / "fhir_server" / "validation" / "data"


class Unexpandable(Exception):
    pass


def _concepts(concepts: list[dict[str, Any]], parents: tuple[str, ...] = ()) -> list[tuple]:
    """(code, ancestors) for a hierarchical concept list."""
    out = []
    for c in concepts:
        out.append((c["code"], parents))
        out.extend(_concepts(c.get("concept", []), (*parents, c["code"])))
    return out


class Expander:
    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self.code_systems = {r["url"]: r for r in resources if r["resourceType"] == "CodeSystem"}
        self.value_sets = {r["url"]: r for r in resources if r["resourceType"] == "ValueSet"}
        self.done: dict[str, dict[str, set[str]]] = {}

    def system_codes(self, system: str) -> list[tuple]:
        cs = self.code_systems.get(system)
        if cs is None:
            raise Unexpandable(f"code system {system} is not in the specification")
        if cs.get("content") != "complete":
            raise Unexpandable(f"code system {system} is '{cs.get('content')}', not complete")
        return _concepts(cs.get("concept", []))

    def include(self, inc: dict[str, Any]) -> dict[str, set[str]]:
        result: dict[str, set[str]] = {}
        system = inc.get("system")
        if system:
            if inc.get("concept"):
                codes = {c["code"] for c in inc["concept"]}
            else:
                all_codes = self.system_codes(system)
                codes = {c for c, _ in all_codes}
                for f in inc.get("filter", []):
                    codes &= self.filtered(system, all_codes, f)
            result[system] = codes
        for vs in inc.get("valueSet", []):
            other = self.expand(vs.split("|")[0])
            if system:  # intersection with the system part
                result = {s: result.get(s, set()) & c for s, c in other.items() if s in result}
            else:
                for s, c in other.items():
                    result.setdefault(s, set()).update(c)
        return result

    def filtered(self, system: str, all_codes: list[tuple], f: dict[str, Any]) -> set[str]:
        op, prop, value = f.get("op"), f.get("property"), f.get("value", "")
        if prop == "concept" and op == "is-a":
            return {c for c, anc in all_codes if c == value or value in anc}
        if prop == "concept" and op == "descendent-of":
            return {c for c, anc in all_codes if value in anc}
        if prop == "concept" and op == "is-not-a":
            return {c for c, anc in all_codes if c != value and value not in anc}
        if prop == "code" and op == "regex":
            return {c for c, _ in all_codes if re.fullmatch(value, c)}
        raise Unexpandable(f"filter {prop} {op} {value} on {system}")

    def expand(self, url: str) -> dict[str, set[str]]:
        if url in self.done:
            return self.done[url]
        vs = self.value_sets.get(url)
        if vs is None:
            raise Unexpandable(f"value set {url} is not in the specification")
        compose = vs.get("compose") or {}
        if not compose.get("include"):
            raise Unexpandable(f"value set {url} has no compose")
        result: dict[str, set[str]] = {}
        for inc in compose["include"]:
            for s, c in self.include(inc).items():
                result.setdefault(s, set()).update(c)
        for exc in compose.get("exclude", []):
            for s, c in self.include(exc).items():
                result[s] = result.get(s, set()) - c
        self.done[url] = result
        return result


def _bundle(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        return data
    return [e["resource"] for e in data.get("entry", [])]


def primitives(types: list[dict[str, Any]]) -> dict[str, str]:
    """Each primitive type's regex (from its `value` element's regex extension)."""
    out: dict[str, str] = {}
    for sd in types:
        if sd.get("kind") != "primitive-type":
            continue
        for el in sd["snapshot"]["element"]:
            if el["path"].endswith(".value"):
                for t in el.get("type", []):
                    for ext in t.get("extension", []):
                        if ext["url"].endswith("/regex"):
                            out[sd["id"]] = ext["valueString"]
        out.setdefault(sd["id"], "")
    return out


def generate(src: Path) -> dict[str, Any]:
    sds = [
        r
        for name in ("profiles-types.json", "profiles-resources.json")
        for r in _bundle(src / name)
        if r["resourceType"] == "StructureDefinition"
    ]
    uscore_sds = [
        sd
        for sd in _bundle(src / "uscore-v5.0.1-structuredefinitions.json")
        if sd.get("resourceType") == "StructureDefinition"
    ]
    profile_types = {str(sd["url"]): str(sd["type"]) for sd in uscore_sds}
    definitions = {
        sd["id"]: reduce(sd, profile_types=profile_types)
        for sd in sds
        if sd["kind"] in ("resource", "complex-type")
        and sd.get("derivation") != "constraint"
        or sd["id"] in ("SimpleQuantity", "MoneyQuantity")
    }
    bound: set[str] = set()
    uscore = [
        reduce(sd, own_constraints_only=False, profile_types=profile_types) for sd in uscore_sds
    ]
    for d in [*definitions.values(), *uscore]:
        for node in d["nodes"].values():
            for spec in node.values():
                if "binding" in spec:
                    bound.add(spec["binding"][1])
    expander = Expander(_bundle(src / "valuesets.json"))
    valuesets: dict[str, Any] = {"_source": SOURCE_NOTE}
    unexpanded: dict[str, str] = {}
    for url in sorted(bound):
        try:
            codes = expander.expand(url)
        except Unexpandable as exc:
            unexpanded[url] = str(exc)
            continue
        valuesets[url] = {s: sorted(c) for s, c in sorted(codes.items())}
    valuesets["_unexpanded"] = unexpanded
    return {
        "definitions.json": {
            "_source": SOURCE_NOTE,
            "primitives": primitives(sds),
            "types": dict(sorted(definitions.items())),
        },
        "valuesets.json": valuesets,
        "uscore.json": {"_source": SOURCE_NOTE, "profiles": uscore},
    }


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else Path("../shared/reference/fhir-r4")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, data in generate(src).items():
        # one entry per line keeps diffs of a regenerated table readable
        head = {k: v for k, v in data.items() if k == "_source"}
        lines = [json.dumps(head)[:-1]]
        for k, v in data.items():
            if k == "_source":
                continue
            if isinstance(v, dict) and k in ("types",):
                lines.append(f",{json.dumps(k)}:{{")
                first = True
                for tk, tv in v.items():
                    sep = "" if first else ","
                    lines.append(f"{sep}{json.dumps(tk)}:{json.dumps(tv, separators=(',', ':'))}")
                    first = False
                lines.append("}")
            else:
                lines.append(f",{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}")
        (OUT_DIR / name).write_text("\n".join(lines) + "}\n", encoding="utf-8")
        print(f"wrote {OUT_DIR / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
