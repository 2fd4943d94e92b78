"""The validator's shortcuts for the commonest primitive regexes (string, markdown, code, uri,
url, canonical: `checker._SURELY_MATCHES`) only ever accept what the R4 regex accepts, so
skipping the regex for them changes no verdict."""

from __future__ import annotations

import random

from fhir_server.validation import definitions, validate
from fhir_server.validation.checker import _R4_FORMS, _SURELY_MATCHES

# every kind of character the patterns treat differently: ASCII whitespace, Unicode
# whitespace (not whitespace for the re.ASCII patterns), controls, letters, symbols
ALPHABET = [" ", "\t", "\n", "\r", "\f", "\v", "\x00", "\x1c", "\x85", "\xa0", "\u2028",
            "\u3000", "a", "Z", "0", "|", "#", ":", "/", "é", "漢", "\U0001f600"]  # fmt: skip


def _samples() -> list[str]:
    rng = random.Random(4)
    words = ["", " ", "  ", "a b", " a", "a ", "a  b", "http://x.org/a b", "x\ny", "x\fy"]
    words += ["".join(rng.choices(ALPHABET, k=rng.randint(1, 6))) for _ in range(20_000)]
    return words


def test_shortcuts_accept_only_what_the_r4_regex_accepts() -> None:
    forms = definitions().primitives.forms
    for name, surely in _SURELY_MATCHES.items():
        assert forms[name].pattern == _R4_FORMS[name]  # else the checker drops the shortcut
        accepted = 0
        for value in _samples():
            if surely(value):
                accepted += 1
                assert forms[name].fullmatch(value) is not None, (name, value)
        assert accepted > 1_000, name  # the shortcut does take the common case


def test_primitive_verdicts_unchanged_where_the_shortcut_declines() -> None:
    patient = {"resourceType": "Patient", "name": [{"family": "a\fb"}], "language": "en  US"}
    problems = {issue.expression for issue in validate(patient)}
    assert {"Patient.name[0].family", "Patient.language"} <= problems
