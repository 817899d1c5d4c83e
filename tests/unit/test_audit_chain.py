"""The audit entry, its canonical encoding and the hash chain, without storage."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from hub.audit.bench import sample_entries
from hub.audit.canonical import canonical_json
from hub.audit.chain import GENESIS_HASH, canonical_record, chain, entry_hash, record_bytes
from hub.audit.entry import (
    INDEX_COLUMNS,
    KINDS,
    AuditEntry,
    format_at,
    index_values,
    make_entry_id,
    parse_at,
)
from hub.domain.errors import InputError, SerdeError

AT = datetime(2025, 1, 31, 9, 30, 0, 123456, tzinfo=UTC)


def golden_entry() -> AuditEntry:
    return AuditEntry(
        entry_id="decided-1",
        kind="decided",
        at=AT,
        component="router",
        outcome="permit",
        actor="router-1",
        role="service",
        subject_ref="ps-01",
        event_id="evt-1",
        event_type="CustodyReleased",
        source_agency="hmpps",
        audience="mals",
        agreement_id="iom-2024",
        agreement_version="3",
        clause_ids=("c2", "c1"),
        fields={"first_name": "keep", "address": "drop"},
        purpose="offender management",
        payload_hash="0" * 64,
        details={"offset": "7"},
    )


GOLDEN_BODY = (
    b'{"actor":"router-1","agreement_id":"iom-2024","agreement_version":"3",'
    b'"at":"2025-01-31T09:30:00.123Z","audience":"mals","clause_ids":["c2","c1"],'
    b'"component":"router","details":{"offset":"7"},"entry_id":"decided-1","event_id":"evt-1",'
    b'"event_type":"CustodyReleased","fields":{"address":"drop","first_name":"keep"},'
    b'"justification":null,"kind":"decided","outcome":"permit",'
    b'"payload_hash":"0000000000000000000000000000000000000000000000000000000000000000",'
    b'"purpose":"offender management","reason":null,"role":"service","source_agency":"hmpps",'
    b'"subject_ref":"ps-01","v":1}'
)
GOLDEN_HASH = "e12f010efd2be93eb17dd5d7f20a3a1b64b69fdc0d07dbf23552b597dc4e35b0"


# the entry


def test_golden_entry_encodes_byte_for_byte() -> None:
    assert golden_entry().to_json_bytes() == GOLDEN_BODY


def test_golden_entry_hashes_at_genesis_to_the_pinned_value() -> None:
    (linked,) = chain([golden_entry()])
    assert (linked.seq, linked.prev_hash, linked.hash) == (1, GENESIS_HASH, GOLDEN_HASH)
    expected = b'{"alg":"sha256","entry":' + GOLDEN_BODY + b',"prev_hash":"' + b"0" * 64
    assert hashlib.sha256(expected + b'","seq":1}').hexdigest() == GOLDEN_HASH


def test_entry_time_is_normalised_to_utc_milliseconds() -> None:
    at = datetime(2025, 1, 31, 10, 30, 0, 123999, tzinfo=timezone(timedelta(hours=1)))
    entry = dataclasses.replace(golden_entry(), at=at)
    assert entry.at == datetime(2025, 1, 31, 9, 30, 0, 123000, tzinfo=UTC)
    assert entry.to_dict()["at"] == "2025-01-31T09:30:00.123Z"


def test_entry_round_trips_through_the_wire() -> None:
    for entry in [golden_entry(), *sample_entries(50, seed=3)]:
        assert AuditEntry.from_json_bytes(entry.to_json_bytes()) == entry


def test_non_canonical_wire_json_is_accepted_and_re_encoded_canonically() -> None:
    spaced = b"{ " + GOLDEN_BODY[1:-1].replace(b",", b", ") + b" }"
    entry = AuditEntry.from_json_bytes(spaced)
    assert entry.to_json_bytes() == GOLDEN_BODY


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[]",
        GOLDEN_BODY.replace(b'"v":1', b'"v":2'),
        GOLDEN_BODY.replace(b'"v":1', b'"v":true'),
        GOLDEN_BODY.replace(b'"kind":"decided"', b'"kind":"shared"'),
        GOLDEN_BODY.replace(b'"role":"service"', b'"role":7'),
        GOLDEN_BODY.replace(b'"at":"2025-01-31T09:30:00.123Z"', b'"at":"2025-01-31 09:30"'),
        GOLDEN_BODY.replace(b'"v":1', b'"v":1,"extra":"x"'),
        GOLDEN_BODY.replace(b'"v":1', b'"v":1,"role":"other"'),
        GOLDEN_BODY.replace(b'"keep"', b'"redact"'),
        GOLDEN_BODY.replace(b'"entry_id":"decided-1",', b""),
        GOLDEN_BODY.replace(b'"offset":"7"', b'"offset":7'),
        GOLDEN_BODY.replace(b'"v":1', b'"v":1.0'),
    ],
    ids=[
        "not-json",
        "not-object",
        "version",
        "bool-version",
        "kind",
        "type",
        "timestamp",
        "unknown-key",
        "duplicate-key",
        "treatment",
        "missing-id",
        "detail-int",
        "float",
    ],
)
def test_invalid_wire_values_are_serde_errors(value: bytes) -> None:
    with pytest.raises(SerdeError) as caught:
        AuditEntry.from_json_bytes(value)
    assert caught.value.reason == "invalid_audit_entry"
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "nope"},
        {"outcome": "maybe"},
        {"at": datetime(2025, 1, 1)},
        {"entry_id": ""},
        {"subject_ref": "a\x00b"},
        {"subject_ref": "x" * 201},
        {"payload_hash": "ABC"},
        {"fields": {"address": "shred"}},
        {"details": {"k": 1}},
        {"clause_ids": "c1"},
        {"reason": "\ud800"},
    ],
)
def test_invalid_entries_are_refused_with_one_line(change: dict[str, object]) -> None:
    with pytest.raises(InputError) as caught:
        dataclasses.replace(golden_entry(), **change)
    assert "\n" not in str(caught.value)


def test_every_kind_is_accepted() -> None:
    for kind in KINDS:
        assert dataclasses.replace(golden_entry(), kind=kind).kind == kind


def test_entry_ids_are_deterministic_and_distinct() -> None:
    first = make_entry_id("delivered", "evt-1", "mals")
    assert first == make_entry_id("delivered", "evt-1", "mals")
    assert first.startswith("delivered-")
    assert first != make_entry_id("delivered", "evt-1", "mals.mentor")
    assert first != make_entry_id("decided", "evt-1", "mals")
    assert make_entry_id("x", None) != make_entry_id("x", "")


def test_index_values_match_the_body_they_are_copied_from() -> None:
    for entry in sample_entries(100, seed=5):
        assert entry.index_values() == index_values(entry.to_dict())
        assert len(entry.index_values()) == len(INDEX_COLUMNS)


def test_timestamps_parse_only_their_own_format() -> None:
    assert format_at(parse_at("0999-12-31T23:59:59.999Z")) == "0999-12-31T23:59:59.999Z"
    for bad in (
        "2025-01-31T09:30:00Z",
        "2025-01-31T09:30:00.000+00:00",
        "٢٠٢٥-01-31T09:30:00.000Z",
    ):
        with pytest.raises(InputError):
            parse_at(bad)


# canonical JSON


def test_canonical_json_sorts_keys_by_utf16_code_units() -> None:
    # U+1F600 is D83D DE00 in UTF-16, so it sorts before U+E000 (code point order says after).
    assert canonical_json({"\ue000": 1, "\U0001f600": 2, "a": 3}) == (
        '{"a":3,"\U0001f600":2,"\ue000":1}'.encode()
    )


def test_canonical_json_escapes_like_ecmascript() -> None:
    assert (
        canonical_json(['\u001f\n"\\/\u00e9\u2028'])
        == b'["\\u001f\\n\\"\\\\/\xc3\xa9\xe2\x80\xa8"]'
    )


@pytest.mark.parametrize("value", [1.5, 2**53, {1: "a"}, "\udc00", {"a": object()}])
def test_canonical_json_refuses_what_it_cannot_encode_one_way(value: object) -> None:
    with pytest.raises(ValueError):
        canonical_json(value)


def test_entry_fast_encoding_equals_the_reference_encoding() -> None:
    for entry in [golden_entry(), *sample_entries(100, seed=11)]:
        assert entry.to_json_bytes() == canonical_json(entry.to_dict())


def test_non_ascii_map_keys_use_the_canonical_order() -> None:
    entry = dataclasses.replace(golden_entry(), fields={"\ue000": "keep", "\U0001f600": "drop"})
    assert entry.to_json_bytes() == canonical_json(entry.to_dict())


# the chain


def test_record_bytes_from_a_stored_body_equal_the_reference_encoding() -> None:
    for seq, entry in enumerate(sample_entries(50, seed=13), start=1):
        prev = hashlib.sha256(str(seq).encode()).hexdigest()
        assert record_bytes(entry.to_json_bytes(), seq, prev) == canonical_record(entry, seq, prev)


def test_algorithm_position_and_link_are_inside_the_hashed_bytes() -> None:
    entry = golden_entry()
    record = canonical_record(entry, 5, GENESIS_HASH)
    assert record.startswith(b'{"alg":"sha256","entry":')
    assert record.endswith(b'"seq":5}')
    assert canonical_record(entry, 5, GENESIS_HASH, alg="sha512") != record
    assert canonical_record(entry, 6, GENESIS_HASH) != record
    assert canonical_record(entry, 5, "1" * 64) != record


def test_chain_links_each_entry_to_the_one_before() -> None:
    linked = chain(sample_entries(20, seed=17))
    assert [item.seq for item in linked] == list(range(1, 21))
    assert linked[0].prev_hash == GENESIS_HASH
    for before, after in zip(linked, linked[1:], strict=False):
        assert after.prev_hash == before.hash
    for item in linked:
        assert item.hash == entry_hash(record_bytes(item.body, item.seq, item.prev_hash))


def test_chain_continues_from_a_head() -> None:
    entries = sample_entries(10, seed=19)
    whole = chain(entries)
    tail = chain(entries[4:], (whole[3].seq, whole[3].hash))
    assert [(c.seq, c.hash) for c in tail] == [(c.seq, c.hash) for c in whole[4:]]
