"""The one place that reads settings and wires adapters to loops; CLI and web are shells."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

import structlog
from sqlalchemy import Engine, create_engine, event

from hub.settings import Settings
from hub.topics import Topics

log = structlog.get_logger(__name__)


@lru_cache(maxsize=1)
def settings() -> Settings:
    s = Settings()
    use_kafka_security(s)
    return s


def use_kafka_security(s: Settings) -> None:
    """Every Kafka client this process builds authenticates as ``s.kafka_security`` says (resolved
    at the first client, so ``hub broker start --secure`` can create the credentials first)."""
    from hub.adapters.kafka import use_security
    from hub.adapters.kafka_security import client_security

    use_security(lru_cache(maxsize=1)(lambda: client_security(s)))


def kafka_mode(s: Settings) -> str:
    """How a service names its Kafka security in the line that starts it."""
    from hub.adapters.kafka_security import mode_label

    return mode_label(s)


def topics(s: Settings) -> Topics:
    return Topics(prefix=s.topic_prefix)


# -- database ----------------------------------------------------------------------------------


def engine_for(url: str) -> Engine:
    """An engine for the hub database or a view database; SQLite gets WAL and a busy timeout."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


# -- keys --------------------------------------------------------------------------------------


def keys_dir(s: Settings) -> Path:
    return s.home / "keys"


def pseudonym_master(s: Settings, *, create: bool = False) -> bytes:
    """The master secret behind every audience's pseudonyms (HMAC keys derive from it)."""
    path = keys_dir(s) / "pseudonym.key"
    if not path.exists():
        if not create:
            from hub.domain.errors import InfraError

            raise InfraError(f"{path} does not exist; run `hub init` first")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
        log.info("pseudonym_key_created", path=str(path))
    return path.read_bytes()


def init_field_keys(s: Settings) -> None:
    """The KEK file, the DEK store and the key-id secret of field encryption (idempotent)."""
    from hub.adapters.key_store import open_keyring

    open_keyring(keys_dir(s), create=True)


def field_crypto(s: Settings, cat=None):  # type: ignore[no-untyped-def]
    """Field-level encryption for publishers, the router and views; None when it is off."""
    from hub.adapters.key_store import field_crypto_for

    return field_crypto_for(s, cat)


# -- agreements, codec -----------------------------------------------------------------------


def catalogue():  # type: ignore[no-untyped-def]
    from hub.serde.catalogue import Catalogue

    return Catalogue.load()


def agreements(cat=None):  # type: ignore[no-untyped-def]
    from hub.policy import load_agreements

    return load_agreements(None, cat or catalogue())


def codec(s: Settings, cat=None):  # type: ignore[no-untyped-def]
    from hub.adapters.schema_registry import HttpSchemaRegistry
    from hub.serde.codec import AvroCodec

    return AvroCodec(cat or catalogue(), HttpSchemaRegistry(s.schema_registry_url))


