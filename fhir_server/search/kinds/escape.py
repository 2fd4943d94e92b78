"""FHIR search value escaping (R4 §3.1.1.4.7), in one place for every kind and every caller.

`,` separates alternatives, `|` a token's system from its code (and a quantity's number, system
and code), `$` a composite's components; `\\,` `\\|` `\\$` and `\\\\` stand for the characters
themselves. Splitting keeps escapes so a later split (on `|` after `,`) still sees them; only
`unescape` removes them. The SQL compiler and the in-memory matcher both split here, so a value
cannot mean one thing to a search and another to a SMART write check.
"""

from __future__ import annotations

ESCAPABLE = frozenset(",$|\\")


def split(value: str, sep: str) -> list[str]:
    """`value` cut at every unescaped `sep`; the parts keep their escapes."""
    if "\\" not in value:
        return value.split(sep)
    parts: list[str] = []
    start = i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            i += 2
            continue
        if ch == sep:
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return parts


def unescape(part: str) -> str:
    """The literal text of one part: `\\,` `\\$` `\\|` `\\\\` become the character; any other
    backslash (and a trailing one) stays as written."""
    if "\\" not in part:
        return part
    out: list[str] = []
    i = 0
    while i < len(part):
        ch = part[i]
        if ch == "\\" and i + 1 < len(part) and part[i + 1] in ESCAPABLE:
            out.append(part[i + 1])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def alternatives(value: str) -> list[str]:
    """The comma-separated alternatives (OR) of one parameter value, still escaped."""
    return split(value, ",")


def split_values(value: str) -> list[str]:
    """The alternatives of a value whose kind has no inner separator, unescaped."""
    return [unescape(p) for p in split(value, ",")]


def split_pipe(value: str) -> list[str]:
    """`system|code` (or `number|system|code`) of one escaped alternative, unescaped."""
    return [unescape(p) for p in split(value, "|")]
