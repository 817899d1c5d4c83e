"""RELIABILITY AU-10: distinct audit entries always have distinct canonical bytes, the algorithm
name is inside the hashed bytes, and the encoding round-trips. Also: any single-byte change of a
stored trail is detected."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.audit.canonical import canonical_json
from hub.audit.chain import canonical_record, chain
from hub.audit.checkpoint import CheckpointSigner
from hub.audit.entry import KINDS, OUTCOMES, TREATMENTS, AuditEntry
from hub.audit.verify import MemoryTrail, verify

# Text as the trail may meet it: any Unicode scalar value except NUL (PostgreSQL cannot store it).
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
NAME = TEXT.filter(bool)
OPTIONAL = st.none() | TEXT
AT = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
HEX = st.binary(min_size=32, max_size=32).map(bytes.hex)

FIELD_STRATEGIES: dict[str, Any] = {
    "entry_id": NAME,
    "kind": st.sampled_from(sorted(KINDS)),
    "at": AT,
    "component": NAME,
    "outcome": st.sampled_from(sorted(OUTCOMES)),
    "actor": OPTIONAL,
    "role": OPTIONAL,
    "subject_ref": OPTIONAL,
    "event_id": OPTIONAL,
    "event_type": OPTIONAL,
    "source_agency": OPTIONAL,
    "audience": OPTIONAL,
    "agreement_id": OPTIONAL,
    "agreement_version": OPTIONAL,
    "clause_ids": st.lists(NAME, max_size=3).map(tuple),
    "fields": st.dictionaries(NAME, st.sampled_from(sorted(TREATMENTS)), max_size=3),
    "reason": OPTIONAL,
    "purpose": OPTIONAL,
    "justification": OPTIONAL,
    "payload_hash": st.none() | HEX,
    "details": st.dictionaries(NAME, NAME, max_size=3),
}
ENTRIES = st.builds(AuditEntry, **FIELD_STRATEGIES)


@st.composite
def entry_pairs(draw: st.DrawFn) -> tuple[AuditEntry, AuditEntry]:
    """Two entries: independent, or one a small edit of the other (the interesting case)."""
    first = draw(ENTRIES)
    if draw(st.booleans()):
        return first, draw(ENTRIES)
    name = draw(st.sampled_from(sorted(FIELD_STRATEGIES)))
    if name == "at":
        value: Any = first.at + timedelta(milliseconds=draw(st.sampled_from([-1, 1, 1000])))
    else:
        value = draw(FIELD_STRATEGIES[name])
    return first, dataclasses.replace(first, **{name: value})


@settings(max_examples=2000, deadline=None)
@given(entry_pairs())
def test_distinct_entries_have_distinct_canonical_bytes(
    pair: tuple[AuditEntry, AuditEntry],
) -> None:
    a, b = pair
    assert (a == b) == (a.to_json_bytes() == b.to_json_bytes())


@settings(max_examples=300, deadline=None)
@given(entry_pairs(), st.integers(1, 10**9), st.integers(1, 10**9), HEX, HEX)
def test_distinct_chain_records_have_distinct_hashed_bytes(
    pair: tuple[AuditEntry, AuditEntry], seq_a: int, seq_b: int, prev_a: str, prev_b: str
) -> None:
    a, b = pair
    same = a == b and seq_a == seq_b and prev_a == prev_b
    assert same == (canonical_record(a, seq_a, prev_a) == canonical_record(b, seq_b, prev_b))


@settings(max_examples=100, deadline=None)
@given(ENTRIES, st.integers(1, 10**9), HEX)
def test_the_algorithm_name_is_inside_the_hashed_bytes(
    entry: AuditEntry, seq: int, prev: str
) -> None:
    record = canonical_record(entry, seq, prev)
    assert record.startswith(b'{"alg":"sha256","entry":')
    assert canonical_record(entry, seq, prev, alg="sha3_256") != record


@settings(max_examples=300, deadline=None)
@given(ENTRIES)
def test_entries_round_trip_and_encode_like_the_reference(entry: AuditEntry) -> None:
    body = entry.to_json_bytes()
    assert body == canonical_json(entry.to_dict())
    again = AuditEntry.from_json_bytes(body)
    assert again == entry and again.to_json_bytes() == body


SIGNER = CheckpointSigner(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"au-10").digest()))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ENTRIES, min_size=1, max_size=6, unique_by=lambda e: e.entry_id), st.data())
def test_any_single_byte_change_of_a_stored_trail_is_detected(
    entries: list[AuditEntry], data: st.DataObject
) -> None:
    signer = SIGNER
    linked = chain(entries)
    trail = MemoryTrail.from_chain(linked, [signer.sign(len(linked), linked[-1].hash)])
    assert verify(trail, signer.public_key).ok
    r = data.draw(st.integers(0, len(trail.rows) - 1))
    row = list(trail.rows[r])
    col = data.draw(st.sampled_from([i for i in range(1, len(row)) if row[i] is not None]))
    raw = row[col] if isinstance(row[col], bytes) else row[col].encode("utf-8", "surrogateescape")
    if not raw:
        return
    pos = data.draw(st.integers(0, len(raw) - 1))
    changed = bytearray(raw)
    changed[pos] ^= data.draw(st.integers(1, 255))
    row[col] = (
        bytes(changed)
        if isinstance(row[col], bytes)
        else changed.decode("utf-8", "surrogateescape")
    )
    trail.rows[r] = tuple(row)
    first = verify(trail, signer.public_key).first
    assert first is not None and first.seq == r + 1
