"""The skeleton connector runs: its sample publishes, a re-run publishes nothing, and a changed
row is a correction of the person's event."""

from __future__ import annotations

import shutil
from pathlib import Path

from connectors import PARTNERS, connector
from connectors.framework import Ledger
from tests.connectors.support import counts, memory_publisher, run_in_memory

SAMPLE = Path(__file__).resolve().parents[2] / "connectors" / "_template" / "sample.csv"


def test_template_sample_publishes_once_and_corrects_a_change(codec, tmp_path: Path) -> None:
    template = connector("template")
    assert PARTNERS["template"] == "connectors._template:CONNECTOR"
    path = tmp_path / "people.csv"
    shutil.copy(SAMPLE, path)
    ledger = Ledger(tmp_path / "ledger.sqlite")

    summary, records, publisher = run_in_memory(template, path, codec, ledger)
    assert counts(summary) == (2, 2, 0, 0)
    assert [r["given_name"] for r in records] == ["Alex", "Sam"]
    assert {r["envelope"]["subject"]["local_id"] for r in records} == {"T-0001", "T-0002"}

    again, records_again, _ = run_in_memory(template, path, codec, ledger, publisher)
    assert counts(again) == (2, 0, 0, 2) and records_again == []

    path.write_text(SAMPLE.read_text().replace("Sam,Sample,,", "Sam,Sample,1988-01-30,"))
    changed, corrections, _ = run_in_memory(template, path, codec, ledger, publisher)
    assert counts(changed) == (2, 1, 0, 1)
    [correction] = corrections
    assert correction["envelope"]["supersedes_event_id"] == records[1]["envelope"]["event_id"]
    assert correction["envelope"]["correction_reason"] == "keying_error"
    assert correction["date_of_birth"].isoformat() == "1988-01-30"


def test_connector_run_keeps_its_ledger_at_the_path_given(codec, tmp_path: Path) -> None:
    template = connector("template")
    publisher = memory_publisher(template, codec)
    ledger = tmp_path / "state" / "ledger.sqlite"
    first = template.run(SAMPLE, publisher, ledger, quarantine_dir=tmp_path / "q")
    again = template.run(SAMPLE, publisher, ledger, quarantine_dir=tmp_path / "q")
    assert counts(first) == (2, 2, 0, 0) and counts(again) == (2, 0, 0, 2)
    assert len(publisher.sink.sent) == 2  # type: ignore[attr-defined]
    # the bytes sent are the codec's encoding of the record
    for _, _, value, _ in publisher.sink.sent:  # type: ignore[attr-defined]
        assert codec.encode(codec.decode(value)[1]) == value
