"""The registry's rules, run against each store: SQLite (file and in-memory) and PostgreSQL.

PostgreSQL runs when ``HUB_TEST_POSTGRES_URL`` names a database, or when ``initdb`` and
``pg_ctl`` are on the PATH and psycopg is installed (a throwaway cluster is started for the
module); otherwise those cases are skipped.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from hub.adapters.registry_store import (
    SqlRegistryStore,
    create_registry_tables,
    open_registry_store,
    registry_engine,
    registry_metadata,
)
from hub.registry.service import (
    IncompatibleSchemaError,
    RegistryError,
    RegistryService,
    SubjectVersion,
)

SUBJECT = "hub.events.CustodyReleased"
OTHER = "hub.events.CustodyStarted"


def record(*fields: dict[str, Any], name: str = "CustodyReleased") -> str:
    return json.dumps(
        {"type": "record", "name": name, "namespace": "hub.events", "fields": list(fields)}
    )


SUBJECT_ID = {"name": "subject_id", "type": "string"}
V1 = record(SUBJECT_ID)
V2 = record(SUBJECT_ID, {"name": "release_type", "type": ["null", "string"], "default": None})
V3 = record(
    SUBJECT_ID,
    {"name": "release_type", "type": ["null", "string"], "default": None},
    {"name": "licence", "type": "boolean", "default": False},
)
BREAKS_V1 = record(SUBJECT_ID, {"name": "release_type", "type": "string"})


def code_of(exc: pytest.ExceptionInfo[RegistryError]) -> int:
    return exc.value.error_code


class RegistryServiceContract:
    """Subclasses provide ``store``; every test gets an empty one."""

    @pytest.fixture
    def store(self) -> Iterator[SqlRegistryStore]:
        raise NotImplementedError

    @pytest.fixture
    def service(self, store: SqlRegistryStore) -> RegistryService:
        return RegistryService(store)

    # ids and versions

    def test_first_schema_gets_id_and_version_one(self, service: RegistryService) -> None:
        registered = service.register(SUBJECT, V1)

        assert (registered.schema_id, registered.version) == (1, 1)
        assert json.loads(registered.schema) == json.loads(V1)

    def test_versions_count_up_per_subject_and_ids_are_global(
        self, service: RegistryService
    ) -> None:
        a1 = service.register(SUBJECT, V1)
        a2 = service.register(SUBJECT, V2)
        b1 = service.register(OTHER, record(SUBJECT_ID, name="CustodyStarted"))

        assert [a1.version, a2.version, b1.version] == [1, 2, 1]
        assert len({a1.schema_id, a2.schema_id, b1.schema_id}) == 3
        assert service.versions(SUBJECT) == [1, 2]

    def test_same_schema_modulo_whitespace_returns_the_existing_version(
        self, service: RegistryService
    ) -> None:
        first = service.register(SUBJECT, V1)
        again = service.register(SUBJECT, json.dumps(json.loads(V1), indent=4))

        assert again == first
        assert service.versions(SUBJECT) == [1]

    def test_same_schema_under_another_subject_shares_the_id(
        self, service: RegistryService
    ) -> None:
        first = service.register(SUBJECT, V1)
        other = service.register("ingest.kmbc-value", V1)

        assert other.schema_id == first.schema_id
        assert other.version == 1
        assert service.subjects_of_schema(first.schema_id) == [SUBJECT, "ingest.kmbc-value"]
        assert [(v.subject, v.version) for v in service.versions_of_schema(first.schema_id)] == [
            ("hub.events.CustodyReleased", 1),
            ("ingest.kmbc-value", 1),
        ]

    def test_schema_by_id_returns_the_stored_text(self, service: RegistryService) -> None:
        registered = service.register(SUBJECT, V1)

        stored = service.schema(registered.schema_id)

        assert json.loads(stored.schema) == json.loads(V1)
        assert stored.schema_type == "AVRO"
        with pytest.raises(RegistryError) as missing:
            service.schema(99)
        assert code_of(missing) == 40403

    def test_normalize_treats_equivalent_spellings_as_one_schema(
        self, service: RegistryService
    ) -> None:
        first = service.register(SUBJECT, V1, normalize=True)
        spelled = json.dumps(
            {
                "name": "hub.events.CustodyReleased",
                "type": "record",
                "fields": [{"name": "subject_id", "type": {"type": "string"}}],
            }
        )

        assert service.register(SUBJECT, spelled, normalize=True) == first
        assert service.lookup(SUBJECT, spelled, normalize=True) == first

    def test_lookup_finds_the_version_holding_a_schema(self, service: RegistryService) -> None:
        service.register(SUBJECT, V1)
        v2 = service.register(SUBJECT, V2)

        assert service.lookup(SUBJECT, V2) == v2
        with pytest.raises(RegistryError) as unknown_schema:
            service.lookup(SUBJECT, V3)
        with pytest.raises(RegistryError) as unknown_subject:
            service.lookup(OTHER, V1)
        assert code_of(unknown_schema) == 40403
        assert code_of(unknown_subject) == 40401

    def test_version_accepts_numbers_latest_and_minus_one(self, service: RegistryService) -> None:
        service.register(SUBJECT, V1)
        v2 = service.register(SUBJECT, V2)

        assert service.version(SUBJECT, "latest") == v2
        assert service.version(SUBJECT, -1) == v2
        assert service.version(SUBJECT, "1").version == 1
        for bad in ("0", "first", "2147483648"):
            with pytest.raises(RegistryError) as invalid:
                service.version(SUBJECT, bad)
            assert code_of(invalid) == 42202
        with pytest.raises(RegistryError) as missing:
            service.version(SUBJECT, 3)
        assert code_of(missing) == 40402

    # bad input

    @pytest.mark.parametrize(
        ("schema", "kwargs"),
        [
            ("{not json", {}),
            (record({"name": "n", "type": "int", "default": "x"}), {}),
            (V1, {"schema_type": "PROTOBUF"}),
            (V1, {"references": [{"name": "x", "subject": "y", "version": 1}]}),
        ],
    )
    def test_invalid_schemas_are_refused_with_42201(
        self, service: RegistryService, schema: str, kwargs: dict[str, Any]
    ) -> None:
        with pytest.raises(RegistryError) as refused:
            service.register(SUBJECT, schema, **kwargs)

        assert code_of(refused) == 42201
        assert refused.value.http_status == 422
        assert service.subjects() == []

    # compatibility on register

    def test_incompatible_schema_is_refused_with_409_naming_the_field(
        self, service: RegistryService
    ) -> None:
        service.register(SUBJECT, V1)

        with pytest.raises(IncompatibleSchemaError) as refused:
            service.register(SUBJECT, BREAKS_V1)

        assert refused.value.error_code == 409
        assert refused.value.http_status == 409
        assert refused.value.messages == [
            f"{SUBJECT}.release_type: reader field missing default "
            "(new schema reading version 1 data)"
        ]
        assert service.versions(SUBJECT) == [1]

    def test_level_none_lets_anything_through(self, service: RegistryService) -> None:
        service.register(SUBJECT, V1)
        service.set_compatibility("NONE", SUBJECT)

        assert service.register(SUBJECT, BREAKS_V1).version == 2

    def test_check_against_latest_all_or_one_version(self, service: RegistryService) -> None:
        service.register(SUBJECT, V1)
        with_default = {"name": "release_type", "type": "string", "default": "LICENCE"}
        service.register(SUBJECT, record(SUBJECT_ID, with_default))

        assert service.check(SUBJECT, BREAKS_V1) == []
        assert service.check(SUBJECT, BREAKS_V1, version="latest") == []
        assert service.check(SUBJECT, BREAKS_V1, version=1) != []
        service.set_compatibility("BACKWARD_TRANSITIVE", SUBJECT)
        assert service.check(SUBJECT, BREAKS_V1) != []
        assert service.check(SUBJECT, BREAKS_V1, version=2) == []

    def test_check_against_latest_of_an_unknown_subject_is_compatible(
        self, service: RegistryService
    ) -> None:
        assert service.check(OTHER, V1, version="latest") == []
        assert service.check(OTHER, V1) == []
        with pytest.raises(RegistryError) as missing:
            service.check(OTHER, V1, version=1)
        assert code_of(missing) == 40401

    # deletes

    def test_soft_deleted_version_is_hidden_but_its_id_still_resolves(
        self, service: RegistryService
    ) -> None:
        service.register(SUBJECT, V1)
        v2 = service.register(SUBJECT, V2)

        assert service.delete_version(SUBJECT, 2) == 2

        assert service.versions(SUBJECT) == [1]
        assert service.versions(SUBJECT, include_deleted=True) == [1, 2]
        assert service.versions(SUBJECT, deleted_only=True) == [2]
        assert service.version(SUBJECT, "latest").version == 1
        assert service.version(SUBJECT, 2, include_deleted=True).deleted
        assert service.schema(v2.schema_id).schema == v2.schema
        with pytest.raises(RegistryError) as again:
            service.delete_version(SUBJECT, 2)
        assert code_of(again) == 40406

    def test_permanent_version_delete_needs_a_soft_delete_first(
        self, service: RegistryService
    ) -> None:
        service.register(SUBJECT, V1)
        service.register(SUBJECT, V2)

        with pytest.raises(RegistryError) as not_soft:
            service.delete_version(SUBJECT, 2, permanent=True)
        assert code_of(not_soft) == 40407

        service.delete_version(SUBJECT, 2)
        assert service.delete_version(SUBJECT, 2, permanent=True) == 2
        assert service.versions(SUBJECT, include_deleted=True) == [1]

    def test_soft_deleted_subject_is_listed_only_with_deleted(
        self, service: RegistryService
    ) -> None:
        service.register(SUBJECT, V1)
        service.register(SUBJECT, V2)
        service.register(OTHER, record(SUBJECT_ID, name="CustodyStarted"))

        assert service.delete_subject(SUBJECT) == [1, 2]

        assert service.subjects() == [OTHER]
        assert service.subjects(include_deleted=True) == [SUBJECT, OTHER]
        assert service.subjects(deleted_only=True) == [SUBJECT]
        assert service.subjects(prefix="hub.events.CustodyR", include_deleted=True) == [SUBJECT]
        with pytest.raises(RegistryError) as gone:
            service.versions(SUBJECT)
        assert code_of(gone) == 40401
        with pytest.raises(RegistryError) as again:
            service.delete_subject(SUBJECT)
        assert code_of(again) == 40404

    def test_registering_after_a_soft_delete_continues_the_numbering(
        self, service: RegistryService
    ) -> None:
        service.register(SUBJECT, V1)
        service.delete_subject(SUBJECT)

        # deleted versions do not count for compatibility
        registered = service.register(SUBJECT, BREAKS_V1)

        assert registered.version == 2
        assert service.versions(SUBJECT) == [2]

    def test_permanent_subject_delete_needs_a_soft_delete_first(
        self, service: RegistryService
    ) -> None:
        v1 = service.register(SUBJECT, V1)
        service.set_compatibility("FULL", SUBJECT)

        with pytest.raises(RegistryError) as not_soft:
            service.delete_subject(SUBJECT, permanent=True)
        assert code_of(not_soft) == 40405

        service.delete_subject(SUBJECT)
        assert service.delete_subject(SUBJECT, permanent=True) == [1]

        assert service.subjects(include_deleted=True) == []
        for missing in (
            lambda: service.delete_subject(SUBJECT, permanent=True),
            lambda: service.compatibility(SUBJECT),
            lambda: service.schema(v1.schema_id),
        ):
            with pytest.raises(RegistryError) as error:
                missing()
            assert code_of(error) in (40401, 40403, 40408)
        again = service.register(SUBJECT, V1)
        assert (again.schema_id, again.version) == (v1.schema_id, 1)

    def test_unknown_subject_errors(self, service: RegistryService) -> None:
        for call in (
            lambda: service.versions(OTHER),
            lambda: service.version(OTHER, "latest"),
            lambda: service.delete_subject(OTHER),
            lambda: service.delete_version(OTHER, 1),
        ):
            with pytest.raises(RegistryError) as error:
                call()
            assert code_of(error) == 40401
            assert error.value.http_status == 404

    # config

    def test_global_level_defaults_to_backward_and_can_be_changed(
        self, service: RegistryService
    ) -> None:
        assert service.compatibility() == "BACKWARD"

        assert service.set_compatibility("full_transitive") == "FULL_TRANSITIVE"
        assert service.compatibility() == "FULL_TRANSITIVE"
        assert service.set_compatibility("FORWARD") == "FORWARD"
        assert service.compatibility() == "FORWARD"
        assert service.delete_compatibility() == "FORWARD"
        assert service.compatibility() == "BACKWARD"

    def test_subject_level_overrides_global(self, service: RegistryService) -> None:
        with pytest.raises(RegistryError) as unset:
            service.compatibility(SUBJECT)
        assert code_of(unset) == 40408
        assert service.compatibility(SUBJECT, default_to_global=True) == "BACKWARD"

        service.set_compatibility("NONE", SUBJECT)
        service.set_compatibility("FULL")

        assert service.compatibility(SUBJECT) == "NONE"
        assert service.compatibility(OTHER, default_to_global=True) == "FULL"
        assert service.delete_compatibility(SUBJECT) == "NONE"
        assert service.compatibility(SUBJECT, default_to_global=True) == "FULL"
        with pytest.raises(RegistryError) as not_configured:
            service.delete_compatibility(SUBJECT)
        assert code_of(not_configured) == 40401

    def test_unknown_level_is_refused_with_42203(self, service: RegistryService) -> None:
        with pytest.raises(RegistryError) as refused:
            service.set_compatibility("SIDEWAYS", SUBJECT)

        assert code_of(refused) == 42203
        assert "BACKWARD_TRANSITIVE" in str(refused.value)

    # the store itself

    def test_concurrent_registrations_of_one_schema_make_one_version(
        self, service: RegistryService
    ) -> None:
        results: list[SubjectVersion] = []
        threads = [
            threading.Thread(target=lambda: results.append(service.register(SUBJECT, V1)))
            for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert {(r.schema_id, r.version) for r in results} == {(1, 1)}
        assert len(results) == 6
        assert service.versions(SUBJECT) == [1]

    def test_concurrent_registrations_get_distinct_versions(self, service: RegistryService) -> None:
        schemas = [
            record(SUBJECT_ID, *({"name": f"f{j}", "type": "int", "default": j} for j in range(i)))
            for i in range(8)
        ]
        results: list[SubjectVersion] = []
        errors: list[BaseException] = []

        def register(schema: str) -> None:
            try:
                results.append(service.register(SUBJECT, schema))
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=register, args=(s,)) for s in schemas]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert errors == []
        assert sorted(r.version for r in results) == list(range(1, 9))
        assert len({r.schema_id for r in results}) == 8


class TestSqliteFileStore(RegistryServiceContract):
    @pytest.fixture
    def database_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'hub.db'}"

    @pytest.fixture
    def store(self, database_url: str) -> Iterator[SqlRegistryStore]:
        store = open_registry_store(database_url)
        yield store
        store.close()

    def test_data_survives_a_new_store_on_the_same_database(self, database_url: str) -> None:
        first = open_registry_store(database_url)
        registered = RegistryService(first).register(SUBJECT, V1)
        RegistryService(first).set_compatibility("FULL", SUBJECT)
        first.close()

        second = open_registry_store(database_url)
        try:
            reopened = RegistryService(second)
            assert reopened.version(SUBJECT, "latest") == registered
            assert reopened.compatibility(SUBJECT) == "FULL"
        finally:
            second.close()


class TestSqliteMemoryStore(RegistryServiceContract):
    @pytest.fixture
    def store(self) -> Iterator[SqlRegistryStore]:
        store = open_registry_store("sqlite://")
        yield store
        store.close()


# --- PostgreSQL -------------------------------------------------------------------------------


class TestPostgresStore(RegistryServiceContract):
    @pytest.fixture
    def engine(self, postgres_url: str) -> Iterator[Engine]:
        engine = registry_engine(postgres_url)
        registry_metadata.drop_all(engine)
        create_registry_tables(engine)
        yield engine
        registry_metadata.drop_all(engine)
        engine.dispose()

    @pytest.fixture
    def store(self, engine: Engine) -> Iterator[SqlRegistryStore]:
        yield SqlRegistryStore(engine)
