"""EO-8 for the probation, Safety House and ERI connectors and the HTTP ingest API, through the
real broker and router: the golden exports published once, again (the ledger: nothing sent),
again with the ledgers lost, and ERI's a further time after a crash half-way through its file;
an HTTP POST retried. Every event is delivered once per audience; the router drops every re-sent
event as a duplicate; nothing reaches a DLQ."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from connectors.eri import CONNECTOR as ERI
from connectors.framework import Connector, Ledger, run_file
from connectors.http_ingest.app import IngestConfig, create_app
from connectors.http_ingest.tokens import open_token_store
from connectors.probation import CRC, NPS
from connectors.safety_house import AFTERCARE, MUNICIPALITY, SAFETY_HOUSE
from hub import bootstrap
from hub.adapters.kafka import SafeProducer, producer_config
from hub.domain.errors import InfraError
from hub.publisher import Publisher
from tests.connectors.support import CrashAfter, read_topics
from tests.connectors.test_http_ingest import _doc
from tests.hubtest import LiveRouter, hub_settings

pytestmark = pytest.mark.kafka

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "connectors"
FILES: list[tuple[Connector, Path]] = [
    (CRC, GOLDEN / "probation" / "crc-events.json"),
    (NPS, GOLDEN / "probation" / "nps-events.jsonl"),
    (SAFETY_HOUSE, GOLDEN / "safety_house" / "registraties.json"),
    (MUNICIPALITY, GOLDEN / "safety_house" / "registraties.json"),
    (AFTERCARE, GOLDEN / "safety_house" / "registraties.json"),
    (ERI, GOLDEN / "eri" / "registro.csv"),
]
EVENTS = 7 + 2 + 6 + 2 + 6 + 14


def test_eo8_rerun_of_the_exports_publishes_nothing_new(kafka_bootstrap, registry_url, codec,
                                                        tmp_path: Path) -> None:  # fmt: skip
    settings = hub_settings(kafka_bootstrap, registry_url, f"t{uuid.uuid4().hex[:10]}.",
                            tmp_path / "home")  # fmt: skip
    bootstrap.init(settings)
    topics = bootstrap.topics(settings)
    sink = SafeProducer(producer_config(kafka_bootstrap))

    def publisher(connector: Connector, out: Any = sink) -> Publisher:
        return Publisher(agency=connector.agency, source_system=connector.source_system,
                         jurisdiction=connector.jurisdiction, codec=codec, sink=out,
                         topics=topics)  # fmt: skip

    def run_all(ledgers: Path) -> list[Any]:
        return [run_file(c, path, publisher(c), Ledger(ledgers / f"{c.name}.sqlite"),
                         quarantine_dir=tmp_path / "quarantine") for c, path in FILES]  # fmt: skip

    store = open_token_store(f"sqlite:///{tmp_path / 'tokens.db'}")
    api = IngestConfig(kafka_bootstrap, topics, {"probation_crc": "UK-ENG"})
    auth = {"Authorization": f"Bearer {store.issue('probation_crc')}"}

    with LiveRouter(settings) as live, TestClient(create_app(api, store, codec)) as http:
        first = run_all(tmp_path / "ledgers")
        assert sum(s.events for s in first) == EVENTS
        assert all(s.rejected == 0 and s.adds_up for s in first)
        posted = [http.post("/v1/events", json=_doc("K-retry"), headers=auth) for _ in range(2)]
        assert [p.status_code for p in posted] == [202, 202]  # a retry of the same request
        live.wait(EVENTS + 2)
        delivered_once = live.router.stats.delivered

        again = run_all(tmp_path / "ledgers")  # the ledger: nothing is sent
        assert [s.events for s in again] == [0] * len(FILES)
        assert [s.skipped for s in again] == [s.read for s in again]

        lost = run_all(tmp_path / "lost")  # the ledgers lost: everything is sent again
        assert sum(s.events for s in lost) == EVENTS
        crash_ledger = Ledger(tmp_path / "crash.sqlite")
        with pytest.raises(InfraError, match="killed half-way"):
            run_file(ERI, GOLDEN / "eri" / "registro.csv", publisher(ERI, CrashAfter(sink, 7)),
                     crash_ledger, quarantine_dir=tmp_path / "quarantine")  # fmt: skip
        sink.flush()
        after = run_file(ERI, GOLDEN / "eri" / "registro.csv", publisher(ERI), crash_ledger,
                         quarantine_dir=tmp_path / "quarantine")  # fmt: skip
        assert after.events == 14  # nothing of the killed run reached the ledger
        live.wait(2 * EVENTS + 2 + 7 + 14)
        stats = live.router.stats

    assert stats.duplicates == EVENTS + 1 + 7 + 14, stats
    assert stats.rejected == 0 and stats.delivered == delivered_once, stats
    audiences = bootstrap.agreements(codec.catalogue).audiences()
    deliveries = Counter()
    for topic, value in read_topics(kafka_bootstrap, [topics.deliver(a) for a in audiences]):
        record = codec.decode(value)[1]
        deliveries[(record["envelope"]["event_id"], topic)] += 1
    assert deliveries and max(deliveries.values()) == 1
    assert deliveries[(posted[0].json()["event_id"], topics.deliver("mals"))] == 1
    assert sum(deliveries.values()) == delivered_once
    delivered_to = {topic for _, topic in deliveries}
    for audience in ("probation_crc", "safety_house", "nl_police", "nl_health", "nl_housing",
                     "eri", "it_social_services", "mals"):  # fmt: skip
        assert topics.deliver(audience) in delivered_to, audience
    dlqs = {topics.dlq(c.agency) for c, _ in FILES}
    assert read_topics(kafka_bootstrap, sorted(dlqs)) == []
