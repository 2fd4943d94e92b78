"""The query compiler: FHIR search parameters in, SQL over the index tables out.

Every parameter becomes a condition `resources.pk IN (SELECT resource_pk FROM idx_<kind> ...)`
(or NOT IN for `:not`, `:missing`, `ne`), so conditions compose by AND for repeated parameters
and by OR inside one comma-separated value, exactly as FHIR defines it (R4 §3.1.1.1.x). Bodies
are never scanned. What one value of a kind means lives in that kind's module (kinds/); this
module is the generic part: modifiers common to all kinds, chains, `_has`, results, paging.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
from fhir_server.errors import FhirError, bad_request
from fhir_server.schema import idx_reference, resources
from fhir_server.search.direct import DirectQuery, direct_plan
from fhir_server.search.kinds import KINDS, SUPPORTED_KINDS, selectivity
from fhir_server.search.kinds.base import PREFIXES, prefix_range
from fhir_server.search.kinds.date import range_condition
from fhir_server.search.kinds.escape import alternatives, split_values
from fhir_server.search.registry import SearchParam, params_for, patient_compartment, resource_types

__all__ = ["PREFIXES", "SUPPORTED_KINDS", "prefix_range", "split_values"]

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
    driven: bool = False  # an index condition drives the query (see `_plan_joins`)


def parse_query_string(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


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
            if param is None or param.type not in KINDS or param.type == "composite":
                raise bad_request(f"Cannot sort {res_type} by '{code}'")
            kind = KINDS[param.type]
            table = kind.table
            value_col = kind.sort[1] if descending else kind.sort[0]
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
            cond = id_col.in_(split_values(value))
            return not_(cond) if modifier == "not" else cond
        if code == "_lastUpdated":
            updated = rows.c.last_updated
            return or_(*(range_condition(v, updated, updated + 1) for v in alternatives(value)))
        param = params_for(res_type).get(code)
        if param is None or param.type not in SUPPORTED_KINDS:
            why = "unknown" if param is None else f"of unsupported type {param.type}"
            if self.strict or plan is None:
                raise bad_request(f"Search parameter '{code}' is {why} for {res_type}")
            plan.ignored.append(name)
            return None
        kind = KINDS[param.type]
        table = kind.table
        owner = (table.c.res_type == res_type, table.c.param == code)
        if chain:
            return self._chain(res_type, pk_col, param, modifier, chain, value)
        if modifier == "missing":
            if value not in ("true", "false"):
                raise bad_request(f"{name} must be true or false")
            present = pk_col.in_(select(table.c.resource_pk).where(*owner))
            return not_(present) if value == "true" else present
        if modifier == "not" and kind.name == "token":
            matches = or_(
                *(kind.condition(code, table.c, "", v, self.base_url) for v in alternatives(value))
            )
            return not_(pk_col.in_(select(table.c.resource_pk).where(*owner, matches)))
        negated: list[ColumnElement[bool]] = []
        positive: list[ColumnElement[bool]] = []
        for v in alternatives(value):
            if kind.prefixed and v.startswith("ne"):
                negated.append(kind.condition(code, table.c, modifier, "eq" + v[2:], self.base_url))
            else:
                positive.append(kind.condition(code, table.c, modifier, v, self.base_url))
        conds: list[ColumnElement[bool]] = []
        if positive:
            test = (*owner, or_(*positive))
            member = pk_col.in_(select(table.c.resource_pk).where(*test))
            conds.append(member)
            if plan is not None and not negated:
                plan.correlated[id(member)] = (
                    selectivity(param),
                    lambda: exists().where(table.c.resource_pk == pk_col, *test),
                )
        for neg in negated:
            conds.append(not_(pk_col.in_(select(table.c.resource_pk).where(*owner, neg))))
        return or_(*conds) if len(conds) > 1 else conds[0]

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
    plan.driven = keep is not None
    for _, i in ranked:
        if i != keep:
            plan.where[i] = plan.correlated[id(plan.where[i])][1]()


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
            return _execute_direct(conn.connection, conn.dialect.paramstyle, plan, plan.direct)
        assert plan.source is not None  # conditions were added after compiling: the long way
        compiler, items = plan.source
        extra, plan = plan.where, compiler.compile(plan.res_type, items)
        plan.where.extend(extra)
    # driven by index rows: `res_type || ''` keeps SQLite off the res_type index (direct.py)
    of_type = R.res_type.concat("") if plan.driven else R.res_type
    base = [of_type == plan.res_type, R.deleted == false(), *plan.where]
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


def execute_direct(dbapi: Any, paramstyle: str, plan: SearchPlan) -> SearchResult | None:
    """A plan the direct path wrote as SQL text (`plan.direct`, nothing added since), run on
    a DBAPI connection within the request's time limit; None for any other plan."""
    if plan.direct is None or plan.where:
        return None
    with limits.deadline():
        return _execute_direct(dbapi, paramstyle, plan, plan.direct)


