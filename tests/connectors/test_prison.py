"""The HMP Liverpool release-schedule connector: two exports of the sample schedule give exactly
the golden events (the second a new booking and two corrections: S8's release date keyed
25/04/2014 instead of 23/05/2014, and a new offender manager), and bad input ends as a clear
error or a quarantine entry with counts that add up."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest

from connectors import connector
from connectors.framework import Ledger, read_quarantine
from hub.domain.errors import InputError
from tests.connectors.support import LARGE, check_golden, counts, run_in_memory

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "connectors" / "prison"
PRISON = connector("prison")


@pytest.fixture
def schedules(tmp_path: Path) -> tuple[Path, Path]:
    return (shutil.copy(GOLDEN / "schedule1.csv", tmp_path / "schedule1.csv"),
            shutil.copy(GOLDEN / "schedule2.csv", tmp_path / "schedule2.csv"))  # fmt: skip


def test_first_schedule_gives_the_golden_events(codec, schedules) -> None:
    summary, records, _ = run_in_memory(PRISON, schedules[0], codec)
    assert counts(summary) == (4, 4, 0, 0) and summary.events == 4
    check_golden(records, GOLDEN / "schedule1.expected.json")


def test_a_changed_release_date_corrects_the_earlier_event(codec, schedules) -> None:
    ledger = Ledger(":memory:")
    _, first, publisher = run_in_memory(PRISON, schedules[0], codec, ledger)
    summary, records, _ = run_in_memory(PRISON, schedules[1], codec, ledger, publisher)
    assert counts(summary) == (4, 3, 0, 1) and summary.corrections == 2
    check_golden(records, GOLDEN / "schedule2.expected.json")
    earlier = {r["envelope"]["event_id"]: r for r in first}
    s8 = next(r for r in records if r["envelope"]["subject"]["local_id"] == "A5521DL")
    original = earlier[s8["envelope"]["supersedes_event_id"]]
    assert (original["release_date"].isoformat(), s8["release_date"].isoformat()) == (
        "2014-04-25", "2014-05-23",
    )  # fmt: skip
    assert s8["envelope"]["correction_reason"] == "keying_error"
    new_om = next(r for r in records if r["envelope"]["subject"]["local_id"] == "A8810FR")
    assert new_om["envelope"]["correction_reason"] == "other"
    assert new_om["offender_manager"]["name"] == "Mark Evans"
    # the same export again: nothing new
    again, nothing, _ = run_in_memory(PRISON, schedules[1], codec, ledger, publisher)
    assert counts(again) == (4, 0, 0, 4) and nothing == []


def test_a_date_changed_back_is_a_correction_again(codec, schedules, tmp_path) -> None:
    ledger = Ledger(":memory:")
    _, first, publisher = run_in_memory(PRISON, schedules[0], codec, ledger)
    _, second, _ = run_in_memory(PRISON, schedules[1], codec, ledger, publisher)
    back = tmp_path / "schedule3.csv"
    back.write_text(schedules[0].read_text())
    summary, third, _ = run_in_memory(PRISON, back, codec, ledger, publisher)
    assert counts(summary) == (4, 2, 0, 2)  # A1234BK and A3003GT are as they were
    ids = {r["envelope"]["event_id"] for r in first + second}
    assert all(r["envelope"]["event_id"] not in ids for r in third)
    s8 = next(r for r in third if r["envelope"]["subject"]["local_id"] == "A5521DL")
    assert s8["release_date"].isoformat() == "2014-04-25"
    assert s8["envelope"]["supersedes_event_id"] == next(
        r["envelope"]["event_id"]
        for r in second
        if r["envelope"]["subject"]["local_id"] == "A5521DL"
    )


def _rows() -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO((GOLDEN / "schedule1.csv").read_text()))
    return list(reader.fieldnames or []), list(reader)


def _write(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    out = io.StringIO()
    writer = csv.DictWriter(out, header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue())
    return path


def test_missing_columns_are_a_clear_error(codec, tmp_path) -> None:
    header, rows = _rows()
    keep = [h for h in header if h not in ("Release Date", "Release Type")]
    path = _write(tmp_path / "s.csv", keep, [{k: r[k] for k in keep} for r in rows])
    with pytest.raises(InputError, match=r"s.csv:1: missing columns release_date, release_type"):
        run_in_memory(PRISON, path, codec)


def test_bad_rows_are_quarantined_and_counted(codec, tmp_path) -> None:
    header, rows = _rows()
    rows[0]["Release Date"] = "2016-02-30"
    rows[1]["Release Type"] = "PAROLE?"
    rows[2]["Licence End Date"] = "01/01/2015"
    duplicate, conflicting = dict(rows[3]), dict(rows[3], **{"Release Date": "16/01/2016"})
    path = _write(tmp_path / "s.csv", header, [*rows, duplicate, conflicting])
    summary, records, _ = run_in_memory(PRISON, path, codec)
    assert counts(summary) == (6, 1, 4, 1) and summary.adds_up and len(records) == 1
    entries = read_quarantine(summary.quarantine[0])
    assert [(e["line"], e["fields"]) for e in entries] == [
        (2, ["release_date"]), (3, ["release_type"]), (4, ["licence_end_date"]), (7, []),
    ]  # fmt: skip
    assert entries[1]["reasons"][0].startswith(
        "s.csv:3: release_type: 'PAROLE?' is not a known code (expected ARD, CRD, DEPORT,"
    )
    assert "is already at line 5 of this file with other values" in entries[3]["reasons"][0]


def test_a_latin1_file_is_refused_and_an_empty_one_too(codec, tmp_path) -> None:
    header, rows = _rows()
    rows[0]["Release Town"] = "Kirkby (c/o Mrs Núñez)"
    latin1 = _write(tmp_path / "s.csv", header, rows)
    latin1.write_bytes(latin1.read_text().encode("latin-1"))
    with pytest.raises(InputError, match=r"s.csv:2: not UTF-8 \(byte 0xfa"):
        run_in_memory(PRISON, latin1, codec)
    summary, records, _ = run_in_memory(PRISON, latin1, codec, encoding="cp1252")
    assert counts(summary) == (4, 4, 0, 0)
    assert records[0]["release_address"]["town"] == "Kirkby (c/o Mrs Núñez)"
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty.csv: empty file"):
        run_in_memory(PRISON, empty, codec)


def test_a_large_schedule_is_counted_exactly(codec, tmp_path) -> None:
    header, rows = _rows()
    big = [
        dict(rows[3], **{"Prison Number": f"A{i:05d}ZZ",
                         "Release Date": "15/01/2016" if i % 89 else "15/13/2016"})
        for i in range(LARGE)
    ]  # fmt: skip
    path = _write(tmp_path / "big.csv", header, big)
    summary, _, publisher = run_in_memory(PRISON, path, codec)
    bad = len(range(0, LARGE, 89))
    assert counts(summary) == (LARGE, LARGE - bad, bad, 0)
    assert len(publisher.sink.sent) == LARGE - bad  # type: ignore[attr-defined]
    assert len(read_quarantine(summary.quarantine[0])) == bad
