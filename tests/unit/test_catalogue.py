"""The event catalogue in schemas/ and its loader."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastavro import parse_schema

from hub.domain.errors import SchemaError
from hub.serde.catalogue import DEFAULT_ROOT, Catalogue, record_name_for
from hub.serde.lint import lint_schema

CATALOGUE = Catalogue.load()
RELOADED = Catalogue.load()

# Event types the scenarios S1-S20 rely on (REQUIREMENTS §2.3 families A-K, §7).
SCENARIO_EVENTS = """
person.registered person.identifier_linked record.link_retracted person.address_changed
iom.cohort_entered iom.cohort_exited police.priority_score_updated police.arrest police.charge
court.conviction court.sentence custody.received custody.release_scheduled custody.released
licence.conditions_set licence.conditions_varied supervision.breach_recorded supervision.recall
supervision.responsibility_assigned supervision.responsibility_transferred assessment.risk_of_harm
assessment.needs mappa.meeting_outcome assessment.extremism_risk referral.created referral.screened
referral.accepted referral.declined mentor.assigned mentoring.contact mentoring.closed helpline.call
disclosure.made disclosure.emergency document.shared lcp.nominated lcp.eligibility_evaluated
lcp.enrolled lcp.session_attended lcp.session_missed lcp.withdrawn lcp.completed
plan.life_change_created plan.milestone_set plan.milestone_achieved sh.case_reported
sh.screening_completed sh.case_conference_held sh.action_plan_agreed mayor.order_issued
aftercare.prison_visit aftercare.release_support_given route.application route.eligibility_evaluated
outcome.employment_started outcome.training_started outcome.housing_secured
outcome.reoffence_recorded victim.release_notification_due victim.notified consent.given
consent.withdrawn consent.scope_changed record.corrected research.extract_approved org.superseded
""".split()

REQUIRED_LISTS = """
pathways jurisdictions sensitivities identifier_schemes release_types sentence_types offence_types
risk_levels contact_modes referral_programmes order_types lcp_session_themes outcome_types
breach_types consent_scopes
""".split()

STANDARD_PATHWAYS = {
    "accommodation",
    "education_training_employment",
    "health",
    "drugs_alcohol",
    "finance_benefit_debt",
    "children_families",
    "attitudes_thinking_behaviour",
}


def _records(t: Any) -> Iterator[dict[str, Any]]:
    """Every record definition inside a (self-contained) schema."""
    if isinstance(t, list):
        for branch in t:
            yield from _records(branch)
    elif isinstance(t, dict):
        if t.get("type") == "record":
            yield t
            for field in t["fields"]:
                yield from _records(field["type"])
        elif t.get("type") == "array":
            yield from _records(t["items"])
        elif t.get("type") == "map":
            yield from _records(t["values"])


# -- the catalogue as shipped ------------------------------------------------------------------


def test_catalogue_has_every_event_the_scenarios_use() -> None:
    missing = sorted(set(SCENARIO_EVENTS) - set(CATALOGUE.event_types()))
    assert missing == []


@pytest.mark.parametrize(
    ("event_type", "name"),
    [
        ("custody.released", "hub.events.CustodyReleased"),
        ("person.identifier_linked", "hub.events.PersonIdentifierLinked"),
        ("sh.case_reported", "hub.events.ShCaseReported"),
        ("cross_border.notification", "hub.events.CrossBorderNotification"),
    ],
)
def test_record_name_is_pascal_case_of_the_event_type(event_type: str, name: str) -> None:
    assert record_name_for(event_type) == name
    assert CATALOGUE.name_for(event_type) == name
    assert CATALOGUE.event_type_for(name) == event_type


@pytest.mark.parametrize("name", CATALOGUE.names())
def test_every_event_is_envelope_then_payload_then_disclosure(name: str) -> None:
    schema = CATALOGUE.schema(name)
    fields = schema["fields"]
    assert fields[0]["name"] == "envelope"
    assert fields[0]["type"]["name"] == "hub.events.Envelope"
    assert fields[-1]["name"] == "disclosure"
    assert fields[-1]["type"][0] == "null" and fields[-1]["default"] is None
    assert schema["hub.event_type"] == CATALOGUE.event_type_for(name)
    assert record_name_for(schema["hub.event_type"]) == name
    assert (DEFAULT_ROOT / "events" / f"{name.rpartition('.')[2]}.avsc").is_file()
    assert len(fields) > 2, "an event without payload"
    for field in fields[1:-1]:
        assert field["type"][0] == "null" and field["default"] is None, field["name"]


@pytest.mark.parametrize("name", CATALOGUE.names())
def test_every_record_and_field_has_a_doc(name: str) -> None:
    for record in _records(CATALOGUE.schema(name)):
        assert record.get("doc"), record["name"]
        for field in record["fields"]:
            assert field.get("doc"), f"{record['name']}.{field['name']}"


@pytest.mark.parametrize("name", CATALOGUE.names())
def test_schema_is_self_contained_and_stable(name: str) -> None:
    text = CATALOGUE.canonical_json(name)
    assert text == RELOADED.canonical_json(name)
    schema = json.loads(text)
    assert schema == CATALOGUE.schema(name)
    parse_schema(schema, named_schemas={})  # no reference to anything outside the text
    assert text.count('"name":"hub.events.Envelope"') == 1
    assert lint_schema(schema) == []


def test_every_reference_field_names_an_existing_list() -> None:
    lists = set(CATALOGUE.reference_lists())
    assert set(REQUIRED_LISTS) <= lists
    for name in CATALOGUE.names():
        for path, list_name in CATALOGUE.reference_fields(name).items():
            assert list_name in lists, f"{name}.{path}"
            assert (DEFAULT_ROOT / "reference" / f"{list_name}.yaml").is_file()
            assert CATALOGUE.reference(list_name)


def test_local_need_areas_map_onto_the_seven_standard_pathways() -> None:
    pathways = CATALOGUE.reference_list("pathways")
    standard = {c.code for c in pathways.codes if c.maps_to is None}
    assert standard == STANDARD_PATHWAYS
    local = [c for c in pathways.codes if c.maps_to is not None]
    assert {c.code for c in local} >= {
        "nl_ac_identity_papers",
        "nl_ac_accommodation",
        "nl_ac_income",
        "nl_ac_debt",
        "nl_ac_care",
        "nl_sh_housing",
        "nl_sh_domestic_violence",
        "nl_sh_children",
        "nl_sh_drugs_dependency",
        "it_eri_employment",
        "it_eri_food",
        "it_eri_company",
    }
    assert set(pathways.maps_to().values()) == STANDARD_PATHWAYS


def test_envelope_references_jurisdictions_and_sensitivities() -> None:
    refs = CATALOGUE.reference_fields("custody.released")
    assert refs["envelope.jurisdiction"] == "jurisdictions"
    assert refs["envelope.sensitivity"] == "sensitivities"
    assert refs["envelope.subject.identifiers.scheme"] == "identifier_schemes"
    assert CATALOGUE.reference("jurisdictions") == {"UK-ENG", "NL", "IT"}
    assert {
        "standard",
        "health",
        "victim",
        "intelligence",
        "mappa",
        "disclosure",
        "restricted-programme",
    } == CATALOGUE.reference("sensitivities")


def test_release_carries_what_s1_needs() -> None:
    assert {"release_date", "release_type", "establishment"} <= set(
        CATALOGUE.required_fields("custody.release_scheduled")
    )
    refs = CATALOGUE.reference_fields("custody.release_scheduled")
    assert refs["release_type"] == "release_types"
    fields = {f["name"] for f in CATALOGUE.schema("custody.release_scheduled")["fields"]}
    assert {"release_address", "release_area", "supervising_body", "offender_manager"} <= fields


def test_restricted_content_is_marked_sensitive() -> None:
    assert "conditions.named_associates" in CATALOGUE.sensitive_fields("licence.conditions_set")
    assert "conditions.exclusion_zone_geometry" in CATALOGUE.sensitive_fields(
        "licence.conditions_set"
    )
    assert "needs.need_code" in CATALOGUE.sensitive_fields("assessment.needs")
    assert "needs.clinical_detail" in CATALOGUE.sensitive_fields("assessment.needs")
    assert "victim_contact" in CATALOGUE.sensitive_fields("victim.notified")
    assert "notes" in CATALOGUE.sensitive_fields("mentoring.contact")
    assert {"score", "cost_of_crime"} <= set(
        CATALOGUE.sensitive_fields("police.priority_score_updated")
    )
    # sensitive fields are never envelope metadata
    assert not any(
        p.startswith("envelope.") for n in CATALOGUE.names() for p in CATALOGUE.sensitive_fields(n)
    )


def test_money_is_a_decimal_with_two_places() -> None:
    field = next(
        f
        for f in CATALOGUE.schema("police.priority_score_updated")["fields"]
        if f["name"] == "cost_of_crime"
    )
    assert field["type"] == [
        "null",
        {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
    ]


def test_lookups_accept_names_and_event_types_and_refuse_unknown_ones() -> None:
    assert CATALOGUE.schema("CustodyReleased") == CATALOGUE.schema("custody.released")
    assert CATALOGUE.parsed("custody.released") is CATALOGUE.parsed("hub.events.CustodyReleased")
    assert "custody.released" in CATALOGUE and "custody.escaped" not in CATALOGUE
    with pytest.raises(KeyError, match="custody.escaped"):
        CATALOGUE.name_for("custody.escaped")
    with pytest.raises(KeyError):
        CATALOGUE.schema("hub.events.Nope")
    with pytest.raises(KeyError, match="nope"):
        CATALOGUE.reference("nope")


# -- broken schema directories -----------------------------------------------------------------


@pytest.fixture()
def schemas(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(DEFAULT_ROOT, root)
    return root


def _edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    """Load a JSON file, let ``change`` mutate it in place, write it back."""
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


def _field(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in doc["fields"] if f["name"] == name)


def _load_error(root: Path) -> str:
    with pytest.raises(SchemaError) as caught:
        Catalogue.load(root)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_copied_catalogue_loads(schemas: Path) -> None:
    assert Catalogue.load(schemas).names() == CATALOGUE.names()


def test_missing_field_doc_is_an_error_naming_file_and_field(schemas: Path) -> None:
    path = schemas / "events" / "CustodyReleased.avsc"
    _edit_json(path, lambda d: _field(d, "release_type").pop("doc"))
    message = _load_error(schemas)
    assert message.startswith("schemas/events/CustodyReleased.avsc: ")
    assert "hub.events.CustodyReleased.release_type: field has no doc" in message


def test_missing_doc_in_a_shared_type_is_an_error(schemas: Path) -> None:
    _edit_json(schemas / "types.avsc", lambda d: d[0]["fields"][0].pop("doc"))
    assert _load_error(schemas).startswith(
        "schemas/types.avsc: hub.events.Address.line1: field has no doc"
    )


def test_non_nullable_payload_field_is_an_error(schemas: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        field = _field(d, "release_type")
        field["type"] = "string"
        del field["default"]

    _edit_json(schemas / "events" / "CustodyReleased.avsc", change)
    message = _load_error(schemas)
    assert message.startswith("schemas/events/CustodyReleased.avsc: ")
    assert "release_type: payload field is not nullable" in message


def test_nullable_without_default_null_is_an_error(schemas: Path) -> None:
    _edit_json(
        schemas / "events" / "CustodyReleased.avsc",
        lambda d: _field(d, "establishment").pop("default"),
    )
    assert "establishment: payload field is not nullable" in _load_error(schemas)


def test_non_nullable_field_of_a_shared_payload_type_is_an_error(schemas: Path) -> None:
    def change(d: list[dict[str, Any]]) -> None:
        field = d[0]["fields"][0]  # hub.events.Address.line1
        field["type"] = "string"
        del field["default"]

    _edit_json(schemas / "types.avsc", change)
    message = _load_error(schemas)
    assert message.startswith("schemas/types.avsc: hub.events.Address.line1: ")
    assert "not nullable" in message


def test_envelope_type_inside_a_payload_is_an_error(schemas: Path) -> None:
    _edit_json(
        schemas / "events" / "CustodyReleased.avsc",
        lambda d: _field(d, "offender_manager").update({"type": ["null", "hub.events.Identifier"]}),
    )
    assert "envelope type hub.events.Identifier cannot be used in a payload" in _load_error(schemas)


def test_unknown_reference_list_is_an_error(schemas: Path) -> None:
    _edit_json(
        schemas / "events" / "CustodyReleased.avsc",
        lambda d: _field(d, "release_type").update({"hub.reference": "release_kinds"}),
    )
    message = _load_error(schemas)
    assert message.startswith("schemas/events/CustodyReleased.avsc: ")
    assert "unknown reference list 'release_kinds'" in message


def test_misspelt_hub_attribute_is_an_error(schemas: Path) -> None:
    _edit_json(
        schemas / "events" / "CustodyReleased.avsc",
        lambda d: _field(d, "release_type").update({"hub.requried": True}),
    )
    assert "unknown attribute 'hub.requried'" in _load_error(schemas)


def test_required_must_be_true(schemas: Path) -> None:
    _edit_json(
        schemas / "events" / "CustodyReleased.avsc",
        lambda d: _field(d, "release_type").update({"hub.required": "yes"}),
    )
    assert "hub.required is 'yes', expected true" in _load_error(schemas)


def test_invalid_json_names_the_line(schemas: Path) -> None:
    path = schemas / "events" / "CustodyReleased.avsc"
    path.write_text(path.read_text().replace('"fields": [', '"fields": [,', 1))
    message = _load_error(schemas)
    assert message.startswith("schemas/events/CustodyReleased.avsc: invalid JSON at line ")


def test_record_name_must_match_event_type(schemas: Path) -> None:
    _edit_json(
        schemas / "events" / "CustodyReleased.avsc",
        lambda d: d.update({"hub.event_type": "custody.let_out"}),
    )
    message = _load_error(schemas)
    assert "does not match event type 'custody.let_out'" in message
    assert "hub.events.CustodyLetOut" in message


def test_missing_event_type_is_an_error(schemas: Path) -> None:
    _edit_json(schemas / "events" / "CustodyReleased.avsc", lambda d: d.pop("hub.event_type"))
    assert '"hub.event_type" is None' in _load_error(schemas)


def test_envelope_must_come_first(schemas: Path) -> None:
    _edit_json(
        schemas / "events" / "CustodyReleased.avsc",
        lambda d: d["fields"].insert(0, d["fields"].pop(1)),
    )
    assert 'the first field must be "envelope"' in _load_error(schemas)


def test_disclosure_must_come_last(schemas: Path) -> None:
    _edit_json(schemas / "events" / "CustodyReleased.avsc", lambda d: d["fields"].pop())
    assert 'the last field must be "disclosure"' in _load_error(schemas)


def test_unknown_type_reference_is_an_error(schemas: Path) -> None:
    _edit_json(
        schemas / "events" / "CustodyReleased.avsc",
        lambda d: _field(d, "offender_manager").update({"type": ["null", "hub.events.Nobody"]}),
    )
    assert "offender_manager: unknown type 'hub.events.Nobody'" in _load_error(schemas)


def test_default_of_the_wrong_type_is_an_error(schemas: Path) -> None:
    def change(d: list[dict[str, Any]]) -> None:
        envelope = next(t for t in d if t["name"] == "hub.events.Envelope")
        _field(envelope, "schema_version")["default"] = "one"

    _edit_json(schemas / "envelope.avsc", change)
    message = _load_error(schemas)
    assert "not valid Avro" in message


def test_array_of_null_in_a_payload_is_an_error(schemas: Path) -> None:
    _edit_json(
        schemas / "events" / "CustodyReleased.avsc",
        lambda d: _field(d, "destination_area").update(
            {"type": ["null", {"type": "array", "items": "null"}]}
        ),
    )
    message = _load_error(schemas)
    assert message == (
        "schemas/events/CustodyReleased.avsc: hub.events.CustodyReleased."
        "destination_area: array of null allows amplification"
    )


def test_file_name_must_match_the_record_name(schemas: Path) -> None:
    shutil.copy(
        schemas / "events" / "CustodyReleased.avsc",
        schemas / "events" / "CustodyReleasedAgain.avsc",
    )
    message = _load_error(schemas)
    assert message.startswith("schemas/events/CustodyReleasedAgain.avsc: file name does not match")


def test_reference_list_without_label_is_an_error(schemas: Path) -> None:
    path = schemas / "reference" / "release_types.yaml"
    doc = yaml.safe_load(path.read_text())
    del doc["codes"][1]["label"]
    path.write_text(yaml.safe_dump(doc))
    message = _load_error(schemas)
    assert (
        message == "schemas/reference/release_types.yaml: codes[1]: code 'on_licence' has no label"
    )


def test_reference_list_name_must_match_the_file(schemas: Path) -> None:
    path = schemas / "reference" / "release_types.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["name"] = "releases"
    path.write_text(yaml.safe_dump(doc))
    assert "name is 'releases', expected 'release_types'" in _load_error(schemas)


def test_maps_to_must_name_a_standard_code(schemas: Path) -> None:
    path = schemas / "reference" / "pathways.yaml"
    doc = yaml.safe_load(path.read_text())
    local = next(c for c in doc["codes"] if c["code"] == "nl_ac_debt")
    local["maps_to"] = "money"
    path.write_text(yaml.safe_dump(doc))
    assert "code 'nl_ac_debt' maps_to 'money'" in _load_error(schemas)


def test_unknown_jurisdiction_in_reference_data_is_an_error(schemas: Path) -> None:
    path = schemas / "reference" / "order_types.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["codes"][0]["jurisdictions"] = ["BE"]
    path.write_text(yaml.safe_dump(doc))
    assert "unknown jurisdiction 'BE'" in _load_error(schemas)


def test_invalid_yaml_is_an_error(schemas: Path) -> None:
    (schemas / "reference" / "release_types.yaml").write_text("name: [unclosed\n")
    assert _load_error(schemas).startswith("schemas/reference/release_types.yaml: invalid YAML")


def test_missing_envelope_type_is_an_error(schemas: Path) -> None:
    def change(d: list[dict[str, Any]]) -> None:
        d[:] = [t for t in d if t["name"] != "hub.events.Disclosure"]

    _edit_json(schemas / "envelope.avsc", change)
    assert "hub.events.Disclosure is not defined" in _load_error(schemas)


# -- lint ---------------------------------------------------------------------------------------


def _record(name: str, *fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields)}


def test_lint_accepts_the_catalogue() -> None:
    assert all(lint_schema(CATALOGUE.schema(n)) == [] for n in CATALOGUE.names())


def test_lint_reports_array_of_null_naming_the_field() -> None:
    schema = _record("hub.events.X", {"name": "field", "type": {"type": "array", "items": "null"}})
    assert lint_schema(schema) == ["hub.events.X.field: array of null allows amplification"]


def test_lint_reports_array_of_empty_record_naming_the_field() -> None:
    empty = {"type": "record", "name": "Empty", "fields": []}
    schema = _record(
        "hub.events.X", {"name": "things", "type": ["null", {"type": "array", "items": empty}]}
    )
    assert lint_schema(schema) == [
        "hub.events.X.things: array of empty record hub.events.Empty allows amplification"
    ]


def test_lint_follows_references_and_nesting() -> None:
    schema = _record(
        "hub.events.X",
        {
            "name": "first",
            "type": {
                "type": "record",
                "name": "Nothing",
                "fields": [{"name": "n", "type": "null"}],
            },
        },
        {
            "name": "outer",
            "type": _record(
                "Outer", {"name": "inner", "type": {"type": "array", "items": "Nothing"}}
            ),
        },
        {
            "name": "deep",
            "type": {
                "type": "map",
                "values": {"type": "array", "items": {"type": "array", "items": ["null"]}},
            },
        },
    )
    assert lint_schema(schema) == [
        "hub.events.X.outer.inner: array of zero-size record hub.events.Nothing"
        " allows amplification",
    ]


def test_lint_allows_arrays_whose_items_cost_bytes() -> None:
    schema = _record(
        "hub.events.X",
        {"name": "a", "type": {"type": "array", "items": ["null", "string"]}},
        {
            "name": "b",
            "type": {"type": "array", "items": _record("One", {"name": "x", "type": "int"})},
        },
        {
            "name": "c",
            "type": {"type": "array", "items": {"type": "enum", "name": "E", "symbols": ["A"]}},
        },
    )
    assert lint_schema(schema) == []
