"""The audit trail after chaos, against the real broker: RELIABILITY.md AU-5, AU-6, AU-8, AU-9,
PR-4 and PR-6 on one run shared by the module.

The run: the harness workload (tests/harness/workload.py: two agencies, 1 % defective records)
with a canary string in every free-text sensitive field, routed by ``hub router run`` as a real
subprocess that is SIGKILLed once mid-stream (EO-1's fault, so ``hub.audit`` holds aborted
transactions) and restarted; then a portal session writes its sign-in, access, refusal and
auditor-query entries to the same ``hub.audit``; then ``hub audit run`` (catch-up) appends the
topic to the hash chain in the hub database.

Sizes: N=400 inputs here (about 30 s with the kill's 6 s session timeout);
``HUBTEST_TIER=soak`` runs N=10,000.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from fastapi.testclient import TestClient

from hub import bootstrap
from hub.adapters.audit_consumer import run_materialiser
from hub.adapters.audit_store import SqlAuditStore, open_audit_store
from hub.adapters.kafka import SafeProducer, producer_config
from hub.audit import reports
from hub.audit.checkpoint import load_signer
from hub.audit.commands import default_public_key, verify_trail
from hub.audit.entry import AuditEntry
from hub.audit.protocols import StoredEntry
from hub.policy import PseudonymKeys
from hub.publisher import Publisher
from hub.settings import RouterSettings, Settings
from hub.topics import Topics
from hub.web import create_app
from hub.web.audit import AccessRecorder
from hub.web.auditor import AuditorDesk
from hub.web.users import open_user_store
from tests.harness.checker import Expected, oracle
from tests.harness.procs import GroupProgress, RouterProcess
from tests.harness.workload import (
    Workload,
    build_workload,
    ingest_topics,
    publish,
    read_ingest_log,
    read_topics,
)
from tests.hubtest import read_all
from tests.integration.audit_oracle import (
    ENTRY_CONTENT,
    disclosure_oracle,
    entry_content_problems,
    reported,
)
from tests.web.scenario import JORDAN, fill_views
from tests.web.support import add_users, config, sign_in

pytestmark = pytest.mark.kafka

SOAK = os.environ.get("HUBTEST_TIER") == "soak"
N = 10_000 if SOAK else 400
SEED = 5150
TIMEOUT_S = 900 if SOAK else 120
JUSTIFICATION = "AU-8 review of the trail"


@dataclass
class Trail:
    settings: Settings
    topics: Topics
    codec: Any
    agreements: Any
    workload: Workload
    canaries: list[str]
    store: SqlAuditStore
    entries: list[StoredEntry]
    logs: str  # every log line of the routers, the portal and the materialiser
    tmp: Path


# -- the run ------------------------------------------------------------------------------------


def _set_all(value: Any, path: list[str], make: Any) -> int:
    """Replace every string at ``path`` (through lists) with ``make()``; how many were set."""
    if isinstance(value, list):
        return sum(_set_all(item, path, make) for item in value)
    if not isinstance(value, dict) or path[0] not in value:
        return 0
    if len(path) > 1:
        return _set_all(value[path[0]], path[1:], make)
    current = value[path[0]]
    if isinstance(current, str):
        value[path[0]] = make()
        return 1
    if isinstance(current, list) and all(isinstance(v, str) for v in current):
        value[path[0]] = [make() for _ in current]
        return len(current)
    return 0


def _with_canaries(codec: Any, workload: Workload) -> tuple[Workload, list[str]]:
    """The workload with a unique canary in every free-text sensitive field of every valid input
    (a field whose canary the schema or reference data refuses keeps its value)."""
    catalogue = codec.catalogue
    canaries: list[str] = []
    publishers: dict[str, Publisher] = {}
    inputs = []
    for item in workload.inputs:
        if item.defect is not None:
            inputs.append(item)
            continue
        _, record = codec.decode(item.value, "ingest", 0, 0)
        event_type = record["envelope"]["event_type"]
        agency = record["envelope"]["source_agency"]
        publisher = publishers.setdefault(agency, Publisher(
            agency=agency, source_system=record["envelope"]["source_system"],
            jurisdiction=record["envelope"]["jurisdiction"], codec=codec, sink=None,  # type: ignore[arg-type]
        ))  # fmt: skip
        references = catalogue.reference_fields(event_type)
        for path in catalogue.sensitive_fields(event_type):
            if path in references:
                continue
            trial = copy.deepcopy(record)
            made: list[str] = []

            def make(made: list[str] = made, base: int = len(canaries)) -> str:
                made.append(f"CANARY{base + len(made):06d}Q")
                return made[-1]

            if _set_all(trial, path.split("."), make) == 0:
                continue
            try:
                publisher.validate(trial)
            except Exception:  # noqa: BLE001 - the field refuses a canary: keep its value
                continue
            record = trial
            canaries += made
        inputs.append(replace(item, value=codec.encode(record)))
    return Workload(inputs, workload.seed), canaries


def _portal_session(settings: Settings, store: SqlAuditStore, catalogue: Any, tmp: Path) -> None:
    """Sign-ins (good and bad), a subject page, a refusal and auditor queries, each writing its
    entry to the run's ``hub.audit`` through the real broker."""
    views = fill_views(tmp / "portal", catalogue)
    users = f"sqlite:///{tmp / 'users.db'}"
    add_users(open_user_store(users))
    servers = settings.bootstrap_servers
    recorder = AccessRecorder(
        lambda: SafeProducer(producer_config(servers, **{"message.timeout.ms": 5000})),
        bootstrap.topics(settings).audit,
    )
    keys = PseudonymKeys(bootstrap.pseudonym_master(settings))
    desk = AuditorDesk(store, lambda text: keys.pseudonym("audit", text))
    app = create_app(config(tmp, views, users), recorder=recorder, desk=desk)
    with TestClient(app) as client:
        assert sign_in(client, "iom.officer", "not the password").status_code == 401
        sign_in(client, "iom.officer")
        page = client.get("/subject", params={"scheme": JORDAN["police.iom"][0],
                                              "id": JORDAN["police.iom"][1]})  # fmt: skip
        assert page.status_code == 200
        assert client.get("/auditor/denials").status_code == 403
        sign_in(client, "dpo")
        for path in ("/auditor/denials", "/auditor/sharing"):
            answer = client.get(path, params={"justification": JUSTIFICATION})
            assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def trail(kafka_bootstrap: str, registry_url: str, codec: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("audit-trail")
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    settings = Settings(
        home=tmp / "home", kafka_bootstrap=kafka_bootstrap, registry_url=registry_url,
        topic_prefix=topics.prefix,
        router=RouterSettings(transaction_timeout_ms=15_000, session_timeout_ms=6_000,
                              batch_size=50),
    )  # fmt: skip
    bootstrap.init(settings)
    agreements = bootstrap.agreements(codec.catalogue)
    workload, canaries = _with_canaries(codec, build_workload(codec, N, seed=SEED,
                                                              namespace="au"))  # fmt: skip
    assert len(canaries) >= 100, "too few sensitive free-text fields to seed"
    publish(kafka_bootstrap, topics, workload.inputs)
    progress = GroupProgress(kafka_bootstrap, f"{topics.prefix}hub-router", ingest_topics(topics))
    debug = {"HUB_LOG_LEVEL": "DEBUG"}
    routers = [RouterProcess(settings, tmp / "logs", env=debug)]
    try:
        progress.wait_advance(N // 3, TIMEOUT_S, routers[0])
        assert routers[0].kill() < 0  # SIGKILL mid-stream: its open transaction is aborted
        routers.append(RouterProcess(settings, tmp / "logs", env=debug))
        progress.wait_done(TIMEOUT_S, routers[1])
        assert routers[1].terminate() == 0, routers[1].stderr[-3000:]
        logs = "".join(r.stdout + r.stderr for r in routers)
    finally:
        for router in routers:
            router.close()
        progress.close()
    store = open_audit_store(settings.hub_database_url)
    with structlog.testing.capture_logs() as captured:
        _portal_session(settings, store, codec.catalogue, tmp)
        run_materialiser(
            bootstrap=kafka_bootstrap, topic=topics.audit, store=store,
            signer=load_signer(bootstrap.keys_dir(settings)), should_stop=lambda: False,
            checkpoint_every=500, idle_stop_s=1.0,
        )  # fmt: skip
    logs += "\n".join(json.dumps(event, default=str) for event in captured)
    entries = list(store.iter_entries())
    try:
        yield Trail(settings, topics, codec, agreements, workload, canaries, store, entries,
                    logs, tmp)  # fmt: skip
    finally:
        store.close()


def _expected(trail: Trail) -> Expected:
    log = read_ingest_log(trail.settings.bootstrap_servers, ingest_topics(trail.topics))
    return oracle(trail.workload, log, trail.codec, trail.agreements, trail.topics)


def _of(trail: Trail, kind: str) -> list[AuditEntry]:
    return [s.entry for s in trail.entries if s.entry.kind == kind]


# -- AU-5 ----------------------------------------------------------------------------------------


def test_au5_chain_rederived_from_the_topic_equals_the_database_head(trail: Trail) -> None:
    """AU-5: an independent re-derivation of the chain from ``hub.audit`` (stdlib json and
    hashlib, from the chain's written definition, not hub.audit's code) gives the database's
    head hash and size; and ``hub audit verify`` passes."""
    records = read_all(trail.settings.bootstrap_servers, trail.topics.audit)
    size, prev, seen = 0, "0" * 64, set()
    for message in records:
        value = json.loads(message.value())
        if value["entry_id"] in seen:
            continue  # the store keeps an entry id once
        seen.add(value["entry_id"])
        size += 1
        body = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        record = f'{{"alg":"sha256","entry":{body},"prev_hash":"{prev}","seq":{size}}}'
        prev = hashlib.sha256(record.encode()).hexdigest()

    assert (size, prev) == trail.store.head()
    assert size == len(trail.entries) > N
    report = verify_trail(trail.store, [default_public_key(trail.settings.home)])
    assert report.ok and report.size == size and report.checkpoints >= 1, report


# -- AU-6 ----------------------------------------------------------------------------------------


def test_au6_every_delivery_decision_and_dlq_record_has_its_entry(trail: Trail) -> None:
    """AU-6: after the kill, deliveries without an audit entry = ∅, the ``decided`` entries are
    the oracle's decisions, and every DLQ record has its ``rejected`` entry."""
    expected = _expected(trail)
    servers = trail.settings.bootstrap_servers
    delivered = Counter((e.event_id, e.audience) for e in _of(trail, "delivered"))
    decided = Counter((e.event_id, e.audience) for e in _of(trail, "decided"))
    rejected = {(e.details["topic"], int(e.details["partition"]), int(e.details["offset"]))
                for e in _of(trail, "rejected")}  # fmt: skip
    on_topics = set()
    for rec in read_topics(servers, [trail.topics.deliver(a) for a in trail.agreements.audiences()],
                           "read_committed"):  # fmt: skip
        _, record = trail.codec.decode(rec.value, rec.topic, rec.partition, rec.offset)
        if record["envelope"]["event_type"] != "delivery.retracted":
            on_topics.add((record["envelope"]["event_id"], record["disclosure"]["audience"]))
    dlq = set()
    for rec in read_topics(servers, [trail.topics.dlq(a.id) for a in trail.agreements.agencies()],
                           "read_committed"):  # fmt: skip
        headers = dict(rec.headers)
        dlq.add((headers["hub.error.topic"].decode(), int(headers["hub.error.partition"]),
                 int(headers["hub.error.offset"])))  # fmt: skip

    assert on_topics and on_topics - set(delivered) == set()
    assert set(delivered) == expected.deliveries and max(delivered.values()) == 1
    assert set(decided) == expected.decided and sum(decided.values()) == len(expected.decided)
    assert dlq and dlq == rejected == set(expected.dlq)


# -- AU-8 ----------------------------------------------------------------------------------------


def test_au8_each_entry_kind_carries_who_what_when_and_why(trail: Trail) -> None:
    """AU-8 for the kinds this run drives (router, portal, auditor): UTC millisecond time,
    component, outcome, actor (and role for people), subject pseudonym, recipients and purpose
    for disclosures, justification for auditor reads; failed and denied operations present."""
    kinds = {s.entry.kind for s in trail.entries}
    # retractions come with S7 (tests/e2e/test_golden_scenarios_through_broker.py checks them)
    driven = set(ENTRY_CONTENT) - {"retracted", "corrected"}
    assert driven <= kinds, driven - kinds
    assert entry_content_problems(trail.entries) == []
    outcomes = {(e.kind, e.outcome) for e in (s.entry for s in trail.entries)}
    assert {("login_failed", "denied"), ("access_denied", "denied"), ("decided", "deny"),
            ("rejected", "error")} <= outcomes  # fmt: skip
    asked = _of(trail, "auditor_query")
    assert {(e.component, e.role, e.justification) for e in asked} == {
        ("web", "auditor", JUSTIFICATION)
    }


# -- AU-9 ----------------------------------------------------------------------------------------


def _audit_segments(trail: Trail, basetemp: Path) -> bytes:
    """The bytes of ``hub.audit``'s log segments on the session broker's disk; where the broker
    is not ours to read (HUB_KAFKA_BOOTSTRAP), every record including aborted ones."""
    found = sorted(basetemp.glob(f"hub-home*/kafka/data/{trail.topics.audit}-0/*.log"))
    if found:
        return b"".join(path.read_bytes() for path in found)
    records = read_topics(trail.settings.bootstrap_servers, [trail.topics.audit],
                          "read_uncommitted")  # fmt: skip
    return b"".join(rec.value or b"" for rec in records)


def test_au9_no_canary_in_the_trail_its_topic_or_any_log(
    trail: Trail, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """AU-9: canaries in every free-text sensitive field; a byte scan of the audit table (every
    stored column of every entry and checkpoint), ``hub.audit``'s segments and every log line
    (routers, portal, materialiser, the broker's own logs) finds none, while the ingest topics
    do hold them (the scan would see them)."""
    rows = [repr(tuple(row)) for row in trail.store.entry_rows()]
    rows += [repr(cp) for cp in trail.store.checkpoints()]
    stored = "\n".join(rows).encode()
    segments = _audit_segments(trail, tmp_path_factory.getbasetemp())
    broker_logs = tmp_path_factory.getbasetemp().glob("hub-home*/kafka/*.log")
    logs = trail.logs.encode() + b"".join(path.read_bytes() for path in broker_logs)
    ingested = b"".join(
        rec.value or b""
        for rec in read_topics(
            trail.settings.bootstrap_servers, ingest_topics(trail.topics), "read_committed"
        )  # fmt: skip
    )

    assert len(segments) > 10_000 and len(stored) > 10_000
    for event in (b"router_started", b"signed_in", b"audit_entry_recorded",
                  b"audit_materialiser_stopped"):  # fmt: skip
        assert event in logs, event  # every component's lines were captured
    assert all(c.encode() in ingested for c in trail.canaries)  # the control: the scan sees them
    for name, haystack in (("audit table", stored), ("hub.audit", segments), ("logs", logs)):
        hits = [c for c in trail.canaries if c.encode() in haystack]
        assert hits == [], f"{name}: {len(hits)} canaries, e.g. {hits[:3]}"
    assert b"CANARY" not in stored + segments + logs


# -- PR-4 ----------------------------------------------------------------------------------------


def test_pr4_disclosure_reports_of_twenty_subjects_equal_the_oracle(trail: Trail) -> None:
    """PR-4: for 20 subjects, the disclosure report's recipients and the fields each received
    and was refused equal what the pure policy function decided."""
    log = read_ingest_log(trail.settings.bootstrap_servers, ingest_topics(trail.topics))
    events = []
    for (topic, partition), entries in sorted(log.items()):
        for offset, input_id in entries:
            item = trail.workload.by_id.get(input_id)
            if item is not None and item.defect is None:
                events.append(trail.codec.decode(item.value, topic, partition, offset)[1])
    keys = PseudonymKeys(bootstrap.pseudonym_master(trail.settings))
    expected = disclosure_oracle(events, trail.codec.catalogue, trail.agreements, keys)
    subjects = sorted(expected, key=lambda ref: (-len(expected[ref]), ref))[:20]
    assert len(subjects) == 20, f"only {len(expected)} subjects received anything: raise N"

    for ref in subjects:
        report = reports.disclosure_report(trail.store, ref)
        assert reported(report) == expected[ref], ref
        assert set(report.recipients()) == {audience for _, audience in expected[ref]}


# -- PR-6 ----------------------------------------------------------------------------------------


def test_pr6_every_auditor_read_through_the_portal_is_on_the_chain(trail: Trail) -> None:
    """PR-6, end to end: the portal's auditor reads reached ``hub.audit`` through the broker and
    the chain holds them; the practitioner's attempt on an audit route is a denied entry."""
    asked = [e.details["command"] for e in _of(trail, "auditor_query")]
    denied = [(e.actor, e.reason) for e in _of(trail, "access_denied")]

    assert asked == ["web audit denials", "web audit sharing"]
    assert denied == [("iom.officer", "role practitioner on /auditor/denials")]
