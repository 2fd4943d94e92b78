"""The SQL search and the in-memory matcher give the same answer, kind by kind.

Each search-parameter kind (fhir_server/search/kinds/) has an SQL condition and an in-memory
test; the SMART write check judges content with the second, searches use the first. For
generated resources (codes, strings and URIs with `,|$\\` and non-ASCII characters, dates at
every precision, quantities with units, references in every form) and generated search values
(modifiers, prefixes, escapes, malformed ones), the ids the stored search finds (general and
direct-SQL path) are exactly the ids whose content the matcher accepts, and a value one
refuses (400) the other refuses too. On SQLite and PostgreSQL, one store each.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_support import clear_tables

from fhir_server.errors import FhirError
from fhir_server.search.extract import IndexRows, extract
from fhir_server.search.match import matches
from fhir_server.search.query import Compiler, execute
from fhir_server.store.repository import Store

BASE = "http://testserver/fhir"
SETTINGS = settings(
    max_examples=35,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- generated content --------------------------------------------------------------------

_TRICKY = ",|$\\"
chars = st.sampled_from(list("abAB1é Üß" + _TRICKY))
word = st.text(st.sampled_from(list("abAé1Üß" + _TRICKY)), min_size=1, max_size=4)  # no spaces
phrase = st.text(chars, min_size=1, max_size=6).filter(lambda s: s.strip() == s and s.strip())
systems = st.sampled_from(["http://loinc.org", "s|x", "a,b", "urn:s\\"])
years = st.integers(2019, 2021).map(str)


@st.composite
def dates(draw: Any, content: bool) -> str:
    """A date at some precision; content dateTimes with a time need seconds and a zone."""
    year = draw(years)
    cut = draw(st.integers(0, 5 if not content else 3))
    parts = [year, f"-{draw(st.integers(1, 12)):02d}", f"-{draw(st.integers(1, 28)):02d}"]
    value = "".join(parts[: min(cut, 2) + 1])
    if cut >= 3:
        value += f"T{draw(st.integers(0, 23)):02d}:{draw(st.sampled_from([0, 30, 59])):02d}"
        if content or cut >= 4:
            value += f":{draw(st.sampled_from([0, 59])):02d}"
        if content or cut >= 5:
            value += draw(st.sampled_from(["Z", "+02:00", "-05:30"]))
    return value


numbers = st.sampled_from([0.0, 1.0, 1.5, 5.4, 5.45, 5.35, 10.0, 100.0, -2.5, 0.1, 1e-3])
coding = st.fixed_dictionaries({}, optional={"system": systems, "code": word, "display": phrase})
period = st.fixed_dictionaries({}, optional={"start": dates(True), "end": dates(True)})
quantity = st.fixed_dictionaries(
    {"value": numbers},
    optional={
        "unit": st.sampled_from(["mg", "kg", "m,g"]),
        "system": st.sampled_from(["http://unitsofmeasure.org", "u|s"]),
        "code": st.sampled_from(["mg", "kg", "m,g"]),
    },
)
component = st.builds(
    lambda codings, value: {"code": {"coding": codings}, **value},
    st.lists(coding, min_size=1, max_size=2),
    st.one_of(
        quantity.map(lambda q: {"valueQuantity": q}),
        st.lists(coding, min_size=1, max_size=2).map(
            lambda c: {"valueCodeableConcept": {"coding": c}}
        ),
        st.just({}),
    ),
)
targets = st.sampled_from(
    ["Patient/p1", "Patient/p2", "Group/g1", f"{BASE}/Patient/p1", "http://other/Patient/p1"]
)


@st.composite
def observation(draw: Any) -> dict[str, Any]:
    obs: dict[str, Any] = {"resourceType": "Observation", "status": "final"}
    obs["code"] = {"coding": draw(st.lists(coding, min_size=1, max_size=2))}
    if draw(st.booleans()):
        obs["code"]["text"] = draw(phrase)
    if draw(st.booleans()):
        obs["subject"] = {"reference": draw(targets)}
    which = draw(st.sampled_from(["dateTime", "Period", None]))
    if which == "dateTime":
        obs["effectiveDateTime"] = draw(dates(True))
    elif which == "Period":
        obs["effectivePeriod"] = draw(period)
    value = draw(st.sampled_from(["Quantity", "String", "CodeableConcept", "DateTime", None]))
    if value == "Quantity":
        obs["valueQuantity"] = draw(quantity)
    elif value == "String":
        obs["valueString"] = draw(phrase)
    elif value == "CodeableConcept":
        obs["valueCodeableConcept"] = {"coding": draw(st.lists(coding, min_size=1, max_size=2))}
    elif value == "DateTime":
        obs["valueDateTime"] = draw(dates(True))
    # components: a composite must pair a code and a value of the SAME component
    components = draw(st.lists(component, max_size=3))
    if components:
        obs["component"] = components
    return obs


@st.composite
def patient(draw: Any) -> dict[str, Any]:
    pat: dict[str, Any] = {"resourceType": "Patient"}
    names = draw(st.lists(st.fixed_dictionaries({"family": phrase}), max_size=2))
    if names:
        pat["name"] = names
    if draw(st.booleans()):
        pat["birthDate"] = draw(dates(False).filter(lambda d: "T" not in d))
    if draw(st.booleans()):
        pat["identifier"] = [{"system": draw(systems), "value": draw(word)}]
    if draw(st.booleans()):
        pat["generalPractitioner"] = [{"reference": "Practitioner/d1"}]
    return pat


value_sets = st.builds(
    lambda url: {"resourceType": "ValueSet", "status": "active", "url": url},
    st.sampled_from(
        ["http://a.org/vs", "http://a.org/vs/1", "HTTP://a.org/vs", "http://a.org/v,s", "h|x"]
    ),
)
risks = st.builds(
    lambda p: {
        "resourceType": "RiskAssessment",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "prediction": [{"probabilityDecimal": p}],
    },
    numbers,
)
resources = st.lists(st.one_of(observation(), patient(), value_sets, risks), max_size=6)

# --- generated searches -------------------------------------------------------------------


def escape(s: str) -> str:
    return "".join("\\" + c if c in _TRICKY else c for c in s)


literal = st.one_of(word.map(escape), word)  # usually escaped right, sometimes raw
prefixes = st.sampled_from(["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"])
number_text = st.sampled_from(["0", "1", "1.5", "5.4", "5.40", "5", "10", "1e2", "-2.5", "x"])


@st.composite
def token_value(draw: Any) -> str:
    form = draw(st.integers(0, 3))
    system = draw(st.one_of(systems.map(escape), systems))
    code = draw(literal)
    return [code, f"{system}|{code}", f"|{code}", f"{system}|"][form]


def alternatives(value: Any) -> Any:
    return st.lists(value, min_size=1, max_size=2).map(",".join)


date_value = st.builds(lambda p, d: p + d, prefixes, dates(False)) | st.just("2020-13")
quantity_value = st.builds(
    lambda p, n, unit: p + n + unit,
    prefixes | st.just("ap"),
    number_text,
    st.sampled_from(["", "||mg", "|http://unitsofmeasure.org|mg", "||m\\,g", "|u\\|s|kg", "|x"]),
)
reference_value = st.sampled_from(
    ["p1", "Patient/p1", "Group/g1", f"{BASE}/Patient/p1", "http://other/Patient/p1", "x/y"]
    + ["Patient/p1/_history/2", "d1", "Practitioner/d1"]
)


def composite(*parts: Any) -> Any:
    return st.tuples(*parts).map("$".join)


QUANTITY_COMPOSITES = ["code-value-quantity", "component-code-value-quantity"]
CONCEPT_COMPOSITES = ["code-value-concept", "component-code-value-concept"]

COMPOSITE_SEARCHES = st.one_of(
    st.tuples(
        st.sampled_from([*QUANTITY_COMPOSITES, "combo-code-value-quantity"]),
        st.just(""),
        alternatives(composite(token_value(), quantity_value)),
    ),
    st.tuples(
        st.sampled_from([*CONCEPT_COMPOSITES, "combo-code-value-concept"]),
        st.just(""),
        alternatives(composite(token_value(), token_value())),
    ),
    st.tuples(st.just("code-value-string"), st.just(""), composite(token_value(), literal)),
    st.tuples(
        st.just("code-value-date"),
        st.just(""),
        alternatives(composite(token_value(), date_value)),
    ),
    st.tuples(  # malformed: too few or too many components, a modifier
        st.sampled_from(["code-value-quantity", "combo-code-value-concept:exact"]),
        st.just(""),
        st.sampled_from(["x", "a$1$2", "a\\$1"]),
    ),
    st.tuples(
        st.sampled_from(["code-value-quantity", "component-code-value-concept"]),
        st.just(":missing"),
        st.sampled_from(["true", "false"]),
    ),
)

SEARCHES = {
    "Observation": st.one_of(
        COMPOSITE_SEARCHES,
        st.tuples(st.just("code"), st.sampled_from(["", ":not"]), alternatives(token_value())),
        st.tuples(st.just("code"), st.just(":text"), phrase),
        st.tuples(st.just("date"), st.just(""), alternatives(date_value)),
        st.tuples(st.just("value-quantity"), st.just(""), alternatives(quantity_value)),
        st.tuples(
            st.just("subject"),
            st.sampled_from(["", ":Patient", ":Group", ":bogus"]),
            alternatives(reference_value),
        ),
        st.tuples(st.just("value-string"), st.sampled_from(["", ":exact", ":contains"]), phrase),
        st.tuples(
            st.sampled_from(["subject", "date", "code", "value-quantity"]),
            st.just(":missing"),
            st.sampled_from(["true", "false"]),
        ),
    ),
    "Patient": st.one_of(
        st.tuples(
            st.sampled_from(["family", "name"]),
            st.sampled_from(["", ":exact", ":contains", ":below"]),
            alternatives(st.one_of(phrase, phrase.map(escape))),
        ),
        st.tuples(st.just("birthdate"), st.just(""), alternatives(date_value)),
        st.tuples(st.just("identifier"), st.just(""), alternatives(token_value())),
        st.tuples(st.just("general-practitioner"), st.just(""), reference_value),
    ),
    "ValueSet": st.tuples(
        st.just("url"),
        st.sampled_from(["", ":below", ":above"]),
        st.sampled_from(["http://a.org/vs", "http://a.org/vs/1/x", "http://a.org", "HTTP://a"])
        | st.sampled_from(["http://a.org/v\\,s", "h\\|x", "h|x", ""]),
    ),
    "RiskAssessment": st.tuples(
        st.just("probability"),
        st.just(""),
        alternatives(st.builds(str.__add__, prefixes, number_text)),
    ),
}


def derived(generated: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """Search values taken from the content itself (escaped), so searches also hit."""
    pool: dict[tuple[str, str], list[str]] = {}

    def add(res_type: str, code: str, *values: str) -> None:
        pool.setdefault((res_type, code), []).extend(values)

    for r in generated:
        t = r["resourceType"]
        for c in r.get("code", {}).get("coding", []):
            code, system = escape(c.get("code", "")), escape(c.get("system", ""))
            add(t, "code", code, f"{system}|{code}", f"|{code}", f"{system}|")
            add(t, "code", escape(c.get("display", "x")[:2]))
        add(t, "code", escape(r.get("code", {}).get("text", "x")[:3]))
        for key in ("effectiveDateTime", "birthDate"):
            if key in r:
                add(t, "date" if t == "Observation" else "birthdate", r[key], "ge" + r[key])
        for edge in r.get("effectivePeriod", {}).values():
            add(t, "date", edge, "le" + edge)
        if "valueQuantity" in r:
            q = r["valueQuantity"]
            unit = escape(q.get("unit", "") or q.get("code", ""))
            system, code = escape(q.get("system", "")), escape(q.get("code", ""))
            add(t, "value-quantity", f"{q['value']}", f"{q['value']}|{system}|{code}")
            add(t, "value-quantity", f"{q['value']}||{unit}", f"ap{q['value']}")
        if "valueString" in r:
            add(t, "value-string", escape(r["valueString"]), escape(r["valueString"][:2]))
        for element, prefix in [
            (r, "code-value"),
            *((c, "component-code-value") for c in r.get("component", [])),
        ]:
            for c in element.get("code", {}).get("coding", []):
                code, system = escape(c.get("code", "")), escape(c.get("system", ""))
                token = f"{system}|{code}" if "system" in c else code
                if "valueQuantity" in element:
                    q = element["valueQuantity"]
                    for name in (f"{prefix}-quantity", "combo-code-value-quantity"):
                        add(t, name, f"{token}${q['value']}", f"{code}$ge{q['value']}")
                for v in element.get("valueCodeableConcept", {}).get("coding", []):
                    value = escape(v.get("code", "")) or "x"
                    for name in (f"{prefix}-concept", "combo-code-value-concept"):
                        add(t, name, f"{token}${value}")
                if "valueString" in element:
                    add(t, "code-value-string", f"{token}${escape(element['valueString'][:2])}")
                if "valueDateTime" in element:
                    add(t, "code-value-date", f"{token}${element['valueDateTime'][:7]}")
        parts = r.get("component", [])
        for a in parts:  # a code of one component with the value of another: no match
            for b in parts:
                for c in a["code"]["coding"]:
                    if "valueQuantity" in b:
                        value = f"{escape(c.get('code', ''))}${b['valueQuantity']['value']}"
                        add(t, "component-code-value-quantity", value)
                        add(t, "combo-code-value-quantity", value)
        if "subject" in r and t == "Observation":
            add(t, "subject", r["subject"]["reference"])
        for name in r.get("name", []):
            for code in ("family", "name"):
                add(t, code, escape(name["family"]), escape(name["family"][:2]))
        for ident in r.get("identifier", []):
            value = escape(ident["value"])
            add(t, "identifier", value, f"{escape(ident['system'])}|{value}")
        if "url" in r:
            add(t, "url", escape(r["url"]), escape(r["url"][:9]))
        for prediction in r.get("prediction", []):
            add(t, "probability", str(prediction["probabilityDecimal"]))
    return pool


@st.composite
def searches_for(
    draw: Any, generated: list[dict[str, Any]], only: Any = None
) -> list[tuple[str, str, str]]:
    pool = derived(generated)
    res_type = draw(st.sampled_from(sorted({r["resourceType"] for r in generated} or SEARCHES)))
    out = []
    kinds = only if only is not None else SEARCHES[res_type]
    for name, modifier, value in draw(st.lists(kinds, min_size=1, max_size=4)):
        name += modifier
        values = pool.get((res_type, name.split(":")[0]))
        if values and ":missing" not in name and draw(st.booleans()):
            value = draw(st.sampled_from(values))
        out.append((res_type, name, value))
    return out


# --- the comparison -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(session_app: Any) -> Store:
    return session_app.state.store  # type: ignore[no-any-return]


def _stored(store: Store, generated: list[dict[str, Any]]) -> list[tuple[str, str, dict]]:
    clear_tables(store.engine, keep={"auth_signing_keys"})
    out = []
    for i, resource in enumerate(generated):
        res_type, res_id = resource["resourceType"], f"r{i}"
        try:
            with store.transaction() as tx:
                tx.update(res_type, res_id, resource | {"id": res_id})
        except FhirError:
            continue  # content the server refuses is not a case for search
        found = store.read(res_type, res_id)
        assert found is not None
        out.append((res_type, res_id, found.json()))
    return out


def _by_sql(store: Store, res_type: str, name: str, value: str, direct: bool) -> Any:
    try:
        plan = Compiler(BASE, strict=True).compile(
            res_type, [(name, value), ("_count", "1000")], direct=direct
        )
        with store.connection() as conn:
            return {row.res_id for row in execute(conn, plan).rows}
    except FhirError as exc:
        assert exc.status == 400, exc.diagnostics
        return "refused"


def _in_memory(stored: list[tuple[str, str, dict]], res_type: str, name: str, value: str) -> Any:
    try:
        matches(res_type, IndexRows(), name, value, BASE)  # a value is refused without content too
        return {
            res_id
            for t, res_id, body in stored
            if t == res_type and matches(t, extract(body, BASE), name, value, BASE)
        }
    except FhirError as exc:
        assert exc.status == 400, exc.diagnostics
        return "refused"


@SETTINGS
@given(generated=resources, data=st.data())
def test_sql_search_and_in_memory_matcher_agree(
    store: Store, generated: list[dict[str, Any]], data: st.DataObject
) -> None:
    stored = _stored(store, generated)
    for res_type, name, value in data.draw(searches_for(generated)):
        expected = _in_memory(stored, res_type, name, value)
        for direct in (False, True):
            found = _by_sql(store, res_type, name, value, direct)
            assert found == expected, (res_type, name, value, direct, stored)


# Observations with several components coded from a small pool, so that a code of one
# component next to the value of another (which must not match) comes up often.
few_codings = st.sampled_from(
    [{"system": "http://loinc.org", "code": c} for c in ("8480-6", "8462-4")] + [{"code": "a$b"}]
)
panel = st.builds(
    lambda code, parts: {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [code]},
        "component": parts,
    },
    few_codings,
    st.lists(
        st.builds(
            lambda c, q: {"code": {"coding": [c]}, "valueQuantity": q},
            few_codings,
            quantity,
        ),
        min_size=1,
        max_size=3,
    ),
)


@SETTINGS
@given(generated=st.lists(panel, min_size=1, max_size=4), data=st.data())
def test_composite_sql_search_and_in_memory_matcher_agree(
    store: Store, generated: list[dict[str, Any]], data: st.DataObject
) -> None:
    stored = _stored(store, generated)
    searches = data.draw(searches_for(generated, COMPOSITE_SEARCHES))
    for (res_type, name), values in derived(generated).items():
        if "-code-value-" in name:  # every pairing the content offers, same element or not
            searches.extend((res_type, name, v) for v in values)
    for res_type, name, value in searches:
        expected = _in_memory(stored, res_type, name, value)
        for direct in (False, True):
            found = _by_sql(store, res_type, name, value, direct)
            assert found == expected, (res_type, name, value, direct, stored)


@pytest.mark.parametrize(
    ("code", "value", "hit"),
    [
        ("a,b", "a\\,b", True),
        ("a,b", "a,b", False),  # `a` or `b`
        ("a|b", "a\\|b", True),
        ("a$b", "a\\$b", True),
        ("a\\b", "a\\\\b", True),
        ("a\\b", "a\\b", True),  # a backslash before an ordinary character stays
    ],
)
def test_escapes_mean_the_same_to_sql_and_memory(
    store: Store, code: str, value: str, hit: bool
) -> None:
    stored = _stored(
        store,
        [{"resourceType": "Observation", "status": "final", "code": {"coding": [{"code": code}]}}],
    )
    want = {"r0"} if hit else set()
    assert _in_memory(stored, "Observation", "code", value) == want
    assert _by_sql(store, "Observation", "code", value, False) == want
