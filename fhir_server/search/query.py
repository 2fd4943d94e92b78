"""The query compiler: FHIR search parameters in, SQL over the index tables out.

Every parameter becomes a condition `resources.pk IN (SELECT resource_pk FROM idx_<kind> ...)`
(or NOT IN for `:not`, `:missing`, `ne`), so conditions compose by AND for repeated parameters
and by OR inside one comma-separated value, exactly as FHIR defines it (R4 §3.1.1.1.x). Bodies
are never scanned.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.sql.elements import KeyedColumnElement

from fhir_server import limits
from fhir_server.clock import now_us
from fhir_server.errors import FhirError, bad_request
from fhir_server.schema import INDEX_PREFIX as PREFIX
from fhir_server.schema import (
    idx_date,
    idx_number,
    idx_quantity,
    idx_reference,
    idx_string,
    idx_token,
    idx_uri,
    prefix_of,
    resources,
)
from fhir_server.schema import text_equals as _equals
from fhir_server.search.direct import DirectQuery, direct_plan
from fhir_server.search.extract import date_range, normalize_string
from fhir_server.search.registry import SearchParam, params_for, patient_compartment, resource_types

R = resources.c

# Parameters that steer the result rather than select resources.
RESULT_PARAMS = frozenset(
    {
        "_count",
        "_offset",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_elements",
        "_total",
        "_format",
        "_pretty",
        "_contained",
        "_containedType",
    }
)
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
SUPPORTED_KINDS = frozenset({"token", "string", "date", "reference", "quantity", "uri", "number"})
_KIND_TABLE = {
    "string": idx_string,
    "token": idx_token,
    "date": idx_date,
    "reference": idx_reference,
    "quantity": idx_quantity,
    "number": idx_number,
    "uri": idx_uri,
}
MAX_NUMBER = Decimal("1e300")  # number and quantity values; the index stores doubles
MIN_NUMBER = Decimal("1e-300")
_PREFIX_RE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[-+0-9.])")


@dataclass(slots=True)
class Include:
    source_type: str
    param: str
    target_type: str | None
    iterate: bool = False


@dataclass(slots=True)
class SearchPlan:
    """A compiled search: the filter, the ordering, and what to add to the Bundle."""

    res_type: str
    where: list[ColumnElement[bool]] = field(default_factory=list)
    order_by: list[Any] = field(default_factory=list)
    count: int = 20
    offset: int = 0
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    total: str = "accurate"
    applied: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    # For `pk IN (index rows)` conditions: (selectivity rank, the same test as a correlated
    # EXISTS). Only the most selective stays an IN that drives the query; see `_plan_joins`.
    correlated: dict[int, tuple[int, Callable[[], ColumnElement[bool]]]] = field(
        default_factory=dict
    )
    # Set for the simple searches `direct.py` writes as SQL text; `source` lets `execute`
    # compile the general way instead if a caller adds conditions to `where` afterwards.
    direct: DirectQuery | None = None
    source: tuple[Compiler, list[tuple[str, str]]] | None = None


def parse_query_string(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def split_values(value: str) -> list[str]:
    """Comma-separated alternatives (OR); `\\,` is a literal comma."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            current.append(ch if ch in ",$|\\" else "\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _split_pipe(value: str) -> list[str]:
    """`system|code` style splitting that honours `\\|` escapes."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "|":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


# The caller's visibility as conditions on a resources table (or alias) of one type: what the
# searches nested inside a search (chain targets, `_has` sources) may look at. Resources it
# hides count as absent, so a condition on them cannot reveal them.
Narrow = Callable[[str, Any], list[ColumnElement[bool]]]


class Compiler:
    """Compiles one search request for one resource type."""

    def __init__(
        self,
        base_url: str,
        strict: bool = False,
        default_count: int = 20,
        max_count: int = 1000,
        narrow: Narrow | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.strict = strict
        self.default_count = default_count
        self.max_count = max_count
        self.narrow = narrow

    def compile(
        self, res_type: str, items: Sequence[tuple[str, str]], direct: bool = False
    ) -> SearchPlan:
        """The plan for one search; `direct` allows SQL text for simple searches (direct.py)."""
        if res_type not in resource_types():
            raise FhirError(404, f"Unknown resource type '{res_type}'", "not-supported")
        limits.check_search(items)
        plan = SearchPlan(res_type, count=self.default_count)
        if direct and direct_plan(self, plan, list(items)):
            plan.source = (self, list(items))
            return plan
        for name, value in items:
            if name in RESULT_PARAMS:
                self._result_param(plan, name, value)
                plan.applied.append((name, value))
                continue
            clause = self.condition(res_type, resources, name, value, plan)
            if clause is not None:
                plan.where.append(clause)
                plan.applied.append((name, value))
        _plan_joins(plan)
        if not plan.order_by:
            plan.order_by = [R.pk]
        else:
            plan.order_by.append(R.pk)
        return plan

    # -- result parameters ------------------------------------------------------------------

    def _result_param(self, plan: SearchPlan, name: str, value: str) -> None:
        if name == "_count":
            plan.count = min(limits.parse_int(name, value), self.max_count)
        elif name == "_offset":
            plan.offset = limits.parse_int(name, value)
        elif name == "_sort":
            plan.order_by = [self._sort_key(plan.res_type, key) for key in value.split(",") if key]
        elif name in ("_include", "_revinclude"):
            iterate = False
            target_spec = value
            if value == "*":
                if name == "_include":
                    for code, param in params_for(plan.res_type).items():
                        if param.type == "reference":
                            plan.includes.append(Include(plan.res_type, code, None))
                return
            parts = target_spec.split(":")
            if len(parts) not in (2, 3) or parts[0] not in resource_types():
                raise bad_request(f"{name}={value}: expected SourceType:param[:TargetType]")
            target_param = params_for(parts[0]).get(parts[1])
            if target_param is None or target_param.type != "reference":
                raise bad_request(
                    f"{name}={value}: '{parts[1]}' is not a reference parameter of {parts[0]}"
                )
            include = Include(parts[0], parts[1], parts[2] if len(parts) == 3 else None, iterate)
            (plan.includes if name == "_include" else plan.revincludes).append(include)
        elif name == "_summary":
            if value not in ("true", "false", "count", "text", "data"):
                raise bad_request("_summary must be one of true, false, count, text, data")
            plan.summary = value
        elif name == "_elements":
            plan.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif name == "_total":
            if value not in ("none", "estimate", "accurate"):
                raise bad_request("_total must be none, estimate or accurate")
            plan.total = value

    def _sort_key(self, res_type: str, key: str) -> Any:
        descending = key.startswith("-")
        code = key.lstrip("-")
        if code == "_id":
            column: Any = R.res_id
        elif code == "_lastUpdated":
            column = R.last_updated
        else:
            param = params_for(res_type).get(code)
            if param is None or param.type not in (
                "string",
                "date",
                "token",
                "number",
                "quantity",
                "uri",
                "reference",
            ):
                raise bad_request(f"Cannot sort {res_type} by '{code}'")
            table = _KIND_TABLE[param.type]
            value_col = {
                "string": "value",
                "date": "high" if descending else "low",
                "token": "code",
                "number": "low",
                "quantity": "low",
                "uri": "uri",
                "reference": "target_id",
            }[param.type]
            agg = func.max if descending else func.min
            column = (
                select(agg(table.c[value_col]))
                .where(table.c.resource_pk == R.pk, table.c.param == code)
                .scalar_subquery()
            )
        return column.desc() if descending else column.asc()

    # -- filter parameters ------------------------------------------------------------------

    def condition(
        self,
        res_type: str,
        rows: Any,
        name: str,
        value: str,
        plan: SearchPlan | None = None,
    ) -> ColumnElement[bool] | None:
        """The condition for one `name=value` pair on `rows` (the resources table or an alias)."""
        pk_col, id_col = rows.c.pk, rows.c.res_id
        if name.startswith("_has:"):
            return self._has(res_type, id_col, name, value)
        base, _, chain = name.partition(".")
        code, _, modifier = base.partition(":")
        if code == "_id":
            values = split_values(value)
            cond = id_col.in_(values)
            return not_(cond) if modifier == "not" else cond
        if code == "_lastUpdated":
            updated = rows.c.last_updated
            return or_(*(_date_condition(v, updated, updated + 1) for v in split_values(value)))
        param = params_for(res_type).get(code)
        if param is None or param.type not in SUPPORTED_KINDS:
            why = "unknown" if param is None else f"of unsupported type {param.type}"
            if self.strict or plan is None:
                raise bad_request(f"Search parameter '{code}' is {why} for {res_type}")
            plan.ignored.append(name)
            return None
        table = _KIND_TABLE[param.type]
        owner = (table.c.res_type == res_type, table.c.param == code)
        if chain:
            return self._chain(res_type, pk_col, param, modifier, chain, value)
        if modifier == "missing":
            if value not in ("true", "false"):
                raise bad_request(f"{name} must be true or false")
            present = pk_col.in_(select(table.c.resource_pk).where(*owner))
            return not_(present) if value == "true" else present
        if modifier == "not" and param.type == "token":
            matches = or_(*(self._token(param, table, v, "") for v in split_values(value)))
            return not_(pk_col.in_(select(table.c.resource_pk).where(*owner, matches)))
        negated: list[ColumnElement[bool]] = []
        positive: list[ColumnElement[bool]] = []
        for v in split_values(value):
            if param.type in ("date", "quantity", "number") and v.startswith("ne"):
                negated.append(self._value(param, table, modifier, "eq" + v[2:]))
            else:
                positive.append(self._value(param, table, modifier, v))
        conds: list[ColumnElement[bool]] = []
        if positive:
            test = (*owner, or_(*positive))
            member = pk_col.in_(select(table.c.resource_pk).where(*test))
            conds.append(member)
            if plan is not None and not negated:
                plan.correlated[id(member)] = (
                    _selectivity(param),
                    lambda: exists().where(table.c.resource_pk == pk_col, *test),
                )
        for neg in negated:
            conds.append(not_(pk_col.in_(select(table.c.resource_pk).where(*owner, neg))))
        return or_(*conds) if len(conds) > 1 else conds[0]

    def _value(
        self, param: SearchParam, table: Any, modifier: str, value: str
    ) -> ColumnElement[bool]:
        kind = param.type
        if kind == "string":
            return _string_condition(table, modifier, value, param.code)
        if kind == "token":
            return self._token(param, table, value, modifier)
        if kind == "date":
            if modifier:
                raise bad_request(
                    f"Modifier ':{modifier}' is not supported on date parameter '{param.code}'"
                )
            return _date_condition(value, table.c.low, table.c.high)
        if kind == "reference":
            return self._reference(param, table, modifier, value)
        if kind in ("quantity", "number"):
            if modifier:
                raise bad_request(f"Modifier ':{modifier}' is not supported on '{param.code}'")
            return _quantity_condition(table, value, kind == "quantity", param.code)
        # uri
        if modifier == "below":
            return table.c.uri.like(_like_prefix(value), escape="\\")
        if modifier == "above":
            prefixes = [value[:i] for i in range(1, len(value) + 1)]
            return and_(
                prefix_of(table.c.uri).in_(sorted({p[:PREFIX] for p in prefixes})),
                table.c.uri.in_(prefixes),
            )
        if modifier:
            raise bad_request(
                f"Modifier ':{modifier}' is not supported on uri parameter '{param.code}'"
            )
        return _equals(table.c.uri, value)

    def _token(
        self, param: SearchParam, table: Any, value: str, modifier: str
    ) -> ColumnElement[bool]:
        c = table.c
        if modifier == "text":
            return c.text.like(_like_prefix(normalize_string(value)), escape="\\")
        if modifier not in ("", "not"):
            raise bad_request(
                f"Modifier ':{modifier}' is not supported on token parameter '{param.code}'"
            )
        parts = _split_pipe(value)
        if len(parts) == 1:
            return _equals(c.code, parts[0])
        if len(parts) != 2:
            raise bad_request(
                f"Invalid token '{value}' for '{param.code}': expected [system]|[code]"
            )
        system, code = parts
        if not system:
            return and_(c.system.is_(None), _equals(c.code, code))
        if not code:
            return _equals(c.system, system)
        return and_(_equals(c.system, system), _equals(c.code, code))

    def _reference(
        self, param: SearchParam, table: Any, modifier: str, value: str
    ) -> ColumnElement[bool]:
        c = table.c
        if modifier and modifier not in resource_types():
            raise bad_request(
                f"Modifier ':{modifier}' is not supported on reference parameter '{param.code}'"
            )
        if self.base_url and value.startswith(self.base_url + "/"):
            value = value[len(self.base_url) + 1 :]
        if "://" in value or value.startswith("urn:"):
            return c.url == value
        parts = value.split("/")
        if len(parts) >= 2 and parts[-2] in resource_types():
            target_type, target_id = parts[-2], parts[-1]
            if modifier and modifier != target_type:
                return false()
            return and_(c.target_type == target_type, c.target_id == target_id)
        if len(parts) == 4 and parts[2] == "_history" and parts[0] in resource_types():
            return and_(c.target_type == parts[0], c.target_id == parts[1])
        cond = c.target_id == value
        if modifier:
            return and_(cond, c.target_type == modifier)
        return cond

    def _chain(
        self,
        res_type: str,
        pk_col: KeyedColumnElement[Any],
        param: SearchParam,
        type_modifier: str,
        chain: str,
        value: str,
    ) -> ColumnElement[bool]:
        """One level of chaining: `subject:Patient.identifier=sys|v`."""
        if param.type != "reference":
            raise bad_request(f"'{param.code}' is not a reference parameter; it cannot be chained")
        if "." in chain:
            raise bad_request("Only one level of chaining is supported")
        targets = (
            [type_modifier]
            if type_modifier
            else [t for t in param.targets if t in resource_types()]
        )
        candidates = [
            t
            for t in targets
            if chain.split(":")[0] in params_for(t)
            or chain.split(":")[0] in ("_id", "_lastUpdated")
        ]
        if not candidates:
            raise bad_request(f"No target of '{param.code}' has a search parameter '{chain}'")
        if len(candidates) > 1 and not type_modifier:
            pass  # FHIR allows the server to search every target type that knows the parameter
        inner = resources.alias("chained")
        ref = idx_reference.c
        alternatives = []
        for target in candidates:
            cond = self.condition(target, inner, chain, value)
            sub = select(inner.c.res_id).where(
                inner.c.res_type == target,
                inner.c.deleted == false(),
                cond,  # type: ignore[arg-type]
                *self._visible(target, inner),
            )
            alternatives.append(and_(ref.target_type == target, ref.target_id.in_(sub)))
        return pk_col.in_(
            select(ref.resource_pk).where(
                ref.res_type == res_type, ref.param == param.code, or_(*alternatives)
            )
        )

    def _visible(self, res_type: str, rows: Any) -> list[ColumnElement[bool]]:
        return self.narrow(res_type, rows) if self.narrow is not None else []

    def _has(
        self, res_type: str, id_col: KeyedColumnElement[Any], name: str, value: str
    ) -> ColumnElement[bool]:
        """Reverse chaining: `_has:Observation:patient:code=1234-5`."""
        parts = name.split(":", 3)
        if len(parts) != 4 or parts[1] not in resource_types():
            raise bad_request(f"'{name}': expected _has:Type:referenceParam:searchParam")
        _, source_type, ref_code, inner_name = parts
        if inner_name.startswith("_has:"):
            raise bad_request("Only one level of _has is supported")
        ref_param = params_for(source_type).get(ref_code)
        if ref_param is None or ref_param.type != "reference":
            raise bad_request(f"'{ref_code}' is not a reference parameter of {source_type}")
        source = resources.alias("has_source")
        cond = self.condition(source_type, source, inner_name, value)
        ref = idx_reference.c
        sources = select(source.c.pk).where(
            source.c.res_type == source_type,
            source.c.deleted == false(),
            cond,  # type: ignore[arg-type]
            *self._visible(source_type, source),
        )
        return id_col.in_(
            select(ref.target_id).where(
                ref.res_type == source_type,
                ref.param == ref_code,
                ref.target_type == res_type,
                ref.resource_pk.in_(sources),
            )
        )


# -- value conditions ----------------------------------------------------------------------


def _selectivity(param: SearchParam) -> int:
    """A rough rank of how few rows a parameter matches (lower: fewer), for `_plan_joins`."""
    if param.type == "reference" or param.code in ("identifier", "_id", "url"):
        return 0
    return {"token": 1, "string": 1, "uri": 1}.get(param.type, 2)


def _plan_joins(plan: SearchPlan) -> None:
    """Let the most selective index condition drive the query; check the others per row.

    Several `pk IN (subquery)` filters make databases materialise every subquery (all
    Observations with a common code, say) and intersect them. Keeping only the most selective
    one as IN and turning the rest into correlated EXISTS lookups (index on resource_pk) costs
    a few index probes per candidate instead. With `_id` present, `_id` drives.
    """
    ranked = sorted(
        (found[0], i) for i, c in enumerate(plan.where) if (found := plan.correlated.get(id(c)))
    )
    has_id = any(name == "_id" for name, _ in plan.applied)
    keep = None if has_id or not ranked else ranked[0][1]
    for _, i in ranked:
        if i != keep:
            plan.where[i] = plan.correlated[id(plan.where[i])][1]()


def _like_prefix(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _string_condition(table: Any, modifier: str, value: str, code: str) -> ColumnElement[bool]:
    if modifier == "exact":
        return table.c.exact == value
    norm = normalize_string(value)
    if modifier == "contains":
        return table.c.value.like("%" + _like_prefix(norm), escape="\\")
    if modifier:
        raise bad_request(f"Modifier ':{modifier}' is not supported on string parameter '{code}'")
    if not norm:
        return table.c.value.like(_like_prefix(norm), escape="\\")
    low, high, pattern = prefix_range(norm)
    key = prefix_of(table.c.value)
    return and_(key >= low, key < high, table.c.value.like(pattern, escape="\\"))


def prefix_range(norm: str) -> tuple[str, str, str]:
    """A non-empty folded prefix as [low, high) of the indexed prefix plus its LIKE pattern.

    LIKE with ESCAPE cannot use a B-tree index (SQLite, and PostgreSQL outside the C
    collation); the equivalent range on the folded value's indexed prefix (its first
    `PREFIX` characters, models.prefix_of) can. LIKE on the whole value stays the exact test.
    """
    key = norm[:PREFIX]
    return key, key[:-1] + chr(ord(key[-1]) + 1), _like_prefix(norm)


def _split_prefix(value: str) -> tuple[str, str]:
    match = _PREFIX_RE.match(value)
    if match:
        return match.group(1), value[2:]
    return "eq", value


def _date_condition(value: str, low: Any, high: Any) -> ColumnElement[bool]:
    """Range semantics of FHIR date search: the target range [low, high) vs. the query's."""
    prefix, text = _split_prefix(value)
    try:
        q_low, q_high = date_range(text)
    except ValueError:
        raise bad_request(
            f"Invalid date '{value}': expected [prefix]YYYY[-MM[-DD[Thh:mm[:ss][zone]]]]"
        ) from None
    contained = and_(low >= q_low, high <= q_high)
    if prefix == "eq":
        return contained
    if prefix == "ne":
        return not_(contained)
    if prefix == "gt":
        return high > q_high
    if prefix == "lt":
        return low < q_low
    if prefix == "ge":
        return or_(high > q_high, contained)
    if prefix == "le":
        return or_(low < q_low, contained)
    if prefix == "sa":
        return low >= q_high
    if prefix == "eb":
        return high <= q_low
    # ap: within 10% of the distance between the value and now (at least a day)
    gap = max(abs(now_us() - q_low) // 10, 86_400_000_000)
    return and_(low < q_high + gap, high > q_low - gap)


def _number_range(text: str, code: str) -> tuple[float, float, float]:
    """The value and its implicit range by significant figures (5.4 -> [5.35, 5.45))."""
    try:
        number = Decimal(text) if len(text) <= 64 else Decimal("NaN")
    except InvalidOperation:
        raise bad_request(f"Invalid number '{text[:64]}' for '{code}'") from None
    if not number.is_finite() or not -MAX_NUMBER <= number <= MAX_NUMBER:
        raise bad_request(f"Invalid number '{text[:64]}' for '{code}': not a number in range")
    if number and abs(number) < MIN_NUMBER:
        number = Decimal(0)
    exponent = number.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
    return float(number), float(number - half), float(number + half)


def _quantity_condition(table: Any, value: str, with_units: bool, code: str) -> ColumnElement[bool]:
    prefix, text = _split_prefix(value)
    unit_cond: ColumnElement[bool] | None = None
    if with_units:
        parts = _split_pipe(text)
        if len(parts) not in (1, 3):
            raise bad_request(f"Invalid quantity '{value}': expected [prefix]number|system|code")
        text = parts[0]
        if len(parts) == 3:
            system, unit_code = parts[1], parts[2]
            if system:
                unit_cond = and_(table.c.system == system, table.c.code == unit_code)
            elif unit_code:
                unit_cond = or_(table.c.code == unit_code, table.c.unit == unit_code)
    number, q_low, q_high = _number_range(text, code)
    low, high = table.c.low, table.c.high
    conditions = {
        "eq": and_(low >= q_low, high < q_high),
        "ne": not_(and_(low >= q_low, high < q_high)),
        "gt": high > number,
        "lt": low < number,
        "ge": high >= number,
        "le": low <= number,
        "sa": low > number,
        "eb": high < number,
        "ap": and_(low <= number + abs(number) * 0.1, high >= number - abs(number) * 0.1),
    }
    cond = conditions[prefix]
    return and_(cond, unit_cond) if unit_cond is not None else cond


# -- execution -------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    res_type: str
    res_id: str
    body: bytes
    mode: str = "match"


@dataclass(slots=True)
class SearchResult:
    total: int | None
    rows: list[Row]
    included: list[Row]


def execute(conn: Connection, plan: SearchPlan) -> SearchResult:
    """Run a compiled search: the total (when asked), one page, and its includes.

    The total comes with the page (`count(*) OVER ()`, computed before LIMIT): one query to
    plan and run instead of two. Only a page past the end needs a separate count. The
    statements run within the request's time limit (`limits.deadline`).
    """
    with limits.deadline():
        return _execute(conn, plan)


def _execute(conn: Connection, plan: SearchPlan) -> SearchResult:
    if plan.direct is not None:
        if not plan.where:
            return _execute_direct(conn, plan, plan.direct)
        assert plan.source is not None  # conditions were added after compiling: the long way
        compiler, items = plan.source
        extra, plan = plan.where, compiler.compile(plan.res_type, items)
        plan.where.extend(extra)
    base = [R.res_type == plan.res_type, R.deleted == false(), *plan.where]
    want_total = plan.total != "none"
    if plan.summary == "count" or plan.count == 0:
        total = _count(conn, base) if want_total or plan.summary == "count" else None
        return SearchResult(total, [], [])
    columns: list[Any] = [R.pk, R.res_id, R.body]
    if want_total:
        columns.append(func.count().over())
    query: Select[Any] = (
        select(*columns).where(*base).order_by(*plan.order_by).limit(plan.count).offset(plan.offset)
    )
    page = conn.execute(query).all()
    total = None
    if want_total:
        total = page[0][3] if page else (_count(conn, base) if plan.offset else 0)
    rows = [Row(plan.res_type, r[1], r[2]) for r in page]
    included: list[Row] = []
    if page and (plan.includes or plan.revincludes):
        included = _includes(conn, plan, [r[0] for r in page], [r[1] for r in page])
    return SearchResult(total, rows, included)


def _execute_direct(conn: Connection, plan: SearchPlan, query: DirectQuery) -> SearchResult:
    sql = query.sql if conn.dialect.paramstyle == "qmark" else query.sql.replace("?", "%s")
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, query.params)
        page = cursor.fetchall()
    finally:
        cursor.close()
    total = page[0][3] if page else 0
    return SearchResult(total, [Row(plan.res_type, r[1], r[2]) for r in page], [])


