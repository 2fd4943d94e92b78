"""Does a change notify a subscription? The criteria search, run on that one resource.

No second matcher: the criteria go through the same compiler as a REST search, restricted to
`_id=<the changed id>`, with the owner's access conditions added, exactly as if the owner had
run the search itself at that moment.
"""

from __future__ import annotations

from sqlalchemy import Connection, false, select

from fhir_server.api.access import Access
from fhir_server.errors import FhirError
from fhir_server.search.query import RESULT_PARAMS, Compiler
from fhir_server.store.models import resources
from fhir_server.subscriptions.channel import Spec

R = resources.c


def matches(
    conn: Connection, spec: Spec, res_id: str, base_url: str, access: Access | None
) -> bool:
    filters = [(k, v) for k, v in spec.query if k not in RESULT_PARAMS]
    try:
        narrow = access.visible_conditions if access is not None else None
        plan = Compiler(base_url, strict=True, narrow=narrow).compile(spec.res_type, filters)
        where = list(plan.where)
        if access is not None:
            where.extend(access.search_conditions(spec.res_type))
    except FhirError:
        return False  # the owner may not search this type (any more): nothing to notify
    found = conn.execute(
        select(R.pk)
        .where(R.res_type == spec.res_type, R.res_id == res_id, R.deleted == false(), *where)
        .limit(1)
    ).first()
    return found is not None
