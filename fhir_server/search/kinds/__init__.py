"""One module per search-parameter kind, and the table the generic search code dispatches on.

Each module holds its kind's index-row extraction (`build`), SQL condition (`condition`),
direct-SQL fast path (`direct`: token, string, reference, and composites of those) and
in-memory test (`match`); escape.py is the one splitter of search values they all use.
`composite` tests each component with its component's kind (composite.py).
"""

from __future__ import annotations

from fhir_server.search.kinds import (
    composite,
    date,
    number,
    quantity,
    reference,
    string,
    token,
    uri,
)
from fhir_server.search.kinds.base import IndexRows, Kind
from fhir_server.search.registry import SearchParam

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        string.KIND,
        token.KIND,
        date.KIND,
        reference.KIND,
        quantity.KIND,
        number.KIND,
        uri.KIND,
        composite.KIND,
    )
}
SUPPORTED_KINDS = frozenset(KINDS)


def selectivity(param: SearchParam) -> int:
    """A rough rank of how few rows a parameter matches (lower: fewer): the Compiler and the
    direct path let the lowest drive the query."""
    if param.code in ("identifier", "_id", "url"):
        return 0
    return KINDS[param.type].selectivity


__all__ = ["KINDS", "SUPPORTED_KINDS", "IndexRows", "Kind", "selectivity"]
