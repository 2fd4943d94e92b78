"""Compiled per-type checkers: the reduced R4 definitions turned into closures, once per type.

Why compiled: a write validates every element of every resource; walking the definitions
per element would cost more than the write itself. Each element node becomes a dict from JSON
key to a small handler that knows its cardinality, its type's checker, its binding and the
invariants on it, so checking a resource is one pass over its JSON with dict lookups.

Every problem is collected (`Run.issues`), each with the FHIRPath of the element
(`Patient.name[0].given[1]`, `Observation.value.ofType(Quantity)`), not only the first.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fhir_server.validation import fhirpath
from fhir_server.validation.invariants import Invariant, compile_constraints
from fhir_server.validation.structure import parse_path
from fhir_server.validation.valuesets import membership

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
_BUILD = threading.RLock()  # compiling checkers (once per type and process)
MAX_STRING = 1024 * 1024  # R4: strings SHALL NOT exceed 1 MB


# profiled data types keep their base type's name in JSON (doseQuantity is a SimpleQuantity)
_JSON_TYPE = {"SimpleQuantity": "Quantity", "MoneyQuantity": "Quantity"}


@dataclass(frozen=True, slots=True)
class Issue:
    severity: str  # error | warning | information
    code: str  # FHIR IssueType: structure, required, value, code-invalid, invariant, ...
    expression: str
    diagnostics: str

    @property
    def text(self) -> str:
        """The diagnostics, naming the element (a reader may not look at `expression`)."""
        return f"{self.expression}: {self.diagnostics}" if self.expression else self.diagnostics

    def json(self) -> dict[str, Any]:
        return {"severity": self.severity, "code": self.code,
                "diagnostics": self.text, "expression": [self.expression]}  # fmt: skip


@dataclass(slots=True)
class Run:
    """One validation: the issues found and the resources FHIRPath's %resource names."""

    warnings: bool = False  # also report extensible/preferred bindings and warning invariants
    issues: list[Issue] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    root: dict[str, Any] = field(default_factory=dict)
    conformance: Any = None  # profiles.Conformance: stored value sets, for bindings
    bundle: dict[str, Any] | None = None  # the Bundle being validated (resolve(): its entries)
    resolved: dict[str, Any] = field(default_factory=dict)  # stored references looked up

    def error(self, code: str, expression: str, diagnostics: str) -> None:
        self.issues.append(Issue("error", code, expression, diagnostics))

    def warn(self, code: str, expression: str, diagnostics: str) -> None:
        self.issues.append(Issue("warning", code, expression, diagnostics))


Check = Callable[[Any, str, Run], None]  # (value, FHIRPath of the value, run)
Handler = Callable[[dict[str, Any], Any, str, Run], None]  # (parent object, value, path, run)
# binding membership: (value set url) -> {system: codes} or None when it cannot be expanded
CodesOf = Callable[[str], "dict[str, frozenset[str]] | None"]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | Decimal) and not isinstance(v, bool)


def _integral(v: Any) -> bool:
    if type(v) is int:
        return True
    if isinstance(v, Decimal) and not isinstance(v, bool):
        return v.is_finite() and v == v.to_integral_value() and "." not in str(v)
    return False


