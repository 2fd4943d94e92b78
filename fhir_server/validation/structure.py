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

import re
from collections.abc import Mapping
from functools import lru_cache
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
BASE_DEFINITION = "http://hl7.org/fhir/StructureDefinition/"
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


_STEP = re.compile(
    r"\$this|resolve\(\)|ofType\(([A-Za-z]+)\)|extension\('([^']*)'\)|extension\(\"([^\"]*)\"\)"
    r"|[A-Za-z][A-Za-z0-9]*(?:\[x\])?"
)


@lru_cache(maxsize=1024)
def parse_path(path: str) -> tuple[tuple[str, str], ...] | None:
    """A discriminator path as steps: ("name", element), ("resolve", ""), ("ofType", type),
    ("extension", url); None when it uses anything else (such a slice is not checked).
    Cached: the checker parses each path of a profile once per process, not per resource."""
    steps: list[tuple[str, str]] = []
    pos = 0
    while pos < len(path):
        m = _STEP.match(path, pos)
        if m is None:
            return None
        token = m.group(0)
        if token == "resolve()":
            steps.append(("resolve", ""))
        elif m.group(1):
            steps.append(("ofType", m.group(1)))
        elif m.group(2) is not None or m.group(3) is not None:
            steps.append(("extension", m.group(2) or m.group(3) or ""))
        elif token != "$this":
            steps.append(("name", token.removesuffix("[x]")))
        pos = m.end()
        if pos < len(path):
            if path[pos] != ".":
                return None
            pos += 1
    return tuple(steps)


def _slice_part(el: dict[str, Any], el_id: str, slices: dict[str, dict[str, Any]]) -> None:
    """Collect one element of a slice (its id has a `:name` step): the slice is the id up to
    its last `:name` step, the element is relative to it. The slice belongs to the slicing of
    the element without that step (`a.b:s.c` -> `a.b`), a re-slice `b/c` to the slicing
    declared on the slice `b` (`a:b/c` -> `a:b`), so slices inside slices are collected too.
    Per element: cardinality, types, type and target profiles, fixed/pattern value, a
    required binding."""
    segs = el_id.split(".")
    i = max(k for k, seg in enumerate(segs) if ":" in seg)
    elem, _, name = segs[i].partition(":")
    outer = name.rpartition("/")[0]
    sliced_id = ".".join([*segs[:i], f"{elem}:{outer}" if outer else elem])
    rel = ".".join(segs[i + 1 :])
    entry = slices.setdefault(sliced_id, {}).setdefault(
        name, {"name": name, "id": ".".join(segs[: i + 1]), "parts": {}}
    )
    types = el.get("type", ())
    part: dict[str, Any] = {
        "min": int(el.get("min", 0)),
        "max": -1 if str(el.get("max", "*")) == "*" else int(str(el.get("max"))),
        "types": [type_name(t) for t in types],
        "profiles": [str(p) for t in types for p in t.get("profile", ())],
    }
    targets = [str(p).split("|")[0] for t in types for p in t.get("targetProfile", ())]
    if targets:
        part["targets"] = targets
    fixed = _fixed(el)
    if fixed:
        part["fixed"] = fixed
    binding = el.get("binding") or {}
    if binding.get("strength") == "required" and binding.get("valueSet"):
        part["valueset"] = str(binding["valueSet"]).split("|")[0]
    if rel.endswith("[x]") and part["types"]:
        part["choice"] = True  # the slice may narrow a choice's types (value[x]: Quantity)
    entry["parts"][rel.replace("[x]", "") or "$this"] = part


def _owner(sliced_id: str) -> tuple[str, str] | None:
    """The slice a slicing is declared in and the element relative to it (`$this`: a
    re-slicing of the slice itself); None for a slicing of the profile's own elements."""
    segs = sliced_id.split(".")
    found = [k for k, seg in enumerate(segs) if ":" in seg]
    if not found:
        return None
    i = found[-1]
    return ".".join(segs[: i + 1]), ".".join(segs[i + 1 :]) or "$this"


