"""The connector framework's own behaviour: readers (delimiters, JSON shapes, broken records),
encodings, the drop-folder watch (done/, failed/, quarantine/) in-process and through
``hub connector run --watch`` stopped by SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from connectors import connector
from connectors.framework import Column, CsvReader, JsonReader, Ledger, decode, watch
from hub.domain.errors import InputError
from tests.conftest import REPO
from tests.connectors.support import memory_publisher

GOLDEN = REPO / "tests" / "golden" / "connectors"


def test_csv_delimiter_is_the_one_naming_the_declared_columns() -> None:
    reader = CsvReader((Column("a"), Column("b"), Column("c", required=False)))
    records = list(reader.records('A;B;Other\n1;"x;y";z\n\n2;3\n', "f.csv"))
    assert [(r.line, r.fields, r.problem) for r in records] == [
        (2, {"a": "1", "b": "x;y"}, None),
        (4, None, "2 fields where the header has 3"),
    ]
    assert reader.header("A;B;Other\n", "f.csv")[2] == ["f.csv: column 'Other' ignored"]


def test_csv_records_spanning_lines_keep_their_first_line_and_raw_text() -> None:
    reader = CsvReader((Column("a"), Column("b")))
    text = 'a,b\n1,"two\nlines"\n3,"open\n4,5\n'
    records = list(reader.records(text, "f.csv"))
    assert [(r.line, r.raw) for r in records][0] == (2, '1,"two\nlines"\n')
    assert records[1].line == 4 and records[1].problem and "not valid CSV" in records[1].problem


def test_json_documents_in_every_shape_and_broken_ones_are_records() -> None:
    reader = JsonReader(items="cases")
    array = list(reader.records('[\n {"a": 1},\n {"a": 2}\n]\n', "f.json"))
    assert [(r.line, r.fields) for r in array] == [(2, {"a": 1}), (3, {"a": 2})]
    lines = list(reader.records('{"a": 1}\n{"a": oops}\n[1]\n{"a": 3}\n', "f.jsonl"))
    assert [(r.line, r.fields is not None) for r in lines] == [
        (1, True), (2, False), (3, False), (4, True),
    ]  # fmt: skip
    assert lines[1].problem and lines[1].problem.startswith("not valid JSON")
    assert lines[2].problem == "a list, not a JSON object"
    wrapped = list(reader.records('{"cases": [{"a": 1}, {"a": 2}]}', "f.json"))
    assert [r.fields for r in wrapped] == [{"a": 1}, {"a": 2}]
    with pytest.raises(InputError, match="f.json: empty file"):
        list(reader.records(" \n", "f.json"))


def test_encodings_utf8_bom_and_utf16_are_read_latin1_only_when_declared() -> None:
    assert decode("é".encode(), "f") == ("é", "utf-8")
    assert decode(b"\xef\xbb\xbf" + "é".encode(), "f") == ("é", "utf-8-sig")
    assert decode("é".encode("utf-16"), "f") == ("é", "utf-16")
    with pytest.raises(InputError, match=r"f:2: not UTF-8 \(byte 0xe9 at column 2\)"):
        decode("a\nNé".encode("latin-1"), "f")
    assert decode("a\nNé".encode("latin-1"), "f", fallback="cp1252") == ("a\nNé", "cp1252")


def test_watch_processes_dropped_files_and_moves_them(codec, tmp_path: Path) -> None:
    police = connector("police")
    drop = tmp_path / "drop"
    drop.mkdir()
    shutil.copy(GOLDEN / "police" / "night1.csv", drop / "a-night1.csv")
    (drop / "b-broken.csv").write_text("nominal_id,surname\nMP-1,X\n")
    (drop / "c-partial.csv.part").write_text("still being written")
    reports: list[tuple[str, str | None]] = []

    def stop() -> bool:
        return len(reports) >= 2

    total = watch(
        police, drop, memory_publisher(police, codec), Ledger(":memory:"), stop,
        on_file=lambda path, _summary, error: reports.append((path.name, error)),
        poll_interval=0.05,
    )  # fmt: skip
    assert reports[0] == ("a-night1.csv", None)
    assert reports[1][0] == "b-broken.csv" and "missing columns" in (reports[1][1] or "")
    assert (total.files, total.failed_files, total.read, total.events) == (2, 1, 4, 14)
    assert (drop / "done" / "a-night1.csv").exists()
    assert (drop / "failed" / "b-broken.csv").exists()
    assert "missing columns" in (drop / "failed" / "b-broken.csv.error.txt").read_text()
    assert (drop / "c-partial.csv.part").exists()  # not a .csv yet


def test_cli_watch_runs_until_sigterm(registry_url, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    shutil.copy(GOLDEN / "prison" / "schedule1.csv", drop / "schedule.csv")
    process = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "hub"), "connector", "run", "prison", "--watch", str(drop),
         "--dry-run"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HUB_HOME": str(tmp_path / "home"), "HUB_REGISTRY_URL": registry_url},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (drop / "done" / "schedule.csv").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the file was not processed"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "schedule.csv: read 4, published 4, rejected 0" in out
    assert out.strip().endswith("prison: read 4, published 4, rejected 0, skipped as already "
                                "published 0; 4 events sent (0 corrections)")  # fmt: skip
