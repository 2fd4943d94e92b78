"""In-process cost of validating one resource: the R4 validator (fhir_server.validation) against
the check it replaced (the fhir.resources R4B pydantic models), on the same resources, same run.

Why beside run.py: run.py measures what a client sees (HTTP ingest, full vs basic validation on
a fresh database each), which on a loaded machine varies by tens of percent between runs; this
measures only the validators, on CPU time, so the ratio to the old check is stable.

Usage: python bench/validation_bench.py [--patients N] [--rounds R]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthea  # noqa: E402

from fhir_server.validation import validate  # noqa: E402


def _r4b() -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    def check(resource: dict[str, Any]) -> None:
        # a refusal costs the same; only time is measured
        with contextlib.suppress(Exception):
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)

    return check


def rate(check: Any, resources: list[dict[str, Any]], rounds: int) -> float:
    for r in resources:  # warm-up: compile and cache per type
        check(r)
    started = time.process_time()
    for _ in range(rounds):
        for r in resources:
            check(r)
    elapsed = time.process_time() - started
    return len(resources) * rounds / elapsed if elapsed else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    ns = parser.parse_args()
    shared, patients = synthea.generate(seed=42, patients=ns.patients)
    resources = [e["resource"] for b in shared + patients for e in b["entry"] if "resource" in e]
    new = rate(validate, resources, ns.rounds)
    old = rate(_r4b(), resources, ns.rounds)
    print(f"{len(resources)} Synthea resources x {ns.rounds} rounds (CPU time, one core)")
    print(f"  R4 validator (full: structure, bindings, invariants, profiles): {new:,.0f} /s")
    print(f"  old check (fhir.resources R4B pydantic models):                 {old:,.0f} /s")
    print(f"  ratio new/old: {new / old:.2f}x  (target: the ingest keeps >= 0.8x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