def _through_reference(kind: str, targets: list[str], rest: str) -> list[Any] | None:
    """What a slice expects of the resource its reference resolves to (`resolve()`): its type
    or its profile (the element's target profiles), or (a value at `rest`) what the target
    profile fixes there, looked up when checked (the profile may be stored later)."""
    if not rest and kind == "type":  # a base definition names its type, a profile is looked up
        names = [t.removeprefix(BASE_DEFINITION) for t in targets]
        return ["type", [n if "/" not in n else t for n, t in zip(names, targets, strict=True)]]
    if not rest and kind == "profile":
        return ["profile", targets]
    if rest and kind in ("value", "pattern", "exists"):
        profiled = [t for t in targets if not t.startswith(BASE_DEFINITION)]
        if profiled:  # a base definition fixes nothing: such slices cannot be told
            return ["target", {"kind": kind, "profiles": profiled, "path": rest}]
    return None


class _Slicings:
    """The slicings of one definition (by the id of the sliced element) turned into what the
    checker reads, slices inside slices included."""

    def __init__(
        self,
        discriminators: dict[str, list[list[str]]],
        slices: dict[str, dict[str, dict[str, Any]]],
        closed: frozenset[str],
    ) -> None:
        self.discriminators, self.slices, self.closed = discriminators, slices, closed
        self.nested: dict[str, dict[str, str]] = {}  # slice id -> {relative element: sliced id}
        for sliced_id in slices:
            owner = _owner(sliced_id)
            if owner is not None:
                self.nested.setdefault(owner[0], {})[owner[1]] = sliced_id

    def slicing(self, base: str, depth: int = 0) -> dict[str, Any]:
        """The slices of element `base` each with what its discriminators must match
        (`match`), its cardinality, what a member must then be (`rules`: its children's
        cardinality and fixed/pattern values; `profiles`) and the slicings inside it
        (`nested`, by relative element; `$this`: its re-slices). Slices no discriminator can
        tell are listed under `unchecked` with the reason ($validate warns). `closed`: a
        repetition in no slice is an error (when every slice can be told)."""
        discs = self.discriminators.get(base)
        by_name = self.slices.get(base)
        if not discs or not by_name or depth > 8:
            return {}
        usable, unchecked = [], []
        for s in by_name.values():
            match = {p: self.discriminator(t, p, s) for t, p in discs}
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
            nested = {}
            for rel, sliced_id in sorted(self.nested.get(s["id"], {}).items()):
                inner = self.slicing(sliced_id, depth + 1)
                if inner:
                    inner["choice"] = rel.endswith("[x]")
                    nested[rel.replace("[x]", "")] = inner
            if nested:
                slice_["nested"] = nested
            usable.append(slice_)
        out: dict[str, Any] = {}
        if usable:
            out["slices"] = usable
        if unchecked:
            out["unchecked_slices"] = unchecked
        elif base in self.closed:
            out["slices_closed"] = True
        return out

    def _inner(self, slice_id: str, sliced: str, accept: Any) -> dict[str, Any] | None:
        """The slice of the slicing `sliced` (inside slice `slice_id`) that `accept` picks."""
        for s in self.slices.get(f"{slice_id}.{sliced}", {}).values():
            if accept(s):
                return s
        return None

    def discriminator(self, kind: str, path: str, s: dict[str, Any]) -> list[Any] | None:
        """What a member of slice `s` has at `path` for one discriminator, or None when
        this slice cannot be told by it.

        value/pattern: the fixed or pattern value (an extension slice by `url`: its
        profile's URL; no value but a required binding: the value set); exists: present or
        absent (from the child's min/max); type: the types allowed there; profile: the
        profiles it conforms to. Through `extension('url')`: the slice of that extension
        inside `s`; `ofType(T)`: the element's type T (its type slice when there is one);
        `resolve()`: the element's target types or profiles (`_through_reference`).
        """
        steps = parse_path(path)
        if steps is None:
            return None
        parts, sid, rel, of_type = s["parts"], s["id"], "", ""
        for i, (op, arg) in enumerate(steps):
            if op == "name":
                rel, of_type = f"{rel}.{arg}" if rel else arg, ""
            elif op == "ofType":
                of_type = arg
                narrowed = self._inner(sid, f"{rel}[x]", lambda x, t=arg: (
                    (x["parts"].get("$this") or {}).get("types") == [t]))  # fmt: skip
                if rel and narrowed is not None:
                    parts, sid, rel = narrowed["parts"], narrowed["id"], ""
            elif op == "extension":
                ext = self._inner(sid, f"{rel}.extension" if rel else "extension",
                                  lambda x, u=arg: _extension_url(x) == u)  # fmt: skip
                if ext is None:
                    return None
                parts, sid, rel, of_type = ext["parts"], ext["id"], "", ""
            else:
                rest = steps[i + 1 :]
                targets = (parts.get(rel or "$this") or {}).get("targets")
                if not targets or any(o != "name" for o, _ in rest):
                    return None
                return _through_reference(kind, targets, ".".join(a for _, a in rest))
        if kind == "type" and of_type:
            return ["type", [of_type]]
        part = parts.get(rel or "$this") or {}
        if kind in ("value", "pattern"):
            if part.get("fixed"):
                return list(part["fixed"])
            if rel == "url" and _extension_url({"parts": parts}):
                return ["fixed", _extension_url({"parts": parts})]
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


