"""The auditors' commands as an auditor runs them: ``hub audit search`` and friends in a
subprocess, over a prepared SQLite trail, with the session broker. Each query must reach
``hub.audit`` as an ``auditor_query`` entry, and with no broker there must be no answer."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub.adapters.audit_store import open_audit_store
from hub.adapters.kafka import ensure_topics
from hub.audit.entry import AuditEntry
from hub.topics import Topics
from tests.conftest import free_port
from tests.hubtest import read_all
from tests.unit.test_audit_reports import JORDAN, KEYS, TRAIL

pytestmark = pytest.mark.kafka

HUB = Path(sys.executable).parent / "hub"
JORDAN_ID = "hs-0123456789abcdef01234567"


@pytest.fixture
def hub_env(tmp_path: Path, kafka_bootstrap: str, topics: Topics) -> dict[str, str]:
    assert KEYS.pseudonym("audit", JORDAN_ID) == JORDAN
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "pseudonym.key").write_bytes(b"k" * 32)  # the master behind KEYS
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    store = open_audit_store(url)
    store.append(TRAIL)
    store.close()
    ensure_topics(kafka_bootstrap, {topics.audit: 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_HOME=str(tmp_path), HUB_KAFKA_BOOTSTRAP=kafka_bootstrap,
        HUB_TOPIC_PREFIX=topics.prefix, HUB_DATABASE_URL=url, COLUMNS="200",
    )  # fmt: skip
    return env


def hub(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HUB), "audit", *args, "--actor", "auditor.it", "--justification", "AU test"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_auditor_commands_answer_and_leave_their_queries_on_the_trail(
    hub_env: dict[str, str], kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    search = hub(hub_env, "search", "--subject", JORDAN_ID, "--decision", "deny")
    assert search.returncode == 0, search.stderr
    assert "no clause permits" in search.stdout and "1 entries" in search.stdout

    html, table = tmp_path / "report.html", tmp_path / "report.csv"
    report = hub(hub_env, "disclosure-report", "--subject", JORDAN_ID, "--as-of", "2015-03-01",
                 "--html", str(html), "--csv", str(table))  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert "Deliveries (4)" in html.read_text()
    rows = list(csv.DictReader(table.open()))
    assert sorted((r["event_id"], r["audience"]) for r in rows) == [
        ("e1", "kmbc"), ("e1", "probation_crc"), ("e2", "mals"), ("e3", "probation_crc"),
    ]  # fmt: skip

    sharing = tmp_path / "sharing.csv"
    assert hub(hub_env, "sharing", "--csv", str(sharing)).returncode == 0
    assert len(list(csv.DictReader(sharing.open()))) == 12
    denials = hub(hub_env, "denials", "--agency", "police")
    assert denials.returncode == 0 and "unknown_schema" in denials.stdout

    records = read_all(kafka_bootstrap, topics.audit)
    entries = [AuditEntry.from_json_bytes(m.value() or b"") for m in records]
    assert [e.details["command"] for e in entries] == [
        "audit search", "audit disclosure-report", "audit sharing", "audit denials",
    ]  # fmt: skip
    for entry in entries:
        assert (entry.kind, entry.role, entry.actor, entry.outcome) == (
            "auditor_query", "auditor", "auditor.it", "ok",
        )  # fmt: skip
        assert entry.justification == "AU test"
    assert entries[0].subject_ref == JORDAN and entries[0].details["decision"] == "deny"
    assert entries[1].details["output"] == "html,csv"
    assert JORDAN_ID not in str([e.to_dict() for e in entries])  # the pseudonym, not the id


def test_no_answer_without_a_broker_to_record_the_query(hub_env: dict[str, str]) -> None:
    env = {**hub_env, "HUB_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    denied = hub(env, "denials")
    assert denied.returncode == 1
    assert "no result is shown" in denied.stderr
    assert "unknown_schema" not in denied.stdout and denied.stdout == ""
