"""Registry: generated R4 tables load and answer per-type questions correctly."""

import pytest

from fhir_server.search.registry import (
    COMMON_PARAMS,
    SearchParam,
    params_for,
    patient_compartment,
    resource_types,
)


def test_resource_types_cover_r4() -> None:
    types = resource_types()
    assert len(types) == 146  # 145 from the definitions + Parameters (see the generator)
    for t in ("Patient", "Observation", "Binary", "Bundle", "Parameters", "MedicinalProduct"):
        assert t in types
    assert "Resource" not in types and "DomainResource" not in types


@pytest.mark.parametrize(
    ("res_type", "code", "kind", "expression", "targets"),
    [
        ("Patient", "name", "string", "Patient.name", ()),
        ("Patient", "birthdate", "date", "Patient.birthDate", ()),
        ("Patient", "phone", "token", "Patient.telecom.where(system='phone')", ()),
        ("Observation", "subject", "reference", "Observation.subject", None),
        ("Observation", "value-quantity", "quantity", None, ()),
        ("Observation", "code-value-quantity", "composite", None, ()),
        ("Condition", "onset-date", "date",
         "Condition.onset.ofType(dateTime) | Condition.onset.ofType(Period)", ()),
        ("Patient", "_id", "token", "Resource.id", ()),
        ("Encounter", "_lastUpdated", "date", "Resource.meta.lastUpdated", ()),
        ("Device", "_tag", "token", "Resource.meta.tag", ()),
        ("Task", "_profile", "uri", "Resource.meta.profile", ()),
        ("Task", "_security", "token", "Resource.meta.security", ()),
        ("Task", "_source", "uri", "Resource.meta.source", ()),
        ("InsurancePlan", "name", "string", "name | alias", ()),
    ],
)  # fmt: skip
def test_params_for(
    res_type: str, code: str, kind: str, expression: str | None, targets: tuple[str, ...] | None
) -> None:
    param = params_for(res_type)[code]
    assert isinstance(param, SearchParam)
    assert (param.code, param.type, param.resource_type) == (code, kind, res_type)
    if expression is not None:
        assert param.expression == expression
    if targets is not None:
        assert param.targets == targets


def test_shared_expression_is_split_per_type() -> None:
    # clinical-patient is one SearchParameter for many bases; each type keeps its own branch
    assert params_for("Observation")["patient"].expression == (
        "Observation.subject.where(resolve() is Patient)"
    )
    assert params_for("Condition")["patient"].expression == (
        "Condition.subject.where(resolve() is Patient)"
    )
    assert params_for("Observation")["patient"].targets == ("Patient",)
    assert "Patient" in params_for("Observation")["subject"].targets


def test_every_type_has_common_params_only_unknown_gets_just_common() -> None:
    for t in resource_types():
        assert set(COMMON_PARAMS) <= set(params_for(t))
    assert set(params_for("NoSuchType")) == set(COMMON_PARAMS)
    assert set(params_for("Binary")) == set(COMMON_PARAMS)
    assert "_text" not in params_for("Patient")


def test_params_for_is_cached_and_read_only() -> None:
    a = params_for("Patient")
    assert a is params_for("Patient")
    with pytest.raises(TypeError):
        a["x"] = a["name"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("res_type", "codes"),
    [
        ("Observation", ("subject", "performer")),
        ("Patient", ("link",)),
        ("Encounter", ("subject",)),
        ("AllergyIntolerance", ("patient", "recorder", "asserter")),
        ("Practitioner", ()),
        ("Organization", ()),
        ("NoSuchType", ()),
    ],
)
def test_patient_compartment(res_type: str, codes: tuple[str, ...]) -> None:
    assert patient_compartment(res_type) == codes
