"""The ERI connector: the sample register (S12: referral, consent, enrolment in Turin run 3,
attendance, work experience, graduation, a job contract, an invitation to mentor; and a consent
withdrawn) gives exactly the golden events; the codice fiscale is checked against the date of
birth; and every kind of bad input ends as a clear error or a quarantine entry with counts that
add up."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import pytest

from connectors import connector
from connectors.eri import CONNECTOR as ERI
from connectors.eri import check_character, run
from connectors.framework import Ledger, read_quarantine
from hub.domain.errors import InputError
from tests.connectors.support import check_golden, counts, memory_publisher, run_in_memory

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "connectors" / "eri"
LARGE = 50_000 if os.environ.get("HUBTEST_TIER") == "soak" else 2_000


def _rows() -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO((GOLDEN / "registro.csv").read_text()), delimiter=";")
    return list(reader.fieldnames or []), list(reader)


def _csv(path: Path, header: list[str], rows: list[dict[str, str]], encoding: str = "utf-8",
         delimiter: str = ";") -> Path:  # fmt: skip
    out = io.StringIO()
    writer = csv.DictWriter(out, header, delimiter=delimiter, lineterminator="\n",
                            extrasaction="ignore")  # fmt: skip
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(out.getvalue().encode(encoding))
    return path


def test_the_register_gives_the_golden_events(codec, tmp_path: Path) -> None:
    path = shutil.copy(GOLDEN / "registro.csv", tmp_path / "registro.csv")
    summary, records, _ = run_in_memory(connector("eri"), path, codec)
    assert counts(summary) == (14, 14, 0, 0)
    check_golden(records, GOLDEN / "registro.expected.json")
    kinds = [r["envelope"]["event_type"] for r in records[:11]]
    assert kinds == [
        "referral.created", "consent.given", "lcp.enrolled", "lcp.session_attended",
        "lcp.session_attended", "lcp.session_missed", "lcp.session_attended",
        "lcp.work_experience_started", "lcp.completed", "outcome.employment_started",
        "lcp.graduate_invited_as_mentor",
    ]  # fmt: skip
    assert records[6]["duration_minutes"] == 210  # "3,5" hours
    assert records[1]["scopes"] == ["share_with_social_services", "share_with_uepe"]
    withdrawn = records[13]
    assert withdrawn["envelope"]["event_type"] == "consent.withdrawn"
    assert withdrawn["reason"] is None  # the reason never leaves ERI
    for record in records:  # names and the date of birth are never published
        text = str(record)
        assert "Bianchi" not in text and "Luca" not in text and "1990-01-12" not in text
        assert record["envelope"]["subject"]["identifiers"][0]["scheme"] == "codice_fiscale"


def test_python_api(codec, tmp_path: Path) -> None:
    path = shutil.copy(GOLDEN / "registro.csv", tmp_path / "registro.csv")
    summary = run(path, memory_publisher(ERI, codec), quarantine_dir=tmp_path / "q")
    assert counts(summary) == (14, 14, 0, 0) and summary.events == 14


def test_a_missing_column_is_a_clear_error_naming_it(codec, tmp_path: Path) -> None:
    header, rows = _rows()
    header.remove("id_partecipante")
    path = _csv(tmp_path / "registro.csv", header, rows)
    with pytest.raises(InputError, match=r"registro.csv:1: missing column id_partecipante"):
        run_in_memory(ERI, path, codec)


def test_bad_rows_are_quarantined_naming_file_line_and_field(codec, tmp_path: Path) -> None:
    header, rows = _rows()
    rows[0]["data"] = "31/02/2014"
    rows[1]["ambiti_consenso"] = "servizi sociali, vicini di casa"
    rows[3]["ore"] = "quattro"
    rows[4]["tema"] = "cucina"
    rows[9]["codice_fiscale"] = "BNCLCU90A12L219X"  # wrong check character
    rows[10]["data_di_nascita"] = "13/01/1990"  # not the date the codice fiscale encodes
    rows[11]["tipo_registrazione"] = "pranzo"
    path = _csv(tmp_path / "registro.csv", header, rows)
    summary, records, _ = run_in_memory(ERI, path, codec)
    assert counts(summary) == (14, 7, 7, 0) and summary.adds_up
    entries = read_quarantine(summary.quarantine[0])
    assert [(e["line"], e["fields"]) for e in entries] == [
        (2, ["data"]), (3, ["ambiti_consenso"]), (5, ["ore"]), (6, ["tema"]),
        (11, ["codice_fiscale"]), (12, ["codice_fiscale"]), (13, ["tipo_registrazione"]),
    ]  # fmt: skip
    assert entries[0]["reasons"] == [
        "registro.csv:2: data: '31/02/2014' is not a date (expected YYYY-MM-DD or DD/MM/YYYY)"
    ]
    assert entries[4]["reasons"] == [
        "registro.csv:11: codice_fiscale: 'BNCLCU90A12L219X': the check character should be Q"
    ]
    assert "does not match data_di_nascita 13/01/1990" in entries[5]["reasons"][0]
    assert entries[2]["raw"].startswith("ERI-0004;presenza;ERI-P-031;")


def test_the_check_character_of_the_codice_fiscale() -> None:
    assert check_character("RSSMRA85T10A562") == "S"  # the usual textbook example


def test_a_latin1_file_with_italian_names_is_read_as_windows_1252(codec, tmp_path) -> None:
    header, rows = _rows()
    rows[7]["datore_di_lavoro"] = "Società Cooperativa Perché Sì"
    path = _csv(tmp_path / "registro.csv", header, rows, encoding="latin-1")
    summary, records, _ = run_in_memory(ERI, path, codec)
    assert counts(summary) == (14, 14, 0, 0)
    assert records[7]["employer"] == "Società Cooperativa Perché Sì"
    assert summary.warnings == ["registro.csv: read as cp1252, not UTF-8"]


def test_a_comma_separated_export_reads_the_same(codec, tmp_path: Path) -> None:
    header, rows = _rows()
    path = _csv(tmp_path / "registro.csv", header, rows, delimiter=",")
    _, records, _ = run_in_memory(ERI, path, codec)
    _, golden, _ = run_in_memory(ERI, shutil.copy(GOLDEN / "registro.csv", tmp_path / "g.csv"),
                                 codec)  # fmt: skip
    assert records == golden


def test_duplicate_rows_are_skipped_and_conflicting_ones_quarantined(codec, tmp_path) -> None:
    header, rows = _rows()
    conflicting = dict(rows[9], ore_settimanali="20")
    path = _csv(tmp_path / "registro.csv", header, [*rows, rows[3], conflicting])
    summary, records, _ = run_in_memory(ERI, path, codec)
    assert counts(summary) == (16, 14, 1, 1) and len(records) == 14
    [entry] = read_quarantine(summary.quarantine[0])
    assert entry["line"] == 17
    assert "duplicate: registrazione/ERI-0010 (outcome.employment_started)" in entry["reasons"][0]


@pytest.mark.parametrize("content", [b"", b"\n\n", b"\xef\xbb\xbf"])
def test_an_empty_file_is_a_clear_error(codec, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "registro.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match="registro.csv: empty file"):
        run_in_memory(ERI, path, codec)


def test_a_large_register_is_counted_exactly(codec, tmp_path: Path) -> None:
    """2,000 generated attendance rows (50,000 with HUBTEST_TIER=soak), every 71st with an
    unknown theme: each published or quarantined, then all skipped on a re-run."""
    header, rows = _rows()
    big = []
    for i in range(LARGE):
        row = dict(rows[3], id_registrazione=f"ERI-{i:06d}", sessione=str(i % 12 + 1))
        if i % 71 == 0:
            row["tema"] = "ricreazione"
        big.append(row)
    path = _csv(tmp_path / "big.csv", header, big)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    summary, _, publisher = run_in_memory(ERI, path, codec, ledger)
    bad = len(range(0, LARGE, 71))
    assert counts(summary) == (LARGE, LARGE - bad, bad, 0) and summary.events == LARGE - bad
    assert [e["line"] for e in read_quarantine(summary.quarantine[0])] == [
        i + 2 for i in range(0, LARGE, 71)
    ]
    again, records, _ = run_in_memory(ERI, path, codec, ledger, publisher)
    assert counts(again) == (LARGE, 0, bad, LARGE - bad) and records == []
