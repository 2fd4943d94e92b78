"""The invariants (constraints with a FHIRPath expression) of the definitions, compiled once.

Each expression is compiled by `fhirpath.compile_invariant` (fast closures); one it cannot
compile is handed to fhirpathpy (an independent full engine, slower); one neither can
evaluate is recorded in `unsupported()` and reported as an `information` issue by `$validate`,
never silently passed as if checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from fhir_server.validation.fhirpath import (
    Node,
    Unsupported,
    _date_key,
    compile_invariant,
    holds,
)

if TYPE_CHECKING:
    from fhir_server.validation.checker import Run

# Invariants that hold whenever the resource has no `contained`: their expressions all start
# from `contained` and are true on an empty collection (dom-2..dom-5), so they are evaluated
# only when there is something contained (the common case has nothing to evaluate).
_NEEDS = {"dom-2": "contained", "dom-3": "contained", "dom-4": "contained", "dom-5": "contained"}
# Likewise for the two commonest element invariants: ref-1 holds unless the reference is
# local ('#...'), per-1 unless the Period has both start and end.
# The others below hold whenever the elements their expression tests for are absent (a
# primitive counts as present with only its `_name` extension; qty-3 also when the system
# is there); anything not an object is left to the expression.
_GUARDS: dict[str, Callable[[Any], bool]] = {
    "ref-1": lambda v: type(v) is dict and str(v.get("reference", "")).startswith("#"),
    "per-1": lambda v: type(v) is dict and "start" in v and "end" in v,
    "qty-3": lambda v: (
        type(v) is not dict or (("code" in v or "_code" in v) and type(v.get("system")) is not str)
    ),
    "obs-6": lambda v: type(v) is not dict or ("dataAbsentReason" in v and _has(v, "value")),
    "obs-7": lambda v: type(v) is not dict or ("component" in v and _has(v, "value")),
    "prr-1": lambda v: type(v) is not dict or "orderDetail" in v,
    "con-4": lambda v: type(v) is not dict or _has(v, "abatement"),
    "con-5": lambda v: type(v) is not dict or ("clinicalStatus" in v and "verificationStatus" in v),
    "tim-1": lambda v: type(v) is not dict or "duration" in v or "_duration" in v,
    "tim-5": lambda v: type(v) is not dict or "period" in v or "_period" in v,
    "tim-2": lambda v: type(v) is not dict or "period" in v or "_period" in v,
    "tim-4": lambda v: type(v) is not dict or "duration" in v or "_duration" in v,
    "tim-6": lambda v: type(v) is not dict or "periodMax" in v or "_periodMax" in v,
    "tim-7": lambda v: type(v) is not dict or "durationMax" in v or "_durationMax" in v,
    "tim-8": lambda v: type(v) is not dict or "countMax" in v or "_countMax" in v,
    "tim-9": lambda v: type(v) is not dict or "offset" in v or "_offset" in v,
    "tim-10": lambda v: (
        type(v) is not dict
        or (("timeOfDay" in v or "_timeOfDay" in v) and ("when" in v or "_when" in v))
    ),
    "dom-2": lambda v: _any_contained_has(v, "contained"),
    "dom-4": lambda v: _any_contained_has(v, "meta"),
    "dom-5": lambda v: _any_contained_has(v, "meta"),
}


def _any_contained_has(v: Any, key: str) -> bool:
    """Has a contained resource the element `key` (or is something there not an object)?"""
    contained = v.get("contained") if type(v) is dict else None
    if type(contained) is not list:
        return True
    return any(type(c) is not dict or key in c for c in contained)


def _has(v: dict[str, Any], choice: str) -> bool:
    """Is any type of the choice element (`value[x]`: valueQuantity, _valueString) there?"""
    under = "_" + choice
    return any(k.startswith(choice) or k.startswith(under) for k in v)


_UNSUPPORTED: dict[str, str] = {}  # key -> expression neither engine evaluates
PER_1 = "start.hasValue().not() or end.hasValue().not() or (start <= end)"
DOM_3 = (
    "contained.where((('#'+id in (%resource.descendants().reference | "
    "%resource.descendants().as(canonical) | %resource.descendants().as(uri) | "
    "%resource.descendants().as(url))) or descendants().where(reference = '#').exists() or "
    "descendants().where(as(canonical) = '#').exists() or descendants().where(as(canonical) = "
    "'#').exists()).not()).trace('unmatched', id).empty()"
)


def _strings(node: Any) -> Iterator[str]:
    """The strings `node` holds, its resources' `resourceType` aside."""
    stack = [node]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            if "resourceType" in item:
                stack.extend(v for k, v in item.items() if k != "resourceType")
            else:
                stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
        elif type(item) is str:
            yield item


