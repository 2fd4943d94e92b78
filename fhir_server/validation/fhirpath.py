"""A FHIRPath compiler for the invariants of the R4 StructureDefinitions (and profiles').

Why not fhirpathpy at run time: it interprets its parse tree on every call, ~200 µs per
invariant here, which alone would halve ingest throughput (every Period, Quantity and
Reference carries one). Why not the search compiler (`fhir_server.search.fhirpath`): it
compiles only the dotted-path subset search expressions use. This one compiles the grammar
the 211 error invariants of R4 and US Core use (operators with FHIRPath's precedence and
three-valued logic, `where`/`all`/`select`/`exists`/`iif`, string and collection functions,
`is`/`as`/`ofType`, `%resource`, `%rootResource`, `%context`, `%ucum`) into closures over plain
JSON. An expression outside it raises `Unsupported`; the invariant registry then tries
fhirpathpy and lists what neither can evaluate (`invariants.unsupported()`).

Simplifications, each lenient (never refuses what the specification accepts):
- a primitive's extensions (`_name`) are not reachable from FHIRPath;
- the type of a primitive for `is`/`as`/`ofType` is judged from its JSON value (a string is a
  `dateTime` when it has that format), not from its element definition;
- a comparison of dates of different precision is empty (as FHIRPath says), so it never fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from xml.parsers import expat

Env = dict[str, Any]
Node = Callable[[list[Any], Env], list[Any]]

UCUM = "http://unitsofmeasure.org"
CONSTANTS = {"ucum": UCUM, "sct": "http://snomed.info/sct", "loinc": "http://loinc.org"}


class Unsupported(ValueError):
    """The expression uses FHIRPath this compiler does not implement."""


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+(?:\.\d+)?)"
    r"|(?P<op>!=|!~|<=|>=|[.()\[\],|=~<>+\-*/&])"
    r"|(?P<var>%(?:[A-Za-z_][A-Za-z0-9_]*|`[^`]+`|'[^']+'))"
    r"|(?P<id>\$?[A-Za-z_][A-Za-z0-9_]*|`[^`]+`))"
)
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n",
            "r": "\r", "t": "\t"}  # fmt: skip


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), text)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise Unsupported(f"cannot read FHIRPath at {text[pos : pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
    return out


# -- values --------------------------------------------------------------------------------


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float | Decimal) and not isinstance(v, bool)


def _num(v: Any) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(repr(v) if isinstance(v, float) else v)


def _eq(a: Any, b: Any) -> bool:
    if _is_num(a) and _is_num(b):
        return _num(a) == _num(b)
    if type(a) is not type(b) and not (isinstance(a, str) and isinstance(b, str)):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_eq(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _key(v: Any) -> Any:
    """A hashable key equal for values `_eq` calls equal (numbers by value)."""
    if isinstance(v, bool):
        return ("b", v)
    if _is_num(v):
        return ("n", _num(v).normalize())
    if isinstance(v, str):
        return ("s", v)
    if isinstance(v, dict):
        return ("d", tuple(sorted((k, _key(x)) for k, x in v.items())))
    if isinstance(v, list):
        return ("l", tuple(_key(x) for x in v))
    return ("o", repr(v))


def _distinct(items: list[Any]) -> list[Any]:
    if len(items) < 2:
        return items
    seen: set[Any] = set()
    out: list[Any] = []
    for x in items:
        k = _key(x)
        if k not in seen:
            seen.add(k)
            out.append(x)
    return out


def _truth(items: list[Any]) -> bool | None:
    """A collection in a boolean context: empty is unknown, one item is its value."""
    if not items:
        return None
    if len(items) > 1:
        raise ValueError("a collection of more than one item where a boolean was expected")
    v = items[0]
    return v if isinstance(v, bool) else True


def _single(items: list[Any]) -> Any:
    if len(items) > 1:
        raise ValueError("a collection of more than one item where one was expected")
    return items[0] if items else None


_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?"
                   r"(Z|[+-]\d{2}:\d{2})?)?)?)?$")  # fmt: skip


_NO_FRACTION = Decimal("0")


@lru_cache(maxsize=4096)
def _date_key(s: str) -> tuple[int, tuple[Any, ...]] | None:
    """(precision, comparable tuple in UTC) of a date/dateTime string, None if not one.
    Memoized (~5 µs each): a Bundle repeats its dates (an encounter's period is its claims'
    and its observations' too), and per-1 compares every Period's two."""
    m = _DATE.match(s)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    if hh is None:
        parts = tuple(int(p) for p in (y, mo, d) if p is not None)
        return len(parts), parts
    dt = datetime(int(y), int(mo), int(d), int(hh), int(mi), int(ss or 0))
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        dt -= sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
    return 6, (dt, Decimal(frac) if frac else _NO_FRACTION)


def _compare(a: Any, b: Any) -> int | None:
    if _is_num(a) and _is_num(b):
        x, y = _num(a), _num(b)
        return (x > y) - (x < y)
    if isinstance(a, str) and isinstance(b, str):
        ka, kb = _date_key(a), _date_key(b)
        if ka is not None and kb is not None:
            if ka[0] != kb[0]:
                return None  # different precision: unknown
            return (ka[1] > kb[1]) - (ka[1] < kb[1])
        return (a > b) - (a < b)
    return None


_PRIMITIVE_FORMS: dict[str, re.Pattern[str]] = {}


def set_primitive_forms(forms: dict[str, re.Pattern[str]]) -> None:
    """The primitive types' regexes (from the generated definitions), for `is`/`as`."""
    _PRIMITIVE_FORMS.update(forms)


_STRINGISH = {"string", "code", "id", "uri", "url", "canonical", "markdown", "oid", "uuid",
              "base64Binary", "date", "dateTime", "instant", "time", "xhtml"}  # fmt: skip
_RESOURCE_BASES = {"Resource", "DomainResource"}


def _is_type(v: Any, name: str) -> bool:
    name = name.split(".")[-1].strip("`")
    if isinstance(v, dict):
        rt = v.get("resourceType")
        if isinstance(rt, str):
            return rt == name or name in _RESOURCE_BASES
        return False  # complex data types are not told apart in plain JSON
    low = name[0].lower() + name[1:]
    if isinstance(v, bool):
        return low == "boolean"
    if isinstance(v, int) and not isinstance(v, bool):
        return low in ("integer", "decimal", "positiveInt", "unsignedInt")
    if _is_num(v):
        return low == "decimal"
    if isinstance(v, str) and low in _STRINGISH:
        form = _PRIMITIVE_FORMS.get(low)
        return form is None or form.fullmatch(v) is not None
    return False


# -- the compiler --------------------------------------------------------------------------


def _this(focus: list[Any], env: Env) -> list[Any]:
    return focus


class _Compiler:
    def __init__(self, text: str, choices: frozenset[str]) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.choices = choices

    def peek(self, value: str | None = None) -> bool:
        if self.i >= len(self.toks):
            return False
        return value is None or self.toks[self.i][1] == value

    def take(self, value: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.toks) or (value is not None and self.toks[self.i][1] != value):
            raise Unsupported(f"expected {value!r}")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def compile(self) -> Node:
        node = self.expr(0)
        if self.i != len(self.toks):
            raise Unsupported(f"unexpected {self.toks[self.i][1]!r}")
        return node

    # precedence, lowest first
    LEVELS: tuple[tuple[str, ...], ...] = (
        ("implies",), ("or", "xor"), ("and",), ("in", "contains"), ("=", "~", "!=", "!~"),
        ("<", ">", "<=", ">="), ("|",), ("is", "as"), ("+", "-", "&"), ("*", "/", "div", "mod"),
    )  # fmt: skip

    def expr(self, level: int) -> Node:
        if level == len(self.LEVELS):
            return self.unary()
        left = self.expr(level + 1)
        ops = self.LEVELS[level]
        while (
            self.i < len(self.toks)
            and self.toks[self.i][1] in ops
            and (self.toks[self.i][0] in ("op", "id"))
        ):
            op = self.take()[1]
            if op in ("is", "as"):
                tname = self.type_name()
                left = _type_op(op, left, tname)
                continue
            right = self.expr(level + 1)
            left = _binary(op, left, right)
        return left

    def type_name(self) -> str:
        name = self.take()[1]
        while self.peek("."):
            self.take(".")
            name += "." + self.take()[1]
        return name

    def unary(self) -> Node:
        if self.peek("-") or self.peek("+"):
            sign = self.take()[1]
            inner = self.unary()
            if sign == "+":
                return inner

            def neg(focus: list[Any], env: Env) -> list[Any]:
                return [-v for v in inner(focus, env) if _is_num(v)]

            return neg
        return self.postfix(self.term())

    def postfix(self, node: Node) -> Node:
        while True:
            if self.peek("."):
                self.take(".")
                node = self.invocation(node)
            elif self.peek("["):
                self.take("[")
                index = self.expr(0)
                self.take("]")
                node = _index(node, index)
            else:
                return node

    def term(self) -> Node:
        kind, text = self.take()
        if kind == "str":
            value = _unescape(text[1:-1])
            return lambda focus, env: [value]
        if kind == "num":
            num: Any = Decimal(text) if "." in text else int(text)
            return lambda focus, env: [num]
        if kind == "var":
            name = text[1:].strip("`'")
            if name in CONSTANTS:
                const = CONSTANTS[name]
                return lambda focus, env: [const]
            if name in ("resource", "rootResource", "context"):
                return lambda focus, env: [env[name]]
            raise Unsupported(f"variable %{name}")
        if text == "(":
            inner = self.expr(0)
            self.take(")")
            return inner
        if kind == "id":
            if text in ("true", "false"):
                flag = text == "true"
                return lambda focus, env: [flag]
            if text == "$this":
                return _this
            self.i -= 1
            return self.invocation(_this, root=True)
        raise Unsupported(f"unexpected {text!r}")

    def args(self) -> list[Any]:
        """The argument sub-expressions, compiled (each evaluated per item by the function)."""
        self.take("(")
        args: list[Any] = []
        if not self.peek(")"):
            while True:
                args.append(self.expr(0))
                if not self.peek(","):
                    break
                self.take(",")
        self.take(")")
        return args

    def invocation(self, source: Node, root: bool = False) -> Node:
        kind, name = self.take()
        if kind != "id":
            raise Unsupported(f"unexpected {name!r}")
        name = name.strip("`")
        if self.peek("("):
            if name in ("is", "as", "ofType"):
                self.take("(")
                tname = self.type_name()
                self.take(")")
                return _type_op("is" if name == "is" else "as", source, tname)
            return _function(name, source, self.args())
        if root and name[:1].isupper():
            # a type name at the root (`Appointment.status`): the context itself
            def typed(focus: list[Any], env: Env) -> list[Any]:
                return [v for v in focus if not isinstance(v, dict) or _is_type(v, name)
                        or "resourceType" not in v] or focus  # fmt: skip

            return typed
        return _member(source, name, name in self.choices)


def _member(source: Node, name: str, choice: bool) -> Node:
    def member(focus: list[Any], env: Env) -> list[Any]:
        out: list[Any] = []
        for item in source(focus, env):
            if type(item) is not dict:
                continue
            key = name
            v = item.get(name)
            if v is None and choice:
                n = len(name)
                for k, val in item.items():
                    if k.startswith(name) and len(k) > n and k[n].isupper():
                        key, v = k, val
                        break
            ext = item.get("_" + key) if "_" + key in item else None
            if v is None:
                # a primitive with extensions only: the element exists, without a value
                if type(ext) is dict:
                    out.append(ext)
                elif type(ext) is list:
                    out.extend(x for x in ext if x is not None)
                elif ext is None and choice and v is None:
                    for k, val in item.items():
                        if k.startswith("_" + name) and len(k) > n + 1 and k[n + 1].isupper():
                            out.extend(val if type(val) is list else [val])
                            break
                continue
            if type(v) is list:
                if type(ext) is list and len(ext) == len(v):
                    out.extend(x if x is not None else e for x, e in zip(v, ext, strict=True)
                               if x is not None or e is not None)  # fmt: skip
                else:
                    out.extend(x for x in v if x is not None)
            else:
                out.append(v)
        return out

    return member


def _index(source: Node, index: Node) -> Node:
    def at(focus: list[Any], env: Env) -> list[Any]:
        items = source(focus, env)
        i = _single(index(focus, env))
        return [items[i]] if isinstance(i, int) and 0 <= i < len(items) else []

    return at


def _type_op(op: str, source: Node, tname: str) -> Node:
    if op == "is":

        def is_(focus: list[Any], env: Env) -> list[Any]:
            items = source(focus, env)
            if not items:
                return []
            return [_is_type(_single(items), tname)]

        return is_

    def as_(focus: list[Any], env: Env) -> list[Any]:
        return [v for v in source(focus, env) if _is_type(v, tname)]

    return as_


def _logic(op: str, a: bool | None, b: bool | None) -> bool | None:
    if op == "and":
        if a is False or b is False:
            return False
        return None if a is None or b is None else True
    if op == "or":
        if a is True or b is True:
            return True
        return None if a is None or b is None else False
    if op == "xor":
        return None if a is None or b is None else a != b
    # implies
    if a is False or b is True:
        return True
    if a is None:
        return None
    return b


def _binary(op: str, left: Node, right: Node) -> Node:
    if op in ("and", "or", "xor", "implies"):

        def logic(focus: list[Any], env: Env) -> list[Any]:
            a = _truth(left(focus, env))
            if (op == "and" and a is False) or (op == "or" and a is True):
                return [a]
            if op == "implies" and a is False:
                return [True]
            r = _logic(op, a, _truth(right(focus, env)))
            return [] if r is None else [r]

        return logic
    if op == "|":

        def union(focus: list[Any], env: Env) -> list[Any]:
            return _distinct(left(focus, env) + right(focus, env))

        return union
    if op in ("=", "!=", "~", "!~"):

        def equal(focus: list[Any], env: Env) -> list[Any]:
            a, b = left(focus, env), right(focus, env)
            if not a or not b:
                return [] if op in ("=", "!=") else [op == "!~" if (a or b) else op == "~"]
            same = len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b, strict=True))
            if op in ("~", "!~") and not same and len(a) == len(b) == 1:
                x, y = a[0], b[0]
                if isinstance(x, str) and isinstance(y, str):
                    same = " ".join(x.lower().split()) == " ".join(y.lower().split())
            return [same if op in ("=", "~") else not same]

        return equal
    if op in ("<", ">", "<=", ">="):

        def compare(focus: list[Any], env: Env) -> list[Any]:
            a, b = left(focus, env), right(focus, env)
            if not a or not b:
                return []
            c = _compare(_single(a), _single(b))
            if c is None:
                return []
            return [{"<": c < 0, ">": c > 0, "<=": c <= 0, ">=": c >= 0}[op]]

        return compare
    if op in ("in", "contains"):
        item_side, coll_side = (left, right) if op == "in" else (right, left)

        def member_of(focus: list[Any], env: Env) -> list[Any]:
            items = item_side(focus, env)
            if not items:
                return []
            x = _single(items)
            return [any(_eq(x, y) for y in coll_side(focus, env))]  # small collections

        return member_of
    if op == "&":

        def concat(focus: list[Any], env: Env) -> list[Any]:
            a, b = _single(left(focus, env)), _single(right(focus, env))
            return [f"{'' if a is None else a}{'' if b is None else b}"]

        return concat
    if op in ("+", "-", "*", "/", "div", "mod"):

        def arith(focus: list[Any], env: Env) -> list[Any]:
            a, b = _single(left(focus, env)), _single(right(focus, env))
            if a is None or b is None:
                return []
            if op == "+" and isinstance(a, str) and isinstance(b, str):
                return [a + b]
            if not (_is_num(a) and _is_num(b)):
                return []
            x, y = _num(a), _num(b)
            try:
                if op == "+":
                    return [x + y]
                if op == "-":
                    return [x - y]
                if op == "*":
                    return [x * y]
                if op == "/":
                    return [x / y]
                if op == "div":
                    return [x // y]
                return [x % y]
            except (ZeroDivisionError, InvalidOperation):
                return []

        return arith
    raise Unsupported(f"operator {op}")


def _children(v: Any) -> list[Any]:
    out: list[Any] = []
    if type(v) is dict:
        for k, val in v.items():
            if k == "resourceType" or k.startswith("_"):
                continue
            if type(val) is list:
                out.extend(x for x in val if x is not None)
            else:
                out.append(val)
    return out


def _descendants(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack = list(reversed(items))
    while stack:
        kids = _children(stack.pop())
        out.extend(kids)
        stack.extend(reversed(kids))
    return out


_FORBIDDEN_TAGS = frozenset({
    "script", "form", "base", "link", "xlink", "iframe", "object", "applet", "embed", "frame",
    "frameset", "head", "body", "html", "input", "button", "style", "meta",
})  # fmt: skip
_XHTML = "http://www.w3.org/1999/xhtml"


def html_checks(div: Any) -> bool:
    """`htmlChecks()` (txt-1): well-formed XHTML, a `div` root in the XHTML namespace, none of
    the elements and attributes the R4 narrative rules forbid (scripts, forms, event
    handlers). expat without building a tree: narratives of conformance resources are large."""
    if not isinstance(div, str):
        return False
    parser = expat.ParserCreate(namespace_separator=" ")
    state = {"depth": 0, "ok": True}

    def start(tag: str, attrs: dict[str, str]) -> None:
        ns, _, local = tag.rpartition(" ")
        if state["depth"] == 0 and (local != "div" or ns != _XHTML):
            state["ok"] = False
        state["depth"] += 1
        if local in _FORBIDDEN_TAGS or any(
            a.rpartition(" ")[2].lower().startswith("on") for a in attrs
        ):
            state["ok"] = False

    parser.StartElementHandler = start
    parser.UseForeignDTD(True)  # HTML entities (&nbsp;) are not well-formedness errors
    try:
        parser.Parse(div, True)
    except expat.ExpatError:
        return False
    return bool(state["ok"]) and state["depth"] > 0


_SIMPLE: dict[str, Callable[[list[Any]], list[Any]]] = {
    "empty": lambda c: [not c],
    "not": lambda c: [] if _truth(c) is None else [not _truth(c)],
    "count": lambda c: [len(c)],
    "first": lambda c: c[:1],
    "last": lambda c: c[-1:],
    "tail": lambda c: c[1:],
    "single": lambda c: [_single(c)] if c else [],
    "isDistinct": lambda c: [len(_distinct(c)) == len(c)],
    "distinct": _distinct,
    "hasValue": lambda c: [len(c) == 1 and type(c[0]) is not dict],
    "children": lambda c: [x for v in c for x in _children(v)],
    "descendants": _descendants,
    "allFalse": lambda c: [all(v is False for v in c)],
    "allTrue": lambda c: [all(v is True for v in c)],
    "anyTrue": lambda c: [any(v is True for v in c)],
    "anyFalse": lambda c: [any(v is False for v in c)],
    "length": lambda c: [len(c[0])] if c and isinstance(c[0], str) else [],
    "lower": lambda c: [c[0].lower()] if c and isinstance(c[0], str) else [],
    "upper": lambda c: [c[0].upper()] if c and isinstance(c[0], str) else [],
    "toString": lambda c: [_to_string(c[0])] if len(c) == 1 else [],
    "toInteger": lambda c: _to_integer(c),
    "htmlChecks": lambda c: [all(html_checks(v) for v in c)],
}


def _to_string(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _to_integer(c: list[Any]) -> list[Any]:
    if len(c) != 1:
        return []
    v = c[0]
    if isinstance(v, int) and not isinstance(v, bool):
        return [v]
    if isinstance(v, str) and re.fullmatch(r"[+-]?\d+", v):
        return [int(v)]
    return []


def _function(name: str, source: Node, args: list[Node]) -> Node:
    if name in _SIMPLE and not args:
        fn = _SIMPLE[name]
        return lambda focus, env: fn(source(focus, env))
    if name == "exists":
        if not args:
            return lambda focus, env: [bool(source(focus, env))]
        crit = args[0]
        return lambda focus, env: [
            any(_truth(crit([v], {**env, "$this": v})) for v in source(focus, env))
        ]
    if name in ("where", "all", "select") and len(args) == 1:
        crit = args[0]
        if name == "where":
            return lambda focus, env: [v for v in source(focus, env) if _truth(crit([v], env))]
        if name == "all":
            return lambda focus, env: [all(_truth(crit([v], env)) for v in source(focus, env))]
        return lambda focus, env: [x for v in source(focus, env) for x in crit([v], env)]
    if name == "trace":
        return source
    if name == "iif" and len(args) in (2, 3):
        cond, then = args[0], args[1]
        other = args[2] if len(args) == 3 else None

        def iif(focus: list[Any], env: Env) -> list[Any]:
            here = source(focus, env) if source is not _this else focus
            if _truth(cond(here, env)):
                return then(here, env)
            return other(here, env) if other is not None else []

        return iif
    if name in ("startsWith", "endsWith", "contains", "matches") and len(args) == 1:
        arg = args[0]

        def string_test(focus: list[Any], env: Env) -> list[Any]:
            s = _single(source(focus, env))
            a = _single(arg(focus, env))
            if not isinstance(s, str) or not isinstance(a, str):
                return []
            if name == "startsWith":
                return [s.startswith(a)]
            if name == "endsWith":
                return [s.endswith(a)]
            if name == "contains":
                return [a in s]
            return [re.search(a, s) is not None]

        return string_test
    if name == "replaceMatches" and len(args) == 2:
        pat, rep = args

        def replace(focus: list[Any], env: Env) -> list[Any]:
            s, p, r = (_single(x) for x in (source(focus, env), pat(focus, env), rep(focus, env)))
            if not all(isinstance(x, str) for x in (s, p, r)):
                return []
            return [re.sub(p, r, s)]

        return replace
    if name == "substring" and len(args) in (1, 2):

        def substring(focus: list[Any], env: Env) -> list[Any]:
            s = _single(source(focus, env))
            start = _single(args[0](focus, env))
            length = _single(args[1](focus, env)) if len(args) == 2 else None
            if not isinstance(s, str) or not isinstance(start, int) or start >= len(s):
                return []
            return [s[start:] if length is None else s[start : start + int(length)]]

        return substring
    if name in ("intersect", "combine", "union", "exclude") and len(args) == 1:
        other = args[0]

        def setop(focus: list[Any], env: Env) -> list[Any]:
            a, b = source(focus, env), other(focus, env)
            if name == "combine":
                return a + b
            if name == "union":
                return _distinct(a + b)
            if name == "exclude":
                keys = {_key(y) for y in b}
                return [x for x in a if _key(x) not in keys]
            keys = {_key(y) for y in b}
            return _distinct([x for x in a if _key(x) in keys])

        return setop
    raise Unsupported(f"function {name}()")


def compile_invariant(expression: str, choices: frozenset[str] = frozenset()) -> Node:
    """Compile `expression`; `choices`: element names that are choice elements (`value[x]`),
    read from whichever `valueXxx` key is present."""
    return _Compiler(expression, choices).compile()


def holds(node: Node, context: Any, resource: dict[str, Any], root: dict[str, Any]) -> bool:
    """True unless the invariant evaluates to false (empty counts as not violated)."""
    result = node([context], {"resource": resource, "rootResource": root, "context": context})
    return _truth(result) is not False
