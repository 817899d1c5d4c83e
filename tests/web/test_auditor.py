"""The auditors' pages and the portal's hardening, through FastAPI's test client.

The trail is the one the auditors' report tests use (tests/unit/test_audit_reports.py: one
subject delivered to three audiences, a consent withdrawal, a correction, a deny and a DLQ
rejection); the auditor queries' own entries are collected in memory, as in test_portal.py.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from hub.adapters.audit_store import open_audit_store
from hub.audit import query
from hub.web import create_app
from hub.web.audit import AccessRecorder
from hub.web.auditor import AuditorDesk
from hub.web.users import open_user_store
from tests.unit.test_audit_reports import JORDAN, KEYS, TRAIL
from tests.web.scenario import JORDAN as JORDAN_IN_VIEWS
from tests.web.scenario import fill_views
from tests.web.support import PASSWORD, USERS, Clock, ListSink, add_users, config, csrf_of, sign_in

JORDAN_ID = "hs-0123456789abcdef01234567"  # the hub subject id behind JORDAN (KEYS)
ROLES = {"practitioner": "iom.officer", "mentor": "mentor17", "auditor": "dpo"}


@pytest.fixture(scope="module")
def views_url(tmp_path_factory: pytest.TempPathFactory, catalogue: Any) -> str:
    return fill_views(tmp_path_factory.mktemp("views-home"), catalogue)


@pytest.fixture(scope="module")
def users_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('users')}/users.db"
    add_users(open_user_store(url))
    return url


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditorDesk]:
    store = open_audit_store(f"sqlite:///{tmp_path_factory.mktemp('trail')}/hub.db")
    store.append(TRAIL)
    sources = query.SubjectSources(
        keys=lambda: KEYS, state=_no_state, agencies=lambda: {"police": "UK-ENG"},
        schemes=lambda: ["police_nominal_id"],
    )  # fmt: skip
    yield AuditorDesk(store, lambda text: query.resolve_subject(text, sources), store.close)
    store.close()


def _no_state() -> Any:
    raise AssertionError("these tests name subjects by hub id or pseudonym")


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _app(tmp_path: Path, views_url: str, users_url: str, sink: ListSink, clock: Clock,
         desk: AuditorDesk, **extra: Any) -> Any:  # fmt: skip
    return create_app(
        config(tmp_path, views_url, users_url, **extra),
        recorder=AccessRecorder(lambda: sink, "hub.audit"),
        desk=AuditorDesk(desk.store, desk.resolve),  # the module closes the store
        clock=clock,
    )


@pytest.fixture
def client(tmp_path: Path, views_url: str, users_url: str, sink: ListSink, clock: Clock,
           desk: AuditorDesk) -> Iterator[TestClient]:  # fmt: skip
    with TestClient(_app(tmp_path, views_url, users_url, sink, clock, desk)) as test_client:
        yield test_client


def _key(key: tuple[str, str]) -> dict[str, str]:
    return {"scheme": key[0], "id": key[1]}


def _table(page: str, anchor: str) -> str:
    start = page.index(f'id="{anchor}"')
    return page[start : page.index("</section>", start)]


# -- the auditor's reports ----------------------------------------------------------------------


def test_search_by_subject_and_decision_shows_the_deny_and_records_the_query(
    client: TestClient, sink: ListSink
) -> None:
    sign_in(client, "dpo")

    page = client.get("/auditor/search", params={
        "subject": JORDAN_ID, "decision": "deny", "justification": "DHR 2015/7",
    })  # fmt: skip

    assert page.status_code == 200
    assert "<option selected>deny</option>" in page.text  # the form keeps what was asked
    assert "<option>published</option>" in page.text
    entries = _table(page.text, "entries")
    assert "no clause permits iom.cohort_entered from police to mals" in entries
    assert entries.count("<tr>") == 2  # the header and the one deny
    [asked] = sink.entries("auditor_query")
    assert (asked.component, asked.actor, asked.role, asked.outcome) == (
        "web", "dpo", "auditor", "ok",
    )  # fmt: skip
    assert asked.subject_ref == JORDAN and asked.justification == "DHR 2015/7"
    assert asked.details["command"] == "web audit search"
    assert asked.details["decision"] == "deny" and asked.details["output"] == "html"


def test_the_disclosure_report_lists_recipients_fields_clauses_and_withheld_fields(
    client: TestClient,
) -> None:
    sign_in(client, "dpo")

    page = client.get("/auditor/disclosure", params={"subject": JORDAN}).text

    recipients = _table(page, "recipients")
    for audience, received, withheld in (
        ("kmbc", "cohort (keep); priority_band (keep)", "selection_reason"),
        ("mals", "referral_id (pseudonymise); risk_level (keep)", "offence_summary"),
        ("probation_crc", "assigned_on (keep); cohort (keep); mentor_id (pseudonymise); "
         "priority_band (keep)", "meeting_arrangements, selection_reason"),
    ):  # fmt: skip
        assert f"<td>{audience}</td>" in recipients
        assert f"<td>{received}</td>" in recipients and f"<td>{withheld}</td>" in recipients
    entries = _table(page, "entries")
    assert entries.count("<td>delivered</td>") == 6 and "<td>c3</td>" in entries
    assert "retracted 2015-03-15T16:00:00.000Z (consent_withdrawn)" in entries
    assert f"{len(TRAIL)} entries, head" in page


def test_what_one_agency_knew_at_a_time_leaves_out_later_and_other_deliveries(
    client: TestClient,
) -> None:
    sign_in(client, "dpo")

    page = client.get("/auditor/disclosure", params={
        "subject": JORDAN_ID, "agency": "probation_crc", "as_of": "2015-02-01",
    }).text  # fmt: skip

    entries = _table(page, "entries")
    assert entries.count("<td>delivered</td>") == 1  # e1 only: e3 came on 2015-02-20
    assert "<td>e1</td>" in entries and "<td>e3</td>" not in entries
    assert "<td>kmbc</td>" not in page and "<td>mals</td>" not in page


def test_denials_list_deny_decisions_and_dlq_rejections_with_reasons(client: TestClient) -> None:
    sign_in(client, "dpo")

    entries = _table(client.get("/auditor/denials", params={"agency": ""}).text, "entries")

    assert "<td>denied</td>" in entries and "no clause permits" in entries
    assert "<td>dlq</td>" in entries and "<td>unknown_schema</td>" in entries
    assert "ingest.police[0]@7 -&gt; ingest.police.dlq" in entries


def test_sharing_over_time_counts_deliveries_per_pair_per_month(client: TestClient) -> None:
    sign_in(client, "dpo")

    page = client.get("/auditor/sharing", params={"by": "month"}).text

    pairs = _table(page, "pairs")
    assert "<td>2015-01</td><td>police</td><td>kmbc</td><td>1</td><td>1</td>" in pairs
    assert "<td>2015-02</td><td>police</td><td>kmbc</td><td>1</td><td>1</td><td>+0</td>" in pairs
    assert "<td>2015-03</td><td>police</td><td>kmbc</td><td>1</td><td>1</td><td>+0</td>" in pairs
    totals = _table(page, "totals")
    assert "<td>2015-02</td><td>3</td>" in totals


def test_each_report_downloads_as_csv_and_prints_and_each_is_recorded(
    client: TestClient, sink: ListSink
) -> None:
    sign_in(client, "dpo")
    asks = {
        "/auditor/search": {"subject": JORDAN_ID},
        "/auditor/disclosure": {"subject": JORDAN_ID},
        "/auditor/denials": {"since": "2015-01-01"},
        "/auditor/sharing": {"by": "quarter"},
    }
    for path, params in asks.items():
        page = client.get(path, params=params).text
        downloaded = client.get(path, params={**params, "format": "csv"})
        assert downloaded.headers["content-type"].startswith("text/csv")
        assert downloaded.headers["content-disposition"].startswith("attachment; filename=")
        assert downloaded.headers["cache-control"] == "no-store"
        rows = list(csv.DictReader(io.StringIO(downloaded.text)))
        assert rows, path
        printable = client.get(path, params={**params, "format": "print"}).text
        assert 'class="printable"' in printable and "<form" not in printable
        assert 'href="/static/print.css"' in printable and "<script" not in printable
        assert 'id="csv-link"' in page and "format=csv" in page
    search_csv = client.get("/auditor/search", params={"subject": JORDAN_ID, "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(search_csv.text)))
    assert {r["subject_ref"] for r in rows} == {JORDAN}
    assert {r["kind"] for r in rows} >= {"delivered", "decided", "retracted", "corrected"}

    asked = sink.entries("auditor_query")
    assert [(e.details["command"], e.details["output"]) for e in asked] == [
        (f"web audit {command}", output)
        for command in ("search", "disclosure-report", "denials", "sharing")
        for output in ("html", "csv", "print")
    ] + [("web audit search", "csv")]


def test_no_answer_when_the_trail_does_not_take_the_query(
    client: TestClient, sink: ListSink
) -> None:
    sign_in(client, "dpo")
    sink.fail = True

    for path in ("/auditor/search", "/auditor/disclosure", "/auditor/denials"):
        response = client.get(path, params={"subject": JORDAN_ID, "format": "csv"})
        assert response.status_code == 503, path
        assert "did not take the record of this query" in response.text
        assert "kiom-isp" not in response.text and "unknown_schema" not in response.text


def test_a_bad_filter_is_a_readable_400(client: TestClient) -> None:
    sign_in(client, "dpo")

    bad_kind = client.get("/auditor/search", params={"kind": "gossip"})
    bad_time = client.get("/auditor/denials", params={"since": "last tuesday"})
    no_subject = client.get("/auditor/disclosure", params={"subject": ""})

    assert [r.status_code for r in (bad_kind, bad_time, no_subject)] == [400, 400, 400]
    assert "expected one of" in bad_kind.text and "last tuesday" in bad_time.text


# -- PR-6: who may read the trail --------------------------------------------------------------

# Every route of the portal, with a request that exercises it; the test below fails when a
# route is added without being listed here.
ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/"): "/",
    ("GET", "/login"): "/login",
    ("POST", "/login"): "/login",
    ("POST", "/logout"): "/logout",
    ("GET", "/search"): "/search?q=jo",
    ("GET", "/subject"): "/subject?scheme={scheme}&id={id}",
    ("GET", "/auditor"): "/auditor",
    ("GET", "/auditor/search"): f"/auditor/search?subject={JORDAN_ID}",
    ("GET", "/auditor/disclosure"): f"/auditor/disclosure?subject={JORDAN_ID}",
    ("GET", "/auditor/denials"): "/auditor/denials?agency=police",
    ("GET", "/auditor/sharing"): "/auditor/sharing?by=month",
}
PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/"), ("POST", "/logout")}


def _expected(route: tuple[str, str], role: str | None) -> int:
    if route in PUBLIC:
        return -1  # checked by their own tests
    if role is None:
        return 303  # to the sign-in page
    auditor_route = route[1].startswith("/auditor")
    return 200 if auditor_route == (role == "auditor") else 403


def test_pr6_only_the_auditor_role_reads_the_trail_on_every_route(
    client: TestClient, sink: ListSink
) -> None:
    """PR-6: the audit routes answer the auditor role only (403 for every other role), portal
    routes refuse the auditor, and every audit read is on the trail."""
    declared = {
        (method, route.path)
        for route in client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    assert declared == set(ROUTES), "a route without an expectation in ROUTES"
    seen: dict[tuple[tuple[str, str], str | None], int] = {}
    for role in (None, *ROLES):
        client.cookies.clear()
        if role is not None:
            assert sign_in(client, ROLES[role]).status_code == 303
        audience = USERS[ROLES[role]][0] if role else "police.iom"
        scheme, local_id = JORDAN_IN_VIEWS.get(audience, JORDAN_IN_VIEWS["police.iom"])
        for route, target in ROUTES.items():
            if route in PUBLIC:
                continue
            response = client.request(route[0], target.format(scheme=scheme, id=local_id),
                                      follow_redirects=False)  # fmt: skip
            seen[(route, role)] = response.status_code
            if response.status_code == 403:
                assert "kiom-isp" not in response.text and "Jordan" not in response.text
    assert seen == {
        (route, role): _expected(route, role)
        for route in ROUTES
        if route not in PUBLIC
        for role in (None, *ROLES)
    }
    audit_reads = sum(1 for (route, role), code in seen.items()
                      if code == 200 and route[1].startswith("/auditor/"))  # fmt: skip
    asked = sink.entries("auditor_query")
    assert audit_reads == 4 and len(asked) == audit_reads
    assert {e.actor for e in asked} == {"dpo"}
    denied = sink.entries("access_denied")
    assert {(e.actor, e.reason) for e in denied} >= {
        (ROLES["practitioner"], "role practitioner on /auditor/search"),
        (ROLES["mentor"], "role mentor on /auditor/disclosure"),
        (ROLES["auditor"], "role auditor on /subject"),
    }


# -- hardening (issue 7 item 4) -----------------------------------------------------------------


def test_auditor_pages_carry_the_security_headers_and_hsts_only_over_https(
    tmp_path: Path, views_url: str, users_url: str, sink: ListSink, clock: Clock,
    desk: AuditorDesk, client: TestClient,
) -> None:  # fmt: skip
    sign_in(client, "dpo")
    plain = client.get("/auditor/search", params={"subject": JORDAN_ID})
    assert plain.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in plain.headers["content-security-policy"]
    assert "unsafe-inline" not in plain.headers["content-security-policy"]
    assert "<script" not in plain.text and " style=" not in plain.text
    assert "strict-transport-security" not in plain.headers

    with TestClient(_app(tmp_path, views_url, users_url, sink, clock, desk),
                    base_url="https://portal.example") as secure:  # fmt: skip
        assert (
            secure.get("/login").headers["strict-transport-security"].startswith("max-age=31536000")
        )
    app = _app(tmp_path, views_url, users_url, sink, clock, desk, secure_cookies=True)
    with TestClient(app) as behind_proxy:  # TLS ends at a proxy in front
        assert "strict-transport-security" in behind_proxy.get("/login").headers


def test_sign_in_is_rate_limited_per_address_across_names(
    tmp_path: Path, views_url: str, users_url: str, sink: ListSink, clock: Clock,
    desk: AuditorDesk,
) -> None:  # fmt: skip
    app = _app(tmp_path, views_url, users_url, sink, clock, desk, login_attempts=6,
               login_window_s=60)  # fmt: skip
    with TestClient(app) as client:
        # one guess each at six names: no name reaches its lock-out, the address reaches its limit
        codes = [sign_in(client, f"guess.{n}", "a guess").status_code for n in range(6)]
        limited = sign_in(client, "iom.officer")  # even the right password
        clock.now += 61
        after = sign_in(client, "iom.officer")

    assert codes == [401] * 6
    assert limited.status_code == 429 and "Too many sign-in attempts" in limited.text
    assert after.status_code == 303
    assert "too many sign-in attempts from one address" in [
        e.reason for e in sink.entries("login_failed")
    ]


def test_a_session_ends_after_eight_hours_however_busy(client: TestClient, clock: Clock) -> None:
    sign_in(client, "dpo")
    for _ in range(16):  # a request every 29 minutes: never idle for 30
        clock.now += 29 * 60
        assert client.get("/auditor").status_code == 200
    clock.now += 29 * 60  # 8 h 12 min since sign-in

    response = client.get("/auditor", follow_redirects=False)

    assert response.status_code == 303 and "expired=1" in response.headers["location"]


def test_no_secret_or_payload_value_reaches_any_log_line(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A whole portal session (failed and good sign-ins, a refused form, searches, a subject
    page, every auditor report) with every log captured: no password, session cookie, CSRF
    token, justification, subject id or shared value appears in any of them."""
    wrong_password = "CANARY-WRONG-PASSWORD-7731"
    justification = "CANARY-JUSTIFICATION-4410"
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        sign_in(client, "iom.officer", wrong_password)
        sign_in(client, "iom.officer")
        cookie, token = client.cookies["hub_session"], csrf_of(client.get("/search").text)
        client.post("/logout", data={"csrf_token": "CANARY-FORGED-TOKEN"})
        client.get("/search", params={"q": "MP-0042"})
        subject = client.get("/subject", params=_key(JORDAN_IN_VIEWS["police.iom"]))
        assert "CANARY-ARREST-CIRCUMSTANCES" in subject.text  # the page did show values
        sign_in(client, "mentor17")
        client.get("/subject", params=_key(JORDAN_IN_VIEWS["mals.mentor"]))
        client.get("/auditor/search")  # a mentor on an audit route
        sign_in(client, "dpo")
        for path in ("/auditor/search", "/auditor/disclosure"):
            client.get(path, params={"subject": JORDAN_ID, "justification": justification})
        client.get("/auditor/denials", params={"justification": justification, "format": "csv"})

    lines = [json.dumps(e, default=str) for e in events]
    lines += [
        f"{r.name} {r.getMessage()} {r.args!r}"
        for r in caplog.records
        if not r.name.startswith(("httpx", "httpcore"))  # the test's own client, not the portal
    ]
    assert {e["event"] for e in events} >= {"signed_in", "csrf_refused", "audit_entry_recorded"}
    text = "\n".join(lines)
    for canary in (PASSWORD, wrong_password, cookie, token, justification, "MP-0042",
                   "MALS-0107", JORDAN_ID, "CANARY", "Jordan", "14 Ashworth Road"):  # fmt: skip
        assert canary not in text, canary