def _found(node: Any, wanted: set[str]) -> None:
    """Removes from `wanted` the strings `node` holds, stopping as soon as none is left."""
    for item in _strings(node):
        if not wanted:
            return
        wanted.discard(item)


# the guards apply only to the official texts (a profile may reuse a key for another rule)
_GUARDED_TEXT = {
    "ref-1": (
        "reference.startsWith('#').not() or (reference.substring(1).trace('url') in "
        "%rootResource.contained.id.trace('ids'))",
    ),
    "per-1": (PER_1,),
    "qty-3": ("code.empty() or system.exists()",),
    "obs-6": ("dataAbsentReason.empty() or value.empty()",),
    "obs-7": (
        "value.empty() or component.code.where(coding.intersect(%resource.code.coding)"
        ".exists()).empty()",
    ),  # fmt: skip
    "prr-1": ("orderDetail.empty() or code.exists()",),
    "con-4": (
        "abatement.empty() or clinicalStatus.coding.where(system='http://terminology.hl7"
        ".org/CodeSystem/condition-clinical' and (code='resolved' or code='remission' or "
        "code='inactive')).exists()",
    ),  # fmt: skip
    "con-5": (
        "verificationStatus.coding.where(system='http://terminology.hl7.org/CodeSystem/"
        "condition-ver-status' and code='entered-in-error').empty() or "
        "clinicalStatus.empty()",
    ),  # fmt: skip
    "tim-1": ("duration.empty() or durationUnit.exists()",),
    "tim-5": ("period.exists() implies period >= 0",),
    "tim-2": ("period.empty() or periodUnit.exists()",),
    "tim-4": ("duration.exists() implies duration >= 0",),
    "tim-6": ("periodMax.empty() or period.exists()",),
    "tim-7": ("durationMax.empty() or duration.exists()",),
    "tim-8": ("countMax.empty() or count.exists()",),
    "tim-9": (
        "offset.empty() or (when.exists() and when.select($this in ('C' | 'CM' | 'CD' | "
        "'CV')).allFalse())",
    ),  # fmt: skip
    "tim-10": ("timeOfDay.empty() or when.empty()",),
    "dom-2": ("contained.contained.empty()",),
    "dom-4": ("contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()",),
    "dom-5": ("contained.meta.security.empty()",),
}


def dom_3(focus: list[Any], env: dict[str, Any]) -> list[Any]:
    """dom-3 in one walk instead of four `descendants()` per contained resource (it runs on
    every resource with `contained`, e.g. each Synthea Claim). Same meaning: every contained
    resource is referenced (`#id`) from somewhere in the resource, or refers to its container
    (`#`); `as(canonical|uri|url)` keeps any string without blanks, so "referenced" is "some
    string of the resource is `#id`". Checked against the FHIRPath text on the R4 examples
    (tests/validation/test_fhirpath_invariants.py)."""
    resource = focus[0] if focus else None
    contained = resource.get("contained") if type(resource) is dict else None
    if type(contained) is not list:
        return [True]
    wanted = {"#" + cid for item in contained if type(item) is dict
              and isinstance(cid := item.get("id"), str)}  # fmt: skip
    # the references outside `contained` first (where they usually are), then inside it
    assert type(resource) is dict  # (it has a list of contained resources)
    _found({k: v for k, v in resource.items() if k != "contained"}, wanted)
    _found(contained, wanted)
    for item in contained:
        if type(item) is not dict:
            continue
        cid = item.get("id")
        if isinstance(cid, str) and "#" + cid not in wanted:
            continue
        if "#" not in _strings(item):
            return [False]
    return [True]


_per_1_general: list[Node] = []


def per_1(focus: list[Any], env: dict[str, Any]) -> list[Any]:
    """per-1 (a Period's start <= end) for two date/dateTime strings without the general
    engine's walk of the expression (~25 µs; every Encounter, Claim and ExplanationOfBenefit
    has a Period): the comparison `_compare` makes, so the same answer (unknown across
    precisions). Anything else goes to the compiled expression."""
    period = focus[0] if len(focus) == 1 else None
    if type(period) is dict:
        start, end = period.get("start"), period.get("end")
        if type(start) is str and type(end) is str:
            try:
                a, b = _date_key(start), _date_key(end)
            except ValueError:  # not a calendar date: the general engine says so
                a = b = None
            if a is not None and b is not None:
                return [] if a[0] != b[0] else [a[1] <= b[1]]
    if not _per_1_general:
        _per_1_general.append(compile_invariant(PER_1))
    return _per_1_general[0](focus, env)


