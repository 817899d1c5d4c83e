"""EO-8 for the police and prison connectors, through the real broker and router: the first
night's exports (the police one through ``hub connector run police``), the same again (the
ledger: nothing sent), again with the ledgers lost (everything re-sent, all dropped by the
router as duplicates), the second night's changes and corrections twice, and the prison export
once more, killed half-way and run again. Each event is delivered at most once per audience, the
corrections reach the audiences of their originals, and nothing reaches a DLQ."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from connectors import connector
from connectors.framework import Connector, Ledger, Summary, run_file
from hub import bootstrap
from hub.adapters.kafka import SafeProducer, producer_config
from hub.domain.errors import InfraError
from hub.publisher import Publisher
from tests.conftest import REPO
from tests.connectors.support import CrashAfter, read_topics
from tests.hubtest import LiveRouter, hub_settings

pytestmark = pytest.mark.kafka

GOLDEN = REPO / "tests" / "golden" / "connectors"
POLICE, PRISON = connector("police"), connector("prison")
NIGHT1 = [(POLICE, GOLDEN / "police" / "night1.csv"), (PRISON, GOLDEN / "prison" / "schedule1.csv")]
NIGHT2 = [(POLICE, GOLDEN / "police" / "night2.csv"), (PRISON, GOLDEN / "prison" / "schedule2.csv")]
FIRST, CHANGES = 14 + 4, 3 + 3  # events of night 1; of night 2 (2 + 2 of them corrections)


def test_eo8_reruns_of_police_and_prison_exports_deliver_nothing_new(
    kafka_bootstrap, registry_url, codec, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    home = tmp_path / "home"
    settings = hub_settings(kafka_bootstrap, registry_url, prefix, home)
    bootstrap.init(settings)
    topics = bootstrap.topics(settings)
    sink = SafeProducer(producer_config(kafka_bootstrap))
    kept = {POLICE.name: home / "connectors" / "police" / "ledger.sqlite",
            PRISON.name: tmp_path / "prison.sqlite"}  # fmt: skip

    def run(files: list[tuple[Connector, Path]], ledgers: dict[str, Path],
            out_sink: Any = sink) -> list[Summary]:  # fmt: skip
        out = []
        for c, path in files:
            publisher = Publisher(agency=c.agency, source_system=c.source_system,
                                  jurisdiction=c.jurisdiction, codec=codec, sink=out_sink,
                                  topics=topics)  # fmt: skip
            out.append(run_file(c, path, publisher, Ledger(ledgers[c.name]),
                                quarantine_dir=tmp_path / "quarantine"))  # fmt: skip
        return out

    lost = {name: tmp_path / f"lost-{name}.sqlite" for name in kept}
    with LiveRouter(settings) as live:
        cli = subprocess.run(
            [str(REPO / ".venv" / "bin" / "hub"), "connector", "run", "police",
             "--input", str(NIGHT1[0][1]), "--quarantine", str(tmp_path / "quarantine")],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "HUB_HOME": str(home), "HUB_KAFKA_BOOTSTRAP": kafka_bootstrap,
                 "HUB_REGISTRY_URL": registry_url, "HUB_TOPIC_PREFIX": prefix},
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.strip() == (
            "night1.csv: read 4, published 4, rejected 0, skipped as already published 0; "
            "14 events sent (0 corrections)"
        )
        [prison] = run(NIGHT1[1:], kept)
        assert prison.events == 4
        live.wait(FIRST)
        first_delivered = live.router.stats.delivered

        again = run(NIGHT1, kept)
        assert [(s.events, s.skipped) for s in again] == [(0, 4), (0, 4)]
        resent = run(NIGHT1, lost)
        assert sum(s.events for s in resent) == FIRST

        changes = run(NIGHT2, kept)
        assert [(s.events, s.corrections) for s in changes] == [(3, 2), (3, 2)]
        changes_again = run(NIGHT2, lost)  # the same ids without the first ledgers
        assert [(s.events, s.corrections) for s in changes_again] == [(3, 2), (3, 2)]

        crash = {PRISON.name: tmp_path / "crash.sqlite"}  # killed after 2 of its 4 events
        with pytest.raises(InfraError, match="killed half-way"):
            run(NIGHT1[1:], crash, CrashAfter(sink, 2))
        sink.flush()
        [after] = run(NIGHT1[1:], crash)
        assert after.events == 4  # nothing of the killed run reached its ledger
        live.wait(2 * FIRST + 2 * CHANGES + 2 + 4)
        stats = live.router.stats

    assert stats.duplicates == FIRST + CHANGES + 2 + 4, stats
    assert stats.rejected == 0 and stats.delivered > first_delivered, stats
    audiences = bootstrap.agreements(codec.catalogue).audiences()
    deliveries: Counter[tuple[str, str]] = Counter()
    retracted: set[tuple[str, str]] = set()
    for topic, value in read_topics(kafka_bootstrap, [topics.deliver(a) for a in audiences]):
        record = codec.decode(value)[1]
        if record["envelope"]["event_type"] == "delivery.retracted":
            retracted.add((record["retracted_event_id"], topic))
        else:
            deliveries[(record["envelope"]["event_id"], topic)] += 1
    assert deliveries and max(deliveries.values()) == 1
    ingested = [codec.decode(v)[1]["envelope"] for _, v in read_topics(
        kafka_bootstrap, [topics.ingest("police"), topics.ingest("hmp_liverpool")])]  # fmt: skip
    corrections = {e["event_id"]: e["supersedes_event_id"] for e in ingested
                   if e["supersedes_event_id"]}  # fmt: skip
    assert len(corrections) == 4
    for correction, original in corrections.items():
        # everyone who had the original has the correction, or a retraction of the original
        for event_id, topic in list(deliveries):
            if event_id == original:
                assert (correction, topic) in deliveries or (original, topic) in retracted
    assert any(event_id in corrections for event_id, _ in deliveries)
    assert read_topics(kafka_bootstrap, [topics.dlq("police"), topics.dlq("hmp_liverpool")]) == []
