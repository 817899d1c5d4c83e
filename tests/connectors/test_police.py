"""The police (CORVUS) connector: two nights of the sample export give exactly the golden events
(the second only what changed: a corrected date of birth and arrest outcome, a nominal leaving
the cohort), and every kind of bad input ends as a clear error or a quarantine entry with counts
that add up. EO-8 and IN-7 for this connector are in test_police_prison_eo.py and
test_police_prison_fuzz.py."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest

from connectors import connector
from connectors.framework import Ledger, read_quarantine
from hub.domain.errors import InputError
from tests.connectors.support import check_golden, counts, run_in_memory

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "connectors" / "police"
POLICE = connector("police")


@pytest.fixture
def nights(tmp_path: Path) -> tuple[Path, Path]:
    return (shutil.copy(GOLDEN / "night1.csv", tmp_path / "night1.csv"),
            shutil.copy(GOLDEN / "night2.csv", tmp_path / "night2.csv"))  # fmt: skip


def test_first_night_gives_the_golden_events(codec, nights) -> None:
    summary, records, _ = run_in_memory(POLICE, nights[0], codec)
    assert counts(summary) == (4, 4, 0, 0) and summary.adds_up
    assert summary.events == len(records) == 14 and summary.corrections == 0
    check_golden(records, GOLDEN / "night1.expected.json")


def test_second_night_publishes_only_the_changes_as_events_or_corrections(codec, nights) -> None:
    ledger = Ledger(":memory:")
    _, first, publisher = run_in_memory(POLICE, nights[0], codec, ledger)
    summary, records, _ = run_in_memory(POLICE, nights[1], codec, ledger, publisher)
    assert counts(summary) == (4, 3, 0, 1)  # MP-01003 unchanged
    check_golden(records, GOLDEN / "night2.expected.json")
    by_id = {r["envelope"]["event_id"]: r for r in first}
    kinds = {
        (r["envelope"]["event_type"], r["envelope"]["subject"]["local_id"]):
            by_id.get(r["envelope"]["supersedes_event_id"])
        for r in records
    }  # fmt: skip
    # the corrected date of birth and arrest outcome supersede the first night's events
    dob = kinds[("person.registered", "MP-01001")]
    assert dob is not None and dob["date_of_birth"].isoformat() == "1990-03-14"
    arrest = kinds[("police.arrest", "MP-01004")]
    assert arrest is not None and arrest["outcome"] == "released_under_investigation"
    # leaving the cohort is a new fact, not a correction
    assert kinds[("iom.cohort_exited", "MP-01002")] is None
    assert all(r["envelope"]["correction_reason"] in (None, "keying_error") for r in records)


def _csv(rows: list[dict[str, str]], header: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _night1() -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO((GOLDEN / "night1.csv").read_text()))
    return list(reader.fieldnames or []), list(reader)


def test_a_missing_column_is_a_clear_error_naming_it(codec, tmp_path: Path) -> None:
    header, rows = _night1()
    header.remove("BOROUGH")
    path = tmp_path / "export.csv"
    path.write_text(_csv([{k: v for k, v in r.items() if k != "BOROUGH"} for r in rows], header))
    with pytest.raises(InputError, match=r"export.csv:1: missing column borough \(the header"):
        run_in_memory(POLICE, path, codec)


def test_unparseable_values_are_quarantined_with_file_line_and_field(codec, tmp_path) -> None:
    header, rows = _night1()
    rows[1]["DATE_OF_BIRTH"] = "31/02/1985"
    rows[1]["COST_OF_CRIME"] = "lots"
    rows[3]["LAST_ARREST_AT"] = "yesterday"
    rows[2]["IOM_EXIT_REASON"] = "bored"
    path = tmp_path / "export.csv"
    path.write_text(_csv(rows, header))
    summary, records, _ = run_in_memory(POLICE, path, codec)
    assert counts(summary) == (4, 1, 3, 0) and summary.adds_up
    assert {r["envelope"]["subject"]["local_id"] for r in records} == {"MP-01001"}
    [quarantine] = summary.quarantine
    entries = read_quarantine(quarantine)
    assert [(e["line"], e["fields"]) for e in entries] == [
        (3, ["cost_of_crime", "date_of_birth"]), (4, ["iom_exit_reason"]), (5, ["last_arrest_at"]),
    ]  # fmt: skip
    assert entries[0]["reasons"] == [
        "export.csv:3: date_of_birth: '31/02/1985' is not a date (expected YYYY-MM-DD or "
        "DD/MM/YYYY)",
        "export.csv:3: cost_of_crime: 'lots' is not an amount (expected e.g. 1250.50)",
    ]
    assert entries[0]["raw"].startswith("MP-01002,11/7654321B,Gallagher,Paul,31/02/1985,")


def test_a_latin1_file_is_an_error_unless_its_encoding_is_declared(codec, tmp_path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes((GOLDEN / "night1.csv").read_text().encode("latin-1"))
    with pytest.raises(InputError, match=r"export.csv:2: not UTF-8 \(byte 0xa3 at column 123\)"):
        run_in_memory(POLICE, path, codec)
    summary, records, _ = run_in_memory(POLICE, path, codec, encoding="latin-1")
    assert counts(summary) == (4, 4, 0, 0)
    assert {r["given_name"] for r in records if "given_name" in r} >= {"Siobhán"}
    assert summary.warnings == ["export.csv: read as latin-1, not UTF-8"]


def test_a_bom_is_not_part_of_the_first_column(codec, tmp_path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (GOLDEN / "night1.csv").read_bytes())
    summary, records, _ = run_in_memory(POLICE, path, codec)
    assert counts(summary) == (4, 4, 0, 0)
    assert records[0]["envelope"]["subject"]["local_id"] == "MP-01001"


def test_duplicate_rows_are_skipped_and_conflicting_ones_quarantined(codec, tmp_path) -> None:
    header, rows = _night1()
    twin = dict(rows[0])
    conflicting = dict(rows[1], DATE_OF_BIRTH="1985-11-03")
    path = tmp_path / "export.csv"
    path.write_text(_csv([*rows, twin, conflicting], header))
    summary, records, _ = run_in_memory(POLICE, path, codec)
    assert counts(summary) == (6, 4, 1, 1) and summary.adds_up
    assert len(records) == 14  # the twin sent nothing
    [entry] = read_quarantine(summary.quarantine[0])
    assert entry["line"] == 7
    assert (
        "duplicate: nominal/MP-01002/person (person.registered) is already at line 3"
        in (entry["reasons"][0])
    )


@pytest.mark.parametrize("content", [b"", b"\n\n", b"\xef\xbb\xbf"])
def test_an_empty_file_is_a_clear_error(codec, tmp_path, content: bytes) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match="export.csv: empty file"):
        run_in_memory(POLICE, path, codec)


def test_a_header_only_file_reads_nothing(codec, tmp_path) -> None:
    path = tmp_path / "export.csv"
    path.write_text((GOLDEN / "night1.csv").read_text().splitlines()[0] + "\n")
    summary, records, _ = run_in_memory(POLICE, path, codec)
    assert counts(summary) == (0, 0, 0, 0) and records == []


def test_a_large_export_is_counted_exactly(codec, tmp_path) -> None:
    """20,000 generated nominals (one event each; every 97th with a bad date): all read, each
    published or quarantined, progress reported, then all skipped on a re-run."""
    header, rows = _night1()
    person = {k: v for k, v in rows[3].items() if not k.startswith("LAST_ARREST")}
    big = [
        dict(person, NOMINAL_ID=f"MP-{i:06d}", CREATED_ON="2014-03-03" if i % 97 else "2014-13-01")
        for i in range(20_000)
    ]
    path = tmp_path / "big.csv"
    path.write_text(_csv(big, header))
    ledger, seen = Ledger(tmp_path / "ledger.sqlite"), []
    summary, _, publisher = run_in_memory(
        POLICE, path, codec, ledger, progress=lambda read, total: seen.append(read)
    )
    bad = len(range(0, 20_000, 97))
    assert counts(summary) == (20_000, 20_000 - bad, bad, 0)
    assert summary.events == len(publisher.sink.sent) == 20_000 - bad  # type: ignore[attr-defined]
    assert len(read_quarantine(summary.quarantine[0])) == bad
    assert seen[0] == 500 and seen[-1] == 20_000 and seen == sorted(seen)
    again, records, _ = run_in_memory(POLICE, path, codec, ledger, publisher)
    assert counts(again) == (20_000, 0, bad, 20_000 - bad) and records == []
