"""``hub demo`` end to end, headless, against the session broker: a small run of the demo's own
fictional data written as each partner's export and pushed through the partners' connectors (the
rest through the HTTP ingest API), the router, the MALS sink, the audit materialiser and six view
consumers; then checks on the connectors' summaries and quarantine, MALS' database, what each
audience's view holds, the DLQ and the audit trail; the run has field encryption on, and CR-8 scans
the broker's log segments of its ingest and delivery topics for the sensitive values it wrote."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.framework import read_quarantine
from hub import bootstrap, demo
from tests.hubtest import hub_settings
from tests.integration.test_router_harness import broker_data_dir, segment_bytes

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def result(kafka_bootstrap, registry_url, tmp_path_factory) -> demo.DemoResult:  # type: ignore[no-untyped-def]
    prefix = f"t{uuid.uuid4().hex[:10]}."  # a fresh prefix, as the `topics` fixture gives
    settings = hub_settings(kafka_bootstrap, registry_url, prefix, tmp_path_factory.mktemp("home"))
    return demo.run_demo(settings, size=12)


def rows(result: demo.DemoResult, audience: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    path = result.views[audience].path
    assert path is not None and path.exists(), f"no view database for {audience}"
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, args).fetchall()]


def timeline(result: demo.DemoResult, audience: str, event_id: str) -> dict[str, Any] | None:
    found = rows(result, audience, "SELECT * FROM view_timeline WHERE event_id = ?", event_id)
    return found[0] if found else None


def payloads(result: demo.DemoResult, audience: str) -> Iterator[tuple[dict[str, Any], Any]]:
    for row in rows(result, audience, "SELECT * FROM view_timeline"):
        yield row, json.loads(row["payload"])


def present(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v is not None}


def withheld(row: dict[str, Any]) -> set[str]:
    return {w["field"] for w in json.loads(row["withheld"])}


def test_every_event_routed_once_and_only_the_restricted_programme_rejected(result) -> None:  # type: ignore[no-untyped-def]
    stats, story = result.router, result.data.story
    assert stats.received == result.feeds.events
    assert stats.aborted == 0 and stats.duplicates == 0
    assert stats.rejected == 3
    assert {d["event_id"] for d in result.dlq} == set(story.s19_rejected)
    assert {d["reason"] for d in result.dlq} == {"compartment"}
    for audience, view in result.views.items():
        assert view.records > 0, f"{audience}: nothing arrived"
        for case_id in story.s19_case_ids:
            leaked = rows(result, audience, "SELECT event_id FROM view_timeline WHERE payload "
                          "LIKE ?", f"%{case_id}%")  # fmt: skip
            assert not leaked, f"{audience} holds the restricted-programme case {case_id}"


def test_s1_release_as_each_audience_sees_it(result) -> None:  # type: ignore[no-untyped-def]
    story = result.data.story
    iom = timeline(result, "police.iom", story.s1_release)
    assert iom is not None and iom["clause_id"] == "kiom-2"
    assert (iom["subject_scheme"], iom["subject_id"]) == (
        "police_nominal_id", story.s1_ids["police_nominal_id"])  # fmt: skip
    address = json.loads(iom["payload"])["destination_address"]
    assert address["line1"] and address["postcode"], "IOM officers see the full address"

    kmbc = timeline(result, "kmbc", story.s1_release)
    assert kmbc is not None and kmbc["clause_id"] == "kiom-6"
    payload = json.loads(kmbc["payload"])
    assert present(payload["destination_address"]) == {"area": "Knowsley", "country": "GB"}
    assert set(present(payload["offender_manager"])) == {"organisation", "role"}

    mals = timeline(result, "mals", story.s1_release)
    assert mals is not None and mals["clause_id"] == "mals-2"
    assert mals["subject_id"] == story.s1_ids["mals_client_id"]
    assert present(json.loads(mals["payload"])["destination_address"]) == {
        "area": "Knowsley", "country": "GB"}  # fmt: skip

    mentor = timeline(result, "mals.mentor", story.s1_release)
    assert mentor is not None and mentor["clause_id"] == "mals-12"
    assert set(json.loads(mentor["payload"])) == {"released_at", "establishment"}
    for audience in ("safety_house", "eri"):
        assert timeline(result, audience, story.s1_release) is None


def test_mentors_never_see_a_surname(result) -> None:  # type: ignore[no-untyped-def]
    names = result.data.story.mentee_family_names
    registrations = 0
    for row, payload in payloads(result, "mals.mentor"):
        if row["event_type"] == "person.registered":
            registrations += 1
            assert "family_name" not in payload and "family_name" in withheld(row)
            assert "date_of_birth" not in payload and "phone" not in payload
        surname = names.get(row["subject_id"])
        assert surname is None or surname not in row["payload"], row["event_id"]
    assert registrations, "no registration reached the mentors"


def test_s3_referral_reaches_mals_without_offences_or_mappa_notes(result) -> None:  # type: ignore[no-untyped-def]
    story = result.data.story
    row = timeline(result, "mals", story.s3_referral)
    assert row is not None and row["clause_id"] == "mals-1"
    assert {"offence_summary", "mappa_notes"} <= withheld(row)
    payload = json.loads(row["payload"])
    assert "offence_summary" not in payload and "mappa_notes" not in payload
    assert payload["safety_information"]
    for audience in ("mals.mentor", "kmbc", "police.iom"):
        assert timeline(result, audience, story.s3_referral) is None


def test_s7_withdrawn_consent_retracts_what_consent_based_clauses_delivered(result) -> None:  # type: ignore[no-untyped-def]
    story = result.data.story
    assert story.s7_withdrawal and story.s7_consented
    for audience in ("police.iom", "kmbc"):
        retractions = rows(result, audience, "SELECT * FROM view_retractions WHERE "
                           "cause_event_id = ?", story.s7_withdrawal)  # fmt: skip
        assert retractions and {r["reason"] for r in retractions} == {"consent_withdrawn"}
        for event_id in story.s7_consented:
            assert timeline(result, audience, event_id) is None, f"{audience} still shows it"
        assert timeline(result, audience, story.s7_after) is None, "shared after the withdrawal"
    # MALS keeps its own records, and records what happens after
    for event_id in [*story.s7_consented, story.s7_after]:
        assert timeline(result, "mals", event_id) is not None
    mals_withdrawal = timeline(result, "mals", story.s7_withdrawal)
    assert mals_withdrawal is not None and json.loads(mals_withdrawal["payload"])["reason"]
    assert timeline(result, "police.iom", story.s7_withdrawal) is None


def test_s8_a_corrected_release_date_replaces_the_original(result) -> None:  # type: ignore[no-untyped-def]
    story = result.data.story
    wrong, right = story.s8_dates
    corrections = rows(result, "police.iom", "SELECT * FROM view_corrections WHERE "
                       "superseded_event_id = ?", story.s8_original)  # fmt: skip
    assert [(c["corrected_by_event_id"], c["correction_reason"]) for c in corrections] == [
        (story.s8_correction, "keying_error")]  # fmt: skip
    assert timeline(result, "police.iom", story.s8_original) is None
    row = timeline(result, "police.iom", story.s8_correction)
    assert row is not None and row["supersedes_event_id"] == story.s8_original
    assert json.loads(row["payload"])["release_date"] == right != wrong


def test_partners_abroad_see_their_own_data_only(result) -> None:  # type: ignore[no-untyped-def]
    for row, payload in payloads(result, "safety_house"):
        assert row["source_agency"] in ("safety_house", "hague_municipality")
        assert "area_geometry" not in payload and "protected_party_ref" not in payload
    referrals = 0
    for row, payload in payloads(result, "eri"):
        assert row["source_agency"] in ("eri", "it_social_services", "uepe")
        if row["event_type"] == "referral.created":
            referrals += 1
            assert "offence_summary" not in payload and "offence_summary" in withheld(row)
    assert referrals == result.data.people["Turin"]


def test_the_audit_trail_verifies_and_counts_everything(result) -> None:  # type: ignore[no-untyped-def]
    stats = result.router
    assert result.audit_ok, result.audit_summary
    kinds = result.audit_kinds
    assert result.audit_size == sum(kinds.values())
    assert kinds["published"] == stats.routed
    assert kinds["delivered"] == stats.delivered
    assert kinds["retracted"] == stats.retracted > 0
    assert kinds["rejected"] == 3
    assert kinds.get("corrected", 0) >= 1


# -- the partners' connectors ------------------------------------------------------------------

FILE_CONNECTORS = ("police", "prison", "probation-crc", "probation-nps", "eri", "safety-house",
                   "hague-municipality", "hague-aftercare")  # fmt: skip


def test_every_partner_file_went_through_its_connector_and_the_counts_add_up(result) -> None:  # type: ignore[no-untyped-def]
    feeds = result.feeds
    assert set(feeds.summaries) == set(FILE_CONNECTORS)
    for name, summary in feeds.summaries.items():
        assert summary.adds_up, (name, summary.line())
        assert summary.failed_files == 0, name
        assert summary.read > 0, name
    for name in ("police", "prison", "probation-crc", "probation-nps", "eri", "safety-house"):
        assert feeds.summaries[name].published > 0, name
    # the whole-list exports (CORVUS, the release schedule, ERI's register) re-read what was
    # published before: skipped, never sent twice (the router saw no duplicate)
    for name in ("police", "prison", "eri"):
        assert feeds.summaries[name].skipped > 0, name
    # the Mayor's orders (S9) are the municipality's part of the Safety House export
    orders = feeds.summaries["hague-municipality"].published
    assert orders >= 1 and feeds.summaries["safety-house"].skipped >= orders
    # S8: the corrected release date came as a correction in HMP Liverpool's second export
    assert feeds.summaries["prison"].corrections >= 1
    assert any(p.name.endswith("hmp-liverpool-release-schedule.csv") for p in feeds.files)
    # every event the connectors, the MALS source and the ingest API sent reached the router
    assert result.router.received == feeds.events
    assert feeds.posted and feeds.requests > 0


def test_the_deliberately_bad_rows_are_quarantined_with_file_line_and_reason(result) -> None:  # type: ignore[no-untyped-def]
    feeds = result.feeds
    quarantined: list[dict[str, Any]] = []
    for name in FILE_CONNECTORS:
        summary = feeds.summaries[name]
        entries = [e for q in summary.quarantine for e in read_quarantine(q)]
        assert len(entries) == summary.rejected, name
        quarantined += entries
    # one bad row in the first file of each of six connectors; the municipality's part has none
    assert {n: feeds.summaries[n].rejected for n in FILE_CONNECTORS} == {
        "police": 1, "prison": 1, "probation-crc": 1, "probation-nps": 1, "eri": 1,
        "safety-house": 1, "hague-municipality": 0, "hague-aftercare": 0}  # fmt: skip
    fields = {e["fields"][0] for e in quarantined}
    assert fields == {"date_of_birth", "release_date", "rosh", "codice_fiscale", "complex"}
    for entry in quarantined:
        assert entry["raw"] and entry["reasons"]
        assert all(r.startswith(f"{entry['file']}:{entry['line']}: ") for r in entry["reasons"])
    # MALS: the session with a mode MALS' codes do not know stays in the outbox with its error
    rows, sent, failed = feeds.mals_source
    assert rows == sent + failed and failed == 1 and sent > 0
    assert feeds.bad_rows == len(quarantined) + failed


def test_mals_database_holds_the_referrals_delivered_to_mals(result) -> None:  # type: ignore[no-untyped-def]
    story, feeds = result.data.story, result.feeds
    delivered = rows(result, "mals", "SELECT event_id FROM view_timeline WHERE event_type = "
                     "'referral.created' AND clause_id = 'mals-1'")  # fmt: skip
    assert delivered and len(feeds.mals_referrals) == len(delivered)
    assert feeds.mals_sink.get("applied") == len(delivered)
    s3 = [r for r in feeds.mals_referrals if r["referrer_ref"] == story.s3_referral_id]
    assert len(s3) == 1, "the S3 referral is in MALS' referrals table once"
    row = s3[0]
    assert row["referrer_org"] == "probation_nps" and row["safety_information"]
    assert row["risk_level"] and row["release_date"] and row["client_id"].startswith("MALS-")
    text = json.dumps(row, default=str)
    assert "MAPPA" not in text and "previous convictions" not in text, "minimum dataset only"
    with sqlite3.connect(result.settings.home / "mals" / "mals.db") as conn:
        state = conn.execute("SELECT state, clause_id FROM hub_inbox WHERE event_id = ?",
                             (story.s3_referral,)).fetchone()  # fmt: skip
    assert state == ("applied", "mals-1")


def test_the_hague_and_turin_stay_in_their_jurisdictions(result) -> None:  # type: ignore[no-untyped-def]
    nl = ("safety_house", "hague_municipality", "hague_aftercare", "nl_police", "nl_probation")
    it = ("eri", "it_social_services", "uepe", "collegno")
    for audience in ("police.iom", "mals", "mals.mentor", "kmbc"):
        agencies = {r["source_agency"] for r in rows(
            result, audience, "SELECT DISTINCT source_agency FROM view_timeline")}  # fmt: skip
        assert agencies and not agencies & {*nl, *it}, (audience, agencies)
    # S9: the Safety House sees the case, its plan and the Mayor's order without its boundaries
    sh = {r["event_type"] for r in rows(result, "safety_house",
                                        "SELECT event_type FROM view_timeline")}  # fmt: skip
    assert {"sh.case_reported", "sh.action_plan_agreed", "sh.review_held"} <= sh
    # S12: ERI sees its participants' attendance and outcomes, through its own register
    eri = {r["event_type"] for r in rows(result, "eri", "SELECT event_type FROM view_timeline")}
    assert {"consent.given", "lcp.enrolled", "lcp.session_attended"} <= eri


def test_the_demo_sign_ins(result, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from hub.web.users import open_user_store

    settings = result.settings.model_copy(update={"home": tmp_path})
    users = demo.create_demo_users(settings, result.data.story)
    store = open_user_store(f"sqlite:///{tmp_path / 'web' / 'users.db'}")
    assert {u.audience for u in users} >= {"police.iom", "mals", "mals.mentor", "hub"}
    for u in users:
        found = store.get(u.username)
        assert found is not None and (found.audience, found.role) == (u.audience, u.role)
    mentor = store.get("mals.mentor")
    assert mentor is not None and mentor.mentor_id == result.data.story.s1_mentor


def test_s5_breach_and_recall_reach_police_and_kmbc_and_mals_only_the_custody(result) -> None:  # type: ignore[no-untyped-def]
    story = result.data.story
    *arrests_and_breach, recalled = story.s5_events
    assert len(arrests_and_breach) == 3
    for event_id in story.s5_events:
        for audience in ("police.iom", "kmbc"):
            assert timeline(result, audience, event_id) is not None, (audience, event_id)
    for event_id in arrests_and_breach:  # no arrest, no circumstances, no breach detail at MALS
        for audience in ("mals", "mals.mentor", "safety_house", "eri"):
            assert timeline(result, audience, event_id) is None, (audience, event_id)
    row = timeline(result, "mals", recalled)  # "client in custody since X", no more
    assert row is not None and json.loads(row["payload"])["received_at"]
    assert "reason" not in json.loads(row["payload"]) and "wing" not in json.loads(row["payload"])
    # CORVUS never exports the arrest circumstances
    for audience in ("police.iom", "kmbc"):
        payload = json.loads(timeline(result, audience, arrests_and_breach[2])["payload"])
        assert not payload.get("circumstances")


def test_s6_moves_and_cohort_exit_from_corvus(result) -> None:  # type: ignore[no-untyped-def]
    story = result.data.story
    *moves, exit_ = story.s6_events
    for event_id in story.s6_events:
        assert timeline(result, "police.iom", event_id) is not None
        for audience in ("mals", "mals.mentor", "safety_house", "eri"):
            assert timeline(result, audience, event_id) is None, (audience, event_id)
    row = timeline(result, "police.iom", exit_)
    assert row is not None and row["event_type"] == "iom.cohort_exited"
    assert json.loads(row["payload"])["exit_reason"] == "moved_out_of_force_area"
    postcodes = [json.loads(timeline(result, "police.iom", m)["payload"])["address"]["postcode"]
                 for m in moves]  # fmt: skip
    assert postcodes == ["L6 4BZ", "M5 4WH"]


def test_the_report_names_every_connector_storyline_and_the_verified_trail(result) -> None:  # type: ignore[no-untyped-def]
    import io

    from rich.console import Console

    out = io.StringIO()
    demo.print_report(Console(file=out, width=200), result, broker="session broker",
                      home=result.settings.home, stop_hint=None)  # fmt: skip
    text = out.getvalue()
    for name in (*FILE_CONNECTORS, "mals-source", "mals-sink", "HTTP ingest"):
        assert f"  {name} " in text, name
    for label in ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11", "S12",
                  "S19"):  # fmt: skip
        assert f"{label} " in text, label
    assert f"hub audit verify: {result.audit_summary}" in text
    assert "no UK or IT audience holds any" in text and "no UK or NL audience holds any" in text


def test_s9_nl_police_get_the_mayors_order_and_aftercare_its_own_tasks(result) -> None:  # type: ignore[no-untyped-def]
    orders = rows(result, "nl_police", "SELECT * FROM view_timeline WHERE event_type = "
                  "'mayor.order_issued'")  # fmt: skip
    assert orders and {o["clause_id"] for o in orders} == {"sh-5"}
    assert all(json.loads(o["payload"])["area_name"] for o in orders)
    for row, payload in payloads(result, "hague_aftercare"):
        if row["event_type"] == "sh.action_plan_agreed":
            assert {t["organisation"] for t in payload["tasks"]} == {"hague_aftercare"}
    reported = rows(result, "nl_police", "SELECT * FROM view_timeline WHERE event_type = "
                    "'sh.case_reported'")  # fmt: skip
    assert reported and all("reason" in withheld(r) for r in reported)


def test_s11_aftercare_registrations_came_through_the_aftercare_connector(result) -> None:  # type: ignore[no-untyped-def]
    story = result.data.story
    assert len(story.s11_events) == 3
    assert result.feeds.summaries["hague-aftercare"].published == 3
    ledger = result.settings.home / "connectors" / "hague-aftercare" / "ledger.sqlite"
    with sqlite3.connect(ledger) as conn:
        published = {r[0] for r in conn.execute("SELECT event_id FROM published")}
    assert set(story.s11_events) <= published
    for event_id in story.s11_events:  # benefit and debt detail: never at the police, nor abroad
        for audience in ("nl_police", "police.iom", "mals", "kmbc", "eri"):
            assert timeline(result, audience, event_id) is None, (audience, event_id)


def test_s2_lcp_nominations_reach_mals_and_completions_the_partners(result) -> None:  # type: ignore[no-untyped-def]
    story = result.data.story
    assert story.s2_nominated and story.s2_completed
    for event_id in story.s2_nominated:
        row = timeline(result, "mals", event_id)
        assert row is not None and row["clause_id"] == "mals-8"
        for audience in ("police.iom", "kmbc", "mals.mentor"):
            assert timeline(result, audience, event_id) is None
    for event_id in story.s2_completed:  # from MALS' database through the MALS source
        assert timeline(result, "police.iom", event_id)["clause_id"] == "mals-42"
        assert timeline(result, "mals", event_id) is not None
    for audience in ("police.iom", "kmbc", "mals", "mals.mentor"):
        for row in rows(result, audience, "SELECT payload FROM view_timeline WHERE event_type "
                        "LIKE 'lcp.%'"):  # fmt: skip
            assert "childhood" not in row["payload"], "session disclosures never leave MALS"


def test_s10_the_restraining_order_and_the_victims_family_stay_with_the_police(result) -> None:  # type: ignore[no-untyped-def]
    pre_plan, _risk, order, extension, long_plan = result.data.story.s10_events
    for event_id in (order, extension):
        police = timeline(result, "nl_police", event_id)
        assert police is not None and police["clause_id"] == "sh-5"
        payload = json.loads(police["payload"])
        assert payload["area_name"] and payload["protected_party_ref"]
        sh = timeline(result, "safety_house", event_id)
        assert sh is not None and "protected_party_ref" in withheld(sh)
        assert "protected_party_ref" not in json.loads(sh["payload"])
        assert timeline(result, "hague_aftercare", event_id) is None
    assert json.loads(timeline(result, "nl_police", order)["payload"])["area_geometry"]
    assert "area_geometry" in withheld(timeline(result, "safety_house", order))
    extended = json.loads(timeline(result, "nl_police", extension)["payload"])
    assert extended["extends_order_id"] == json.loads(
        timeline(result, "nl_police", order)["payload"])["order_id"]  # fmt: skip
    for plan in (pre_plan, long_plan):  # each partner its own task
        for audience, organisation in (("nl_police", "nl_police"),
                                       ("hague_aftercare", "hague_aftercare")):  # fmt: skip
            row = timeline(result, audience, plan)
            assert row is not None
            assert {t["organisation"] for t in json.loads(row["payload"])["tasks"]} == {
                organisation}  # fmt: skip


# -- CR-8 (RELIABILITY.md): no sensitive value in clear on the broker's disks ---------------------


def written_values(result: demo.DemoResult) -> tuple[set[str], set[str]]:
    """The distinctive text values the generator wrote (16 characters or more, not a reference
    code): those of fields the schemas mark sensitive, and those of every other field (a value
    written in both kinds of field is left out of the sensitive ones)."""
    catalogue = bootstrap.catalogue()
    sensitive: set[str] = set()
    plain: set[str] = set()

    def walk(value: Any, path: str, marked: set[str], references: set[str]) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}.{key}", marked, references)
        elif isinstance(value, list):
            for inner in value:
                walk(inner, path, marked, references)
        elif isinstance(value, str) and len(value) >= 16 and path not in references:
            (sensitive if path in marked else plain).add(value)

    for item in (item for wave in result.data.waves for item in wave):
        name = catalogue.name_for(item.event_type)
        marked, references = set(catalogue.sensitive_fields(name)), set(
            catalogue.reference_fields(name))  # fmt: skip
        for key, value in item.record.items():
            if key not in ("envelope", "disclosure"):
                walk(value, key, marked, references)
    return sensitive - plain, plain


def test_cr8_no_sensitive_value_in_any_ingest_or_deliver_segment(result, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    assert result.settings.field_encryption, "the demo runs with field encryption on"
    data_dir = broker_data_dir(tmp_path_factory)
    assert data_dir is not None, "CR-8 needs the broker's data directory"
    sensitive, plain = written_values(result)
    assert len(sensitive) >= 10, f"too few sensitive values to scan for: {sorted(sensitive)}"
    t = bootstrap.topics(result.settings)
    names = sorted(bootstrap.topic_plan(result.settings, bootstrap.agreements()))
    scanned = [n for n in names if n.startswith((f"{t.prefix}ingest.", f"{t.prefix}deliver."))]
    on_disk = segment_bytes(data_dir, scanned)
    assert sum(map(len, on_disk.values())) > 0
    leaked = {topic: sorted(v for v in sensitive if v.encode() in data)[:3]
              for topic, data in on_disk.items()}  # fmt: skip
    assert not {topic: v for topic, v in leaked.items() if v}, "sensitive plaintext on disk"
    # the scan is not blind: other values are there in clear, and the audiences that may see a
    # sensitive value hold it opened in their views
    seen_plain = {v for v in plain if any(v.encode() in data for data in on_disk.values())}
    assert seen_plain, "no plain value found in the segments either"
    opened: dict[str, int] = {}
    for audience in result.views:
        payloads = " ".join(r["payload"] for r in rows(result, audience,
                                                         "SELECT payload FROM view_timeline"))
        opened[audience] = sum(v in payloads for v in sensitive)
    assert sum(opened.values()) > 0, "no view holds an opened sensitive value"
    print(f"CR-8: {len(sensitive)} sensitive values, 0 found in "
          f"{sum(map(len, on_disk.values())):,} segment bytes of {len(scanned)} topics; "
          f"{len(seen_plain)}/{len(plain)} plain values found; opened in views: {opened}")
