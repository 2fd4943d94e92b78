"""A StructureDefinition's snapshot reduced to what validation reads: per element node its
children (cardinality, types, binding, fixed/pattern value) and its invariants.

Why one reduction for both: the generator (`scripts/gen_validation_definitions.py`) applies it
to the R4 base definitions at build time, and the profile registry applies it at run time to
US Core and to StructureDefinitions an operator stores, so a profile is checked by the same
compiled checkers as the base types.

Shape of a reduced definition (plain JSON, so it can be committed as package data):
    {"type": "Observation", "kind": "resource", "url": ..., "nodes": {
        "Observation": {"status": {"min": 1, "max": 1, "types": ["code"],
                                   "binding": ["required", "http://.../observation-status"]},
                        "value": {"max": 1, "choice": true, "types": ["Quantity", ...]},
                        "component": {"max": -1, "types": ["BackboneElement"],
                                      "node": "Observation.component"}, ...},
        "Observation.component": {...}},
     "constraints": {"Observation": [["obs-6", "error", "<FHIRPath>", "<human>"], ...]}}
`max` -1 is `*`; `min` and `max` are left out when 0 and 1; `summary` marks isSummary.
"""

from __future__ import annotations

from typing import Any

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
SYSTEM_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}
# data types constrained by a profile of the base specification: the type name used for them
TYPE_PROFILES = {
    "http://hl7.org/fhir/StructureDefinition/SimpleQuantity": "SimpleQuantity",
    "http://hl7.org/fhir/StructureDefinition/MoneyQuantity": "MoneyQuantity",
}
# the universal invariants checked natively (ele-1: structure, ext-1: by the Extension checker)
NATIVE = frozenset({"ele-1"})


def type_name(item: dict[str, Any]) -> str:
    code = str(item.get("code", ""))
    for ext in item.get("extension", ()):
        if ext.get("url") == FHIR_TYPE_EXT and ext.get("valueUrl"):
            return str(ext["valueUrl"])
    if code in SYSTEM_TYPES:
        return SYSTEM_TYPES[code]
    for profile in item.get("profile", ()):
        if profile in TYPE_PROFILES:
            return TYPE_PROFILES[profile]
    return code


def _fixed(el: dict[str, Any]) -> list[Any] | None:
    for key, value in el.items():
        if key.startswith("fixed"):
            return ["fixed", value]
        if key.startswith("pattern"):
            return ["pattern", value]
    return None


def _slice_part(el: dict[str, Any], el_id: str, slices: dict[str, dict[str, Any]]) -> None:
    """Collect a slice (`path:name`) and the fixed/pattern values of its children, by which
    its members are recognised (re-slicing and slices inside slices are left out)."""
    base, _, rest = el_id.partition(":")
    name, _, rel = rest.partition(".")
    if ":" in rel or "." in base.rpartition(".")[0] and ":" in base:
        return
    entry = slices.setdefault(base, {}).setdefault(name, {"name": name, "expect": {}})
    fixed = _fixed(el)
    if not rel:
        entry["min"] = int(el.get("min", 0))
        mx = str(el.get("max", "*"))
        entry["max"] = -1 if mx == "*" else int(mx)
        if fixed:
            entry["expect"]["$this"] = fixed
    elif fixed:
        entry["expect"][rel.replace("[x]", "")] = fixed


def _attach_slices(
    nodes: dict[str, dict[str, Any]],
    discriminators: dict[str, list[list[str]]],
    slices: dict[str, dict[str, dict[str, Any]]],
) -> None:
    """A sliced element's slices, each with the value its discriminators must match; only
    `value`/`pattern` discriminators whose every path has a fixed or pattern value."""
    for base, by_name in slices.items():
        discs = discriminators.get(base)
        parent, _, name = base.rpartition(".")
        spec = nodes.get(parent, {}).get(name.removesuffix("[x]"))
        if not discs or spec is None:
            continue
        usable = []
        for s in by_name.values():
            expect = {p: s["expect"].get(p) for _, p in discs}
            if all(t in ("value", "pattern") for t, _ in discs) and all(expect.values()):
                usable.append({"name": s["name"], "min": s.get("min", 0),
                               "max": s.get("max", -1), "match": expect})  # fmt: skip
        if usable:
            spec["slices"] = usable