def _execute_direct(
    dbapi: Any, paramstyle: str, plan: SearchPlan, query: DirectQuery
) -> SearchResult:
    sql = query.sql if paramstyle == "qmark" else query.sql.replace("?", "%s")
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql, query.params)
        page = cursor.fetchall()
    finally:
        cursor.close()
    return direct_result(plan, page)


def direct_result(plan: SearchPlan, page: Sequence[Sequence[Any]]) -> SearchResult:
    """A direct query's rows (pk, res_id, body, total) as the search's result."""
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


def compartment_members(patient_id: str, refs: Any = idx_reference) -> Select[Any]:
    """The pks of every resource (of any type but Patient) in Patient/{id}'s compartment:
    its reference rows in `refs` (idx_reference or an alias) that point at the patient
    through one of its type's compartment parameters."""
    ref = refs.c
    per_type = [
        and_(ref.res_type == t, ref.param.in_(patient_compartment(t)))
        for t in sorted(resource_types())
        if patient_compartment(t) and t != "Patient"
    ]
    return select(ref.resource_pk).where(
        ref.target_type == "Patient",
        ref.target_id == patient_id,
        or_(*per_type) if per_type else true(),
    )


def everything_rows(conn: Connection, patient_id: str, limit: int) -> list[Row]:
    """Patient/$everything: the patient and every resource in its compartment (mode
    "match"), then every resource those reference, one level (mode "include"); ids and types
    only (bodies: `bodies_of`), in a stable order, at most `limit` rows."""
    members = compartment_members(patient_id)
    patient = and_(R.res_type == "Patient", R.res_id == patient_id)
    own = resources.alias("everything_own")  # not correlated with the outer query
    inside = select(own.c.pk).where(
        own.c.deleted == false(),
        or_(own.c.pk.in_(members), and_(own.c.res_type == "Patient", own.c.res_id == patient_id)),
    )
    q = (
        select(R.pk, R.res_type, R.res_id)
        .where(R.deleted == false(), or_(R.pk.in_(members), patient))
        .order_by(R.pk)
        .limit(limit)
    )
    rows = [Row(t, i, b"", "match") for _, t, i in conn.execute(q)]
    if len(rows) >= limit:
        return rows
    target = idx_reference.alias("everything_ref")
    referenced = (
        select(R.pk, R.res_type, R.res_id)
        .where(
            R.deleted == false(),
            R.pk.not_in(inside),
            exists().where(
                target.c.resource_pk.in_(inside),
                target.c.target_type == R.res_type,
                target.c.target_id == R.res_id,
            ),
        )
        .order_by(R.pk)
        .limit(limit - len(rows))
    )
    rows += [Row(t, i, b"", "include") for _, t, i in conn.execute(referenced)]
    return rows


def bodies_of(conn: Connection, rows: list[Row]) -> list[Row]:
    """The rows with their current bodies (those deleted meanwhile left out)."""
    if not rows:
        return []
    wanted = {(r.res_type, r.res_id) for r in rows}
    found: dict[tuple[str, str], bytes] = {}
    for res_type in {r.res_type for r in rows}:
        ids = [i for t, i in wanted if t == res_type]
        q = select(R.res_id, R.body).where(
            R.res_type == res_type, R.res_id.in_(ids), R.deleted == false()
        )
        found.update({(res_type, i): b for i, b in conn.execute(q)})
    return [
        Row(r.res_type, r.res_id, found[(r.res_type, r.res_id)], r.mode)
        for r in rows
        if found.get((r.res_type, r.res_id))
    ]