class Primitives:
    """The primitive types' checkers, from the regexes of the R4 definitions."""

    def __init__(self, regexes: dict[str, str]) -> None:
        self.forms = {
            name: re.compile(rx, re.ASCII) for name, rx in regexes.items() if rx
        }  # fmt: skip
        fhirpath.set_primitive_forms(self.forms)
        self.checks: dict[str, Check] = {name: self._build(name) for name in regexes}
        # per type, a test that a value is surely valid (the checker would report nothing):
        # lets an element skip building its FHIRPath and calling the checker (most values)
        self.fast: dict[str, Callable[[Any], bool]] = {
            name: f for name in regexes if (f := self._fast(name)) is not None
        }

    def _fast(self, name: str) -> Callable[[Any], bool] | None:
        if name == "boolean":
            return lambda v: type(v) is bool
        if name in ("integer", "positiveInt", "unsignedInt"):
            low = {"integer": INT_MIN, "positiveInt": 1, "unsignedInt": 0}[name]
            return lambda v: type(v) is int and low <= v <= INT_MAX
        if name in ("decimal", "xhtml"):
            return None
        form = self.forms.get(name)
        if form is None:
            return lambda v: type(v) is str and len(v) <= MAX_STRING
        surely = _SURELY_MATCHES.get(name)
        if surely is not None and form.pattern == _R4_FORMS.get(name) and form.flags & re.ASCII:
            full = form.fullmatch
            return lambda v: (type(v) is str and len(v) <= MAX_STRING
                              and (surely(v) or full(v) is not None))  # fmt: skip
        full = form.fullmatch
        return lambda v: type(v) is str and len(v) <= MAX_STRING and full(v) is not None

    def _build(self, name: str) -> Check:
        if name == "boolean":

            def boolean(v: Any, path: str, run: Run) -> None:
                if type(v) is not bool:
                    run.error("value", path, f"'{_show(v)}' is not a boolean (true or false)")

            return boolean
        if name in ("integer", "positiveInt", "unsignedInt"):
            low = {"integer": INT_MIN, "positiveInt": 1, "unsignedInt": 0}[name]

            def integer(v: Any, path: str, run: Run) -> None:
                if not _integral(v):
                    run.error("value", path, f"'{_show(v)}' is not a JSON integer ({name})")
                elif not low <= int(v) <= INT_MAX:
                    run.error("value", path, f"{v} is out of range for {name} "
                                             f"({low}..{INT_MAX})")  # fmt: skip

            return integer
        if name == "decimal":

            def decimal(v: Any, path: str, run: Run) -> None:
                if not _is_number(v):
                    run.error("value", path, f"'{_show(v)}' is not a JSON number (decimal)")
                elif isinstance(v, float | Decimal) and not _finite(v):
                    run.error("value", path, f"'{v}' is not a finite decimal")

            return decimal
        form = self.forms.get(name)
        what = "a string" if name in ("string", "markdown", "xhtml") else f"a valid {name}"
        surely = _SURELY_MATCHES.get(name) if form is not None else None
        if form is not None and (form.pattern != _R4_FORMS.get(name) or not form.flags & re.ASCII):
            surely = None  # not the R4 regex the shortcut stands for

        def text(v: Any, path: str, run: Run) -> None:
            if type(v) is not str:
                run.error("value", path, f"'{_show(v)}' is not a JSON string ({name})")
            elif form is not None and not (surely and surely(v)) and form.fullmatch(v) is None:
                run.error("value", path, f"'{_show(v)}' is not {what} "
                                         f"(R4 {name}: {form.pattern})")  # fmt: skip
            elif len(v) > MAX_STRING and name != "xhtml":
                run.error("value", path, f"the {name} is longer than 1 MB")
            elif name == "xhtml" and not v.lstrip().startswith("<div"):
                run.error("value", path, "Narrative.div must be an XHTML <div> element")

        return text


# Shortcuts for the commonest primitives' regexes (compiled re.ASCII, so `\s` is only
# [ \t\n\r\f\v]): printable text holds no whitespace but the space, which settles these
# patterns in one C call; anything else (a newline, say) is left to the regex itself.
_R4_FORMS = {
    "string": r"[ \r\n\t\S]+",
    "markdown": r"[ \r\n\t\S]+",
    "code": r"[^\s]+(\s[^\s]+)*",
    "uri": r"\S*",
    "url": r"\S*",
    "canonical": r"\S*",
}


def _plain_text(v: str) -> bool:
    return v != "" and v.isprintable()


def _plain_token(v: str) -> bool:
    return v != "" and v.isprintable() and v[0] != " " and v[-1] != " " and "  " not in v


def _plain_uri(v: str) -> bool:
    return v.isprintable() and " " not in v


_SURELY_MATCHES: dict[str, Callable[[str], bool]] = {
    "string": _plain_text,
    "markdown": _plain_text,
    "code": _plain_token,
    "uri": _plain_uri,
    "url": _plain_uri,
    "canonical": _plain_uri,
}


def _finite(v: float | Decimal) -> bool:
    return v.is_finite() if isinstance(v, Decimal) else v == v and v not in (
        float("inf"), float("-inf"))  # fmt: skip


def _show(v: Any) -> str:
    text = repr(v) if not isinstance(v, str) else v
    return text if len(text) <= 60 else text[:57] + "..."


