"""The Publisher refuses malformed events with one line naming the field, and gives every
source record the same event_id on every run."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest

from hub.domain.errors import ValidationError
from hub.publisher import Publisher, event_id_for, subject
from hub.serde import wire
from hub.serde.catalogue import Catalogue

CATALOGUE = Catalogue.load()
AT = dt.datetime(2015, 3, 2, 9, 30, tzinfo=dt.UTC)


class _Codec:
    """Validation and encoding without a registry (schema id 1)."""

    catalogue = CATALOGUE

    def validate(self, record):  # type: ignore[no-untyped-def]
        name = CATALOGUE.name_for(record["envelope"]["event_type"])
        wire.validate(CATALOGUE.parsed(name), record)
        return name

    def encode(self, record):  # type: ignore[no-untyped-def]
        name = self.validate(record)
        return wire.frame(1, wire.encode_body(CATALOGUE.parsed(name), record))


class _Sink:
    """Collects what the Publisher sends (the broker round trip is tests/integration)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: Sequence[tuple[str, bytes]] = ()) -> None:  # fmt: skip
        self.sent.append((topic, key, value))

    def flush(self, timeout: float = 60.0) -> None:
        pass


def _publisher(sink: _Sink | None = None) -> Publisher:
    return Publisher(
        agency="hmp_liverpool",
        source_system="nomis",
        jurisdiction="UK-ENG",
        codec=_Codec(),
        sink=sink or _Sink(),
    )  # type: ignore[arg-type]


def _release(**payload: object) -> dict:
    base = {"released_at": AT, "release_type": "on_licence", "establishment": "HMP Liverpool",
            "at_liberty": True}  # fmt: skip
    return _publisher().build(
        "custody.released", source_key="release-77", occurred_at=AT,
        subject=subject("A1234BC", "prison_number", pnc_id="14/0123456J"),
        payload={**base, **payload},
    )  # fmt: skip


def test_a_valid_event_is_sent_to_the_agency_ingest_topic_keyed_by_local_id() -> None:
    sink = _Sink()
    event_id = _publisher(sink).publish(_release())
    assert sink.sent[0][0] == "ingest.hmp_liverpool"
    assert sink.sent[0][1] == b"A1234BC"
    assert event_id == event_id_for("hmp_liverpool", "nomis", "custody.released", "release-77")


def test_the_same_source_record_gives_the_same_id_and_bytes() -> None:
    first, second = _Sink(), _Sink()
    _publisher(first).publish(_release())
    _publisher(second).publish(_release())
    assert first.sent == second.sent


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"release_type": "escaped"}, "release_type", "not a code of release_types"),
        ({"release_type": None}, "release_type", "required"),
        ({"released_at": "2015-03-02"}, "released_at", "not a timestamp"),
        ({"at_liberty": "yes"}, "at_liberty", "true/false"),
    ],
)
def test_a_malformed_event_is_refused_naming_the_field(change, field, words) -> None:  # type: ignore[no-untyped-def]
    sink = _Sink()
    with pytest.raises(ValidationError) as caught:
        _publisher(sink).publish(_release(**change))
    message = str(caught.value)
    assert caught.value.field == field
    assert field in message and words in message
    assert "\n" not in message
    assert sink.sent == []


def test_an_unknown_payload_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="colour: is not a field"):
        _release(colour="red")


def test_publishing_as_another_agency_is_refused() -> None:
    record = _release()
    record["envelope"]["source_agency"] = "police"
    with pytest.raises(ValidationError, match="source_agency"):
        _publisher().publish(record)
