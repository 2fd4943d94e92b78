"""Direct SQL for the searches most clients send, bypassing the expression compiler.

`Observation?subject=Patient/1&code=http://loinc.org|2339-0`, `Patient?name=smi`,
`Patient?identifier=sys|123`: plain token, reference and string parameters, one value each,
ANDed, with at most `_count`. Building and compiling SQLAlchemy expressions for these costs
twenty times the query itself (about 1 ms against 0.05 ms on SQLite), so they are written
here as SQL text and run on the DBAPI cursor. Anything else (modifiers, OR lists, chains,
dates, sorting, includes, paging offsets) returns None and goes through `Compiler`, whose
semantics this module mirrors exactly: same index rows, same driving-index choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhir_server.search.kinds import KINDS, selectivity
from fhir_server.search.registry import params_for

if TYPE_CHECKING:
    from fhir_server.search.query import Compiler, SearchPlan

_DRIVING = re.compile(r"\bt\.")  # a kind's test names its index table `t`
# The kinds with a fast path: their module's `direct` writes the index-row test.
_DIRECT = {name: kind for name, kind in KINDS.items() if kind.direct is not None}


@dataclass(slots=True)
class DirectQuery:
    """One page of a search as SQL text with `?` marks (converted for the driver when run)."""

    sql: str
    params: list[Any]


def direct_plan(compiler: Compiler, plan: SearchPlan, items: list[tuple[str, str]]) -> bool:
    """Fill `plan` with a DirectQuery if every parameter is of the simple kinds above."""
    conditions: list[tuple[int, str, str, list[Any]]] = []  # (rank, table, test, params)
    ids: list[str] = []
    count = compiler.default_count
    for name, value in items:
        if name == "_count":
            if not (value.isascii() and value.isdigit()) or len(value) > 9 or int(value) == 0:
                return False  # _count=0 asks for the total alone: the general path counts
            count = min(int(value), compiler.max_count)
            continue
        if name == "_id":
            if "," in value or "\\" in value:
                return False
            ids.append(value)
            continue
        if ":" in name or "." in name or "," in value or "\\" in value or not value:
            return False
        param = params_for(plan.res_type).get(name)
        kind = _DIRECT.get(param.type) if param is not None else None
        if param is None or kind is None or kind.direct is None:
            return False
        test = kind.direct(name, value, compiler.base_url)
        if test is None:
            return False
        conditions.append((selectivity(param), kind.table.name, test[0], [name, *test[1]]))
    if not conditions and not ids:
        return False
    ordered = sorted(range(len(conditions)), key=lambda i: conditions[i][0])
    driving = None if ids or not conditions else ordered[0]
    # With an index condition driving, `res_type || ''` keeps the planner off the resources
    # index on res_type: SQLite's estimates sometimes preferred scanning every resource of the
    # type (100,000 Observations) and testing each against the index rows.
    where = ["r.res_type = ?" if driving is None else "r.res_type || '' = ?", "NOT r.deleted"]
    params: list[Any] = [plan.res_type]
    if ids:
        where.append(f"r.res_id IN ({', '.join('?' * len(ids))})")
        params.extend(ids)
    if driving is None:
        for _, table, value_test, values in conditions:
            owner = f"t.res_type = ? AND t.param = ? AND {value_test}"
            where.append(f"EXISTS (SELECT 1 FROM {table} t WHERE t.resource_pk = r.pk AND {owner})")
            params.extend([plan.res_type, *values])
    else:
        # The other conditions test the driving index rows' owners inside the subquery, on
        # the index tables alone (`ix_idx_token_owner` leads with resource_pk and param): a
        # patient's hundred Observations are not each fetched from `resources` to be tested.
        _, table, value_test, values = conditions[driving]
        tests = [f"d.res_type = ? AND d.param = ? AND {_DRIVING.sub('d.', value_test)}"]
        params.extend([plan.res_type, *values])
        for i, (_, other, other_test, other_values) in enumerate(conditions):
            if i != driving:
                tests.append(
                    f"EXISTS (SELECT 1 FROM {other} t WHERE t.resource_pk = d.resource_pk "
                    f"AND t.res_type = ? AND t.param = ? AND {other_test})"
                )
                params.extend([plan.res_type, *other_values])
        where.append(f"r.pk IN (SELECT d.resource_pk FROM {table} d WHERE {' AND '.join(tests)})")
    sql = (
        "SELECT r.pk, r.res_id, r.body, count(*) OVER () FROM resources r "
        f"WHERE {' AND '.join(where)} ORDER BY r.pk LIMIT ?"
    )
    plan.direct = DirectQuery(sql, [*params, count])
    plan.count = count
    plan.applied = list(items)
    return True