def _count(conn: Connection, base: list[ColumnElement[bool]]) -> int:
    return int(conn.execute(select(func.count()).select_from(resources).where(*base)).scalar_one())


def _includes(conn: Connection, plan: SearchPlan, pks: list[int], ids: list[str]) -> list[Row]:
    ref = idx_reference.c
    wanted: set[tuple[str, str]] = set()
    seen = {(plan.res_type, i) for i in ids}
    found: list[Row] = []
    for inc in plan.includes:
        if inc.source_type != plan.res_type:
            continue
        q = select(ref.target_type, ref.target_id).where(
            ref.resource_pk.in_(pks), ref.param == inc.param, ref.target_id.is_not(None)
        )
        if inc.target_type:
            q = q.where(ref.target_type == inc.target_type)
        for t, i in conn.execute(q):
            if t and (t, i) not in seen:
                wanted.add((t, i))
    if wanted:
        by_type: dict[str, list[str]] = {}
        for t, i in wanted:
            by_type.setdefault(t, []).append(i)
        for t, id_list in by_type.items():
            q2 = select(R.res_id, R.body).where(
                R.res_type == t, R.res_id.in_(id_list), R.deleted == false()
            )
            for res_id, body in conn.execute(q2):
                seen.add((t, res_id))
                found.append(Row(t, res_id, body, "include"))
    for inc in plan.revincludes:
        sources = select(ref.resource_pk).where(
            ref.res_type == inc.source_type,
            ref.param == inc.param,
            ref.target_type == plan.res_type,
            ref.target_id.in_(ids),
        )
        q3 = select(R.res_id, R.body).where(R.pk.in_(sources), R.deleted == false())
        for res_id, body in conn.execute(q3):
            if (inc.source_type, res_id) not in seen:
                seen.add((inc.source_type, res_id))
                found.append(Row(inc.source_type, res_id, body, "include"))
    return found


