"""The invariant compiler (`fhir_server.validation.fhirpath`) against fhirpathpy, an independent
full FHIRPath engine, on the official R4 examples; and the native dom-3 against its FHIRPath.

Why: the compiler covers the grammar the R4 invariants use, for speed; this checks it says
what the specification's expressions say, on real content. Each root-level error invariant
of a type is evaluated on the first examples of that type by both engines, and the verdicts
(violated or not) must agree wherever fhirpathpy can evaluate the expression.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fhirpathpy
from fhir_examples import Example, fhir_example_files, fhir_examples  # noqa: F401
from fhirpathpy.models import models

from fhir_server.validation import definitions
from fhir_server.validation.fhirpath import compile_invariant, holds
from fhir_server.validation.invariants import DOM_3, dom_3

PER_TYPE = 4
# invariants fhirpathpy evaluates differently from the FHIRPath specification
ORACLE_GAPS = {
    "txt-1": "htmlChecks() is not a fhirpathpy function",
    "txt-2": "htmlChecks() is not a fhirpathpy function",
    "ctm-1": "resolve() is in neither engine",
}


def _oracle(expression: str, resource: dict[str, Any]) -> bool | None:
    try:
        result = fhirpathpy.evaluate(resource, expression, {"resource": resource,
                                     "rootResource": resource, "context": resource},
                                     models["r4"])  # fmt: skip
    except Exception:  # noqa: BLE001 - fhirpathpy cannot evaluate it: no verdict
        return None
    return result != [False]


def test_root_invariants_agree_with_fhirpathpy(
    fhir_examples: Mapping[str, tuple[Example, ...]],  # noqa: F811
) -> None:
    defs = definitions()
    compared = 0
    disagree = []
    for res_type, examples in fhir_examples.items():
        definition = defs.types.get(res_type)
        if definition is None:
            continue
        for key, severity, expression, _ in definition["constraints"].get(res_type, []):
            if severity != "error" or key in ORACLE_GAPS or key == "dom-3":
                continue
            node = compile_invariant(expression, defs.choices)
            for example in examples[:PER_TYPE]:
                r = example.resource
                expected = _oracle(expression, r)
                if expected is None:
                    continue
                compared += 1
                if holds(node, r, r, r) != expected:
                    disagree.append(f"{key} on {example.name}: ours {not expected}")
    assert compared > 500
    assert not disagree, disagree


def test_native_dom_3_is_the_fhirpath_text(
    fhir_examples: Mapping[str, tuple[Example, ...]],  # noqa: F811
) -> None:
    node = compile_invariant(DOM_3, definitions().choices)
    with_contained = [
        e for items in fhir_examples.values() for e in items if e.resource.get("contained")
    ]
    assert len(with_contained) > 100
    for example in with_contained:
        r = example.resource
        assert dom_3([r], {}) == [holds(node, r, r, r)], example.name
    broken = {"resourceType": "Observation", "contained": [{"resourceType": "Patient", "id": "p"}]}
    assert dom_3([broken], {}) == [False] and not holds(node, broken, broken, broken)