_ref_1_general: list[Node] = []
REF_1 = _GUARDED_TEXT["ref-1"][0]


def ref_1(focus: list[Any], env: dict[str, Any]) -> list[Any]:
    """ref-1 (a local reference `#id` names a contained resource of the root) without the
    general engine (every Synthea Claim and ExplanationOfBenefit has such references): the
    id among the string ids of the root's contained resources. Anything else (`#` alone, a
    reference that is not a string) goes to the compiled expression."""
    ref = focus[0] if len(focus) == 1 else None
    target = ref.get("reference") if type(ref) is dict else None
    if type(target) is str and len(target) > 1:
        if not target.startswith("#"):
            return [True]
        root = env["rootResource"]
        contained = root.get("contained") if type(root) is dict else None
        if contained is None or type(contained) is list:
            cid = target[1:]
            return [any(type(c) is dict and c.get("id") == cid and type(c.get("id")) is str
                        for c in contained or ())]  # fmt: skip
    if not _ref_1_general:
        _ref_1_general.append(compile_invariant(REF_1))
    return _ref_1_general[0](focus, env)


NATIVE: dict[tuple[str, str], Node] = {
    ("dom-3", DOM_3): dom_3, ("per-1", PER_1): per_1, ("ref-1", REF_1): ref_1}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Invariant:
    key: str
    severity: str
    human: str
    expression: str
    node: Node | None
    needs: str | None
    guard: Callable[[Any], bool] | None = None

    def check(self, value: Any, path: str, run: Run) -> None:
        if self.severity != "error" and not run.warnings:
            return
        if self.needs is not None and (type(value) is not dict or self.needs not in value):
            return
        if self.guard is not None and not self.guard(value):
            return
        if self.node is None:
            if run.warnings:
                run.issues.append(
                    _issue(
                        "information",
                        path,
                        f"{self.key} was not evaluated (no engine here supports {self.expression})",
                    )
                )
            return
        try:
            ok = holds(self.node, value, run.resource, run.root)
        except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
            run.issues.append(_issue("error", path, f"{self.key}: cannot be evaluated on this "
                                     f"content ({exc}): {self.expression}"))  # fmt: skip
            return
        if not ok:
            severity = "error" if self.severity == "error" else "warning"
            run.issues.append(_issue(severity, path, f"{self.key}: {self.human} "
                                     f"[{self.expression}]"))  # fmt: skip


def _issue(severity: str, path: str, text: str) -> Any:
    from fhir_server.validation.checker import Issue

    return Issue(severity, "invariant", path, text)


def _fhirpathpy(expression: str) -> Node | None:
    """fhirpathpy for what the fast compiler does not know (None if it cannot either)."""
    try:
        import fhirpathpy
        from fhirpathpy.models import models

        compiled = fhirpathpy.compile(expression, models["r4"])
    except Exception:  # noqa: BLE001 - any parse failure means "cannot evaluate"
        return None

    def node(focus: list[Any], env: dict[str, Any]) -> list[Any]:
        context = {"resource": env["resource"], "rootResource": env["rootResource"],
                   "context": env["context"]}  # fmt: skip
        try:
            return list(compiled(focus[0], context))
        except Exception as exc:  # noqa: BLE001 - reported as "cannot be evaluated"
            raise ValueError(f"fhirpathpy: {exc}") from None

    return node


@lru_cache(maxsize=4096)
def _compile(key: str, expression: str, choices: frozenset[str]) -> Node | None:
    native = NATIVE.get((key, expression))
    if native is not None:
        return native
    try:
        return compile_invariant(expression, choices)
    except Unsupported:
        pass
    if "resolve()" in expression or "conformsTo(" in expression or "memberOf(" in expression:
        node = None  # fhirpathpy has no resolve(), conformsTo() or memberOf() either
    else:
        node = _fhirpathpy(expression)
    if node is None:
        _UNSUPPORTED[key] = expression
    return node


def compile_constraints(constraints: Any, choices: frozenset[str]) -> list[Invariant]:
    out = []
    for key, severity, expression, human in constraints:
        if severity not in ("error", "warning"):
            continue
        node = _compile(key, expression, choices)
        guard = _GUARDS.get(key) if expression in _GUARDED_TEXT.get(key, ()) else None
        out.append(Invariant(key, severity, human, expression, node, _NEEDS.get(key), guard))
    return out


def unsupported() -> dict[str, str]:
    """Invariants compiled so far that no engine here evaluates (key -> expression)."""
    return dict(_UNSUPPORTED)