def matching_ids(
    conn: Connection,
    res_type: str,
    items: Sequence[tuple[str, str]],
    base_url: str,
    narrow: Narrow | None = None,
) -> list[str]:
    """Ids (up to 100) a conditional create, update, delete or reference search matches;
    with `narrow`, only among what the caller may see (the rest count as absent)."""
    filters = [(n, v) for n, v in items if n not in RESULT_PARAMS]
    if not filters:
        raise bad_request("A conditional operation needs at least one search parameter")
    plan = Compiler(base_url, strict=True, narrow=narrow).compile(res_type, filters)
    if narrow is not None:
        plan.where.extend(narrow(res_type, resources))
    q = select(R.res_id).where(R.res_type == res_type, R.deleted == false(), *plan.where).limit(100)
    with limits.deadline():
        return [r[0] for r in conn.execute(q)]


def compartment_condition(
    compartment_id: str, res_type: str, rows: Any = resources
) -> ColumnElement[bool]:
    """Resources of `res_type` (in `rows`, the resources table or an alias) in
    Patient/{id}'s compartment (R4 CompartmentDefinition)."""
    params = patient_compartment(res_type)
    ref = idx_reference.c
    cond: ColumnElement[bool] = false()
    if params:
        cond = rows.c.pk.in_(
            select(ref.resource_pk).where(
                ref.res_type == res_type,
                ref.param.in_(params),
                ref.target_type == "Patient",
                ref.target_id == compartment_id,
            )
        )
    if res_type == "Patient":
        cond = or_(cond, rows.c.res_id == compartment_id)
    return cond


def everything_rows(conn: Connection, patient_id: str, limit: int) -> list[Row]:
    """Patient/$everything: the patient and every resource in its compartment."""
    ref = idx_reference.c
    per_type = [
        and_(ref.res_type == t, ref.param.in_(patient_compartment(t)))
        for t in sorted(resource_types())
        if patient_compartment(t) and t != "Patient"
    ]
    members = select(ref.resource_pk).where(
        ref.target_type == "Patient",
        ref.target_id == patient_id,
        or_(*per_type) if per_type else true(),
    )
    q = (
        select(R.res_type, R.res_id, R.body)
        .where(
            R.deleted == false(),
            or_(R.pk.in_(members), and_(R.res_type == "Patient", R.res_id == patient_id)),
        )
        .order_by(R.pk)
        .limit(limit)
    )
    return [Row(t, i, b) for t, i, b in conn.execute(q)]
