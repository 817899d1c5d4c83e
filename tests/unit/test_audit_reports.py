"""The auditors' reports and the recording of auditor queries, over an in-memory SQLite trail
filled the way the router fills it: one subject delivered to three audiences, a consent
withdrawal that retracts one delivery, a correction, a deny decision and a DLQ rejection."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from hub.adapters.audit_store import SqlAuditStore, open_audit_store
from hub.adapters.kafka import DeliveryFailed
from hub.audit import reports
from hub.audit.entry import AuditEntry, make_entry_id
from hub.audit.query import AuditedQueries, SubjectSources, parse_since, parse_when, resolve_subject
from hub.domain.errors import InfraError, InputError
from hub.policy import PseudonymKeys, load_agreements
from hub.policy.state import MemoryState
from hub.ports import InRecord
from hub.router import Router
from hub.serde.codec import AvroCodec
from hub.topics import Topics
from tests.golden.policy.builder import EventBuilder

KEYS = PseudonymKeys(b"k" * 32)
JORDAN = KEYS.pseudonym("audit", "hs-0123456789abcdef01234567")
OTHER = KEYS.pseudonym("audit", "hs-fedcba9876543210fedcba98")
HASH = "ab" * 32


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def delivered(event_id: str, when: str, source: str, event_type: str, audience: str,
              agreement: str, clause: str, fields: dict[str, str],
              subject: str = JORDAN) -> AuditEntry:  # fmt: skip
    return AuditEntry(
        entry_id=make_entry_id("delivered", event_id, audience), kind="delivered", at=at(when),
        component="router", outcome="ok", actor="hub-router-0", subject_ref=subject,
        event_id=event_id, event_type=event_type, source_agency=source, audience=audience,
        agreement_id=agreement, agreement_version="3", clause_ids=(clause,), fields=fields,
        purpose="reduce reoffending", payload_hash=HASH,
        details={"topic": f"deliver.{audience}", "legal_basis": "crime_and_disorder_act_s115"},
    )  # fmt: skip


def decided(event_id: str, when: str, source: str, event_type: str, audience: str,
            effect: str, reason: str, clause: str | None = None) -> AuditEntry:  # fmt: skip
    return AuditEntry(
        entry_id=make_entry_id("decided", event_id, audience), kind="decided", at=at(when),
        component="router", outcome=effect, actor="hub-router-0", subject_ref=JORDAN,
        event_id=event_id, event_type=event_type, source_agency=source, audience=audience,
        agreement_id="kiom-isp" if clause else None, agreement_version="3" if clause else None,
        clause_ids=(clause,) if clause else (), reason=reason,
    )  # fmt: skip


COHORT = {"cohort": "keep", "priority_band": "keep", "selection_reason": "withheld"}
REFERRAL = {"referral_id": "pseudonymise", "risk_level": "keep", "offence_summary": "withheld"}
MENTOR = {"mentor_id": "pseudonymise", "assigned_on": "keep", "meeting_arrangements": "withheld"}

TRAIL = [
    decided("e1", "2015-01-10T10:00:01", "police", "iom.cohort_entered", "kmbc", "permit",
            "clause kiom-isp/c2 permits", "c2"),
    delivered("e1", "2015-01-10T10:00:01", "police", "iom.cohort_entered", "kmbc", "kiom-isp",
              "c2", COHORT),
    decided("e1", "2015-01-10T10:00:01", "police", "iom.cohort_entered", "probation_crc",
            "permit", "clause kiom-isp/c3 permits", "c3"),
    delivered("e1", "2015-01-10T10:00:01", "police", "iom.cohort_entered", "probation_crc",
              "kiom-isp", "c3", COHORT),
    decided("e1", "2015-01-10T10:00:01", "police", "iom.cohort_entered", "mals", "deny",
            "no clause permits iom.cohort_entered from police to mals"),
    AuditEntry(
        entry_id=make_entry_id("rejected", "ingest.police", 0, 7), kind="rejected",
        at=at("2015-01-20T08:00:00"), component="router", outcome="error",
        actor="hub-router-0", source_agency="police", reason="unknown_schema", payload_hash=HASH,
        details={"topic": "ingest.police", "partition": "0", "offset": "7",
                 "dlq": "ingest.police.dlq"},
    ),
    delivered("e2", "2015-02-01T11:00:00", "probation_crc", "referral.created", "mals",
              "mals-referral-progress", "r1", REFERRAL),
    delivered("e9", "2015-02-10T12:00:00", "police", "iom.cohort_entered", "kmbc", "kiom-isp",
              "c2", COHORT, subject=OTHER),
    delivered("e3", "2015-02-20T09:00:00", "mals", "mentor.assigned", "probation_crc",
              "mals-referral-progress", "r4", MENTOR),
    AuditEntry(
        entry_id=make_entry_id("retracted", "e2", "mals", "consent_withdrawn"), kind="retracted",
        at=at("2015-03-15T16:00:00"), component="router", outcome="ok", subject_ref=JORDAN,
        event_id="e2", event_type="delivery.retracted", source_agency="mals", audience="mals",
        clause_ids=("r1",), reason="consent_withdrawn", payload_hash=HASH,
        details={"cause_event_id": "e4"},
    ),
    delivered("e5", "2015-03-20T10:00:00", "police", "iom.cohort_entered", "kmbc", "kiom-isp",
              "c2", COHORT),
    delivered("e5", "2015-03-20T10:00:00", "police", "iom.cohort_entered", "probation_crc",
              "kiom-isp", "c3", COHORT),
    AuditEntry(
        entry_id=make_entry_id("corrected", "e5", "e1"), kind="corrected",
        at=at("2015-03-20T10:00:00"), component="router", outcome="ok", subject_ref=JORDAN,
        event_id="e5", event_type="iom.cohort_entered", source_agency="police",
        reason="wrong priority band",
        details={"supersedes": "e1", "recipients": "kmbc,probation_crc"},
    ),
]  # fmt: skip


@pytest.fixture
def store() -> Iterator[SqlAuditStore]:
    s = open_audit_store("sqlite://")
    s.append(TRAIL)
    yield s
    s.close()


def pairs(report: reports.DisclosureReport) -> list[tuple[str | None, str | None]]:
    return [(d.entry.event_id, d.entry.audience) for d in report.deliveries]


# -- disclosure report -------------------------------------------------------------------------


def test_disclosure_report_lists_exactly_the_subjects_deliveries_and_withheld_fields(
    store: SqlAuditStore,
) -> None:
    report = reports.disclosure_report(store, JORDAN, subject="police:MP-0042")
    assert pairs(report) == [
        ("e1", "kmbc"), ("e1", "probation_crc"), ("e2", "mals"), ("e3", "probation_crc"),
        ("e5", "kmbc"), ("e5", "probation_crc"),
    ]  # fmt: skip
    assert report.recipients() == {
        "kmbc": {"cohort": "keep", "priority_band": "keep"},
        "probation_crc": {
            "cohort": "keep", "priority_band": "keep", "mentor_id": "pseudonymise",
            "assigned_on": "keep",
        },
        "mals": {"referral_id": "pseudonymise", "risk_level": "keep"},
    }  # fmt: skip
    assert report.withheld() == {
        "kmbc": {"selection_reason"},
        "probation_crc": {"selection_reason", "meeting_arrangements"},
        "mals": {"offence_summary"},
    }
    status = {(d.entry.event_id, d.entry.audience): d.status for d in report.deliveries}
    assert status[("e2", "mals")].startswith("retracted 2015-03-15T16:00:00.000Z")
    assert status[("e1", "kmbc")] == "superseded by e5"
    assert status[("e5", "kmbc")] == "held"
    assert [s.entry.event_id for s in report.retractions] == ["e2"]
    assert [s.entry.details["supersedes"] for s in report.corrections] == ["e1"]
    assert report.trail_size == len(TRAIL)


def test_as_of_leaves_out_later_deliveries_and_those_retracted_before_it(
    store: SqlAuditStore,
) -> None:
    before_withdrawal = reports.disclosure_report(store, JORDAN, as_of=at("2015-03-01T00:00:00"))
    assert pairs(before_withdrawal) == [
        ("e1", "kmbc"), ("e1", "probation_crc"), ("e2", "mals"), ("e3", "probation_crc"),
    ]  # fmt: skip
    assert {d.status for d in before_withdrawal.deliveries} == {"held"}
    assert before_withdrawal.retractions == [] and before_withdrawal.corrections == []

    after = reports.disclosure_report(store, JORDAN, as_of=parse_when("2015-04-01", "--as-of"))
    assert ("e2", "mals") not in pairs(after)
    assert ("e5", "kmbc") in pairs(after)
    assert "mals" not in after.recipients()


def test_what_one_agency_knew_at_a_time(store: SqlAuditStore) -> None:
    mals = reports.disclosure_report(store, JORDAN, as_of=at("2015-03-01T00:00:00"), agency="mals")
    assert pairs(mals) == [("e2", "mals")]
    assert reports.disclosure_report(store, JORDAN, as_of=at("2015-01-10T10:00:01"),
                                     agency="kmbc").deliveries == []  # fmt: skip
    police = reports.disclosure_report(store, JORDAN, agency="mals")
    assert police.corrections == []  # the correction went to kmbc and probation_crc only


def test_disclosure_table_html_and_csv_hold_names_and_clauses_not_values(
    store: SqlAuditStore,
) -> None:
    report = reports.disclosure_report(store, JORDAN, subject="police:<MP-0042>")
    columns, rows = reports.disclosure_table(report)
    assert [row[columns.index("kind")] for row in rows] == [
        "delivered", "delivered", "delivered", "delivered", "retracted", "delivered",
        "delivered", "corrected",
    ]  # fmt: skip
    first = dict(zip(columns, rows[0], strict=True))
    assert first["clause_ids"] == "c2" and first["agreement_id"] == "kiom-isp"
    assert first["fields_withheld"] == "selection_reason"
    assert first["legal_basis"] == "crime_and_disorder_act_s115"
    page = reports.disclosure_html(report, generated_by="auditor1", generated_at=at("2025-01-01"))
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert "police:&lt;MP-0042&gt;" in page and "<MP-0042>" not in page
    assert "Retractions (1)" in page and "Corrections (1)" in page and "Deliveries (6)" in page
    assert "offence_summary" in page and "consent_withdrawn" in page
    parsed = list(csv.reader(io.StringIO(reports.to_csv((columns, rows)))))
    assert parsed[0] == list(columns) and len(parsed) == 9


def test_summary_has_one_row_per_recipient(store: SqlAuditStore) -> None:
    columns, rows = reports.disclosure_summary(reports.disclosure_report(store, JORDAN))
    summary = {row[0]: dict(zip(columns, row, strict=True)) for row in rows}
    assert sorted(summary) == ["kmbc", "mals", "probation_crc"]
    assert summary["mals"]["retracted"] == "1" and summary["kmbc"]["deliveries"] == "2"
    assert summary["mals"]["fields withheld"] == "offence_summary"


# -- search, denials, sharing ------------------------------------------------------------------


def test_search_filters(store: SqlAuditStore) -> None:
    def kinds(**filters: object) -> list[tuple[str, str | None]]:
        result = reports.search(store, reports.SearchFilters(**filters))  # type: ignore[arg-type]
        return [(s.entry.kind, s.entry.event_id) for s in result.entries]

    assert kinds(decision="deny") == [("decided", "e1")]
    assert kinds(clause_id="r1") == [("delivered", "e2"), ("retracted", "e2")]
    assert kinds(subject_ref=OTHER) == [("delivered", "e9")]
    assert kinds(kind="rejected", agency="police") == [("rejected", None)]
    assert kinds(audience="mals", since=at("2015-02-01T00:00:00")) == [
        ("delivered", "e2"), ("retracted", "e2"),
    ]  # fmt: skip
    assert kinds(agreement_id="kiom-isp", until=at("2015-02-01T00:00:00"), kind="delivered") == [
        ("delivered", "e1"), ("delivered", "e1"),
    ]  # fmt: skip
    limited = reports.search(store, reports.SearchFilters(limit=3))
    assert len(limited.entries) == 3 and limited.truncated
    assert not reports.search(store, reports.SearchFilters(limit=len(TRAIL))).truncated


def test_search_rejects_bad_filters() -> None:
    with pytest.raises(InputError, match="--decision 'maybe'"):
        reports.SearchFilters(decision="maybe")
    with pytest.raises(InputError, match="--kind 'shared'"):
        reports.SearchFilters(kind="shared")
    with pytest.raises(InputError, match="--decision applies to decided"):
        reports.SearchFilters(kind="delivered", decision="deny")
    with pytest.raises(InputError, match="--until"):
        parse_when("31/03/2015", "--until")


def test_denials_are_deny_decisions_and_dlq_rejections_with_reasons(
    store: SqlAuditStore,
) -> None:
    found = reports.denials(store)
    columns, rows = reports.denials_table(found)
    table = [dict(zip(columns, row, strict=True)) for row in rows]
    assert [(r["what"], r["audience"], r["reason"]) for r in table] == [
        ("denied", "mals", "no clause permits iom.cohort_entered from police to mals"),
        ("dlq", "", "unknown_schema"),
    ]
    assert table[1]["where"] == "ingest.police[0]@7 -> ingest.police.dlq"
    assert len(reports.denials(store, agency="mals")) == 1
    assert reports.denials(store, since=parse_since("2015-01-11")) == found[1:]


def test_sharing_counts_deliveries_per_pair_per_month(store: SqlAuditStore) -> None:
    rows = reports.sharing(store)
    got = {(r.period, r.source_agency, r.audience): (r.deliveries, r.subjects) for r in rows}
    assert got[("2015-01", "police", "kmbc")] == (1, 1)
    assert got[("2015-02", "police", "kmbc")] == (1, 1)  # the other subject
    assert got[("2015-03", "police", "kmbc")] == (1, 1)
    assert got[("2015-02", "mals", "probation_crc")] == (1, 1)
    assert got[("2015-01", "mals", "probation_crc")] == (0, 0)  # every month shows
    assert len(rows) == 4 * 3  # four pairs, January to March
    assert sum(r.deliveries for r in rows) == 7
    columns, table = reports.sharing_table(rows)
    kmbc = [row for row in table if row[1:3] == ("police", "kmbc")]
    assert [row[-1] for row in kmbc] == ["", "+0", "+0"]
    _, totals = reports.sharing_totals(rows)
    assert totals == [("2015-01", "2", "2"), ("2015-02", "3", "3"), ("2015-03", "2", "2")]
    by_quarter = reports.sharing(store, by="quarter", agency="probation_crc")
    assert {(r.period, r.source_agency, r.audience, r.deliveries) for r in by_quarter} == {
        ("2015-Q1", "police", "probation_crc", 2),
        ("2015-Q1", "mals", "probation_crc", 1),
        ("2015-Q1", "probation_crc", "mals", 1),
    }
    with pytest.raises(InputError, match="--by 'week'"):
        reports.sharing(store, by="week")


def test_periods_fill_gaps_across_years() -> None:
    assert reports._periods("2014-11", "2015-02", "month") == [
        "2014-11", "2014-12", "2015-01", "2015-02",
    ]  # fmt: skip
    assert reports._periods("2014-Q4", "2015-Q1", "quarter") == ["2014-Q4", "2015-Q1"]


def test_csv_cells_cannot_run_as_spreadsheet_formulas() -> None:
    text = reports.to_csv((("reason",), [("=HYPERLINK(1)",), ("plain",)]))
    assert text.splitlines() == ["reason", "'=HYPERLINK(1)", "plain"]


# -- auditor queries ---------------------------------------------------------------------------


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[tuple[str, bytes]] = []
        self.flushed = 0

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, value))

    def flush(self, timeout: float = 0) -> None:
        if self.fail:
            raise DeliveryFailed("1 record(s) not delivered; first: hub.audit: Local: Timed out")
        self.flushed = len(self.sent)


def test_an_auditor_query_is_on_the_trail_before_its_answer() -> None:
    sink = Sink()
    auditor = AuditedQueries(sink, "hub.audit", "dpo.smith", "DHR 2015/3")

    def answer() -> str:
        assert sink.sent == []  # computed first, shown only after the entry is acknowledged
        return "result"

    filters = reports.SearchFilters(agency="police", since=at("2015-01-01T00:00:00"))
    assert auditor.run("audit search", filters.recorded(), answer, subject_ref=JORDAN) == "result"
    assert sink.flushed == 1
    topic, value = sink.sent[0]
    entry = AuditEntry.from_json_bytes(value)
    assert topic == "hub.audit"
    assert (entry.kind, entry.role, entry.actor, entry.outcome) == (
        "auditor_query", "auditor", "dpo.smith", "ok",
    )  # fmt: skip
    assert entry.justification == "DHR 2015/3" and entry.subject_ref == JORDAN
    assert dict(entry.details) == {
        "command": "audit search", "agency": "police", "since": "2015-01-01T00:00:00+00:00",
        "limit": "100",
    }  # fmt: skip


def test_no_answer_when_the_trail_does_not_take_the_query() -> None:
    auditor = AuditedQueries(Sink(fail=True), "hub.audit", "dpo.smith")
    with pytest.raises(InfraError, match="no result is shown"):
        auditor.run("audit denials", {}, lambda: "secret result")


def test_a_failed_query_is_recorded_as_an_error() -> None:
    sink = Sink()
    auditor = AuditedQueries(sink, "hub.audit", "dpo.smith")

    def answer() -> str:
        raise InputError("--by 'week' (expected one of month, quarter, year)")

    with pytest.raises(InputError):
        auditor.run("audit sharing", {"by": "week"}, answer)
    entry = AuditEntry.from_json_bytes(sink.sent[0][1])
    assert entry.outcome == "error" and "--by 'week'" in (entry.reason or "")


# -- naming a subject ----------------------------------------------------------------------------


def _event(event_id: str, agency: str, scheme: str, local_id: str, pnc: str) -> dict:  # type: ignore[type-arg]
    return {
        "envelope": {
            "event_id": event_id, "event_type": "person.registered", "source_agency": agency,
            "jurisdiction": "UK-ENG",
            "subject": {"local_id_scheme": scheme, "local_id": local_id,
                        "identifiers": [{"scheme": "pnc_id", "value": pnc}]},
        }
    }  # fmt: skip


@pytest.fixture(scope="module")
def sources(catalogue) -> SubjectSources:  # type: ignore[no-untyped-def]
    state = MemoryState(catalogue)
    state.apply_event(_event("p1", "police", "police_nominal_id", "MP-0042", "14/0123456J"))
    state.apply_event(
        _event("p2", "probation_crc", "probation_case_ref", "CRC-5501", "14/0123456J")
    )
    state.apply_event(_event("p3", "police", "police_nominal_id", "MP-0099", "15/0999999K"))
    schemes = [c.code for c in catalogue.reference_list("identifier_schemes").codes
               if c.kind == "person"]  # fmt: skip
    return SubjectSources(
        keys=lambda: KEYS, state=lambda: state,
        agencies=lambda: {"police": "UK-ENG", "probation_crc": "UK-ENG", "mals": "UK-ENG"},
        schemes=lambda: schemes,
    )  # fmt: skip


def test_a_subject_named_by_any_partner_resolves_to_one_pseudonym(
    sources: SubjectSources,
) -> None:
    jordan = resolve_subject("police:MP-0042", sources)
    assert resolve_subject("probation_crc:CRC-5501", sources) == jordan
    assert resolve_subject("police:pnc_id:14/0123456J", sources) == jordan
    assert resolve_subject("police:police_nominal_id:MP-0042", sources) == jordan
    assert resolve_subject(jordan, sources) == jordan
    assert resolve_subject("police:MP-0099", sources) != jordan
    state = sources.state()
    hub_id = state.subject_of(_event("x", "police", "police_nominal_id", "MP-0042", "-"))
    assert resolve_subject(hub_id, sources) == jordan == KEYS.pseudonym("audit", hub_id)


def test_an_unknown_subject_or_agency_is_an_input_error(sources: SubjectSources) -> None:
    with pytest.raises(InputError, match="no subject with police local id 'MP-7777'"):
        resolve_subject("police:MP-7777", sources)
    with pytest.raises(InputError, match="unknown agency 'polis'"):
        resolve_subject("polis:MP-0042", sources)
    with pytest.raises(InputError, match="expected AGENCY:LOCAL_ID"):
        resolve_subject("MP-0042", sources)


def test_days_count_whole() -> None:
    assert parse_when("2015-03-31", "--until") == at("2015-04-01T00:00:00")
    assert parse_since("2015-03-31") == at("2015-03-31T00:00:00")
    assert parse_when("2015-03-31T10:00:00+01:00", "--as-of") == at("2015-03-31T09:00:00")
    assert parse_when("2015-03-31T10:00:00", "--as-of") == at("2015-03-31T10:00:00")


def test_entry_rows_serialise_every_column(store: SqlAuditStore) -> None:
    stored = store.query(kind="delivered", limit=1)[0]
    row = dict(zip(reports.ENTRY_COLUMNS, reports.entry_row(stored), strict=True))
    assert row["fields_shared"] == "cohort (keep); priority_band (keep)"
    assert row["fields_withheld"] == "selection_reason"
    assert json.dumps(row)  # plain text throughout


def test_an_actor_the_trail_cannot_hold_fails_before_the_query() -> None:
    with pytest.raises(InputError, match="actor"):
        AuditedQueries(Sink(), "hub.audit", "x" * 300)


# -- against what the router writes --------------------------------------------------------------


class _Registry:
    def __init__(self) -> None:
        self.by_id: dict[int, str] = {}

    def register(self, subject: str, schema: str) -> int:
        for schema_id, text in self.by_id.items():
            if text == schema:
                return schema_id
        self.by_id[len(self.by_id) + 1] = schema
        return len(self.by_id)

    def schema_by_id(self, schema_id: int) -> str:
        return self.by_id[schema_id]


class _Seen:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str, int, int]] = {}

    def get(self, event_id: str) -> tuple[str, str, int, int] | None:
        return self.rows.get(event_id)

    def put(self, event_id: str, content: str, topic: str, partition: int, offset: int) -> None:
        self.rows[event_id] = (content, topic, partition, offset)


def test_s7_routed_disclosure_report_shows_the_consent_retractions(catalogue) -> None:  # type: ignore[no-untyped-def]
    """S7 through the router (in memory): MALS's consent-based contact summary reaches the
    offender manager, IOM, KMBC and research, and the withdrawal retracts each of them; the
    subject, named as police know it, resolves to the pseudonym the router wrote."""
    doc = yaml.safe_load(
        (Path(__file__).parents[1] / "golden/policy/s07_consent_withdrawn.yaml").read_text()
    )
    agreements = load_agreements(None, catalogue)
    jurisdictions = {a.id: a.jurisdiction for a in agreements.agencies()}
    builder = EventBuilder(catalogue, jurisdictions, doc["people"], namespace="reports")
    codec = AvroCodec(catalogue, _Registry())  # type: ignore[arg-type]
    codec.register_all()
    state = MemoryState(catalogue)
    now = {"at": at("2015-01-01T00:00:00")}
    router = Router(topics=Topics(), codec=codec, agreements=agreements, state=state, keys=KEYS,
                    seen=_Seen(), clock=lambda: now["at"])  # fmt: skip
    order = ["supervision", "cohort", "consent", "contact_before", "withdrawn", "contact_late",
             "contact_after", "housing", "licence", "arrest"]  # fmt: skip
    entries = []
    for offset, name in enumerate(order):
        event = builder.build(name, doc["events"][name])
        now["at"] = event["envelope"]["recorded_at"]
        agency = event["envelope"]["source_agency"]
        outputs = router.process(InRecord(f"ingest.{agency}", 0, offset, b"k", codec.encode(event)))
        entries += [AuditEntry.from_json_bytes(o.value) for o in outputs if o.topic == "hub.audit"]
    store = open_audit_store("sqlite://")
    store.append(entries)

    sources = SubjectSources(keys=lambda: KEYS, state=lambda: state,
                             agencies=lambda: jurisdictions,
                             schemes=lambda: ["police_nominal_id", "pnc_id"])  # fmt: skip
    kai = resolve_subject("police:MP-7007", sources)
    report = reports.disclosure_report(store, kai)
    contact = builder.ids["contact_before"]
    retracted = {d.entry.audience for d in report.deliveries
                 if d.entry.event_id == contact and d.retracted}  # fmt: skip
    assert retracted == {"probation_crc", "police.iom", "kmbc", "ljmu"}
    assert {d.retracted.reason for d in report.deliveries if d.retracted} == {"consent_withdrawn"}
    assert "notes" in report.withheld()["probation_crc"]
    assert [s.entry.event_id for s in report.retractions] == [contact] * 4

    def held(as_of: str) -> set[tuple[str | None, str | None]]:
        report = reports.disclosure_report(store, kai, as_of=parse_when(as_of, "--as-of"))
        return {(d.entry.event_id, d.entry.audience) for d in report.deliveries}

    withdrawn_from = {(contact, audience) for audience in retracted}
    assert withdrawn_from <= held("2015-05-31")  # known until the withdrawal...
    assert not withdrawn_from & held("2015-06-30")  # ...and not after it
    assert (contact, "mals") in held("2015-06-30")  # MALS's own record stays
    arrest = builder.ids["arrest"]
    assert {a for e, a in held("2015-06-30") if e == arrest} == {
        "probation_crc", "police.iom", "kmbc",
    }  # fmt: skip
