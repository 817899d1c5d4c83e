"""Field-level encryption through the real broker, router and a view (RELIABILITY.md B.4, B.6).

One hub with ``field_encryption`` on, shared by the module. Every sensitive text value of every
event carries a unique canary (``SNSV…Z``), every other text value a plain one (``PLNT…Z``, the
scanner's positive control). The events go through the Publisher, the live router and a view in
three phases with a KEK rotation (``hub keys rotate``) between them:

- CR-8: no sensitive canary in any ``ingest.*`` or ``deliver.*`` log segment (plain ones are);
- CR-4: each phase's blobs name its KEK version, old and new all decrypt, 0 routing errors;
- CR-6: the router's key store fails mid-run: the router aborts and retries (no delivery, no
  DLQ record, no plaintext), and once it is back everything is routed exactly once;
- CR-5: ``hub subject erase`` of one person: a byte scan of the broker's files, the hub DB, the
  view DB (with its WAL) and the key store finds none of their canaries nor their DEKs (raw or
  wrapped); their records raise ``key_erased``, the others still decrypt; one ``erased`` entry
  without PII; their view rows are deleted and a replay from offset 0 does not bring them back;
- PR-3: ``hub view purge`` with the clock at a retention date + 1 day leaves no expired row and
  writes one ``retention_purge`` entry per run.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text

from hub import bootstrap
from hub.adapters.key_store import SqliteDekStore, open_keyring
from hub.adapters.policy_store import SqlPolicyState
from hub.adapters.view_consumer import rebuild, run_view
from hub.adapters.view_store import open_view_store
from hub.crypto import DecryptError, FieldCrypto, KeyStoreUnavailable
from hub.crypto.blob import parse
from hub.crypto.fields import header_blobs, header_ref
from hub.publisher import subject as subject_block
from hub.topics import Topics
from tests.golden.policy.builder import EventBuilder
from tests.hubtest import LiveRouter
from tests.integration.test_router_harness import (
    Hub,
    broker_data_dir,
    random_events,
    segment_bytes,
    wait_until,
)

pytestmark = pytest.mark.kafka
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "policy"
SENSITIVE = re.compile(rb"SNSV\d{5}P\d{2}Z")
PLAIN = re.compile(rb"PLNT\d{5}P\d{2}Z")
PHASE = 60  # random events per phase (three phases; plus the golden scenarios in the first)


class Planter:
    """Canaries in every text value that is not a reference code: ``SNSV`` where the catalogue
    marks the field sensitive, ``PLNT`` elsewhere; remembers which event got which."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.by_event: dict[str, set[bytes]] = {}
        self.where: dict[bytes, str] = {}  # canary -> event type and field, for messages
        self.n = 0

    def plant(self, event: dict[str, Any]) -> None:
        self.n += 1
        name = self.hub.catalogue.name_for(event["envelope"]["event_type"])
        sensitive = set(self.hub.catalogue.sensitive_fields(name))
        references = set(self.hub.catalogue.reference_fields(name))
        mine: set[bytes] = set()
        count = [0]

        def walk(value: Any, path: str) -> Any:
            if isinstance(value, dict):
                return {k: walk(v, f"{path}.{k}") for k, v in value.items()}
            if isinstance(value, list):
                return [walk(v, path) for v in value]
            if isinstance(value, str) and path not in references:
                count[0] += 1
                kind = "SNSV" if path in sensitive else "PLNT"
                canary = f"{kind}{self.n:05d}P{count[0]:02d}Z"
                if kind == "SNSV":
                    mine.add(canary.encode())
                    self.where[canary.encode()] = f"{event['envelope']['event_type']}.{path}"
                return canary
            return value

        for key in list(event):
            if key not in ("envelope", "disclosure"):
                event[key] = walk(event[key], key)
        self.hub.codec.validate(event)
        self.by_event[event["envelope"]["event_id"]] = mine


