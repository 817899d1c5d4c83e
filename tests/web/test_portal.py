"""The practitioners' portal through FastAPI's test client, on views the real policy engine
filled from scenario S1 (tests/web/scenario.py).

Most tests collect the audit entries in memory; ``test_access_entries_reach_the_audit_topic``
produces them to the real broker and reads them back from ``hub.audit``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from hub.adapters.kafka import SafeProducer, ensure_topics, producer_config
from hub.audit.entry import AuditEntry
from hub.web import create_app
from hub.web.audit import AccessRecorder, subject_ref
from hub.web.passwords import hash_password, verify_password
from hub.web.users import open_user_store
from tests.hubtest import read_all
from tests.web.scenario import ALEX, JORDAN, SAM, fill_views
from tests.web.support import PASSWORD, Clock, ListSink, add_users, config, csrf_of, sign_in


@pytest.fixture(scope="module")
def views_url(tmp_path_factory: pytest.TempPathFactory, catalogue: Any) -> str:
    return fill_views(tmp_path_factory.mktemp("views-home"), catalogue)


@pytest.fixture(scope="module")
def users_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('users')}/users.db"
    add_users(open_user_store(url))
    return url


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(
    tmp_path: Path, views_url: str, users_url: str, sink: ListSink, clock: Clock
) -> Iterator[TestClient]:
    app = create_app(
        config(tmp_path, views_url, users_url),
        recorder=AccessRecorder(lambda: sink, "hub.audit"),
        clock=clock,
    )
    with TestClient(app) as test_client:
        yield test_client


def subject_path(key: tuple[str, str]) -> str:
    return f"/subject?scheme={key[0]}&id={key[1]}"


# -- signing in ---------------------------------------------------------------------------------


def test_the_right_password_signs_in_and_opens_the_search_page(client: TestClient) -> None:
    response = sign_in(client, "iom.officer")

    assert response.status_code == 303 and response.headers["location"] == "/"
    page = client.get("/")
    assert page.status_code == 200 and "iom.officer · practitioner · police.iom" in page.text


def test_a_wrong_password_signs_nobody_in(client: TestClient, sink: ListSink) -> None:
    response = sign_in(client, "iom.officer", "not the password at all")

    assert response.status_code == 401
    assert "Wrong user name or password." in response.text
    assert client.get("/search", follow_redirects=False).headers["location"].startswith("/login")
    assert [e.reason for e in sink.entries("login_failed")] == ["wrong user name or password"]


def test_five_failures_lock_the_name_out_for_fifteen_minutes(
    client: TestClient, users_url: str, clock: Clock
) -> None:
    # the lock-out is per name: a user of its own, so other tests are not locked out
    open_user_store(users_url).add("locked.out", "police.iom", "practitioner", PASSWORD)
    codes = [sign_in(client, "locked.out", f"wrong guess {n}").status_code for n in range(5)]

    assert codes == [401, 401, 401, 401, 429]
    refused = sign_in(client, "locked.out")  # even the right password, while locked out
    assert refused.status_code == 429 and "Try again in 15 minute(s)" in refused.text
    clock.now += 14 * 60
    assert sign_in(client, "locked.out").status_code == 429
    clock.now += 61
    assert sign_in(client, "locked.out").status_code == 303


def test_an_unknown_name_is_locked_out_like_a_known_one(client: TestClient) -> None:
    codes = [sign_in(client, "nobody.here", "a guess").status_code for _ in range(6)]

    assert codes == [401, 401, 401, 401, 429, 429]


def test_a_post_without_the_csrf_token_is_refused(client: TestClient) -> None:
    client.get("/login")  # the pre-session cookie exists, the form field does not
    no_token = client.post("/login", data={"username": "iom.officer", "password": PASSWORD})
    wrong = client.post(
        "/login", data={"username": "iom.officer", "password": PASSWORD, "csrf_token": "x" * 43}
    )
    fresh = TestClient(client.app)  # no cookie at all
    no_cookie = fresh.post(
        "/login",
        data={"username": "iom.officer", "password": PASSWORD, "csrf_token": "x" * 43},
    )

    assert [r.status_code for r in (no_token, wrong, no_cookie)] == [403, 403, 403]
    assert sign_in(client, "iom.officer").status_code == 303
    assert client.post("/logout", follow_redirects=False).status_code == 403
    assert client.get("/search").status_code == 200  # still signed in
    token = csrf_of(client.get("/search").text)
    out = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/search", follow_redirects=False).status_code == 303


def test_signing_in_starts_a_new_session_with_a_new_token(client: TestClient) -> None:
    before = csrf_of(client.get("/login").text)
    sign_in(client, "iom.officer")

    assert csrf_of(client.get("/search").text) != before


def test_a_session_ends_after_thirty_idle_minutes(client: TestClient, clock: Clock) -> None:
    sign_in(client, "iom.officer")
    clock.now += 29 * 60
    assert client.get("/search").status_code == 200
    clock.now += 29 * 60  # 58 minutes signed in, but never 30 idle
    assert client.get("/search").status_code == 200
    clock.now += 30 * 60 + 1

    response = client.get("/search", follow_redirects=False)

    assert response.status_code == 303 and "expired=1" in response.headers["location"]
    assert "Your session ended" in client.get(response.headers["location"]).text


def test_a_tampered_session_cookie_signs_nobody_in(client: TestClient) -> None:
    sign_in(client, "mals.worker")
    payload, _, signature = client.cookies["hub_session"].partition(".")
    forged = payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB")
    client.cookies.clear()
    client.cookies.set("hub_session", f"{forged}.{signature}")

    assert client.get("/search", follow_redirects=False).status_code == 303


def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    sign_in(client, "iom.officer")
    for response in (
        client.get("/login"),
        client.get("/search"),
        client.get(subject_path(JORDAN["police.iom"])),
        client.get("/subject?scheme=x&id=nobody"),
        client.get("/static/portal.css"),
    ):
        headers = response.headers
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-security-policy"].startswith("default-src 'self'")
        assert headers["referrer-policy"] == "no-referrer"
    assert client.get(subject_path(JORDAN["police.iom"])).headers["cache-control"] == "no-store"


def test_the_session_cookie_is_httponly_and_samesite_strict(client: TestClient) -> None:
    cookie = sign_in(client, "iom.officer").headers["set-cookie"].lower()

    assert "httponly" in cookie and "samesite=strict" in cookie


# -- who sees what ------------------------------------------------------------------------------


def test_search_finds_people_by_local_id_and_by_name(client: TestClient) -> None:
    sign_in(client, "mals.worker")

    by_name = client.get("/search", params={"q": "jord"}).text
    by_id = client.get("/search", params={"q": "mals-02"}).text
    nothing = client.get("/search", params={"q": "MP-0042"}).text  # a police id: not in this view

    assert "MALS-0107" in by_name and "MALS-0200" not in by_name
    assert "MALS-0200" in by_id and "Sam CANARY-SAM-FAMILY" in by_id
    assert 'id="no-results"' in nothing


def test_a_user_of_another_audience_cannot_open_a_subject(client: TestClient) -> None:
    sign_in(client, "mals.worker")

    police_id = client.get(subject_path(JORDAN["police.iom"]))

    assert police_id.status_code == 404
    assert "MP-0042" not in police_id.text and "CANARY" not in police_id.text
    sign_in(client, "iom.officer")
    assert client.get(subject_path(JORDAN["police.iom"])).status_code == 200
    assert client.get(subject_path(JORDAN["mals"])).status_code == 404


def test_a_mentor_sees_only_their_own_mentees(client: TestClient, sink: ListSink) -> None:
    sign_in(client, "mentor17")

    mentees = client.get("/search").text
    assert "MALS-0107" in mentees and "Jordan" in mentees
    assert "MALS-0200" not in mentees  # Sam is MENTOR-99's
    assert "MALS-0300" not in mentees  # Alex was reassigned to MENTOR-99
    assert "MALS-0200" not in client.get("/search", params={"q": "sam"}).text
    for other in (SAM, ALEX):
        refused = client.get(subject_path(other))
        assert refused.status_code == 404 and "CANARY" not in refused.text
    assert [e.subject_ref for e in sink.entries("access_denied")] == [
        subject_ref(*SAM),
        subject_ref(*ALEX),
    ]

    sign_in(client, "mentor99")
    theirs = client.get("/search").text
    assert "MALS-0200" in theirs and "MALS-0300" in theirs and "MALS-0107" not in theirs


def test_a_mentor_sees_the_mentor_fields_and_nothing_else(client: TestClient) -> None:
    sign_in(client, "mentor17")

    page = client.get(subject_path(JORDAN["mals.mentor"])).text

    for shown in ("Jordan", "HMP Liverpool gate, Hornby Road", "Meet at the gate at 09:30",
                  "Curfew 19:00 to 07:00", "Non-association with named individuals"):  # fmt: skip
        assert shown in page, shown
    for hidden in ("CANARY", "Carol Hughes", "14 Ashworth Road", "L32 7XY", "917",
                   "REF-CRC-300", "Offender manager</dt><dd>", 'id="referrals"'):  # fmt: skip
        assert hidden not in page, hidden


def test_the_iom_officer_sees_the_police_fields(client: TestClient) -> None:
    sign_in(client, "iom.officer")

    page = client.get(subject_path(JORDAN["police.iom"])).text

    for shown in ("14 Ashworth Road", "CANARY-ASSOC-Dean Mercer", "917", "Carol Hughes",
                  "knowsley_iom", "CANARY-ARREST-CIRCUMSTANCES"):  # fmt: skip
        assert shown in page, shown
    for hidden in ("MENTOR-17", "Meet at the gate", "HMP Liverpool gate"):
        assert hidden not in page, hidden


def test_withheld_fields_are_shown_as_withheld_with_their_clause(client: TestClient) -> None:
    sign_in(client, "mentor17")

    page = client.get(subject_path(JORDAN["mals.mentor"])).text

    withheld = (("family_name", "mals-10"), ("phone", "mals-10"),
                ("offender_manager", "mals-12"), ("destination_address", "mals-12"))  # fmt: skip
    for field, clause in withheld:
        assert (
            f'data-field="{field}"><span class="withheld">withheld '
            f'<span class="clause">(clause {clause})</span></span>'
        ) in page, field


def test_an_auditor_has_no_subject_pages(client: TestClient) -> None:
    sign_in(client, "dpo")

    assert client.get("/", follow_redirects=False).headers["location"] == "/auditor"
    assert client.get(subject_path(JORDAN["mals"])).status_code == 403
    assert client.get("/search").status_code == 403


def test_a_page_needs_a_signed_in_user(client: TestClient) -> None:
    response = client.get(subject_path(JORDAN["mals"]), follow_redirects=False)

    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=%2Fsubject")


# -- the audit trail ----------------------------------------------------------------------------


def test_each_subject_page_writes_an_access_entry(client: TestClient, sink: ListSink) -> None:
    sign_in(client, "iom.officer")
    client.get(subject_path(JORDAN["police.iom"]))
    client.get(subject_path(JORDAN["police.iom"]))
    sign_in(client, "mentor17")
    client.get(subject_path(JORDAN["mals.mentor"]))

    entries = [e for e in sink.entries("access") if e.details["page"] == "subject"]

    assert [(e.actor, e.role, e.audience, e.subject_ref) for e in entries] == [
        ("iom.officer", "practitioner", "police.iom", subject_ref(*JORDAN["police.iom"])),
        ("iom.officer", "practitioner", "police.iom", subject_ref(*JORDAN["police.iom"])),
        ("mentor17", "mentor", "mals.mentor", subject_ref(*JORDAN["mals.mentor"])),
    ]
    assert len({e.entry_id for e in entries}) == 3
    assert entries[2].purpose == "Arranging and holding mentoring sessions"
    assert set(entries[2].clause_ids) == {"mals-10", "mals-11", "mals-12", "mals-13"}
    assert entries[0].details["subject_scheme"] == "police_nominal_id"
    raw = b"".join(value for _, value in sink.records)
    assert b"MP-0042" not in raw and b"Jordan" not in raw  # metadata and hashes only


def test_no_page_is_shown_when_the_audit_trail_does_not_take_the_entry(
    client: TestClient, sink: ListSink
) -> None:
    sign_in(client, "mentor17")
    sink.fail = True

    response = client.get(subject_path(JORDAN["mals.mentor"]))

    assert response.status_code == 503
    assert "did not take the record of this access" in response.text
    assert "Jordan" not in response.text and "HMP Liverpool gate" not in response.text


@pytest.mark.kafka
def test_access_entries_reach_the_audit_topic(
    kafka_bootstrap: str, topics: Any, tmp_path: Path, views_url: str, users_url: str
) -> None:
    ensure_topics(kafka_bootstrap, {topics.audit: 1})
    recorder = AccessRecorder(
        lambda: SafeProducer(producer_config(kafka_bootstrap, **{"message.timeout.ms": 5000})),
        topics.audit,
    )
    app = create_app(config(tmp_path, views_url, users_url), recorder=recorder)
    with TestClient(app) as client:
        sign_in(client, "iom.officer")
        assert client.get(subject_path(JORDAN["police.iom"])).status_code == 200
        sign_in(client, "mentor17")
        assert client.get(subject_path(JORDAN["mals.mentor"])).status_code == 200

    trail = read_all(kafka_bootstrap, topics.audit)
    entries = [AuditEntry.from_json_bytes(m.value()) for m in trail]
    access = [e for e in entries if e.kind == "access"]

    assert [(e.actor, e.audience, e.subject_ref, e.details["page"]) for e in access] == [
        ("iom.officer", "police.iom", subject_ref(*JORDAN["police.iom"]), "subject"),
        ("mentor17", "mals.mentor", subject_ref(*JORDAN["mals.mentor"]), "subject"),
    ]
    assert [e.kind for e in entries].count("login_ok") == 2


# -- users --------------------------------------------------------------------------------------


def test_passwords_are_scrypt_hashes_with_their_own_salt() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)

    assert first.startswith("scrypt$16384$8$1$") and first != second
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)
    assert not verify_password(PASSWORD + "!", first)
    assert not verify_password(PASSWORD, "scrypt$garbage")


def test_hub_web_add_user_reads_the_password_from_stdin(tmp_path: Path) -> None:
    from hub.cli import app

    url = f"sqlite:///{tmp_path}/users.db"
    runner = CliRunner()
    added = runner.invoke(
        app,
        ["web", "add-user", "Mentor.Five", "--audience", "mals.mentor", "--role", "mentor",
         "--mentor-id", "MENTOR-5", "--password-stdin", "--users-db", url],
        input=PASSWORD + "\n",
    )  # fmt: skip
    no_mentor_id = runner.invoke(
        app,
        ["web", "add-user", "mentor.six", "--audience", "mals.mentor", "--role", "mentor",
         "--password-stdin", "--users-db", url],
        input=PASSWORD + "\n",
    )  # fmt: skip
    practitioner_in_mentor_view = runner.invoke(
        app,
        ["web", "add-user", "staff", "--audience", "mals.mentor", "--role", "practitioner",
         "--password-stdin", "--users-db", url],
        input=PASSWORD + "\n",
    )  # fmt: skip

    assert added.exit_code == 0, added.output
    user = open_user_store(url).get("mentor.five")
    assert user is not None and (user.audience, user.role, user.mentor_id) == (
        "mals.mentor",
        "mentor",
        "MENTOR-5",
    )
    assert verify_password(PASSWORD, user.password_hash)
    assert "needs --mentor-id" in str(no_mentor_id.exception)
    assert "for role mentor only" in str(practitioner_in_mentor_view.exception)
    assert json.dumps(user.password_hash).count(PASSWORD) == 0
