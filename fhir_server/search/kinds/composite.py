"""composite parameters (`code-value-quantity=http://loinc.org|8480-6$gt100`): not searchable.

Answering one needs the components of one element indexed together (a table of its own); until
that exists the registry offers no composite parameter (capability.py lists `SUPPORTED`
kinds), the Compiler ignores one or, in strict mode, refuses it, and the in-memory matcher
refuses to judge one. Its components are separated by `$` (escaped `\\$`, escape.py).
"""

from __future__ import annotations

from fhir_server.search.kinds.escape import split


def components(value: str) -> list[str]:
    """The `$`-separated components of one composite value, still escaped: each is a value of
    its component's kind, which unescapes it (after splitting `|`, for a token)."""
    return split(value, "$")
