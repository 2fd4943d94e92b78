"""The official FHIR R4 examples (npm `hl7.fhir.r4.examples` 4.0.1, HL7, CC0): 5,306 resources.

Why a support module: more than one suite reads them (the FHIRPath oracle test, the
conformance tests that PUT every example), and each must find, skip or fail alike.
scripts/setup-env installs the package from tests/fhir-examples/package-lock.json (`npm ci`).
Without it the tests that use these fixtures skip locally with the reason, and fail in CI
(CI=true), as the browser tests do. Use the fixtures by importing them into a test module:
`from fhir_examples import fhir_example_files, fhir_examples  # noqa: F401`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson
import pytest
from ci_support import unavailable

PACKAGE = "hl7.fhir.r4.examples"
EXAMPLES_DIR = Path(__file__).resolve().parent / "fhir-examples" / "node_modules" / PACKAGE
EXPECTED_COUNT = 5306


class Example(NamedTuple):
    """One example resource and the file it came from (the name says which example failed)."""

    name: str
    resource: dict[str, Any]


def require_examples() -> None:
    """Skip (locally) or fail (CI) when setup-env has not installed the examples package."""
    if (EXAMPLES_DIR / "package.json").is_file():
        return
    reason = (
        f"the official FHIR R4 examples are missing ({EXAMPLES_DIR}): scripts/setup-env "
        "installs them (npm ci in tests/fhir-examples, Node.js 18+)"
    )
    unavailable(reason)


@cache
def example_paths() -> tuple[Path, ...]:
    """Every example file, sorted by name (package.json is the package's own manifest)."""
    return tuple(p for p in sorted(EXAMPLES_DIR.glob("*.json")) if p.name != "package.json")


@cache
def examples_by_type() -> Mapping[str, tuple[Example, ...]]:
    """Every example parsed once per process, grouped by resourceType, in file-name order.

    Callers must not change the resources: they are shared by every test of the session.
    """
    grouped: dict[str, list[Example]] = {}
    for path in example_paths():
        resource = orjson.loads(path.read_bytes())
        if type(resource) is dict and type(resource.get("resourceType")) is str:
            grouped.setdefault(resource["resourceType"], []).append(Example(path.name, resource))
    return MappingProxyType({k: tuple(v) for k, v in sorted(grouped.items())})


@pytest.fixture(scope="session")
def fhir_example_files() -> tuple[Path, ...]:
    """The paths of all 5,306 example files (for tests that send the raw bytes)."""
    require_examples()
    paths = example_paths()
    assert len(paths) == EXPECTED_COUNT, f"{len(paths)} example files, expected {EXPECTED_COUNT}"
    return paths


@pytest.fixture(scope="session")
def fhir_examples(fhir_example_files: tuple[Path, ...]) -> Mapping[str, tuple[Example, ...]]:
    """The parsed examples by resource type (read-only; parsed once per session)."""
    return examples_by_type()
