"""The one splitter of search values (R4 §3.1.1.4.7: `\\,` `\\|` `\\$` `\\\\`)."""

from __future__ import annotations

import pytest

from fhir_server.search.kinds.composite import components
from fhir_server.search.kinds.escape import split_pipe, split_values


@pytest.mark.parametrize(
    ("value", "values"),
    [
        ("a,b", ["a", "b"]),
        ("a\\,b", ["a,b"]),
        ("a\\\\,b", ["a\\", "b"]),  # an escaped backslash does not escape the comma
        ("a\\x", ["a\\x"]),  # a backslash before an ordinary character stays
        ("a\\", ["a\\"]),
        ("", [""]),
    ],
)
def test_alternatives(value: str, values: list[str]) -> None:
    assert split_values(value) == values


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("s|c", ["s", "c"]),
        ("a\\|b", ["a|b"]),
        ("s\\\\|c", ["s\\", "c"]),
        ("a\\,b|c", ["a,b", "c"]),
        ("5|s|c", ["5", "s", "c"]),
    ],
)
def test_system_and_code(value: str, parts: list[str]) -> None:
    assert split_pipe(value) == parts


def test_composite_components() -> None:
    assert components("http://loinc.org|8480-6$gt100") == ["http://loinc.org|8480-6", "gt100"]
    assert components("a\\$b$c") == ["a\\$b", "c"]  # each component's kind unescapes it