def topic_plan(s: Settings, agreement_set) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Every topic the hub uses, with its partition count."""
    t = topics(s)
    plan: dict[str, int] = {t.audit: 1, t.identity: 3}
    for agency in agreement_set.agencies():
        plan[t.ingest(agency.id)] = 3
        plan[t.dlq(agency.id)] = 1
    for audience in agreement_set.audiences():
        plan[t.deliver(audience)] = 3
    return plan


def init(s: Settings) -> dict[str, object]:
    """``hub init``: state directory, keys, database tables, topics, schemas. Idempotent."""
    from hub.adapters.audit_store import create_audit_tables
    from hub.adapters.kafka import ensure_topics
    from hub.adapters.policy_store import create_policy_tables
    from hub.adapters.registry_store import create_registry_tables
    from hub.adapters.router_store import create_router_tables
    from hub.audit.commands import init_audit_keys

    s.home.mkdir(parents=True, exist_ok=True)
    pseudonym_master(s, create=True)
    init_field_keys(s)
    init_audit_keys(s.home)
    engine = engine_for(s.hub_database_url)
    for create in (create_registry_tables, create_policy_tables, create_router_tables,
                   create_audit_tables):  # fmt: skip
        create(engine)
    cat = catalogue()
    created = ensure_topics(s.bootstrap_servers, topic_plan(s, agreements(cat)))
    ids = codec(s, cat).register_all()
    return {"topics_created": len(created), "schemas": len(ids), "home": str(s.home)}


# -- the router --------------------------------------------------------------------------------


def build_router(s: Settings, slot: int = 0):  # type: ignore[no-untyped-def]
    """The router for ``slot`` and its transactional bus (``hub-router-<slot>``)."""
    from hub.adapters.kafka import security_config
    from hub.adapters.kafka_txn import TransactionalBus
    from hub.adapters.policy_store import SqlPolicyState
    from hub.adapters.router_store import SqlSeenEvents
    from hub.policy import PseudonymKeys
    from hub.router import Router, RouterConfig

    cat = catalogue()
    agreement_set = agreements(cat)
    engine = engine_for(s.hub_database_url)
    state = SqlPolicyState(engine, cat)
    seen = SqlSeenEvents(engine, connection=state.current_connection)

    t = topics(s)
    router = Router(
        topics=t,
        codec=codec(s, cat),
        agreements=agreement_set,
        state=state,
        keys=PseudonymKeys(pseudonym_master(s)),
        seen=seen,
        config=RouterConfig(
            slot=slot, batch_size=s.router.batch_size, storm_threshold=s.router.storm_threshold,
            max_record_bytes=s.router.max_record_bytes,
        ),  # fmt: skip
        state_transaction=state.transaction,
        fields=field_crypto(s, cat),
    )
    pattern = "^" + t.prefix.replace(".", r"\.") + r"ingest\.[a-z][a-z0-9_]*$"
    bus = TransactionalBus(
        bootstrap=s.bootstrap_servers,
        group_id=f"{t.prefix}hub-router",
        transactional_id=f"{t.prefix}hub-router-{slot}",
        subscribe=[pattern],
        transaction_timeout_ms=s.router.transaction_timeout_ms,
        consumer_extra={"session.timeout.ms": s.router.session_timeout_ms, **security_config()},
        producer_extra={"message.max.bytes": s.router.max_record_bytes, **security_config()},
    )
    return router, bus


# -- Kafka principals and ACLs -----------------------------------------------------------------


def agency_registry() -> list[tuple[str, list[str]]]:
    """Each agency of policies/agencies.yaml with its audiences."""
    return [(a.id, sorted(a.audiences)) for a in agreements().agencies()]


def acl_admin(s: Settings):  # type: ignore[no-untyped-def]
    from hub.adapters.acl import AclAdmin
    from hub.adapters.kafka import admin_config

    return AclAdmin(admin_config(s.bootstrap_servers), s.home)


# -- keys, erasure and retention (hub keys | subject | view purge) ------------------------------


def rotate_kek(s: Settings) -> int:
    """``hub keys rotate``: a new KEK version for new DEKs; the old ones keep unwrapping."""
    from hub.adapters.key_store import open_keyring

    return int(open_keyring(keys_dir(s)).rotate_kek())


def erase_subjects(s: Settings, subjects: list[str], justification: str, actor: str):  # type: ignore[no-untyped-def]
    """``hub subject erase``: destroy the keys, retract from every view, one ``erased`` entry."""
    from hub.adapters.erasure_io import (
        deliveries_of_subject,
        forget_identity,
        produce_in_one_transaction,
    )
    from hub.adapters.key_store import open_keyring
    from hub.adapters.policy_store import SqlPolicyState
    from hub.erasure import Delivered, erase
    from hub.policy import PseudonymKeys

    cat = catalogue()
    agreement_set = agreements(cat)
    engine = engine_for(s.hub_database_url)
    state = SqlPolicyState(engine, cat)
    t = topics(s)
    done = erase(
        subjects, justification=justification, actor=actor,
        deliveries=lambda subject: [Delivered(*d) for d in deliveries_of_subject(engine, subject)],
        state=state, keyring=open_keyring(keys_dir(s)), keys=PseudonymKeys(pseudonym_master(s)),
        agreements=agreement_set, codec=codec(s, cat), topics=t,
        jurisdiction=lambda agency: agreement_set.agency(agency).jurisdiction,
    )  # fmt: skip
    produce_in_one_transaction(s.bootstrap_servers, f"{t.prefix}hub-erasure", done.records)
    for subject in subjects:
        for d in deliveries_of_subject(engine, subject):
            if not d[3]:
                state.mark_retracted(d[0], d[1])
        forget_identity(engine, subject)
    return done


def purge_view(s: Settings, audience: str, db_url: str, actor: str, clock=None):  # type: ignore[no-untyped-def]
    """``hub view purge``: delete expired rows, then write one ``retention_purge`` entry.
    ``clock`` (tests) says what day it is; rows whose retention date is before it go."""
    import datetime as dt

    from hub.adapters.erasure_io import produce_in_one_transaction
    from hub.adapters.view_retention import purge_expired
    from hub.adapters.view_store import open_view_store
    from hub.erasure import purge_entry
    from hub.ports import OutRecord

    now = dt.datetime.now(dt.UTC)
    as_of = (clock() if clock else now).date()
    store = open_view_store(db_url, audience)
    try:
        purged = purge_expired(store, as_of)
    finally:
        store.dispose()
    entry = purge_entry(audience=audience, rows=purged.rows, subjects=purged.subjects,
                        as_of=as_of, actor=actor, at=now)  # fmt: skip
    t = topics(s)
    record = OutRecord(t.audit, entry.entry_id.encode(), entry.to_json_bytes())
    produce_in_one_transaction(s.bootstrap_servers, f"{t.prefix}hub-purge-{audience}", [record])
    return purged
