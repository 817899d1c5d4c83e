"""The probation (CRC and NPS) connectors: the sample case-system exports give exactly the golden
events; a re-export with a changed fact is a correction; and every kind of bad input ends as a
clear error or a quarantine entry naming file, line and field, with counts that add up. EO-8 and
IN-7 for these connectors are in test_probation_sh_eri_eo.py and test_probation_sh_eri_fuzz.py."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from connectors import connector
from connectors.framework import Ledger, read_quarantine
from connectors.probation import CRC, NPS, run
from hub.domain.errors import InputError
from tests.connectors.support import check_golden, counts, memory_publisher, run_in_memory

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "connectors" / "probation"
LARGE = 50_000 if os.environ.get("HUBTEST_TIER") == "soak" else 2_000


def _events() -> list[dict[str, Any]]:
    return json.loads((GOLDEN / "crc-events.json").read_text())["events"]


def _write(path: Path, events: list[Any]) -> Path:
    path.write_text(json.dumps({"events": events}, ensure_ascii=False, indent=1))
    return path


def test_crc_export_gives_the_golden_events(codec, tmp_path: Path) -> None:
    path = shutil.copy(GOLDEN / "crc-events.json", tmp_path / "crc-events.json")
    summary, records, _ = run_in_memory(connector("probation-crc"), path, codec)
    assert counts(summary) == (7, 7, 0, 0) and summary.events == 7
    check_golden(records, GOLDEN / "crc-events.expected.json")
    transfer = records[0]
    assert transfer["envelope"]["event_type"] == "supervision.responsibility_transferred"
    assert (transfer["from_body"], transfer["to_body"]) == ("probation_trust", "probation_crc")
    assert transfer["envelope"]["responsible_org"] == "probation_crc"
    assert all(r["envelope"]["source_agency"] == "probation_crc" for r in records)


def test_nps_export_in_json_lines_gives_the_golden_events(codec, tmp_path: Path) -> None:
    path = shutil.copy(GOLDEN / "nps-events.jsonl", tmp_path / "nps-events.jsonl")
    summary, records, _ = run_in_memory(connector("probation-nps"), path, codec)
    assert counts(summary) == (2, 2, 0, 0)
    check_golden(records, GOLDEN / "nps-events.expected.json")


def test_python_api_picks_the_provider_and_refuses_the_other_ones_events(codec, tmp_path) -> None:
    path = shutil.copy(GOLDEN / "nps-events.jsonl", tmp_path / "nps-events.jsonl")
    summary = run(path, memory_publisher(NPS, codec), quarantine_dir=tmp_path / "q")
    assert counts(summary) == (2, 2, 0, 0)
    crc = run(path, memory_publisher(CRC, codec), quarantine_dir=tmp_path / "q")
    assert counts(crc) == (2, 0, 2, 0)
    reasons = [e["reasons"][0] for e in read_quarantine(crc.quarantine[0])]
    assert reasons[0] == ("nps-events.jsonl:1: provider: 'NPS' is not this connector's provider "
                          "(probation_crc); that provider publishes its own events")  # fmt: skip
    with pytest.raises(ValueError, match="no probation connector publishes as 'mals'"):
        publisher = memory_publisher(CRC, codec)
        publisher.agency = "mals"
        run(path, publisher)


def test_a_changed_fact_in_a_later_export_is_a_correction(codec, tmp_path: Path) -> None:
    ledger = Ledger(":memory:")
    first, firsts, publisher = run_in_memory(CRC, _write(tmp_path / "a.json", _events()), codec,
                                             ledger)  # fmt: skip
    events = _events()
    events[6]["recallType"] = "STANDARD"  # the recall was keyed as fixed-term by mistake
    again, records, _ = run_in_memory(CRC, _write(tmp_path / "b.json", events), codec, ledger,
                                      publisher)  # fmt: skip
    assert counts(again) == (7, 1, 0, 6) and again.corrections == 1
    [correction] = records
    assert correction["recall_type"] == "standard"
    assert correction["envelope"]["supersedes_event_id"] == firsts[6]["envelope"]["event_id"]
    assert correction["envelope"]["correction_reason"] == "keying_error"


def test_bad_documents_are_quarantined_naming_file_line_and_field(codec, tmp_path) -> None:
    events = _events()
    del events[0]["crn"]
    events[1]["effectiveFrom"] = "31/06/2014"
    events[2]["conditions"][1]["type"] = "SILENCE"
    events[3]["eventType"] = "HOLIDAY"
    events[5]["breachDate"] = None
    events[6]["recalledOn"] = 20140904
    path = _write(tmp_path / "export.json", events)
    summary, records, _ = run_in_memory(CRC, path, codec)
    assert counts(summary) == (7, 1, 6, 0) and summary.adds_up
    assert [r["referral_id"] for r in records] == ["CRC-REF-0042"]
    entries = read_quarantine(summary.quarantine[0])
    assert [e["fields"] for e in entries] == [
        ["crn"], ["effectiveFrom"], ["conditions[1].type"], ["eventType"], ["breachDate"],
        ["recalledOn"],
    ]  # fmt: skip
    assert entries[1]["reasons"] == [
        f"export.json:{entries[1]['line']}: effectiveFrom: '31/06/2014' is not a date (expected "
        "YYYY-MM-DD or DD/MM/YYYY)"
    ]
    lines = path.read_text().splitlines()
    for entry, event in zip(entries, [events[i] for i in (0, 1, 2, 3, 5, 6)], strict=True):
        assert event["eventId"] in entry["raw"]
        assert lines[entry["line"] - 1].strip() == "{"  # the line where the document starts
        assert event["eventId"] in lines[entry["line"]]
    assert "conditions[1].type: 'SILENCE' is not a known code" in entries[2]["reasons"][0]
    assert all(e["file"] == "export.json" and e["raw"] for e in entries)


def test_json_that_does_not_parse_is_a_rejected_record_and_reading_carries_on(codec, tmp_path):
    lines = (GOLDEN / "nps-events.jsonl").read_text().splitlines()
    path = tmp_path / "cut.jsonl"
    path.write_text(lines[0][: len(lines[0]) // 2] + "\n" + lines[1] + "\n")
    summary, records, _ = run_in_memory(NPS, path, codec)
    assert counts(summary) == (2, 1, 1, 0)
    [entry] = read_quarantine(summary.quarantine[0])
    assert entry["line"] == 1 and entry["reasons"][0].startswith("cut.jsonl:1: not valid JSON")


def test_a_latin1_export_is_a_clear_error(codec, tmp_path: Path) -> None:
    events = _events()
    events[1]["offenderManager"]["name"] = "Siobhán Ó Dálaigh"
    path = tmp_path / "export.json"
    path.write_bytes(json.dumps({"events": events}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(InputError, match=r"export.json:1: not UTF-8 \(byte 0xe1 at column \d+\)"):
        run_in_memory(CRC, path, codec)
    summary, records, _ = run_in_memory(CRC, path, codec, encoding="latin-1")
    assert counts(summary) == (7, 7, 0, 0)
    assert records[1]["offender_manager"]["name"] == "Siobhán Ó Dálaigh"


def test_duplicates_are_skipped_and_conflicting_ones_quarantined(codec, tmp_path: Path) -> None:
    events = _events()
    conflicting = dict(events[5], breachType="CURFEW")
    path = _write(tmp_path / "export.json", [*events, events[0], conflicting])
    summary, records, _ = run_in_memory(CRC, path, codec)
    assert counts(summary) == (9, 7, 1, 1) and len(records) == 7
    [entry] = read_quarantine(summary.quarantine[0])
    assert (
        "duplicate: case/X100202/EV-20140903-0006 (supervision.breach_recorded)"
        in (entry["reasons"][0])
    )


@pytest.mark.parametrize("content", [b"", b" \n", b"\xef\xbb\xbf"])
def test_an_empty_file_is_a_clear_error(codec, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "export.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match="export.json: empty file"):
        run_in_memory(CRC, path, codec)


def test_an_export_without_events_reads_nothing(codec, tmp_path: Path) -> None:
    summary, records, _ = run_in_memory(CRC, _write(tmp_path / "none.json", []), codec)
    assert counts(summary) == (0, 0, 0, 0) and records == []


def test_a_large_export_is_counted_exactly(codec, tmp_path: Path) -> None:
    """2,000 generated breaches in JSON lines (50,000 with HUBTEST_TIER=soak), every 89th with
    a bad date: each published or quarantined, then all skipped on a re-run."""
    breach = _events()[5]
    path = tmp_path / "big.jsonl"
    with path.open("w") as out:
        for i in range(LARGE):
            doc = dict(breach, eventId=f"EV-{i:06d}", crn=f"X{i % 700:06d}")
            if i % 89 == 0:
                doc["breachDate"] = "2014-02-30"
            out.write(json.dumps(doc) + "\n")
    ledger = Ledger(tmp_path / "ledger.sqlite")
    summary, _, publisher = run_in_memory(CRC, path, codec, ledger)
    bad = len(range(0, LARGE, 89))
    assert counts(summary) == (LARGE, LARGE - bad, bad, 0) and summary.events == LARGE - bad
    assert [e["line"] for e in read_quarantine(summary.quarantine[0])] == [
        i + 1 for i in range(0, LARGE, 89)
    ]
    again, records, _ = run_in_memory(CRC, path, codec, ledger, publisher)
    assert counts(again) == (LARGE, 0, bad, LARGE - bad) and records == []
