"""The stock confluent-kafka Schema Registry client and Avro serde, unchanged, against the hub's
registry served over HTTP on a free port with SQLite in ``tmp_path``. No broker is needed: the
serializers run with a ``SerializationContext``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import (
    ConfigCompatibilityLevel,
    Schema,
    SchemaRegistryClient,
    ServerConfig,
    record_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from hub.adapters.registry_server import running_registry

SUBJECT = "hub.events.CustodyReleased"
CONTEXT = SerializationContext("ingest.hmpps", MessageField.VALUE)


def record(*fields: dict[str, Any]) -> str:
    return json.dumps(
        {"type": "record", "name": "CustodyReleased", "namespace": "hub.events", "fields": fields},
        indent=2,
    )


EVENT_ID = {"name": "event_id", "type": "string"}
RELEASED_ON = {"name": "released_on", "type": {"type": "int", "logicalType": "date"}}
V1 = record(EVENT_ID, RELEASED_ON)
V2 = record(
    EVENT_ID, RELEASED_ON, {"name": "release_type", "type": ["null", "string"], "default": None}
)
BREAKING = record(EVENT_ID, RELEASED_ON, {"name": "release_type", "type": "string"})


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hub.db'}"


@pytest.fixture
def registry_url(database_url: str) -> Iterator[str]:
    with running_registry(database_url) as url:
        yield url


@pytest.fixture
def client(registry_url: str) -> Iterator[SchemaRegistryClient]:
    client = SchemaRegistryClient({"url": registry_url})
    yield client
    client.close()


def avro(text: str) -> Schema:
    return Schema(text, "AVRO")


def same_schema(a: str | None, b: str) -> bool:
    return a is not None and json.loads(a) == json.loads(b)


def test_register_and_read_back_through_the_client(client: SchemaRegistryClient) -> None:
    schema_id = client.register_schema(SUBJECT, avro(V1))

    assert same_schema(client.get_schema(schema_id).schema_str, V1)
    latest = client.get_latest_version(SUBJECT)
    assert (latest.subject, latest.version, latest.schema_id) == (SUBJECT, 1, schema_id)
    assert same_schema(latest.schema.schema_str, V1)
    assert client.get_versions(SUBJECT) == [1]
    assert client.get_subjects() == [SUBJECT]
    assert client.get_version(SUBJECT, 1).schema_id == schema_id
    assert client.lookup_schema(SUBJECT, avro(V1)).version == 1
    assert client.get_subjects_by_schema_id(schema_id) == [SUBJECT]
    assert [(v.subject, v.version) for v in client.get_schema_versions(schema_id)] == [(SUBJECT, 1)]
    assert client.get_schema_types() == ["AVRO"]


def test_registering_the_same_schema_twice_returns_the_same_id(
    client: SchemaRegistryClient, registry_url: str
) -> None:
    first = client.register_schema(SUBJECT, avro(V1))
    fresh = SchemaRegistryClient({"url": registry_url})  # no client-side cache
    try:
        compact = json.dumps(json.loads(V1), separators=(",", ":"))
        assert fresh.register_schema(SUBJECT, avro(compact)) == first
        assert fresh.register_schema("ingest.hmpps-value", avro(V1)) == first
        assert fresh.get_versions(SUBJECT) == [1]
    finally:
        fresh.close()


def test_incompatible_schema_is_refused_with_409(client: SchemaRegistryClient) -> None:
    client.register_schema(SUBJECT, avro(V1))

    assert client.test_compatibility(SUBJECT, avro(V2)) is True
    assert client.test_compatibility(SUBJECT, avro(BREAKING)) is False
    assert client.test_compatibility_all_versions(SUBJECT, avro(BREAKING)) is False
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(SUBJECT, avro(BREAKING))

    assert (refused.value.http_status_code, refused.value.error_code) == (409, 409)
    assert f"{SUBJECT}.release_type: reader field missing default" in refused.value.error_message
    assert client.register_schema(SUBJECT, avro(V2)) == 2


def test_verbose_compatibility_names_the_breaking_field(
    client: SchemaRegistryClient, registry_url: str
) -> None:
    client.register_schema(SUBJECT, avro(V1))

    response = httpx.post(
        f"{registry_url}/compatibility/subjects/{SUBJECT}/versions/latest",
        params={"verbose": "true"},
        content=json.dumps({"schema": BREAKING}),
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
    )

    assert response.status_code == 200
    assert response.json() == {
        "is_compatible": False,
        "messages": [
            f"{SUBJECT}.release_type: reader field missing default "
            "(new schema reading version 1 data)"
        ],
    }


def test_compatibility_and_config_through_the_client(client: SchemaRegistryClient) -> None:
    assert client.get_compatibility() == "BACKWARD"
    assert client.get_config().compatibility_level is ConfigCompatibilityLevel.BACKWARD

    client.set_compatibility(SUBJECT, "FULL")
    client.set_config(config=ServerConfig(compatibility=ConfigCompatibilityLevel.FORWARD))

    assert client.get_compatibility(SUBJECT) == "FULL"
    assert client.get_config(SUBJECT).compatibility_level is ConfigCompatibilityLevel.FULL
    assert client.get_config().compatibility_level is ConfigCompatibilityLevel.FORWARD
    with pytest.raises(SchemaRegistryError) as unset:
        client.get_config("hub.events.Other")
    assert unset.value.error_code == 40408
    assert client.delete_config(SUBJECT).compatibility_level is ConfigCompatibilityLevel.FULL
    with pytest.raises(SchemaRegistryError) as deleted:
        client.get_compatibility(SUBJECT)
    assert deleted.value.error_code == 40408
    with pytest.raises(SchemaRegistryError) as invalid:
        client.set_compatibility(SUBJECT, "SIDEWAYS")
    assert (invalid.value.http_status_code, invalid.value.error_code) == (422, 42203)


def test_soft_and_permanent_deletes_through_the_client(client: SchemaRegistryClient) -> None:
    client.register_schema(SUBJECT, avro(V1))
    client.register_schema(SUBJECT, avro(V2))

    assert client.delete_version(SUBJECT, 2) == 2
    assert client.get_versions(SUBJECT) == [1]
    assert client.get_versions(SUBJECT, deleted=True) == [1, 2]
    assert client.get_version(SUBJECT, 2, deleted=True).version == 2

    assert client.delete_subject(SUBJECT) == [1]
    assert client.get_subjects() == []
    assert client.get_subjects(deleted=True) == [SUBJECT]
    assert client.delete_subject(SUBJECT, permanent=True) == [1, 2]
    assert client.get_subjects(deleted=True) == []
    with pytest.raises(SchemaRegistryError) as gone:
        client.get_latest_version(SUBJECT)
    assert (gone.value.http_status_code, gone.value.error_code) == (404, 40401)


def test_avro_serializer_auto_registers_under_the_record_name(
    client: SchemaRegistryClient,
) -> None:
    serializer = AvroSerializer(
        client, V1, conf={"subject.name.strategy": record_subject_name_strategy}
    )
    value = {"event_id": "e-1", "released_on": 20_000}

    payload = serializer(value, CONTEXT)

    assert payload is not None
    magic, schema_id = struct.unpack(">bI", payload[:5])
    assert magic == 0
    assert client.get_subjects() == [SUBJECT]
    assert client.get_latest_version(SUBJECT).schema_id == schema_id
    deserializer = AvroDeserializer(client)
    decoded = deserializer(payload, CONTEXT)
    assert decoded["event_id"] == "e-1"
    assert str(decoded["released_on"]) == "2024-10-04"


def test_avro_serializer_with_use_latest_version(
    client: SchemaRegistryClient, registry_url: str
) -> None:
    client.register_schema(SUBJECT, avro(V1))
    v2_id = client.register_schema(SUBJECT, avro(V2))
    writer = SchemaRegistryClient({"url": registry_url})
    try:
        serializer = AvroSerializer(
            writer,
            V1,
            conf={
                "auto.register.schemas": False,
                "use.latest.version": True,
                "subject.name.strategy": record_subject_name_strategy,
            },
        )
        payload = serializer(
            {"event_id": "e-2", "released_on": 20_000, "release_type": "LICENCE"}, CONTEXT
        )
    finally:
        writer.close()

    assert payload is not None
    assert struct.unpack(">bI", payload[:5]) == (0, v2_id)
    decoded = AvroDeserializer(client)(payload, CONTEXT)
    assert decoded["release_type"] == "LICENCE"


def test_older_data_is_read_with_a_newer_reader_schema(client: SchemaRegistryClient) -> None:
    conf = {"subject.name.strategy": record_subject_name_strategy}
    payload = AvroSerializer(client, V1, conf=conf)({"event_id": "e-3", "released_on": 1}, CONTEXT)
    client.register_schema(SUBJECT, avro(V2))

    decoded = AvroDeserializer(client, V2)(payload, CONTEXT)

    assert decoded["event_id"] == "e-3"
    assert decoded["release_type"] is None


def test_registered_schemas_survive_a_restart(database_url: str) -> None:
    with running_registry(database_url) as url:
        first = SchemaRegistryClient({"url": url})
        schema_id = first.register_schema(SUBJECT, avro(V1))
        first.close()

    with running_registry(database_url) as url:
        second = SchemaRegistryClient({"url": url})
        try:
            assert same_schema(second.get_schema(schema_id).schema_str, V1)
            assert second.get_latest_version(SUBJECT).schema_id == schema_id
        finally:
            second.close()


def test_rest_shapes_match_confluent(client: SchemaRegistryClient, registry_url: str) -> None:
    schema_id = client.register_schema(SUBJECT, avro(V1))

    root = httpx.get(f"{registry_url}/")
    by_id = httpx.get(f"{registry_url}/schemas/ids/{schema_id}", params={"subject": SUBJECT})
    missing = httpx.get(f"{registry_url}/schemas/ids/999")
    bad_version = httpx.get(f"{registry_url}/subjects/{SUBJECT}/versions/zero")
    raw = httpx.get(f"{registry_url}/subjects/{SUBJECT}/versions/latest/schema")

    assert root.json() == {}
    assert root.headers["content-type"] == "application/vnd.schemaregistry.v1+json"
    assert set(by_id.json()) == {"schema"}  # schemaType is omitted for AVRO
    assert (missing.status_code, missing.json()["error_code"]) == (404, 40403)
    assert (bad_version.status_code, bad_version.json()["error_code"]) == (422, 42202)
    assert json.loads(raw.text) == json.loads(V1)
    assert httpx.get(f"{registry_url}/mode").json() == {"mode": "READWRITE"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"schema": "{not json"}, 42201),
        ({"schema": V1, "schemaType": "PROTOBUF"}, 42201),
        ({"schema": V1, "references": [{"name": "a", "subject": "b", "version": 1}]}, 42201),
        ({"schema": V1, "surprise": True}, 42201),
        ({"schemaType": "AVRO"}, 42201),
    ],
)
def test_bad_registrations_are_refused_with_confluent_errors(
    registry_url: str, body: dict[str, Any], code: int
) -> None:
    response = httpx.post(
        f"{registry_url}/subjects/{SUBJECT}/versions",
        content=json.dumps(body),
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
    )

    assert response.status_code == 422
    error = response.json()
    assert error["error_code"] == code
    assert error["message"] and "\n" not in error["message"]