def reduce(sd: dict[str, Any], own_constraints_only: bool = True) -> dict[str, Any]:
    """Reduce a StructureDefinition (with a snapshot) to its nodes and constraints.

    Slices (`path:slice` ids) are left out: their elements constrain a subset of the
    repetitions, which the per-element checkers cannot express (see profiles.py for what a
    profile's slices still get).
    """
    elements = sd.get("snapshot", {}).get("element", [])
    root = str(sd.get("type") or (elements[0]["path"] if elements else ""))
    url = str(sd.get("url", ""))
    nodes: dict[str, dict[str, Any]] = {root: {}}
    constraints: dict[str, list[list[str]]] = {}
    discriminators: dict[str, list[list[str]]] = {}
    slices: dict[str, dict[str, dict[str, Any]]] = {}
    for el in elements:
        el_id = str(el.get("id", el["path"]))
        if ":" in el_id:
            _slice_part(el, el_id, slices)
            continue
        if el.get("slicing", {}).get("discriminator"):
            discriminators[el_id] = [
                [str(d.get("type")), str(d.get("path"))] for d in el["slicing"]["discriminator"]
            ]
        path = str(el["path"])
        keep = [
            [c["key"], c.get("severity", "error"), c.get("expression", ""), c.get("human", "")]
            for c in el.get("constraint", ())
            if c.get("key") not in NATIVE
            and c.get("expression")
            and (path == root or not own_constraints_only or c.get("source") in (None, url))
        ]
        if keep:
            constraints[path] = keep
        if path == root:
            continue
        parent, _, name = path.rpartition(".")
        spec: dict[str, Any] = {}
        if el.get("min", 0):
            spec["min"] = int(el["min"])
        if el.get("isSummary"):
            spec["summary"] = True  # for `_summary=true` (fhir_server.api.bundling)
        mx = str(el.get("max", "1"))
        if mx != "1":
            spec["max"] = -1 if mx == "*" else int(mx)
        if name.endswith("[x]"):
            name = name[:-3]
            spec["choice"] = True
        types = [type_name(t) for t in el.get("type", ())]
        if el.get("contentReference"):
            spec["node"] = str(el["contentReference"]).split("#", 1)[-1]
            types = ["BackboneElement"]
        elif types in (["BackboneElement"], ["Element"]):
            spec["node"] = path
            nodes.setdefault(path, {})
        spec["types"] = types
        targets = sorted(
            {
                p.rsplit("/", 1)[-1]
                for t in el.get("type", ())
                for p in t.get("targetProfile", ())
                if p.startswith("http://hl7.org/fhir/StructureDefinition/")
            }
        )
        if targets and "Resource" not in targets:
            spec["targets"] = targets
        binding = el.get("binding") or {}
        if binding.get("valueSet") and binding.get("strength") in (
            "required",
            "extensible",
            "preferred",
        ):
            spec["binding"] = [binding["strength"], str(binding["valueSet"]).split("|")[0]]
        for key, value in el.items():
            if key.startswith("fixed") or key.startswith("pattern"):
                spec["fixed" if key.startswith("fixed") else "pattern"] = value
        nodes.setdefault(parent, {})[name] = spec
    _attach_slices(nodes, discriminators, slices)
    return {
        "type": root,
        "kind": sd.get("kind", ""),
        "url": url,
        "base": str(sd.get("baseDefinition", "")).rsplit("/", 1)[-1],
        "abstract": bool(sd.get("abstract")),
        "nodes": nodes,
        "constraints": constraints,
    }
