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

from collections.abc import Mapping
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
    """Collect a slice (`path:name`): its cardinality, types and type profiles, and per child
    (by relative path) the fixed/pattern value, cardinality, types and profiles, by which its
    members are recognised and then checked (re-slicing and slices in slices are left out)."""
    base, _, rest = el_id.partition(":")
    name, _, rel = rest.partition(".")
    if ":" in rel or "." in base.rpartition(".")[0] and ":" in base:
        return
    entry = slices.setdefault(base, {}).setdefault(name, {"name": name, "parts": {}})
    part: dict[str, Any] = {
        "min": int(el.get("min", 0)),
        "max": -1 if str(el.get("max", "*")) == "*" else int(str(el.get("max"))),
        "types": [type_name(t) for t in el.get("type", ())],
        "profiles": [str(p) for t in el.get("type", ()) for p in t.get("profile", ())],
    }
    fixed = _fixed(el)
    if fixed:
        part["fixed"] = fixed
    binding = el.get("binding") or {}
    if binding.get("strength") == "required" and binding.get("valueSet"):
        part["valueset"] = str(binding["valueSet"]).split("|")[0]
    if rel.endswith("[x]") and part["types"]:
        part["choice"] = True  # the slice may narrow a choice's types (value[x]: Quantity)
    entry["parts"][rel.replace("[x]", "") or "$this"] = part


def _discriminator(kind: str, path: str, s: dict[str, Any]) -> list[Any] | None:
    """What a member of slice `s` has at `path` for one discriminator, or None when this
    slice cannot be told by it (the slice is then not checked: see `unchecked`).

    value/pattern: the fixed or pattern value (an extension slice by `url`: its profile's
    URL; no value but a required binding: the value set); exists: present or absent (from
    the child's min/max); type: the types allowed there; profile: the profiles it conforms to.
    """
    parts = s["parts"]
    path = path.removeprefix("$this.") if path != "$this" else path
    if "resolve()" in path or "(" in path:
        return None  # a path through resolve(), ofType() or extension(): not evaluated
    part = parts.get(path) or {}
    root = parts.get("$this") or {}
    if kind in ("value", "pattern"):
        if part.get("fixed"):
            return list(part["fixed"])
        if path == "url" and root.get("types") == ["Extension"] and len(root["profiles"]) == 1:
            return ["fixed", root["profiles"][0]]
        if part.get("valueset"):
            return ["valueset", part["valueset"]]
        return None
    if kind == "exists":
        if part.get("min", 0) >= 1:
            return ["exists", True]
        if part.get("max") == 0:
            return ["exists", False]
        return None
    if kind == "type":
        return ["type", part["types"]] if part.get("types") else None
    if kind == "profile":
        return ["profile", part["profiles"]] if part.get("profiles") else None
    return None


