"""Compatibility levels, messages that name the breaking field, canonical forms."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.domain.errors import SchemaError
from hub.registry import compat

NAME = "hub.events.CustodyReleased"


def record(*fields: dict[str, Any], name: str = "CustodyReleased") -> str:
    return json.dumps(
        {"type": "record", "name": name, "namespace": "hub.events", "fields": list(fields)}
    )


SUBJECT_ID = {"name": "subject_id", "type": "string"}
RELEASED_ON = {"name": "released_on", "type": {"type": "int", "logicalType": "date"}}
V1 = record(SUBJECT_ID, RELEASED_ON)
RELEASE_TYPE_NO_DEFAULT = {"name": "release_type", "type": "string"}
RELEASE_TYPE_DEFAULT = {"name": "release_type", "type": ["null", "string"], "default": None}


def check(new: str, *previous: str, level: str) -> list[str]:
    return compat.check_compatibility(new, list(enumerate(previous, start=1)), level)


def test_added_field_without_default_breaks_backward_and_names_the_field() -> None:
    messages = check(record(SUBJECT_ID, RELEASED_ON, RELEASE_TYPE_NO_DEFAULT), V1, level="BACKWARD")

    assert messages == [
        f"{NAME}.release_type: reader field missing default (new schema reading version 1 data)"
    ]


def test_added_field_with_default_is_backward_and_forward_compatible() -> None:
    new = record(SUBJECT_ID, RELEASED_ON, RELEASE_TYPE_DEFAULT)

    for level in compat.COMPATIBILITY_LEVELS:
        assert check(new, V1, level=level) == [], level


def test_added_field_without_default_is_forward_compatible() -> None:
    new = record(SUBJECT_ID, RELEASED_ON, RELEASE_TYPE_NO_DEFAULT)

    assert check(new, V1, level="FORWARD") == []


def test_removed_field_without_default_breaks_forward_and_names_the_field() -> None:
    new = record(SUBJECT_ID)

    assert check(new, V1, level="BACKWARD") == []
    assert check(new, V1, level="FORWARD") == [
        f"{NAME}.released_on: reader field missing default (version 1 reading new schema data)"
    ]
    assert len(check(new, V1, level="FULL")) == 1


def test_type_change_breaks_both_directions_and_names_the_field() -> None:
    new = record({"name": "subject_id", "type": "int"}, RELEASED_ON)

    backward = check(new, V1, level="BACKWARD")
    forward = check(new, V1, level="FORWARD")

    assert backward == [
        f"{NAME}.subject_id: reader type int cannot read writer type string "
        "(new schema reading version 1 data)"
    ]
    assert forward == [
        f"{NAME}.subject_id: reader type string cannot read writer type int "
        "(version 1 reading new schema data)"
    ]
    assert check(new, V1, level="FULL") == backward + forward


def test_int_to_long_promotion_is_backward_but_not_forward() -> None:
    old = record({"name": "count", "type": "int"})
    new = record({"name": "count", "type": "long"})

    assert check(new, old, level="BACKWARD") == []
    assert check(new, old, level="FORWARD") == [
        f"{NAME}.count: reader type int cannot read writer type long "
        "(version 1 reading new schema data)"
    ]


def test_making_an_optional_field_required_names_the_field() -> None:
    old = record(SUBJECT_ID, RELEASE_TYPE_DEFAULT)
    new = record(SUBJECT_ID, RELEASE_TYPE_NO_DEFAULT)

    messages = check(new, old, level="BACKWARD")

    assert len(messages) == 1
    assert messages[0].startswith(f"{NAME}.release_type: reader type string cannot read writer")


def test_a_nested_field_inside_an_optional_record_is_named() -> None:
    def with_address(*address_fields: dict[str, Any]) -> str:
        address = {"type": "record", "name": "Address", "fields": list(address_fields)}
        return record(SUBJECT_ID, {"name": "address", "type": ["null", address], "default": None})

    old = with_address({"name": "town", "type": "string"})
    new = with_address({"name": "town", "type": "string"}, {"name": "postcode", "type": "string"})

    assert check(new, old, level="BACKWARD") == [
        f"{NAME}.address.postcode: reader field missing default (new schema reading version 1 data)"
    ]


def test_array_items_and_enum_symbols_are_located() -> None:
    def schema(item: str, symbols: list[str]) -> str:
        kind = {"type": "enum", "name": "ReleaseKind", "symbols": symbols}
        return record(
            {"name": "conditions", "type": {"type": "array", "items": item}},
            {"name": "kind", "type": kind},
        )

    old = schema("string", ["LICENCE", "SENTENCE_END"])
    new = schema("int", ["LICENCE"])

    assert check(new, old, level="BACKWARD") == [
        f"{NAME}.conditions[]: reader type int cannot read writer type string "
        "(new schema reading version 1 data)",
        f"{NAME}.kind: reader enum lacks writer symbols SENTENCE_END "
        "(new schema reading version 1 data)",
    ]


def test_renamed_record_is_a_name_mismatch() -> None:
    new = record(SUBJECT_ID, RELEASED_ON, name="CustodyEnded")

    assert check(new, V1, level="BACKWARD") == [
        "hub.events.CustodyEnded: reader name hub.events.CustodyEnded does not match writer name "
        f"{NAME} (new schema reading version 1 data)"
    ]


def test_none_accepts_anything() -> None:
    assert check('"string"', V1, level="NONE") == []


def test_transitive_levels_check_every_version_and_plain_ones_only_the_latest() -> None:
    v1 = record(SUBJECT_ID)
    v2 = record(SUBJECT_ID, {"name": "release_type", "type": "string", "default": "LICENCE"})
    candidate = record(SUBJECT_ID, RELEASE_TYPE_NO_DEFAULT)

    assert check(candidate, v1, v2, level="BACKWARD") == []
    assert check(candidate, v1, v2, level="BACKWARD_TRANSITIVE") == [
        f"{NAME}.release_type: reader field missing default (new schema reading version 1 data)"
    ]
    assert check(candidate, v1, v2, level="FULL") == []
    assert len(check(candidate, v1, v2, level="FULL_TRANSITIVE")) == 1


def test_forward_transitive_checks_every_version() -> None:
    v1 = record(SUBJECT_ID, {"name": "count", "type": "int"})
    v2 = record(SUBJECT_ID, {"name": "count", "type": "int", "default": 0})
    candidate = record(SUBJECT_ID)

    assert check(candidate, v1, v2, level="FORWARD") == []
    assert check(candidate, v1, v2, level="FORWARD_TRANSITIVE") == [
        f"{NAME}.count: reader field missing default (version 1 reading new schema data)"
    ]


def test_no_previous_version_is_always_compatible() -> None:
    assert check(V1, level="FULL_TRANSITIVE") == []


@pytest.mark.parametrize("level", ["backward", " Full_Transitive ", "NONE"])
def test_levels_are_case_insensitive(level: str) -> None:
    assert compat.parse_level(level) == level.strip().upper()


def test_unknown_level_is_rejected_with_the_accepted_ones() -> None:
    with pytest.raises(SchemaError, match="unknown compatibility level 'SIDEWAYS'.*BACKWARD"):
        compat.parse_level("SIDEWAYS")


def test_same_schema_modulo_whitespace_has_the_same_fingerprint() -> None:
    pretty = json.dumps(json.loads(V1), indent=4)

    assert compat.fingerprint(pretty) == compat.fingerprint(V1)
    assert compat.canonical_text(pretty) == compat.canonical_text(V1)
    assert " " not in compat.canonical_text(pretty)
    assert compat.fingerprint(record(SUBJECT_ID)) != compat.fingerprint(V1)


def test_normalized_text_resolves_equivalent_spellings() -> None:
    short = json.dumps(
        {"type": "record", "name": "hub.events.X", "fields": [{"name": "a", "type": "int"}]}
    )
    long = json.dumps(
        {
            "namespace": "hub.events",
            "name": "X",
            "type": "record",
            "fields": [{"type": {"type": "int"}, "name": "a"}],
        }
    )

    assert compat.normalized_text(short) == compat.normalized_text(long)
    assert compat.normalized_text('{"type": "string"}') == compat.normalized_text('"string"')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not json", "not JSON"),
        ('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}', "nope"),
        (
            record({"name": "count", "type": "int", "default": "zero"}),
            'CustodyReleased.count: default "zero" does not match type int',
        ),
        (
            record({"name": "note", "type": ["null", "string"], "default": "x"}),
            "CustodyReleased.note: default",
        ),
    ],
)
def test_invalid_schemas_are_rejected_with_the_reason(text: str, expected: str) -> None:
    with pytest.raises(SchemaError, match="invalid Avro schema") as raised:
        compat.parse_schema(text)
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)


def test_valid_defaults_are_accepted() -> None:
    compat.parse_schema(
        record(
            {"name": "b", "type": "bytes", "default": "\u00ff"},
            {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
            {"name": "note", "type": ["null", "string"], "default": None},
            {"name": "score", "type": "double", "default": 1},
        )
    )


def test_recursive_schemas_are_checked() -> None:
    def node(*extra: dict[str, Any]) -> str:
        return record(
            {"name": "value", "type": "int"},
            {"name": "next", "type": ["null", "CustodyReleased"], "default": None},
            *extra,
        )

    assert check(node(), node(), level="FULL") == []
    assert check(node(RELEASE_TYPE_NO_DEFAULT), node(), level="BACKWARD") == [
        f"{NAME}.release_type: reader field missing default (new schema reading version 1 data)"
    ]