def _extension_url(s: dict[str, Any]) -> str | None:
    """The URL an Extension slice's members have: its fixed `url`, else its one profile."""
    parts = s["parts"]
    fixed = (parts.get("url") or {}).get("fixed")
    if fixed and isinstance(fixed[1], str):
        return str(fixed[1])
    root = parts.get("$this") or {}
    if root.get("types") == ["Extension"] and len(root.get("profiles", ())) == 1:
        return str(root["profiles"][0])
    return None


def attach_slices(
    nodes: dict[str, dict[str, dict[str, Any]]],
    discriminators: dict[str, list[list[str]]],
    slices: dict[str, dict[str, dict[str, Any]]],
    closed: frozenset[str] = frozenset(),
) -> None:
    """Each sliced element of the profile's own elements gets its slices (`_Slicings.slicing`:
    `slices`, `unchecked_slices`, `slices_closed`); slicings inside slices go with them, and
    a slicing inside a data type goes to the element holding it (`nested`)."""
    slicings = _Slicings(discriminators, slices, closed)
    for base in slices:
        if ":" in base:
            continue
        parent, _, name = base.rpartition(".")
        spec = nodes.get(parent, {}).get(name.removesuffix("[x]"))
        if spec is not None:
            spec.update(slicings.slicing(base))
            continue
        # inside a data type (Observation.code.coding): a nested slicing of the nearest
        # element the definition has a node for (Observation.code), by relative path
        rel = name
        while "." in parent:
            up, _, last = parent.rpartition(".")
            owner = nodes.get(up, {}).get(last.removesuffix("[x]"))
            if owner is not None:
                inner = slicings.slicing(base)
                if inner:
                    inner["choice"] = name.endswith("[x]")
                    owner.setdefault("nested", {})[rel.replace("[x]", "")] = inner
                break
            parent, rel = up, f"{last}.{rel}"


def collect_slices(
    elements: list[dict[str, Any]],
) -> tuple[dict[str, list[list[str]]], dict[str, dict[str, dict[str, Any]]], frozenset[str]]:
    """The slicing discriminators (by element id, a slice's elements too), the slices (by the
    id of the sliced element) and the closed slicings of a list of elements."""
    discriminators: dict[str, list[list[str]]] = {}
    slices: dict[str, dict[str, dict[str, Any]]] = {}
    closed: set[str] = set()
    for el in elements:
        el_id = str(el.get("id", el.get("path", "")))
        if ":" in el_id:
            _slice_part(el, el_id, slices)
        if el.get("slicing", {}).get("discriminator"):
            discriminators[el_id] = [
                [str(d.get("type")), str(d.get("path"))] for d in el["slicing"]["discriminator"]
            ]
            if el["slicing"].get("rules") == "closed":
                closed.add(el_id)
    return discriminators, slices, frozenset(closed)


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
