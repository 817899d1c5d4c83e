"""What ``hub subject erase`` and ``hub view purge`` need from Kafka and the hub database."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaException, Producer
from sqlalchemy import Engine, delete, select

from hub.adapters.kafka import producer_config
from hub.adapters.policy_store import deliveries, intervals, links, local_ids, people
from hub.domain.errors import InfraError
from hub.ports import OutRecord


def deliveries_of_subject(engine: Engine, subject: str) -> list[tuple[str, str, str, bool]]:
    """(event id, audience, clause, retracted) of every delivery the router recorded about
    ``subject`` (the policy state renames a merged subject to the survivor: theirs are in)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.event_id, deliveries.c.audience, deliveries.c.clause_id,
                   deliveries.c.retracted)
            .where(deliveries.c.subject == subject)
            .order_by(deliveries.c.seq)
        ).all()  # fmt: skip
    return [(r.event_id, r.audience, r.clause_id, bool(r.retracted)) for r in rows]


def produce_in_one_transaction(
    bootstrap: str, transactional_id: str, records: Sequence[OutRecord], timeout: float = 30.0
) -> None:
    """Produce ``records`` atomically (all or none visible to read_committed readers)."""
    try:
        producer = Producer(producer_config(bootstrap, **{"transactional.id": transactional_id}))
        producer.init_transactions(timeout)
        producer.begin_transaction()
        for r in records:
            producer.produce(r.topic, value=r.value, key=r.key, headers=list(r.headers))
        producer.commit_transaction(timeout)
    except KafkaException as exc:
        raise InfraError(f"could not produce the erasure's records: {exc}") from exc


def forget_identity(engine: Engine, subject: str) -> int:
    """Delete the policy state's identity of ``subject``: its identity links, local ids and
    registrations (born, name key), and its facts (intervals: cohort, consent, referrals and
    cases, whose keys may hold a victim reference). Their audience pseudonyms can then no
    longer be tied back to anyone (DESIGN 8). On SQLite the rows are overwritten
    (``secure_delete``) and the WAL is checkpointed and truncated, so no copy stays in the
    file. Returns the rows deleted."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        if sqlite:
            conn.exec_driver_sql("PRAGMA secure_delete=ON")
        gone = 0
        for table in (links, local_ids, people, intervals):
            gone += conn.execute(delete(table).where(table.c.subject == subject)).rowcount
    if sqlite:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return gone