def attach_slices(
    nodes: dict[str, dict[str, Any]],
    discriminators: dict[str, list[list[str]]],
    slices: dict[str, dict[str, dict[str, Any]]],
    closed: frozenset[str] = frozenset(),
) -> None:
    """A sliced element's slices, each with what its discriminators must match (`match`),
    its cardinality, and what a member must then be (`rules`: the slice's type profiles and
    its direct children's cardinality and fixed/pattern values). Slices no discriminator
    can tell are listed under `unchecked` with the reason ($validate warns). `closed`: the
    sliced elements whose slicing rules are closed (a repetition in no slice is an error,
    when every slice can be told)."""
    for base, by_name in slices.items():
        discs = discriminators.get(base)
        parent, _, name = base.rpartition(".")
        spec = nodes.get(parent, {}).get(name.removesuffix("[x]"))
        if not discs or spec is None:
            continue
        usable, unchecked = [], []
        for s in by_name.values():
            match = {p: _discriminator(t, p, s) for t, p in discs}
            if not all(match.values()):
                how = ", ".join(f"{t} {p}" for t, p in discs)
                unchecked.append([s["name"], f"cannot tell its members by {how}"])
                continue
            root = s["parts"].get("$this") or {}
            rules = {  # what the slice adds on its elements (a child's min: when its parent is)
                rel: {k: part[k] for k in ("min", "max", "fixed") if k in part}
                | ({"types": part["types"]} if part.get("choice") else {})
                for rel, part in s["parts"].items()
                if rel != "$this"
                and (
                    part.get("min", 0) > 0
                    or part.get("max") == 0
                    or "fixed" in part
                    or part.get("choice")
                )
            }
            slice_ = {"name": s["name"], "min": root.get("min", 0), "max": root.get("max", -1),
                      "match": match}  # fmt: skip
            if rules:
                slice_["rules"] = rules
            if root.get("profiles") and all(t != "profile" for t, _ in discs):
                slice_["profiles"] = root["profiles"]
            usable.append(slice_)
        if usable:
            spec["slices"] = usable
        if unchecked:
            spec["unchecked_slices"] = unchecked
        elif base in closed:
            spec["slices_closed"] = True


def collect_slices(
    elements: list[dict[str, Any]],
) -> tuple[dict[str, list[list[str]]], dict[str, dict[str, dict[str, Any]]], frozenset[str]]:
    """The slicing discriminators (by element id), the slices and the closed slicings of a
    list of elements."""
    discriminators: dict[str, list[list[str]]] = {}
    slices: dict[str, dict[str, dict[str, Any]]] = {}
    closed: set[str] = set()
    for el in elements:
        el_id = str(el.get("id", el.get("path", "")))
        if ":" in el_id:
            _slice_part(el, el_id, slices)
        elif el.get("slicing", {}).get("discriminator"):
            discriminators[el_id] = [
                [str(d.get("type")), str(d.get("path"))] for d in el["slicing"]["discriminator"]
            ]
            if el["slicing"].get("rules") == "closed":
                closed.add(el_id)
    return discriminators, slices, frozenset(closed)


BASE_DEFINITION = "http://hl7.org/fhir/StructureDefinition/"


def reduce(
    sd: dict[str, Any],
    own_constraints_only: bool = True,
    profile_types: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Reduce a StructureDefinition (with a snapshot) to its nodes and constraints;
    `profile_types` gives the type of each profile a reference may target ({url: type}).

    Slices (`path:slice` ids) are not nodes: their elements constrain a subset of the
    repetitions; they become the sliced element's `slices` (`attach_slices`), which the
    checker counts and checks by their discriminators (value, pattern, exists, type, profile).
    """
    elements = sd.get("snapshot", {}).get("element", [])
    root = str(sd.get("type") or (elements[0]["path"] if elements else ""))
    url = str(sd.get("url", ""))
    nodes: dict[str, dict[str, Any]] = {root: {}}
    constraints: dict[str, list[list[str]]] = {}
    for el in elements:
        el_id = str(el.get("id", el["path"]))
        if ":" in el_id:
            continue
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
        # Target types: a base resource's URL names its type, a known profile's URL its
        # profiled type (us-core-practitioner: Practitioner). One target of unknown type
        # lifts the restriction (dropping it would refuse what the definition allows).
        profiles = [p for t in el.get("type", ()) for p in t.get("targetProfile", ())]
        targets = sorted(
            {
                p.removeprefix(BASE_DEFINITION)
                if p.startswith(BASE_DEFINITION)
                else (profile_types or {}).get(p.split("|")[0], "Resource")
                for p in profiles
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
    attach_slices(nodes, *collect_slices(elements))
    return {
        "type": root,
        "kind": sd.get("kind", ""),
        "url": url,
        "base": str(sd.get("baseDefinition", "")).rsplit("/", 1)[-1],
        "abstract": bool(sd.get("abstract")),
        "nodes": nodes,
        "constraints": constraints,
    }
