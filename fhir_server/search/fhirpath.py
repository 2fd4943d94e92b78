"""A compiler for the FHIRPath subset that the standard FHIR R4 search expressions use.

Why not a full FHIRPath engine: index extraction runs on every write, and the 1,300 standard
expressions use only dotted paths, unions, parentheses, `ofType()`/`as` on choice elements,
`where(resolve() is T)`, `where(child='literal')`, `[n]`, `exists()`, `and` and `!=`. Each
expression is parsed once into nested closures over plain JSON (dicts, lists, primitives), so
evaluation does no parsing, no regex and no model construction.

Semantics kept from FHIRPath: every step works on a collection (a list); lists in the resource
flatten; a missing element is the empty collection; `A | B` is the union without duplicates.
Choice elements (`value[x]`) are stored in JSON as `valueQuantity` etc., so `value.ofType(T)` reads
the key `value` + T, and a bare `value` reads whichever `valueXxx` key is present.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from typing import Any

Node = Callable[[list[Any]], list[Any]]
Compiled = Callable[[dict[str, Any]], list[Any]]


class UnsupportedExpression(ValueError):
    """The expression uses FHIRPath outside the supported subset (or is not FHIRPath at all)."""


# Capitalised FHIR data type names: the suffixes a choice element `name[x]` takes in JSON.
CHOICE_SUFFIXES = frozenset(
    {
        "Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal", "Id",
        "Instant", "Integer", "Markdown", "Oid", "PositiveInt", "String", "Time", "UnsignedInt",
        "Uri", "Url", "Uuid", "Address", "Age", "Annotation", "Attachment", "CodeableConcept",
        "Coding", "ContactPoint", "Count", "Distance", "Duration", "HumanName", "Identifier",
        "Money", "Period", "Quantity", "Range", "Ratio", "Reference", "SampledData", "Signature",
        "Timing", "ContactDetail", "Contributor", "DataRequirement", "Expression",
        "ParameterDefinition", "RelatedArtifact", "TriggerDefinition", "UsageContext", "Dosage",
        "Meta",
    }
)  # fmt: skip

# Element names that are choice elements somewhere in FHIR R4/R4B (collected from the
# fhir.resources models). Only for these does a missing key trigger the `nameXxx` scan.
CHOICE_ELEMENTS = frozenset(
    {
        "abatement", "additive", "age", "allowed", "amount", "answer", "asNeeded", "author",
        "born", "bounds", "characteristic", "chargeItem", "citeAs", "code", "collected",
        "concentration", "content", "created", "date", "deceased", "defaultValue", "definition",
        "detail", "diagnosis", "dose", "doseNumber", "due", "duration", "effective", "entity",
        "event", "example", "fastingStatus", "fixed", "identified", "indication", "item",
        "legallyBinding", "location", "manufacturer", "maxValue", "medication", "minValue",
        "minimumVolume", "module", "multipleBirth", "name", "occurred", "occurrence", "offset",
        "onset", "participantEffective", "pattern", "performed", "period", "presentation",
        "probability", "procedure", "product", "quantity", "rate", "reported", "scheduled",
        "seriesDoses", "serviced", "source", "start", "statusReason", "strength",
        "studyEffective", "subject", "substance", "substanceDefinition", "target", "time",
        "timing", "topic", "used", "value", "when",
    }
)  # fmt: skip

# FHIR R4 data types that specialise another (StructureDefinition.baseDefinition), by suffix.
_SPECIALISATIONS: dict[str, tuple[str, ...]] = {
    "Uri": ("Url", "Canonical", "Oid", "Uuid"),
    "String": ("Code", "Id", "Markdown"),
    "Integer": ("PositiveInt", "UnsignedInt"),
    "Quantity": ("Age", "Count", "Distance", "Duration"),
}

_PRIMITIVE_PY: dict[str, tuple[type, ...]] = {
    "string": (str,), "code": (str,), "id": (str,), "uri": (str,), "url": (str,),
    "canonical": (str,), "markdown": (str,), "date": (str,), "dateTime": (str,),
    "instant": (str,), "time": (str,), "boolean": (bool,), "integer": (int,),
    "decimal": (int, float, Decimal),  # FhirDecimal: a decimal keeping its text
}  # fmt: skip

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+(?:\.\d+)?)|(?P<op>!=|[.()\[\]|=,])"
    r"|(?P<id>[A-Za-z_$][A-Za-z0-9_]*|`[^`]+`))"
)

# --- parsing: expression text -> small AST of tuples -------------------------------------

Ast = tuple[Any, ...]


def _tokenize(text: str) -> list[tuple[str, str]]:
    pos = 0
    out: list[tuple[str, str]] = []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise UnsupportedExpression(f"cannot tokenize at {text[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "id" and value.startswith("`"):
            value = value[1:-1]
        out.append((kind, value))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over the subset; precedence follows the FHIRPath spec."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self, value: str | None = None) -> bool:
        if self.i >= len(self.tokens):
            return False
        return value is None or self.tokens[self.i][1] == value

    def take(self, value: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.tokens) or (value is not None and self.tokens[self.i][1] != value):
            found = self.tokens[self.i][1] if self.i < len(self.tokens) else "end"
            raise UnsupportedExpression(f"expected {value or 'token'}, found {found!r}")
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def parse(self) -> Ast:
        ast = self.boolean()
        if self.i != len(self.tokens):
            raise UnsupportedExpression(f"unexpected {self.tokens[self.i][1]!r}")
        return ast

    def boolean(self) -> Ast:
        left = self.equality()
        while self.peek("and") or self.peek("or"):
            op = self.take()[1]
            left = (op, left, self.equality())
        return left

    def equality(self) -> Ast:
        left = self.typed()
        if self.peek("=") or self.peek("!="):
            op = self.take()[1]
            left = ("eq" if op == "=" else "ne", left, self.typed())
        return left

    def typed(self) -> Ast:
        left = self.union()
        if self.peek("as") or self.peek("is"):
            op = self.take()[1]
            left = (op, left, self.type_name())
        return left

    def type_name(self) -> str:
        kind, name = self.take()
        if kind != "id":
            raise UnsupportedExpression(f"expected a type name, found {name!r}")
        if self.peek(".") and name == "FHIR":
            self.take(".")
            return self.type_name()
        return name

    def union(self) -> Ast:
        parts = [self.postfix()]
        while self.peek("|"):
            self.take("|")
            parts.append(self.postfix())
        return parts[0] if len(parts) == 1 else ("union", tuple(parts))

    def postfix(self) -> Ast:
        node = self.primary()
        while True:
            if self.peek("."):
                self.take(".")
                node = self.invocation(node)
            elif self.peek("["):
                self.take("[")
                kind, num = self.take()
                if kind != "num" or "." in num:
                    raise UnsupportedExpression("only integer indexes are supported")
                self.take("]")
                node = ("index", node, int(num))
            else:
                return node

    def primary(self) -> Ast:
        kind, value = self.tokens[self.i] if self.i < len(self.tokens) else ("", "")
        if value == "(":
            self.take("(")
            inner = self.boolean()
            self.take(")")
            return inner
        if kind == "str":
            self.take()
            return ("lit", value[1:-1].replace("\\'", "'"))
        if kind == "num":
            self.take()
            return ("lit", Decimal(value) if "." in value else int(value))
        if value in ("true", "false"):
            self.take()
            return ("lit", value == "true")
        if kind == "id":
            # A capitalised leading name is the resource type (Patient.name): the root itself.
            if value[0].isupper() and not self._is_call():
                self.take()
                return ("this",)
            return self.invocation(("this",))
        raise UnsupportedExpression(f"unexpected {value or 'end of expression'!r}")

    def _is_call(self) -> bool:
        return self.i + 1 < len(self.tokens) and self.tokens[self.i + 1][1] == "("

    def invocation(self, source: Ast) -> Ast:
        kind, name = self.take()
        if kind != "id":
            raise UnsupportedExpression(f"expected a name, found {name!r}")
        if not self.peek("("):
            return ("member", source, name)
        self.take("(")
        args: list[Ast] = []
        if name in ("ofType", "as", "is"):
            args.append(("type", self.type_name()))
        elif not self.peek(")"):
            args.append(self.boolean())
            while self.peek(","):
                self.take(",")
                args.append(self.boolean())
        self.take(")")
        return ("call", source, name, tuple(args))


# --- code generation: AST -> closures ----------------------------------------------------


def _this(focus: list[Any]) -> list[Any]:
    return focus


def _member(source: Node, name: str) -> Node:
    choice = name in CHOICE_ELEMENTS
    n = len(name)

    def member(focus: list[Any]) -> list[Any]:
        out: list[Any] = []
        for item in source(focus):
            if type(item) is not dict:
                continue
            v = item.get(name)
            if v is None:
                if not choice:
                    continue
                for key in item:
                    if key.startswith(name) and key[n:] in CHOICE_SUFFIXES:
                        v = item[key]
                        break
                else:
                    continue
            if type(v) is list:
                out.extend(v)
            else:
                out.append(v)
        return out

    return member


def _typed_member(source: Node, name: str, type_name: str) -> Node:
    """`name.ofType(T)` / `name as T` on a choice element: read key name + T (capitalised), and
    name + S for every FHIR specialisation S of T (FHIRPath: "of the given type or a subclass
    thereof"; `source.ofType(uri)` also finds `sourceCanonical`)."""
    suffix = type_name[0].upper() + type_name[1:]
    keys = [name + s for s in (suffix, *_SPECIALISATIONS.get(suffix, ()))]

    def typed(focus: list[Any]) -> list[Any]:
        out: list[Any] = []
        for item in source(focus):
            if type(item) is dict:
                for key in keys:
                    v = item.get(key)
                    if v is None:
                        continue
                    if type(v) is list:
                        out.extend(v)
                    else:
                        out.append(v)
        return out

    return typed


def reference_type(ref: Any) -> str | None:
    """The resource type a Reference points to: from `reference` ('Type/id', URL), else `type`."""
    if type(ref) is not dict:
        return None
    s = ref.get("reference")
    if type(s) is str and s and not s.startswith("#") and not s.startswith("urn:"):
        parts = s.split("/")
        if len(parts) >= 4 and parts[-2] == "_history":
            parts = parts[:-2]
        if len(parts) >= 2 and parts[-2][:1].isupper():
            return parts[-2]
    t = ref.get("type")
    return t if type(t) is str else None


def _where(source: Node, criteria: Ast) -> Node:
    # where(resolve() is T): keep References to T, decided from the reference string.
    if criteria[0] == "is" and criteria[1] == ("call", ("this",), "resolve", ()):
        target = criteria[2]

        def where_type(focus: list[Any]) -> list[Any]:
            return [r for r in source(focus) if reference_type(r) == target]

        return where_type
    # where(child = 'literal'): a plain dict lookup per item.
    if (
        criteria[0] == "eq"
        and criteria[1][0] == "member"
        and criteria[1][1] == ("this",)
        and criteria[2][0] == "lit"
    ):
        child, literal = criteria[1][2], criteria[2][1]

        def where_eq(focus: list[Any]) -> list[Any]:
            return [i for i in source(focus) if type(i) is dict and i.get(child) == literal]

        return where_eq
    test = _gen(criteria)

    def where(focus: list[Any]) -> list[Any]:
        return [i for i in source(focus) if test([i]) == [True]]

    return where


def _type_filter(source: Node, type_name: str) -> Node:
    """ofType()/as on something that is not a choice element: filter primitives by JSON type."""
    kinds = _PRIMITIVE_PY.get(type_name)
    if kinds is None:
        raise UnsupportedExpression(f"ofType({type_name}) on a non-choice element")

    def filt(focus: list[Any]) -> list[Any]:
        return [
            v
            for v in source(focus)
            if isinstance(v, kinds) and not (bool not in kinds and type(v) is bool)
        ]

    return filt


def _call(source_ast: Ast, name: str, args: tuple[Ast, ...]) -> Node:
    if name in ("ofType", "as") and len(args) == 1:
        type_name = args[0][1]
        if source_ast[0] == "member":
            return _typed_member(_gen(source_ast[1]), source_ast[2], type_name)
        return _type_filter(_gen(source_ast), type_name)
    source = _gen(source_ast)
    if name == "where" and len(args) == 1:
        return _where(source, args[0])
    if name == "exists" and not args:
        return lambda focus: [bool(source(focus))]
    if name == "empty" and not args:
        return lambda focus: [not source(focus)]
    if name == "first" and not args:
        return lambda focus: source(focus)[:1]
    if name == "not" and not args:

        def not_(focus: list[Any]) -> list[Any]:
            v = source(focus)
            return [not v[0]] if len(v) == 1 and type(v[0]) is bool else []

        return not_
    raise UnsupportedExpression(f"function {name}() is not supported")


def _union(parts: list[Node]) -> Node:
    def union(focus: list[Any]) -> list[Any]:
        out: list[Any] = []
        for part in parts:
            for v in part(focus):
                if v not in out:
                    out.append(v)
        return out

    return union


def _equality(left: Node, right: Node, negate: bool) -> Node:
    def eq(focus: list[Any]) -> list[Any]:
        a, b = left(focus), right(focus)
        if not a or not b:
            return []
        return [(a != b) if negate else (a == b)]

    return eq


def _boolean(op: str, left: Node, right: Node) -> Node:
    """Three-valued `and` / `or` over singleton booleans, as FHIRPath defines them."""

    def single(v: list[Any]) -> bool | None:
        if len(v) == 1 and type(v[0]) is bool:
            return bool(v[0])
        return True if v else None

    def logic(focus: list[Any]) -> list[Any]:
        a, b = single(left(focus)), single(right(focus))
        if op == "and":
            if a is False or b is False:
                return [False]
            return [True] if a and b else []
        if a or b:
            return [True]
        return [False] if a is False and b is False else []

    return logic


def _gen(ast: Ast) -> Node:
    kind = ast[0]
    if kind == "this":
        return _this
    if kind == "member":
        return _member(_gen(ast[1]), ast[2])
    if kind == "call":
        return _call(ast[1], ast[2], ast[3])
    if kind == "as":
        return _call(ast[1], "as", (("type", ast[2]),))
    if kind == "union":
        return _union([_gen(p) for p in ast[1]])
    if kind == "index":
        source, n = _gen(ast[1]), ast[2]
        return lambda focus: source(focus)[n : n + 1]
    if kind == "lit":
        value = [ast[1]]
        return lambda focus: value
    if kind in ("eq", "ne"):
        return _equality(_gen(ast[1]), _gen(ast[2]), kind == "ne")
    if kind in ("and", "or"):
        return _boolean(kind, _gen(ast[1]), _gen(ast[2]))
    raise UnsupportedExpression(f"{kind} is not supported here")


@lru_cache(maxsize=4096)
def compile_path(expression: str) -> Compiled:
    """Compile `expression` once into `(resource) -> values`; raise UnsupportedExpression."""
    if not expression or not expression.strip():
        raise UnsupportedExpression("empty expression")
    node = _gen(_Parser(expression).parse())

    def evaluate(resource: dict[str, Any]) -> list[Any]:
        return node([resource])

    return evaluate


@lru_cache(maxsize=4096)
def root_keys(expression: str) -> frozenset[str] | None:
    """The top-level JSON keys `expression` starts from: on a resource with none of them it
    evaluates to the empty collection, so extraction need not run it (most of a type's
    parameters name elements a given resource does not have). None when that cannot be
    said (the expression starts at the resource itself, or is true of an empty input:
    `exists()`, `empty()`, `not()`, comparisons, `and`/`or`)."""
    try:
        return _root_keys(_Parser(expression).parse())
    except UnsupportedExpression:
        return None


def _root_keys(ast: Ast) -> frozenset[str] | None:
    kind = ast[0]
    if kind == "member":
        if ast[1] == ("this",):
            return _member_keys(ast[2])
        return _root_keys(ast[1])
    if kind == "as":
        return _root_keys(("call", ast[1], "as", (("type", ast[2]),)))
    if kind == "call":
        source, name, args = ast[1], ast[2], ast[3]
        if name in ("ofType", "as") and len(args) == 1:
            if source[0] == "member" and source[1] == ("this",):  # a choice element's type
                suffix = args[0][1][0].upper() + args[0][1][1:]
                suffixes = (suffix, *_SPECIALISATIONS.get(suffix, ()))
                return frozenset(source[2] + s for s in suffixes)
            return _root_keys(source)
        if (name == "where" and len(args) == 1) or (name == "first" and not args):
            return _root_keys(source)  # a subset of their source
        return None
    if kind == "index":
        return _root_keys(ast[1])
    if kind == "union":
        keys: set[str] = set()
        for part in ast[1]:
            found = _root_keys(part)
            if found is None:
                return None
            keys |= found
        return frozenset(keys)
    return None


def _member_keys(name: str) -> frozenset[str]:
    """The keys `_member` may read for `name` (a choice element: also `name` + any type)."""
    if name in CHOICE_ELEMENTS:
        return frozenset({name, *(name + s for s in CHOICE_SUFFIXES)})
    return frozenset({name})


def evaluate(expression: str, resource: dict[str, Any]) -> list[Any]:
    """Convenience for tests and one-off use: compile (cached) and run."""
    return compile_path(expression)(resource)
