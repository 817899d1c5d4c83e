"""The Safety House connectors: the sample export (S9, with the area ban and its extension of
S10) gives exactly the golden events, the Safety House's through ``safety-house`` and the Mayor's
orders through ``hague-municipality``; Dutch dates and codes are read; and every kind of bad
input ends as a clear error or a quarantine entry with counts that add up."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from connectors import connector
from connectors.framework import Ledger, read_quarantine
from connectors.safety_house import AFTERCARE, MUNICIPALITY, SAFETY_HOUSE, run
from hub.domain.errors import InputError
from tests.connectors.support import check_golden, counts, memory_publisher, run_in_memory

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "connectors" / "safety_house"
LARGE = 50_000 if os.environ.get("HUBTEST_TIER") == "soak" else 2_000


def _docs() -> list[dict[str, Any]]:
    return json.loads((GOLDEN / "registraties.json").read_text())["registraties"]


def _write(path: Path, docs: list[Any], encoding: str = "utf-8") -> Path:
    path.write_bytes(json.dumps({"registraties": docs}, ensure_ascii=False, indent=1)
                     .encode(encoding))  # fmt: skip
    return path


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return Path(shutil.copy(GOLDEN / "registraties.json", tmp_path / "registraties.json"))


def test_safety_house_registrations_give_the_golden_events(codec, export: Path) -> None:
    summary, records, _ = run_in_memory(connector("safety-house"), export, codec)
    assert counts(summary) == (14, 6, 0, 8)  # the Mayor's orders and Aftercare's are not its
    check_golden(records, GOLDEN / "safety_house.expected.json")
    plan = next(r for r in records if r["envelope"]["event_type"] == "sh.action_plan_agreed")
    assert plan["lead_org"] == "nl_health"
    assert plan["approach"] == "treatment_with_conditional_punishment"
    assert [(t["organisation"], t["status"]) for t in plan["tasks"]] == [
        ("hague_municipality", "planned"), ("nl_health", "in_progress"), ("nl_housing", "planned"),
    ]  # fmt: skip
    assert all(r["envelope"]["jurisdiction"] == "NL" for r in records)


def test_mayoral_orders_are_published_by_the_municipality(codec, export: Path) -> None:
    summary, records, _ = run_in_memory(connector("hague-municipality"), export, codec)
    assert counts(summary) == (14, 2, 0, 12)
    check_golden(records, GOLDEN / "hague_municipality.expected.json")
    ban, extension = records
    assert {r["envelope"]["source_agency"] for r in records} == {"hague_municipality"}
    assert (ban["order_type"], ban["valid_until"].isoformat()) == ("area_ban", "2015-04-18")
    assert extension["extends_order_id"] == ban["order_id"]


def test_aftercare_registrations_give_the_golden_events(codec, export: Path) -> None:
    """S11: the prison visit with needs in the five areas, support 19 hours after release (within
    the 72-hour window), two housing-route applications (B is on probation), A's route and its
    outcome."""
    summary, records, _ = run_in_memory(connector("hague-aftercare"), export, codec)
    assert counts(summary) == (14, 6, 0, 8)
    check_golden(records, GOLDEN / "hague_aftercare.expected.json")
    visit, support, a, b, started, outcome = records
    assert [n["pathway"] for n in visit["needs"]] == [
        "nl_ac_identity_papers", "nl_ac_accommodation", "nl_ac_income", "nl_ac_debt", "nl_ac_care",
    ]  # fmt: skip
    assert all(n["clinical_detail"] is None for n in visit["needs"])
    assert support["given_at"].isoformat() == "2015-03-17T09:30:00+00:00"  # 10:30 in The Hague
    assert support["envelope"]["occurred_at"] == support["given_at"]
    assert (a["on_probation"], b["on_probation"]) == (False, True)
    assert (started["application_id"], outcome["outcome"]) == ("RA-2015-011", "housed")
    assert visit["envelope"]["subject"]["local_id_scheme"] == "aftercare_client_id"
    assert visit["envelope"]["subject"]["identifiers"] == [
        {"scheme": "sh_file_id", "value": "VH-D-5230"}
    ]


def test_bad_aftercare_registrations_are_quarantined(codec, tmp_path: Path) -> None:
    docs = _docs()
    docs[9]["tijdstip"] = "gisteren"
    docs[9]["verstrekt"].append("fiets")
    del docs[10]["clientnummer"]
    docs[13]["uitkomst"] = "prima"
    summary, records, _ = run_in_memory(AFTERCARE, _write(tmp_path / "x.json", docs), codec)
    assert counts(summary) == (14, 3, 3, 8)
    entries = read_quarantine(summary.quarantine[0])
    assert [e["fields"] for e in entries] == [
        ["tijdstip", "verstrekt[4]"], ["clientnummer"], ["uitkomst"],
    ]  # fmt: skip


def test_python_api_publishes_each_part_with_its_agency(codec, export: Path, tmp_path) -> None:
    sh = run(export, memory_publisher(SAFETY_HOUSE, codec), quarantine_dir=tmp_path / "q")
    orders = run(export, memory_publisher(MUNICIPALITY, codec), quarantine_dir=tmp_path / "q")
    aftercare = run(export, memory_publisher(AFTERCARE, codec), quarantine_dir=tmp_path / "q")
    assert (sh.events, orders.events, aftercare.events) == (6, 2, 6)


def test_bad_registrations_are_quarantined_naming_file_line_and_field(codec, tmp_path) -> None:
    docs = _docs()
    docs[0]["meldingsdatum"] = "31-02-2015"
    del docs[1]["geaccepteerd"]
    docs[2]["aanwezig"] = ["politie", "de buurman"]
    docs[3]["taken"][1]["organisatie"] = "bakker"
    docs[5]["soort"] = "koffie"
    docs[7]["besluit"] = "misschien"
    path = _write(tmp_path / "export.json", docs)
    summary, records, _ = run_in_memory(SAFETY_HOUSE, path, codec)
    assert counts(summary) == (14, 0, 6, 8) and records == []
    entries = read_quarantine(summary.quarantine[0])
    assert [e["fields"] for e in entries] == [
        ["meldingsdatum"], ["geaccepteerd"], ["aanwezig[1]"], ["taken[1].organisatie"], ["soort"],
        ["besluit"],
    ]  # fmt: skip
    assert entries[0]["reasons"] == [
        f"export.json:{entries[0]['line']}: meldingsdatum: '31-02-2015' is not a date (expected "
        "DD-MM-YYYY or YYYY-MM-DD)"
    ]
    assert "'de buurman' is not a known code" in entries[2]["reasons"][0]


def test_an_order_that_ends_before_it_starts_is_quarantined(codec, tmp_path: Path) -> None:
    docs = _docs()
    docs[4]["geldig_tot"] = "18-01-2015"
    summary, records, _ = run_in_memory(MUNICIPALITY, _write(tmp_path / "x.json", docs), codec)
    assert counts(summary) == (14, 1, 1, 12)
    [entry] = read_quarantine(summary.quarantine[0])
    assert entry["fields"] == ["geldig_tot"]


def test_a_latin1_file_with_dutch_names_is_read_as_windows_1252(codec, tmp_path: Path) -> None:
    docs = _docs()
    docs[1]["procesregisseur"] = "Ömer Çelik-Brüggemann"
    path = _write(tmp_path / "export.json", docs, encoding="latin-1")
    summary, records, _ = run_in_memory(SAFETY_HOUSE, path, codec)
    assert counts(summary) == (14, 6, 0, 8)
    assert records[1]["process_manager"] == "Ömer Çelik-Brüggemann"
    assert summary.warnings == ["export.json: read as cp1252, not UTF-8"]


def test_duplicates_are_skipped_and_conflicting_ones_quarantined(codec, tmp_path: Path) -> None:
    docs = _docs()
    conflicting = dict(docs[7], besluit="doorgaan")
    path = _write(tmp_path / "export.json", [*docs, docs[0], conflicting])
    summary, records, _ = run_in_memory(SAFETY_HOUSE, path, codec)
    assert counts(summary) == (16, 6, 1, 9) and len(records) == 6
    [entry] = read_quarantine(summary.quarantine[0])
    assert "duplicate: balans/VH-R-0008 (sh.stock_take)" in entry["reasons"][0]


@pytest.mark.parametrize("content", [b"", b"\r\n", b"\xef\xbb\xbf  "])
def test_an_empty_file_is_a_clear_error(codec, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "export.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match="export.json: empty file"):
        run_in_memory(SAFETY_HOUSE, path, codec)


def test_a_large_export_is_counted_exactly(codec, tmp_path: Path) -> None:
    """2,000 generated case reports (50,000 with HUBTEST_TIER=soak), every 83rd without a
    reporter: each published or quarantined, then all skipped on a re-run."""
    report = _docs()[0]
    path = tmp_path / "big.jsonl"
    with path.open("w") as out:
        for i in range(LARGE):
            doc = dict(report, registratienummer=f"VH-R-{i:06d}", casusnummer=f"VH-C-{i:06d}")
            if i % 83 == 0:
                del doc["melder"]
            out.write(json.dumps(doc) + "\n")
    ledger = Ledger(tmp_path / "ledger.sqlite")
    summary, _, publisher = run_in_memory(SAFETY_HOUSE, path, codec, ledger)
    bad = len(range(0, LARGE, 83))
    assert counts(summary) == (LARGE, LARGE - bad, bad, 0) and summary.events == LARGE - bad
    assert len(read_quarantine(summary.quarantine[0])) == bad
    again, records, _ = run_in_memory(SAFETY_HOUSE, path, codec, ledger, publisher)
    assert counts(again) == (LARGE, 0, bad, LARGE - bad) and records == []
