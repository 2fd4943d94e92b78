"""The terminology operations as functions from their input parameters to the resource they
answer: `$expand` (ValueSet), `$validate-code` (ValueSet), `$lookup` and `$subsumes`
(CodeSystem), `$translate` (ConceptMap). HTTP (GET query or POST Parameters, instance or type
level) is `fhir_server.api.terminology`'s business; these see only `Params`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from fhir_server.clock import now_us, to_instant
from fhir_server.errors import FhirError, bad_request, not_found
from fhir_server.terminology.codesystem import CodeSystemIndex
from fhir_server.terminology.service import Code, NotExpandable, Terminology

DEFAULT_COUNT = 1000
MAX_COUNT = 10_000


@dataclass
class Params:
    """An operation's input: strings (a GET query or `value[x]` primitives) and complex
    values (`valueCoding`, `valueCodeableConcept`, a `resource`), by parameter name."""

    values: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, name: str, value: Any) -> None:
        self.values.setdefault(name, []).append(value)

    def text(self, name: str) -> str | None:
        found = self.values.get(name)
        if not found:
            return None
        value = found[0]
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int):
            return str(value)
        raise bad_request(f"Parameter '{name}' must be a simple value")

    def texts(self, name: str) -> list[str]:
        return [str(v) for v in self.values.get(name, []) if isinstance(v, str | int)]

    def obj(self, name: str) -> dict[str, Any] | None:
        found = self.values.get(name)
        if not found:
            return None
        if not isinstance(found[0], dict):
            raise bad_request(f"Parameter '{name}' must be a {name} (POST it in Parameters)")
        return found[0]

    def integer(self, name: str, default: int, top: int) -> int:
        text = self.text(name)
        if text is None:
            return default
        if not text.isdigit() or int(text) > top:
            raise bad_request(f"Parameter '{name}' must be a whole number from 0 to {top}")
        return int(text)

    def flag(self, name: str) -> bool:
        text = self.text(name)
        if text not in (None, "true", "false"):
            raise bad_request(f"Parameter '{name}' must be true or false")
        return text == "true"


def parameters(*parts: dict[str, Any] | None) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [p for p in parts if p]}


# -- ValueSet ----------------------------------------------------------------------------------


def _target_valueset(svc: Terminology, params: Params, res_id: str | None) -> dict[str, Any]:
    if res_id is not None:
        found = svc.resource_by_id("ValueSet", res_id)
        if found is None:
            raise not_found(f"ValueSet/{res_id} is not known")
        return found
    inline = params.obj("valueSet")
    if inline is not None:
        if inline.get("resourceType") != "ValueSet":
            raise bad_request("Parameter 'valueSet' must hold a ValueSet")
        return inline
    url = params.text("url") or params.text("context")
    if not url:
        raise bad_request("Name the ValueSet: its id in the path, 'url', or a 'valueSet'")
    return svc.valueset(url)


def expand(svc: Terminology, params: Params, res_id: str | None = None) -> dict[str, Any]:
    vs = _target_valueset(svc, params, res_id)
    try:
        exp = svc.expansion(vs)
    except NotExpandable as exc:
        raise FhirError(422, f"Cannot expand: {exc}", "not-supported") from None
    if exp.unknown:
        systems = ", ".join(sorted(exp.unknown))
        raise FhirError(
            422,
            f"Cannot expand ValueSet '{vs.get('url', '')}': it draws on code systems this "
            f"server does not hold ({systems})",
            "not-supported",
        )
    count = params.integer("count", DEFAULT_COUNT, MAX_COUNT)
    offset = params.integer("offset", 0, 10**9)
    text_filter = (params.text("filter") or "").strip().lower()
    codes = exp.codes
    if params.flag("activeOnly"):
        codes = [c for c in codes if not c.inactive]
    if text_filter:
        words = text_filter.split()
        codes = [c for c in codes if all(_matches(c, w) for w in words)]
    page = codes[offset : offset + count]
    used = [{"name": "offset", "valueInteger": offset}, {"name": "count", "valueInteger": count}]
    if text_filter:
        used.append({"name": "filter", "valueString": params.text("filter") or ""})
    expansion: dict[str, Any] = {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": to_instant(now_us()),
        "total": len(codes),
        "offset": offset,
        "parameter": used,
        "contains": [_contains(c) for c in page],
    }
    out: dict[str, Any] = {
        k: vs[k] for k in ("id", "url", "version", "name", "title", "status") if k in vs
    }
    return {"resourceType": "ValueSet", **out, "status": vs.get("status", "active"),
            "expansion": expansion}  # fmt: skip


def _matches(code: Code, word: str) -> bool:
    return word in code.code.lower() or word in (code.display or "").lower()


def _contains(code: Code) -> dict[str, Any]:
    item: dict[str, Any] = {"system": code.system}
    if code.version:
        item["version"] = code.version
    if code.abstract:
        item["abstract"] = True
    if code.inactive:
        item["inactive"] = True
    item["code"] = code.code
    if code.display:
        item["display"] = code.display
    return item


def _codings(params: Params, code_name: str = "code") -> list[dict[str, Any]]:
    """The codings to check: `coding`, the codings of `codeableConcept`, or system + code."""
    coding = params.obj("coding")
    if coding is not None:
        return [coding]
    concept = params.obj("codeableConcept")
    if concept is not None:
        found = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
        if not found:
            raise bad_request("The codeableConcept holds no coding")
        return found
    code = params.text(code_name)
    if not code:
        raise bad_request("Give a 'code' (with 'system'), a 'coding' or a 'codeableConcept'")
    out: dict[str, Any] = {"code": code}
    system = params.text("system")
    if system:
        out["system"] = system
    display = params.text("display")
    if display:
        out["display"] = display
    return [out]


def validate_code(svc: Terminology, params: Params, res_id: str | None = None) -> dict[str, Any]:
    vs = _target_valueset(svc, params, res_id)
    label = vs.get("url") or vs.get("id") or "the ValueSet"
    try:
        exp = svc.expansion(vs)
    except NotExpandable as exc:
        return parameters(_bool("result", False), _str("message", str(exc)))
    problems: list[str] = []
    for coding in _codings(params):
        system, code = coding.get("system"), coding.get("code")
        if not isinstance(code, str) or not code:
            raise bad_request("A coding without a code cannot be validated")
        found = _member(svc, exp, system, code)
        if found is None:
            if system in exp.unknown or (system is None and exp.unknown):
                problems.append(f"The code system '{system}' is not known to this server; "
                                f"cannot tell whether '{code}' is in {label}")  # fmt: skip
            else:
                where = f"{system}|{code}" if system else code
                problems.append(f"The code '{where}' is not in the value set {label}")
            continue
        display = found.display or _display(svc, found.system, found.code)
        given = coding.get("display")
        message = None
        if given and display and given.strip().lower() != display.lower():
            message = f"The display '{given}' is not the display of '{code}' ('{display}')"
        return parameters(
            _bool("result", True),
            _str("message", message) if message else None,
            _str("display", display) if display else None,
        )
    return parameters(_bool("result", False), _str("message", "; ".join(problems)))


def _member(svc: Terminology, exp: Any, system: str | None, code: str) -> Code | None:
    if system is None:
        found = exp.by_code.get(code)
        return found[0] if found else None
    hit: Code | None = exp.members.get((system, code))
    if hit is None:
        cs = svc.codesystem(system)
        if cs is not None and not cs.case_sensitive:
            concept = cs.get(code)
            if concept is not None:
                hit = exp.members.get((system, concept.code))
    return hit


def _display(svc: Terminology, system: str, code: str) -> str | None:
    cs = svc.codesystem(system)
    concept = cs.get(code) if cs else None
    return concept.display if concept else None


# -- CodeSystem --------------------------------------------------------------------------------


def _codesystem(svc: Terminology, params: Params, res_id: str | None, system: str | None
                ) -> CodeSystemIndex:  # fmt: skip
    if res_id is not None:
        resource = svc.resource_by_id("CodeSystem", res_id)
        if resource is None:
            raise not_found(f"CodeSystem/{res_id} is not known")
        found = svc.codesystem(resource.get("url", ""))
        if found is None or found.resource is not resource:
            found = CodeSystemIndex(resource)
        return found
    if not system:
        raise bad_request("Name the code system: 'system' (or a coding with one)")
    cs = svc.codesystem(system)
    if cs is None:
        raise not_found(f"The code system '{system}' is not known to this server")
    return cs


def lookup(svc: Terminology, params: Params, res_id: str | None = None) -> dict[str, Any]:
    coding = params.obj("coding") or {"system": params.text("system"), "code": params.text("code")}
    code = coding.get("code")
    if not code:
        raise bad_request("$lookup needs a 'code' (with 'system') or a 'coding'")
    cs = _codesystem(svc, params, res_id, coding.get("system"))
    concept = cs.get(code)
    if concept is None:
        raise not_found(f"The code '{code}' is not defined by {cs.url}")
    wanted = set(params.texts("property"))
    parts: list[dict[str, Any] | None] = [
        _str("name", cs.name),
        _str("version", cs.version) if cs.version else None,
        _str("display", concept.display or concept.code),
    ]
    for d in concept.designations:
        sub = [{"name": "value", "valueString": d.get("value", "")}]
        if d.get("language"):
            sub.insert(0, {"name": "language", "valueCode": d["language"]})
        if d.get("use"):
            sub.insert(-1, {"name": "use", "valueCoding": d["use"]})
        parts.append({"name": "designation", "part": sub})
    props: list[tuple[str, dict[str, Any]]] = []
    if concept.definition:
        props.append(("definition", {"valueString": concept.definition}))
    for parent in concept.parents:
        props.append(("parent", {"valueCode": parent}))
    for child in concept.children:
        props.append(("child", {"valueCode": child}))
    for p in concept.properties:
        if p.get("code") == "parent":
            continue
        value = {k: v for k, v in p.items() if k.startswith("value")}
        if value:
            props.append((p["code"], value))
    for name, value in props:
        if not wanted or name in wanted:
            pair = [{"name": "code", "valueCode": name}, {"name": "value", **value}]
            parts.append({"name": "property", "part": pair})
    return parameters(*parts)


def subsumes(svc: Terminology, params: Params, res_id: str | None = None) -> dict[str, Any]:
    a = params.obj("codingA") or {"system": params.text("system"), "code": params.text("codeA")}
    b = params.obj("codingB") or {"system": params.text("system"), "code": params.text("codeB")}
    if not a.get("code") or not b.get("code"):
        raise bad_request("$subsumes needs 'codeA' and 'codeB' (with 'system'), or two codings")
    if a.get("system") and b.get("system") and a["system"] != b["system"]:
        raise bad_request("$subsumes compares two codes of one code system")
    cs = _codesystem(svc, params, res_id, a.get("system") or b.get("system"))
    codes = []
    for given in (a["code"], b["code"]):
        concept = cs.get(given)
        if concept is None:
            raise bad_request(f"The code '{given}' is not defined by {cs.url}")
        codes.append(concept.code)
    return parameters({"name": "outcome", "valueCode": cs.subsumes(codes[0], codes[1])})


# -- ConceptMap --------------------------------------------------------------------------------


def translate(svc: Terminology, params: Params, res_id: str | None = None) -> dict[str, Any]:
    codings = _codings(params)
    reverse = params.flag("reverse")
    target_system = params.text("targetsystem")
    target_vs, source_vs = params.text("target"), params.text("source")
    if res_id is not None:
        found = svc.resource_by_id("ConceptMap", res_id)
        if found is None:
            raise not_found(f"ConceptMap/{res_id} is not known")
        maps = [found]
    elif params.text("url"):
        found = svc.resource("ConceptMap", params.text("url") or "")
        if found is None:
            raise not_found(f"Unknown ConceptMap '{params.text('url')}'")
        maps = [found]
    else:
        maps = [
            m for m in svc.concept_maps()
            if _scope_fits(m, source_vs, target_vs, reverse)
        ]  # fmt: skip
    matches: list[dict[str, Any]] = []
    for cm in maps:
        for coding in codings:
            for equivalence, concept in _map(cm, coding, reverse, target_system):
                matches.append({"name": "match", "part": [
                    {"name": "equivalence", "valueCode": equivalence},
                    *([{"name": "concept", "valueCoding": concept}] if concept else []),
                    {"name": "source", "valueUri": cm.get("url", "")},
                ]})  # fmt: skip
    positive = any(
        p["valueCode"] not in ("unmatched", "disjoint")
        for m in matches
        for p in m["part"]
        if p["name"] == "equivalence"
    )
    message = (
        None
        if positive
        else "No mapping found for "
        + ", ".join(f"{c.get('system', '')}|{c.get('code', '')}" for c in codings)
    )
    return parameters(_bool("result", positive), _str("message", message) if message else None,
                      *matches)  # fmt: skip


def _scope_fits(cm: dict[str, Any], source: str | None, target: str | None, reverse: bool) -> bool:
    src = cm.get("sourceUri") or cm.get("sourceCanonical")
    tgt = cm.get("targetUri") or cm.get("targetCanonical")
    if reverse:
        src, tgt = tgt, src
    return (source is None or source == src) and (target is None or target == tgt)


def _map(cm: dict[str, Any], coding: dict[str, Any], reverse: bool, target_system: str | None
         ) -> list[tuple[str, dict[str, Any] | None]]:  # fmt: skip
    system, code = coding.get("system"), coding.get("code")
    out: list[tuple[str, dict[str, Any] | None]] = []
    for group in cm.get("group") or []:
        source, target = group.get("source"), group.get("target")
        if reverse:
            source, target = target, source
        if system and source and system != source:
            continue
        if target_system and target != target_system:
            continue
        found = False
        for element in group.get("element") or []:
            if not reverse:
                if element.get("code") != code:
                    continue
                for t in element.get("target") or []:
                    found = True
                    concept = {"system": target, "code": t["code"]} if t.get("code") else None
                    if concept and t.get("display"):
                        concept["display"] = t["display"]
                    out.append((t.get("equivalence", "equivalent"), concept))
            else:
                for t in element.get("target") or []:
                    if t.get("code") != code:
                        continue
                    found = True
                    concept = {"system": target, "code": element.get("code")}
                    if element.get("display"):
                        concept["display"] = element["display"]
                    out.append((_reverse(t.get("equivalence", "equivalent")), concept))
        if not found and not reverse and group.get("unmapped") and code:
            unmapped = group["unmapped"]
            if unmapped.get("mode") == "provided":
                out.append(("equal", {"system": target, "code": code}))
            elif unmapped.get("mode") == "fixed" and unmapped.get("code"):
                concept = {"system": target, "code": unmapped["code"]}
                if unmapped.get("display"):
                    concept["display"] = unmapped["display"]
                out.append(("equivalent", concept))
    return out


_REVERSED = {"wider": "narrower", "narrower": "wider", "subsumes": "specializes",
             "specializes": "subsumes"}  # fmt: skip


def _reverse(equivalence: str) -> str:
    return _REVERSED.get(equivalence, equivalence)


def _bool(name: str, value: bool) -> dict[str, Any]:
    return {"name": name, "valueBoolean": value}


def _str(name: str, value: str | None) -> dict[str, Any]:
    return {"name": name, "valueString": value or ""}