def golden_events(hub: Hub) -> list[dict[str, Any]]:
    events = []
    for path in sorted(GOLDEN.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        builder = EventBuilder(hub.catalogue, hub.jurisdiction, doc.get("people"),
                               namespace=f"crypto-{path.stem}")  # fmt: skip
        events += [builder.build(name, spec) for name, spec in doc["events"].items()]
    return events


def renamed(events: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """The same events about other people (new subjects: new keys to make and unwrap)."""
    for event in events:
        local = f"{tag}{event['envelope']['subject']['local_id']}"
        event["envelope"]["subject"] = subject_block(local, "police_nominal_id",
                                                     pnc_id=f"PNC-{local}")  # fmt: skip
    return events


class Run:
    def __init__(self, hub: Hub, planter: Planter, phases: list[set[str]],
                 events: dict[str, dict[str, Any]], outage: dict[str, int]) -> None:  # fmt: skip
        self.hub = hub
        self.planter = planter
        self.phases = phases
        self.events = events
        self.outage = outage

    def fields(self) -> FieldCrypto:
        return FieldCrypto(self.hub.catalogue, open_keyring(self.hub.settings.home / "keys"))


class Flaky:
    """The router's key store, failing while ``down`` is set (CR-6)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = threading.Event()
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down.is_set():
                self.refused += 1
                raise KeyStoreUnavailable("key store down (test)")
            return attr(*args, **kwargs)

        return call


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, registry_url: str, codec: Any,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:  # fmt: skip
    topics = Topics(prefix=f"c{uuid.uuid4().hex[:10]}.")
    hub = Hub(kafka_bootstrap, registry_url, topics, codec, tmp_path_factory.mktemp("crypto"))
    hub.settings = hub.settings.model_copy(update={"field_encryption": True})
    planter = Planter(hub)
    phases: list[set[str]] = []
    events: dict[str, dict[str, Any]] = {}

    def publish(batch: list[dict[str, Any]]) -> int:
        for event in batch:
            planter.plant(event)
            events[event["envelope"]["event_id"]] = event
        phases.append({e["envelope"]["event_id"] for e in batch})
        hub.publish(batch)
        return len(batch)

    outage: dict[str, int] = {}
    with LiveRouter(hub.settings) as live:
        keyring = live.router.fields.keyring
        keyring.kek_check_s = 0.0  # see a rotation at once (the default looks every 0.25 s)
        sent = publish(golden_events(hub) + random_events(hub, PHASE, seed=11))
        live.wait(sent)
        assert bootstrap.rotate_kek(hub.settings) == 2
        sent += publish(random_events(hub, PHASE, seed=12))
        live.wait(sent)
        assert bootstrap.rotate_kek(hub.settings) == 3
        sent += publish(random_events(hub, PHASE, seed=13))
        live.wait(sent)
        aborted_before = live.router.stats.aborted
        # CR-6: the key store goes away mid-run; new people need new keys
        flaky = Flaky(keyring.kms)
        keyring.kms, keyring.unavailable_wait_s = flaky, 0.2
        keyring.forget()
        flaky.down.set()
        delivered_before = live.router.stats.delivered
        dlq_before = len(_dlq(hub))
        sent += publish(renamed(random_events(hub, 40, seed=14), "X"))
        wait_until(lambda: live.router.stats.aborted >= aborted_before + 2, 60, "aborts")
        outage["delivered_during"] = live.router.stats.delivered - delivered_before
        outage["dlq_during"] = len(_dlq(hub)) - dlq_before
        flaky.down.clear()
        wait_until(lambda: _handled(hub, phases[-1]), 60, "the outage's events routed")
        outage["aborted"] = live.router.stats.aborted - aborted_before
        outage["refused"] = flaky.refused
    yield Run(hub, planter, phases, events, outage)


def _dlq(hub: Hub) -> list[Any]:
    return [m for messages in hub.read_many(hub.dlq_topics()).values() for m in messages]


def _handled(hub: Hub, ids: set[str]) -> bool:
    """Every one of ``ids`` routed (a ``published`` entry) or refused (on a DLQ)."""
    published = {e.get("event_id") for e in hub.audit() if e["kind"] == "published"}
    refused = set()
    for m in _dlq(hub):
        try:
            refused.add(hub.codec.decode(m.value())[1]["envelope"]["event_id"])
        except Exception:  # noqa: BLE001, S112 - a malformed DLQ copy names no event
            continue
    return ids <= published | refused


def _ingest_and_deliver(run: Run) -> dict[str, list[Any]]:
    return run.hub.read_many(run.hub.ingest_topics() + run.hub.deliver_topics())


# -- CR-8 -----------------------------------------------------------------------------------------


def test_no_sensitive_plaintext_in_ingest_or_deliver_segments(
    run: Run, tmp_path_factory: Any
) -> None:
    data_dir = broker_data_dir(tmp_path_factory)
    assert data_dir is not None, "CR-8 needs the broker's data directory"
    topics = run.hub.ingest_topics() + run.hub.deliver_topics()
    on_disk = segment_bytes(data_dir, topics)
    leaked = {t: sorted(set(SENSITIVE.findall(d)))[:3] for t, d in on_disk.items()}
    assert not {t: v for t, v in leaked.items() if v}
    plain = sum(len(set(PLAIN.findall(d))) for d in on_disk.values())
    planted = sum(len(v) for v in run.planter.by_event.values())
    assert plain > 0 and planted > 0, "the scan sees plaintext where there is some"
    print(f"CR-8: {planted} sensitive canaries in {len(run.events)} events, 0 found in "
          f"{sum(map(len, on_disk.values()))} segment bytes of {len(topics)} topics; "
          f"{plain} plain canaries found")  # fmt: skip


# -- CR-4 -----------------------------------------------------------------------------------------


def test_kek_rotation_mid_run_old_and_new_decrypt(run: Run) -> None:
    fields = run.fields()
    records = _ingest_and_deliver(run)
    kek_of_phase: dict[int, Counter[int]] = {0: Counter(), 1: Counter(), 2: Counter()}
    opened = blobs = 0
    for messages in records.values():
        for m in messages:
            headers = m.headers() or []
            found = header_blobs(headers)
            if not found:
                continue
            _, record = run.hub.codec.decode(m.value())
            event_id = record["envelope"]["event_id"]
            phase = next((i for i, ids in enumerate(run.phases[:3]) if event_id in ids), None)
            for blob in found.values():
                blobs += 1
                if phase is not None:
                    kek_of_phase[phase][parse(blob)[0].kek_version] += 1
            fields.open(record, headers)
            opened += 1
    assert blobs > 300, blobs
    assert [set(kek_of_phase[p]) for p in range(3)] == [{1}, {2}, {3}], kek_of_phase
    reasons = Counter(dict(m.headers())["hub.error.reason"].decode() for m in _dlq(run.hub))
    assert not {"decrypt_failed", "bad_blob", "key_erased"} & set(reasons), reasons
    print(
        f"CR-4: {opened} records with {blobs} blobs opened; KEK versions by phase "
        f"{ {p: dict(c) for p, c in kek_of_phase.items()} }; DLQ reasons {dict(reasons)}"
    )


# -- CR-6 -----------------------------------------------------------------------------------------


def test_key_store_outage_pauses_the_router_and_loses_nothing(run: Run) -> None:
    assert run.outage["refused"] > 0 and run.outage["aborted"] >= 2
    assert run.outage["delivered_during"] == 0
    assert run.outage["dlq_during"] == 0
    entries = run.hub.audit()
    published = Counter(e["event_id"] for e in entries if e["kind"] == "published")
    ids = {i for i in run.phases[-1] if published[i]}
    assert len(ids) > len(run.phases[-1]) // 2
    assert {i: published[i] for i in ids} == dict.fromkeys(ids, 1)
    deliveries: Counter[tuple[str, str]] = Counter()
    for topic, messages in run.hub.read_many(run.hub.deliver_topics()).items():
        for m in messages:
            _, record = run.hub.codec.decode(m.value())
            if record["envelope"]["event_id"] in ids:
                deliveries[(record["envelope"]["event_id"], topic)] += 1
    audited = Counter((e["event_id"], e["details"]["topic"]) for e in entries
                      if e["kind"] == "delivered" and e["event_id"] in ids)  # fmt: skip
    assert deliveries and set(deliveries.values()) == {1} and deliveries == audited
    reasons = Counter(dict(m.headers())["hub.error.reason"].decode() for m in _dlq(run.hub))
    assert not {"decrypt_failed", "bad_blob", "key_erased"} & set(reasons), reasons
    print(
        f"CR-6: {run.outage['refused']} key-store calls refused, {run.outage['aborted']} "
        f"batches aborted and retried, then {len(ids)} events routed once, "
        f"{sum(deliveries.values())} deliveries"
    )


# -- CR-5 -----------------------------------------------------------------------------------------


def _view_url(run: Run, name: str) -> str:
    return f"sqlite:///{run.hub.settings.home / 'views' / name}"


def _catch_up(run: Run, audience: str, url: str, retractions: int) -> None:
    """Run the view consumer (incrementally) until it has applied the erasure's retractions."""
    store = open_view_store(url, audience)

    def applied() -> bool:
        rows = store.tables()["view_retractions"]
        return sum(1 for r in rows if r["reason"] == "erased") >= retractions

    try:
        run_view(run.hub.bootstrap_servers, run.hub.topics, audience, url, run.hub.codec,
                 applied, fields=run.fields())  # fmt: skip
    finally:
        store.dispose()


def _high_watermarks(run: Run, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": run.hub.bootstrap_servers, "group.id": "hw"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in parts)
    finally:
        consumer.close()


def _files_bytes(*roots: Path) -> bytes:
    """Every file under ``roots``. Kafka preallocates its (offset and time) indexes to 10 MB of
    zeros: of those, the first MB (far more than these topics' entries) is read."""
    chunks = []
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            with path.open("rb") as handle:
                index = path.suffix in (".index", ".timeindex")
                chunks.append(handle.read(1 << 20 if index else -1).rstrip(b"\x00"))
    return b"\x1e".join(chunks)


def test_erasure_shreds_one_person_everywhere(run: Run, tmp_path_factory: Any) -> None:
    hub, settings = run.hub, run.hub.settings
    engine = bootstrap.engine_for(settings.hub_database_url)
    state = SqlPolicyState(engine, hub.catalogue)
    subject_of = {i: state.subject_of(e) for i, e in run.events.items()}
    with engine.connect() as conn:
        delivered = conn.execute(text(
            "SELECT event_id, audience, subject FROM policy_deliveries")).all()  # fmt: skip
    # the audience and the person with the most sensitive values delivered
    score: Counter[tuple[str, str]] = Counter()
    for event_id, audience, subject in delivered:
        score[(audience, subject)] += len(run.planter.by_event.get(event_id, ()))
    (audience, erased), _ = score.most_common(1)[0]
    canaries = set().union(*(run.planter.by_event[i] for i, s in subject_of.items() if s == erased))
    others = set().union(*(run.planter.by_event[i] for i, s in subject_of.items() if s != erased))
    url = _view_url(run, f"{audience}.db")
    rebuild(hub.bootstrap_servers, hub.topics, audience, url, hub.codec, fields=run.fields())
    view_file = Path(url.removeprefix("sqlite:///"))
    assert {c for c in canaries if c in _files_bytes(view_file.parent)}, "S's values in the view"

    keys_dir = settings.home / "keys"
    deks = SqliteDekStore(keys_dir / "deks.db")
    kms = open_keyring(keys_dir).kms
    kids = deks.kids_of([erased])
    rows = deks._conn.execute(  # noqa: SLF001 - every version of every key, to scan for
        f"SELECT kid, version FROM deks WHERE kid IN ({','.join('?' * len(kids))})", kids
    ).fetchall()
    stored = [d for kid, v in rows if (d := deks.get(kid, v)) is not None]
    raw_bytes = [kms.unwrap(d.kek_version, d.wrapped, f"hub.dek.v1\x00{d.kid}\x00{d.version}"
                            .encode()) for d in stored]  # fmt: skip
    assert len(stored) >= 2, "an ingest key and an audience key at least"
    deks.close()
    done = bootstrap.erase_subjects(settings, [erased], "CR-5 test: erasure request 42", "tester")
    assert done.keys_destroyed == len(kids) and audience in done.audiences
    topic = hub.topics.deliver(audience)
    _catch_up(run, audience, url, sum(1 for r in done.records if r.topic == topic))

    # (e) nothing of S in the view after the retractions, nor after a replay from offset 0
    pseudonyms = {hub.keys.pseudonym(audience, erased)}
    local = state.local_identifier_for(erased, hub.agreements.agency_of_audience(audience))
    shown = {local[1] if local else next(iter(pseudonyms))}
    for replay in (False, True):
        if replay:
            rebuild(hub.bootstrap_servers, hub.topics, audience, url, hub.codec,
                    fields=run.fields())  # fmt: skip
        view = create_engine(url)
        with view.connect() as conn:
            rows = conn.execute(text("SELECT subject_id FROM view_timeline")).scalars().all()
            subjects = conn.execute(text("SELECT subject_id FROM view_subjects")).scalars().all()
            rejects = Counter(conn.execute(text("SELECT reason FROM view_rejects")).scalars())
        view.dispose()
        assert not shown & set(rows) and not shown & set(subjects), (replay, shown)
        assert rows, "the other people are still in the view"
    assert rejects["key_erased"] > 0

    # (a) the byte scan: broker files, hub DB, view DB (+WAL), key store
    data_dir = broker_data_dir(tmp_path_factory)
    assert data_dir is not None
    prefix = hub.topics.prefix
    scanned = hub.ingest_topics() + hub.deliver_topics() + hub.dlq_topics()
    broker = b"".join(segment_bytes(data_dir, scanned).values())
    raw_files = _files_bytes(*sorted(data_dir.glob(f"{prefix}*")))  # indexes, snapshots, audit
    everything = {
        "broker segments (decompressed)": broker,
        "broker files": raw_files,
        "hub DB": _files_bytes(*sorted(settings.home.glob("hub.db*"))),
        "view DBs": _files_bytes(view_file.parent),
        "key store": _files_bytes(keys_dir),
    }
    secrets = canaries | set(raw_bytes) | {d.wrapped for d in stored}
    pattern = re.compile(b"|".join(re.escape(s) for s in secrets))
    hits = {where: [run.planter.where.get(s, "a DEK") for s in set(pattern.findall(data))]
            for where, data in everything.items()}  # fmt: skip
    assert hits == {where: [] for where in everything}, hits

    # (b), (c): S's records raise key_erased; everybody else's still decrypt
    fields = run.fields()
    erased_refs = set(kids)
    mine = theirs = 0
    for messages in _ingest_and_deliver(run).values():
        for m in messages:
            ref = header_ref(m.headers())
            if ref is None or not header_blobs(m.headers()):
                continue
            _, record = hub.codec.decode(m.value())
            if ref.kid in erased_refs:
                with pytest.raises(DecryptError) as caught:
                    fields.open(record, m.headers())
                assert caught.value.reason == "key_erased"
                mine += 1
            else:
                fields.open(record, m.headers())
                theirs += 1
    assert mine > 0 and theirs > 0

    # (d) one `erased` entry, no PII
    entries = [e for e in hub.audit() if e["kind"] == "erased"]
    assert len(entries) == 1
    entry = json.dumps(entries[0]).encode()
    identifiers = {erased.encode(), *(s.encode() for s in shown)}
    identifiers |= {run.events[i]["envelope"]["subject"]["local_id"].encode()
                    for i, s in subject_of.items() if s == erased}  # fmt: skip
    assert not [s for s in canaries | identifiers if s in entry]
    assert entries[0]["justification"] == "CR-5 test: erasure request 42"
    assert others - canaries, "other people had sensitive values too"
    print(
        f"CR-5: erased 1 of {len(set(subject_of.values()))} subjects: {len(canaries)} canaries, "
        f"{len(stored)} DEKs; 0 hits in {sum(map(len, everything.values()))} bytes; "
        f"{mine} of their records refuse (key_erased), {theirs} others open; "
        f"{done.retractions} retractions to {done.audiences}"
    )


# -- PR-3 -----------------------------------------------------------------------------------------


def test_retention_purge_deletes_expired_rows_and_audits_each_run(run: Run) -> None:
    hub = run.hub
    counts = Counter({t: len(m) for t, m in hub.read_many(hub.deliver_topics()).items()})
    audience = max(counts, key=lambda t: counts[t]).rsplit("deliver.", 1)[1]
    url = _view_url(run, f"retention-{audience}.db")
    rebuild(hub.bootstrap_servers, hub.topics, audience, url, hub.codec, fields=run.fields())
    view = create_engine(url)

    def dates() -> list[dt.date]:
        with view.connect() as conn:
            got = conn.execute(text("SELECT retention_until FROM view_timeline")).scalars().all()
        return [dt.date.fromisoformat(str(d)) if d is not None else None for d in got]

    before = [d for d in dates() if d is not None]
    assert len(set(before)) >= 2, "rows with different retention dates"
    first, last = min(before), max(before)
    for day in (first, last):
        after = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
        purged = bootstrap.purge_view(hub.settings, audience, url, actor="tester",
                                      clock=lambda after=after: after)  # fmt: skip
        left = dates()
        assert purged.rows > 0
        assert not [d for d in left if d is not None and d <= day], day
    with view.connect() as conn:
        orphans = conn.execute(text(
            "SELECT count(*) FROM view_subjects s WHERE NOT EXISTS (SELECT 1 FROM view_timeline t"
            " WHERE t.subject_scheme = s.subject_scheme AND t.subject_id = s.subject_id)"
        )).scalar_one()  # fmt: skip
    view.dispose()
    assert orphans == 0
    entries = [e for e in hub.audit() if e["kind"] == "retention_purge"]
    assert len(entries) == 2 and {e["audience"] for e in entries} == {audience}
    print(
        f"PR-3: {audience}: {len(before)} rows with retention dates {first}..{last}; two purge "
        f"runs, {len(entries)} retention_purge entries"
    )