def _matches_pattern(value: Any, pattern: Any) -> bool:
    """FHIR pattern[x]: every element the pattern has, the value has too (lists: each pattern
    item matched by some item)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and _matches_pattern(value[k], p) for k, p in pattern.items()
        )
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(_matches_pattern(v, p) for v in items) for p in pattern)
    if _is_number(pattern) and _is_number(value):
        return Decimal(str(pattern)) == Decimal(str(value))
    return bool(value == pattern) and type(value) is type(pattern)


@dataclass
class Definitions:
    """Reduced definitions (`structure.reduce`) by type name, and value set codes."""

    types: dict[str, dict[str, Any]]
    primitives: Primitives
    codes_of: CodesOf
    choices: frozenset[str]


class Compiled:
    """Checkers for one set of reduced definitions (the R4 base, or a profile over it).

    `overrides`: a profile's reduced definition, whose nodes replace the base type's nodes
    of the same path (the data types inside stay the base R4 ones).
    """

    def __init__(
        self,
        defs: Definitions,
        profile: dict[str, Any] | None = None,
        base: Compiled | None = None,
    ) -> None:
        self.defs = defs
        self.profile = profile
        self.base = base or self
        self._types: dict[str, Check] = {}
        self._nodes: dict[tuple[str, str], Check] = {}
        self.delta_only = False  # see `delta`
        self._delta: Compiled | None = None

    def delta(self) -> Compiled:
        """This profile's checkers for a resource the base R4 checkers have just walked
        (`validate`): an element the profile leaves as base R4 defines it (same definition,
        same invariants, no constrained children) is not walked again, since the walk would
        only repeat the base walk's findings. Slice members, data type profiles and profile
        discriminators keep the full checkers (their values may not have been walked)."""
        if self._delta is None:
            with _BUILD:
                if self._delta is None:
                    variant = Compiled(self.defs, self.profile, self.base)
                    variant.delta_only = True
                    self._delta = variant
        return self._delta

    # -- types ---------------------------------------------------------------------------

    def type_check(self, name: str) -> Check:
        found = self._types.get(name)
        if found is None:
            # request threads compile types concurrently; a half-built recursive node
            # (`deferred`) must never be seen by another thread
            with _BUILD:
                found = self._types.get(name)
                if found is None:
                    found = self._build_type(name)
                    self._types[name] = found
        return found

    def _build_type(self, name: str) -> Check:
        if self.base is not self and (self.profile is None or self.profile["type"] != name):
            return self.base.type_check(name)
        prim = self.defs.primitives.checks.get(name)
        if prim is not None:
            return prim
        if name == "Resource":
            return self._any_resource
        definition = self.defs.types.get(name)
        if definition is None:

            def unknown(v: Any, path: str, run: Run) -> None:
                run.error("structure", path, f"no R4 definition of the type {name}")

            return unknown
        if self.profile is not None and self.profile["type"] == name:
            definition = self.profile
        return self.node_check(definition, definition["type"])

    def _any_resource(self, v: Any, path: str, run: Run) -> None:
        """A resource inside another (contained, Bundle entry, Parameters): by its own type."""
        if type(v) is not dict:
            run.error("structure", path, "a resource must be a JSON object")
            return
        rt = v.get("resourceType")
        definition = self.defs.types.get(rt) if isinstance(rt, str) else None
        if definition is None or definition.get("kind") != "resource" or definition["abstract"]:
            run.error("structure", path, f"unknown resourceType {rt!r}")
            return
        outer_resource, outer_root = run.resource, run.root
        run.resource = v
        if not path.endswith("]") or ".contained[" not in path:
            run.root = v  # a Bundle entry or a parameter is a root of its own
        try:
            self.base.type_check(str(rt))(v, path, run)
        finally:
            run.resource, run.root = outer_resource, outer_root

    # -- element nodes -------------------------------------------------------------------

    def node_check(self, definition: dict[str, Any], node_path: str) -> Check:
        key = (definition["url"], node_path)
        found = self._nodes.get(key)
        if found is not None:
            return found
        holder: list[Check] = []

        def deferred(v: Any, path: str, run: Run) -> None:  # recursion (Questionnaire.item)
            holder[0](v, path, run)

        self._nodes[key] = deferred
        built = self._build_node(definition, node_path)
        holder.append(built)
        self._nodes[key] = built
        return built

    def _build_node(self, definition: dict[str, Any], node_path: str) -> Check:
        children: dict[str, dict[str, Any]] = definition["nodes"].get(node_path, {})
        is_resource = node_path == definition["type"] and definition.get("kind") == "resource"
        handlers: dict[str, Handler] = {}
        required: list[tuple[str, tuple[str, ...], int]] = []
        choice_groups: list[tuple[str, tuple[str, ...], frozenset[str]]] = []
        sliced: list[tuple[str, bool, dict[str, Any]]] = []
        constraints = definition.get("constraints", {})
        # inside a profile of a data type (an Extension profile), children of that same type
        # (its sub-extensions) are plain ones: only the root is the profile
        own_type = self.profile["type"] if self.profile is not None else None
        same = self._unchanged(definition, node_path)
        for name, spec in children.items():
            types = spec.get("types") or []
            if is_resource and name == "id":
                types = ["id"]
            el_path = f"{node_path}.{name}" + ("[x]" if spec.get("choice") else "")
            invariants = compile_constraints(constraints.get(el_path, ()), self.defs.choices)
            if spec.get("node") and not spec.get("choice"):
                invariants = []  # evaluated by the node checker itself
            keys: list[str] = []
            skip = name in same
            for t in types:
                suffix = _JSON_TYPE.get(t, t)
                key = name + suffix[0].upper() + suffix[1:] if spec.get("choice") else name
                shown = f"{name}.ofType({suffix})" if spec.get("choice") else name
                child = (
                    self.node_check(definition, spec["node"]) if spec.get("node")
                    else self.base.type_check(t) if t == own_type
                    else self.type_check(t)
                )  # fmt: skip
                primitive = t in self.defs.primitives.checks
                handlers[key] = (
                    _unchanged_element if skip
                    else self._element(spec, shown, child, primitive, t, invariants)
                )  # fmt: skip
                keys.append(key)
                if primitive:
                    handlers["_" + key] = (
                        _unchanged_element if skip
                        else self._primitive_extension(spec, shown, key)
                    )  # fmt: skip
                    keys.append("_" + key)
                if not spec.get("choice"):
                    break
            if spec.get("min", 0) > 0:
                required.append((name, tuple(keys), spec["min"]))
            if spec.get("choice"):
                plain_keys = tuple(k for k in keys if not k.startswith("_"))
                choice_groups.append((name, plain_keys, frozenset(plain_keys)))
            if spec.get("slices") or spec.get("unchecked_slices") or spec.get("nested"):
                sliced.append((name, bool(spec.get("choice")), spec))
        own = compile_constraints(constraints.get(node_path, ()), self.defs.choices)

        def check(v: Any, path: str, run: Run) -> None:
            if type(v) is not dict:
                run.error("structure", path, f"expected a JSON object, found '{_show(v)}'")
                return
            if not v:
                run.error("invariant", path, "ele-1: an element must have a value or children")
                return
            for key, value in v.items():
                handler = handlers.get(key)
                if handler is not None:
                    handler(v, value, path, run)
                elif key == "resourceType" and is_resource:
                    continue
                else:
                    run.error("structure", f"{path}.{key}", f"unknown element '{key}'")
            for name, keys, minimum in required:
                n = 0
                for k in keys:
                    got = v.get(k)
                    if got is not None:
                        n = max(n, len(got) if type(got) is list else 1)
                if n < minimum:
                    what = "is required" if minimum == 1 else f"needs at least {minimum} items"
                    run.error("required", f"{path}.{name}", f"{name} {what} (minimum "
                              f"cardinality {minimum})")  # fmt: skip
            for name, keys, keyset in choice_groups:
                # (the intersection walks the object's few keys, not the choice's many types)
                if len(keyset.intersection(v)) > 1:
                    present = [k for k in keys if k in v]
                    run.error("structure", f"{path}.{name}", f"only one of {', '.join(present)} "
                              "may be present (a choice element)")  # fmt: skip
            for name, choice, spec in sliced:
                if "nested" in spec:
                    for p, x, _ in _items(v, name, choice, f"{path}.{name}"):
                        _check_nested(x, p, spec["nested"], run)
                if "slices" in spec or "unchecked_slices" in spec:
                    _check_slices(v, name, choice, spec, path, run)
            for inv in own:
                inv.check(v, path, run)

        return check

    def _unchanged(self, definition: dict[str, Any], node_path: str) -> frozenset[str]:
        """The children of `node_path` a delta profile walk skips: defined exactly as in
        base R4 (cardinality, types, binding, values, targets, slices), with the same
        invariants, and no children of their own the profile could have constrained."""
        if not self.delta_only or self.profile is None or definition is not self.profile:
            return frozenset()
        base_def = self.defs.types.get(self.profile["type"])
        if base_def is None or base_def is self.profile:
            return frozenset()
        base_children = base_def["nodes"].get(node_path)
        if base_children is None:
            return frozenset()
        constraints = definition.get("constraints", {})
        base_constraints = base_def.get("constraints", {})
        out = set()
        for name, spec in definition["nodes"].get(node_path, {}).items():
            el_path = f"{node_path}.{name}" + ("[x]" if spec.get("choice") else "")
            if (
                not spec.get("node") and spec == base_children.get(name)
                and constraints.get(el_path, []) == base_constraints.get(el_path, [])
            ):  # fmt: skip
                out.add(name)
        return frozenset(out)

    def _element(
        self,
        spec: dict[str, Any],
        shown: str,
        check: Check,
        primitive: bool,
        type_name: str,
        invariants: list[Invariant],
    ) -> Handler:
        maximum = spec.get("max", 1)
        name = shown.split(".", 1)[0]
        binding = spec.get("binding")
        fixed, pattern = spec.get("fixed"), spec.get("pattern")
        bind = self._binding(binding, type_name) if binding else None
        targets = spec.get("targets")
        if type_name == "Reference" and targets:
            bind = _target_check(frozenset(targets), bind)

        def extra(v: Any, path: str, run: Run) -> None:
            check(v, path, run)
            if bind is not None:
                bind(v, path, run)
            if fixed is not None and not (
                _matches_pattern(v, fixed) and _matches_pattern(fixed, v)
            ):
                run.error("value", path, f"must be exactly {_show(fixed)} (fixed value)")
            if pattern is not None and not _matches_pattern(v, pattern):
                run.error("value", path, f"must match the pattern {_show(pattern)}")
            for inv in invariants:
                inv.check(v, path, run)

        # most elements have nothing beyond their type: call the type's checker directly
        plain = bind is None and fixed is None and pattern is None and not invariants
        one = check if plain else extra
        # a plain primitive whose value is surely valid needs neither its path nor a call
        fast = self.defs.primitives.fast.get(type_name) if plain and primitive else None
        if fast is not None and check is not self.defs.primitives.checks.get(type_name):
            fast = None  # (not the primitive's own checker)

        if maximum == 1:

            def single(parent: dict[str, Any], v: Any, path: str, run: Run) -> None:
                here = f"{path}.{shown}"
                if type(v) is list:
                    run.error("structure", here, f"{name} takes one value, not an array")
                elif v is None:
                    run.error("structure", here, f"{name} is null")
                else:
                    one(v, here, run)

            if fast is None:
                return single
            surely = fast

            def single_primitive(parent: dict[str, Any], v: Any, path: str, run: Run) -> None:
                if not surely(v):
                    single(parent, v, path, run)

            return single_primitive

        def many(parent: dict[str, Any], v: Any, path: str, run: Run) -> None:
            base = f"{path}.{shown}"
            if type(v) is not list:
                run.error("structure", base, f"{name} must be an array (it repeats)")
                return
            if not v:
                run.error("structure", base, f"{name} is an empty array")
                return
            if 0 < maximum < len(v):
                run.error("structure", base, f"{name} has {len(v)} items, at most {maximum}")
            ext = parent.get("_" + shown) if primitive else None
            for i, item in enumerate(v):
                if fast is not None and fast(item):
                    continue
                if item is None:
                    if not (type(ext) is list and i < len(ext) and ext[i] is not None):
                        text = f"null in an array (only with extensions in _{name}[{i}])"
                        run.error("structure", f"{base}[{i}]", text)
                    continue
                one(item, f"{base}[{i}]", run)

        return many

    def _primitive_extension(self, spec: dict[str, Any], shown: str, key: str) -> Handler:
        """`_name`: the id and extensions of a primitive (arrays aligned with `name`)."""
        element = self.type_check("Element")
        repeats = spec.get("max", 1) != 1

        def ext(parent: dict[str, Any], v: Any, path: str, run: Run) -> None:
            base = f"{path}.{shown}"
            if not repeats:
                if type(v) is not dict:
                    run.error("structure", base, f"_{key} must be an object (id, extension)")
                else:
                    element(v, base, run)
                return
            if type(v) is not list:
                run.error("structure", base, f"_{key} must be an array like {key}")
                return
            values = parent.get(key)
            if values is not None and (type(values) is not list or len(values) != len(v)):
                run.error("structure", base, f"_{key} must have as many items as {key}")
            for i, item in enumerate(v):
                if item is None:
                    if values is None:
                        run.error("structure", f"{base}[{i}]", f"_{key}[{i}] and {key}[{i}] "
                                  "are both null")  # fmt: skip
                    continue
                element(item, f"{base}[{i}]", run)

        return ext

    def _binding(self, binding: list[str], type_name: str) -> Check | None:
        strength, url = binding
        codes_of = self.defs.codes_of
        required = strength == "required"
        if type_name not in ("code", "Coding", "CodeableConcept", "string", "uri", "Quantity"):
            return None

        def _ask(member: Any, v: Any, path: str, run: Run) -> None:
            """Per code, through the terminology service (None: it cannot tell, not judged)."""
            if isinstance(v, str):
                if member(url, None, v) is False:
                    report(run, path, f"the code '{_show(v)}'")
                return
            if not isinstance(v, dict):
                return
            codings = [v] if type_name in ("Coding", "Quantity") else v.get("coding")
            if type(codings) is not list or not codings:
                return
            verdicts = [
                member(url, c.get("system"), c["code"])
                for c in codings
                if isinstance(c, dict) and isinstance(c.get("code"), str)
            ]
            if verdicts and all(x is False for x in verdicts):
                report(run, path, "none of the codings")

        def report(run: Run, path: str, what: str) -> None:
            text = f"{what} is not in the value set {url} ({strength} binding)"
            if required:
                run.error("code-invalid", path, text)
            else:
                run.warn("code-invalid", path, text)

        def bind(v: Any, path: str, run: Run) -> None:
            if not required and not run.warnings:
                return
            codes = codes_of(url)
            if codes is None and run.conformance is not None:
                codes = run.conformance.value_set_codes(url)
            if codes is None:
                member = membership()
                if member is not None:
                    _ask(member, v, path, run)
                return  # else a value set known only to an external terminology server
            if type_name in ("code", "string", "uri"):
                if isinstance(v, str) and not any(v in c for c in codes.values()):
                    report(run, path, f"the code '{_show(v)}'")
                return
            if type_name in ("Coding", "Quantity"):
                checked = isinstance(v, dict) and (type_name == "Coding" or "code" in v)
                if checked and not _coding_in(v, codes):
                    report(run, path, f"the code '{v.get('system', '')}#{v.get('code', '')}'")
                return
            if not isinstance(v, dict):
                return
            codings = v.get("coding")
            if type(codings) is not list or not codings:
                if required:
                    report(run, path, "a concept without a coding")
                return
            if not any(isinstance(c, dict) and _coding_in(c, codes) for c in codings):
                shown = ", ".join(f"{c.get('system', '')}#{c.get('code', '')}"
                                  for c in codings if isinstance(c, dict))  # fmt: skip
                report(run, path, f"none of the codings ({shown})")

        return bind


def _unchanged_element(parent: dict[str, Any], v: Any, path: str, run: Run) -> None:
    """An element a delta profile walk leaves to the base walk (`Compiled.delta`)."""


_LITERAL = re.compile(r"(?:.*/)?([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[^/]+)?")


def _child(f: dict[str, Any], step: str) -> list[tuple[Any, str | None]]:
    """The values of element `step` of `f` with the type a choice key names (`valueQuantity`:
    Quantity), lists flattened."""
    v = f.get(step)
    found: list[tuple[Any, str | None]]
    if v is not None:
        found = [(v, None)]
    else:
        n = len(step)
        found = [(x, k[n:]) for k, x in f.items()
                 if k.startswith(step) and k[n : n + 1].isupper()]  # fmt: skip
    out: list[tuple[Any, str | None]] = []
    for x, t in found:
        if type(x) is list:
            out.extend((y, t) for y in x if y is not None)
        else:
            out.append((x, t))
    return out


def _typed_at(item: Any, path: str, hint: str | None = None) -> list[tuple[Any, str | None]]:
    """The values at a dotted path of element names, each with its type when JSON tells it
    (a choice key, a resource's resourceType)."""
    if path == "$this":
        found = [(item, hint)]
    else:
        found = [(item, None)]
        for step in path.split("."):
            found = [c for f, _ in found if type(f) is dict for c in _child(f, step)]
    return [(x, t or (x.get("resourceType") if type(x) is dict else None)) for x, t in found]


def _values_at(item: Any, path: str) -> list[Any]:
    return [x for x, _ in _typed_at(item, path)]


def _walk(
    item: Any, steps: tuple[tuple[str, str], ...], hint: str | None, run: Run
) -> tuple[list[tuple[Any, str | None]], bool]:
    """The values at a parsed discriminator path (`structure.parse_path`) with their types,
    and whether a reference on the way could not be resolved (then the values are partial)."""
    found: list[tuple[Any, str | None]] = [(item, hint)]
    unresolved = False
    for op, arg in steps:
        if op == "name":
            found = [c for f, _ in found if type(f) is dict for c in _child(f, arg)]
        elif op == "ofType":  # a value of unknown type (not a choice) is kept
            want = _JSON_TYPE.get(arg, arg).lower()
            found = [(x, t) for x, t in found if t is None or t.lower() == want]
        elif op == "extension":
            found = [(e, "Extension") for f, _ in found if type(f) is dict
                     for e in _listed(f.get("extension"))
                     if type(e) is dict and e.get("url") == arg]  # fmt: skip
        else:  # resolve()
            resolved: list[tuple[Any, str | None]] = []
            for f, _ in found:
                target = resolve_reference(f, run)
                if target is None:
                    unresolved = True
                else:
                    resolved.append((target, target.get("resourceType")))
            found = resolved
        found = [(x, t or (x.get("resourceType") if type(x) is dict else None)) for x, t in found]
    return found, unresolved


def _listed(v: Any) -> list[Any]:
    return v if type(v) is list else []


def resolve_reference(ref: Any, run: Run) -> dict[str, Any] | None:
    """The resource a Reference points to, as far as this validation can see it soundly: a
    contained resource (`#id`, `#`: the container), an entry of the Bundle being validated
    (by fullUrl, or `Type/id`), or a resource stored on this server as the current
    transaction sees it (`Type/id`, or under the server's base URL). None otherwise (an
    external URL, a logical reference, nothing stored there): the caller does not guess."""
    target = ref.get("reference") if type(ref) is dict else None
    if type(target) is not str or not target:
        return None
    if target.startswith("#"):
        if target == "#":
            return run.root or None
        for c in _listed(run.root.get("contained")):
            if type(c) is dict and c.get("id") == target[1:]:
                return c
        return None
    if run.bundle is not None:
        literal = _LITERAL.fullmatch(target)
        for entry in _listed(run.bundle.get("entry")):
            res = entry.get("resource") if type(entry) is dict else None
            if type(res) is not dict:
                continue
            full = entry.get("fullUrl")
            if full == target or (
                literal is not None and "://" not in target
                and (f"{res.get('resourceType')}/{res.get('id')}" == target.split("/_history")[0])
            ):  # fmt: skip
                return res
    if target in run.resolved:
        return run.resolved[target]
    lookup = getattr(run.conformance, "resource", None)
    found = lookup(target) if lookup is not None and _LITERAL.fullmatch(target) else None
    run.resolved[target] = found
    return found


def _in_slice(item: Any, hint: str | None, match: dict[str, list[Any]], run: Run) -> bool | None:
    """Is `item` a member of the slice whose discriminators expect `match`? None when it
    cannot be told (a reference on the path does not resolve, a target profile is unknown)."""
    undetermined = False
    for path, (kind, value) in match.items():
        steps = parse_path(path)
        if steps is None:
            return None
        found, unresolved = _walk(item, steps, hint, run)
        if kind == "target":
            expected = _target_expects(value, run)
            if expected is None:
                undetermined = True
                continue
            kind, value = expected
        values = [x for x, _ in found]
        if kind == "exists":
            ok = bool(values) is value
            unresolved = unresolved and not (value and values)
        elif kind == "type":
            named = [_type_of(t, run) for t in value]
            wanted = {_JSON_TYPE.get(t, t).lower() for t in named if t is not None}
            ok = any(t is not None and t.lower() in wanted for _, t in found)
            unresolved = unresolved or None in named  # a target profile not known here
        elif kind == "profile":
            ok = any(_conforms(x, value, run) for x in values)
        elif kind == "valueset":
            ok = any(_codes_in(x, value, run) for x in values)
        elif kind == "fixed":
            ok = any(_matches_pattern(x, value) and _matches_pattern(value, x) for x in values)
        else:
            ok = any(_matches_pattern(x, value) for x in values)
        if unresolved and (not ok or kind == "exists"):
            undetermined = True
        elif not ok:
            return False
    return None if undetermined else True


def _type_of(name: str, run: Run) -> str | None:
    """A type a `type` discriminator names: a type name, or a target profile's type."""
    if "/" not in name:
        return name
    from fhir_server.validation.profiles import profiles

    compiled = profiles().compiled_for(name, run)
    return compiled.profile["type"] if compiled is not None and compiled.profile else None


def _target_expects(target: dict[str, Any], run: Run) -> list[Any] | None:
    """What the target profile of a reference fixes at a path (a value/pattern/exists
    discriminator through `resolve()`): from the first known profile that says."""
    from fhir_server.validation.profiles import profiles

    for url in target["profiles"]:
        compiled = profiles().compiled_for(url, run)
        if compiled is None or compiled.profile is None:
            continue
        nodes = compiled.profile["nodes"]
        node, spec = nodes.get(compiled.profile["type"], {}), None
        for step in target["path"].split("."):
            spec = node.get(step) if node is not None else None
            if spec is None:
                break
            node = nodes.get(spec.get("node") or "", {})
        if spec is None:
            continue
        if target["kind"] == "exists":
            if spec.get("min", 0) >= 1 or spec.get("max") == 0:
                return ["exists", spec.get("min", 0) >= 1]
        elif "fixed" in spec:
            return ["fixed", spec["fixed"]]
        elif "pattern" in spec:
            return ["pattern", spec["pattern"]]
    return None


def _conforms(value: Any, urls: list[str], run: Run) -> bool:
    """Does `value` conform to one of the profiles (a `profile` discriminator)? A base
    resource definition: being that resource (its base validity is checked where it is)."""
    from fhir_server.validation.profiles import BASE, profiles

    for url in urls:
        name = url.removeprefix(BASE)
        if name != url and "/" not in name:
            if type(value) is dict and value.get("resourceType") == name:
                return True
        elif profiles().conforms(url, value, run):
            return True
    return False


def _codes_in(value: Any, url: str, run: Run) -> bool:
    """A code, Coding or CodeableConcept with a code in the value set (a value/pattern
    discriminator whose slices are told apart by a required binding)."""
    from fhir_server.validation.valuesets import codes_of

    listed: Any
    if type(value) is str:
        listed = [{"code": value}]
    elif type(value) is dict:
        listed = value.get("coding") if "coding" in value else [value]
    else:
        return False
    codings = [c for c in listed or () if type(c) is dict and type(c.get("code")) is str]
    codes = codes_of(url)
    if codes is None and run.conformance is not None:
        codes = run.conformance.value_set_codes(url)
    if codes is not None:
        return any(_coding_in(c, codes) for c in codings)
    member = membership()
    return member is not None and any(member(url, c.get("system"), c["code"]) for c in codings)


def _check_slices(
    v: dict[str, Any], name: str, choice: bool, spec: dict[str, Any], path: str, run: Run
) -> None:
    """A profile's slices of element `name` of `v` (`spec`: its reduced definition)."""
    where = f"{path}.{name}"
    _judge(_items(v, name, choice, where), spec, where, run)


def _items(v: dict[str, Any], name: str, choice: bool, where: str) -> list[tuple[str, Any, Any]]:
    """The repetitions of element `name` of `v`: (FHIRPath, value, type of a choice)."""
    if choice:
        return [(f"{where}.ofType({t})", x, t) for x, t in _child(v, name)]
    value = v.get(name)
    if type(value) is list:
        return [(f"{where}[{i}]", x, None) for i, x in enumerate(value)]
    return [] if value is None else [(where, value, None)]


def _judge(
    items: list[tuple[str, Any, str | None]], spec: dict[str, Any], where: str, run: Run
) -> None:
    """Which of `items` (path, value, type) each slice's discriminators select, against the
    slice's cardinality; each member against what the slice requires of it (its children's
    cardinality and values, its type profiles, the slicings inside it); a slice's re-slices
    among its members; with closed slicing, an item in no slice is an error. An item whose
    membership cannot be told (an unresolvable reference) is neither counted nor refused:
    a warning says so, and a minimum it could make up is a warning, not an error."""
    slices: list[dict[str, Any]] = spec.get("slices") or []
    sliced: set[str] = set()
    for s in slices:
        members: list[tuple[str, Any, str | None]] = []
        unknown = 0
        for p, x, t in items:
            verdict = _in_slice(x, t, s["match"], run)
            if verdict is None:
                unknown += 1
                sliced.add(p)
                run.warn("not-found", p, f"whether this is in slice '{s['name']}' is not "
                         "judged: a reference on its discriminator path cannot be resolved "
                         "(not contained, not in the Bundle, not stored here), or its "
                         "target profile is unknown")  # fmt: skip
            elif verdict:
                members.append((p, x, t))
                sliced.add(p)
        n = len(members)
        if n < s["min"]:
            text = (f"slice '{s['name']}' needs at least {s['min']} item(s) matching "
                    f"{_show(s['match'])}; found {n}")  # fmt: skip
            if n + unknown < s["min"]:
                run.error("required", where, text)
            else:
                run.warn("required", where, f"{text} (and {unknown} not judged)")
        elif 0 <= s["max"] < n:
            run.error("structure", where, f"slice '{s['name']}' allows at most {s['max']} "
                      f"item(s); found {n}")  # fmt: skip
        for p, x, _ in members:
            _check_member(x, p, s, run)
        reslicing = (s.get("nested") or {}).get("$this")
        if reslicing is not None:
            _judge(members, reslicing, where, run)
    if spec.get("slices_closed"):
        names = ", ".join(s["name"] for s in slices)
        for p, _, _ in items:
            if p not in sliced:
                run.error("structure", p, f"matches none of the slices ({names}); the "
                          "slicing is closed")  # fmt: skip
    if run.warnings:
        for slice_name, why in spec.get("unchecked_slices") or ():
            run.warn("not-supported", where, f"slice '{slice_name}' is not checked: {why}")


def _check_member(x: Any, path: str, s: dict[str, Any], run: Run) -> None:
    """What slice `s` requires of one of its members beyond the discriminators."""
    label = f"(slice '{s['name']}')"
    for rel, rule in (s.get("rules") or {}).items():
        head, _, last = rel.rpartition(".")
        parents = ([x] if not head else _values_at(x, head)) if type(x) is dict else []
        where = f"{path}.{rel}"
        for parent in parents:  # a child's cardinality counts where its parent is present
            if type(parent) is not dict:
                continue
            found = _child(parent, last)
            n = len(found)
            if n < rule.get("min", 0):
                run.error("required", where, f"{rel} is required {label}")
            elif 0 <= rule.get("max", -1) < n:
                what = "is not allowed" if rule["max"] == 0 else f"allows at most {rule['max']}"
                run.error("structure", where, f"{rel} {what} {label}")
            if "types" in rule:
                allowed = {_JSON_TYPE.get(t, t).lower() for t in rule["types"]}
                for _, t in found:
                    if t is not None and t.lower() not in allowed:
                        run.error("structure", f"{where}.ofType({t})", f"{rel} must be "
                                  f"{' or '.join(rule['types'])} {label}")  # fmt: skip
            if "fixed" in rule:
                kind, want = rule["fixed"]
                for y, _ in found:
                    same = _matches_pattern(y, want) and (
                        kind != "fixed" or _matches_pattern(want, y))  # fmt: skip
                    if not same:
                        run.error("value", where, f"must be {_show(want)} {label}")
    if s.get("nested"):
        _check_nested(x, path, s["nested"], run)
    if s.get("profiles"):
        from fhir_server.validation.profiles import profiles

        known = [u for u in s["profiles"] if profiles().compiled_for(u, run) is not None]
        if not known:
            if run.warnings:
                run.warn("not-supported", path, f"the profile(s) {', '.join(s['profiles'])} "
                         f"of {label} are not known to this server (not checked)")  # fmt: skip
            return
        for url in known:  # a member conforms to the slice's profile (its first known one)
            profiles().check_value(url, x, path, run, label)
            break


def _check_nested(x: Any, path: str, nested: dict[str, dict[str, Any]], run: Run) -> None:
    """The slicings inside one value (a slice member's, a data type's), by relative path;
    `$this` (re-slices) is judged among the slice's members, not here."""
    if type(x) is not dict:
        return
    for rel, inner in nested.items():
        if rel == "$this":
            continue
        head, _, last = rel.rpartition(".")
        for parent in [x] if not head else _values_at(x, head):
            if type(parent) is dict:
                here = f"{path}.{head}" if head else path
                _check_slices(parent, last, inner.get("choice", False), inner, here, run)


def _target_check(targets: frozenset[str], then: Check | None) -> Check:
    """A literal reference (`[base/]Type/id`) must name one of the element's target types
    (R4 `targetProfile`); other references (`#id`, `urn:uuid:`, logical) cannot be judged."""
    allowed = ", ".join(sorted(targets))

    def check(v: Any, path: str, run: Run) -> None:
        ref = v.get("reference") if type(v) is dict else None
        if isinstance(ref, str) and not ref.startswith(("#", "urn:")):
            m = _LITERAL.fullmatch(ref)
            if m is not None and m.group(1) not in targets:
                run.error("structure", f"{path}.reference", f"a reference to {m.group(1)} is "
                          f"not allowed here (allowed: {allowed})")  # fmt: skip
        if then is not None:
            then(v, path, run)

    return check


def _coding_in(coding: dict[str, Any], codes: dict[str, frozenset[str]]) -> bool:
    code, system = coding.get("code"), coding.get("system")
    if not isinstance(code, str):
        return False
    if isinstance(system, str):
        return code in codes.get(system, ())
    return any(code in c for c in codes.values())


__all__ = ["Check", "Compiled", "Definitions", "Issue", "Primitives", "Run", "fhirpath"]
