"""The HTTP ingest API at HTTP level (Starlette's TestClient) against the real broker: what a
partner POSTs is on ``ingest.<agency>`` before the 202, a retried POST is routed once, an agency
writes only as itself, and every bad request gets a 4xx JSON answer naming the field."""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from connectors.http_ingest.app import IngestConfig, create_app
from connectors.http_ingest.tokens import open_token_store
from hub import bootstrap
from hub.adapters.kafka import ensure_topics
from hub.publisher import event_id_for
from tests.conftest import REPO, free_port
from tests.hubtest import hub_settings, read_all

pytestmark = pytest.mark.kafka

DOC: dict[str, Any] = {
    "event_type": "referral.created",
    "source_agency": "probation_crc",
    "source_system": "crc-case",
    "source_key": "REF-2014-0042",
    "occurred_at": "2014-06-02T10:00:00Z",
    "subject": {"local_id": "CRC-881", "local_id_scheme": "probation_case_ref",
                "identifiers": [{"scheme": "prison_number", "value": "A1234BC"}]},
    "payload": {
        "referral_id": "REF-2014-0042", "programme": "mentoring", "referred_on": "2014-06-02",
        "referrer_org": "probation_crc", "receiving_org": "mals",
        "pathways": ["accommodation", "attitudes_thinking_behaviour"],
        "release_date": "2014-06-20", "risk_level": "medium",
        "offender_manager": {"organisation": "probation_crc", "name": "A. Jones"},
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def hub(kafka_bootstrap, registry_url, codec, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The ingest topics of two agencies and one ingest app for the module, with their tokens.
    (Routing a retried POST once is checked with the router in test_probation_sh_eri_eo.py.)"""
    home = tmp_path_factory.mktemp("ingest-home")
    settings = hub_settings(kafka_bootstrap, registry_url, f"t{uuid.uuid4().hex[:10]}.", home)
    topics = bootstrap.topics(settings)
    ensure_topics(kafka_bootstrap, {topics.ingest("probation_crc"): 3, topics.ingest("police"): 3})
    tokens_url = f"sqlite:///{home / 'tokens.db'}"
    store = open_token_store(tokens_url)
    jurisdictions = {a.id: a.jurisdiction for a in bootstrap.agreements(codec.catalogue).agencies()}
    config = IngestConfig(settings.bootstrap_servers, topics, jurisdictions,
                          max_body_bytes=64 * 1024, max_batch=20)  # fmt: skip
    with TestClient(create_app(config, store, codec)) as client:
        yield {
            "settings": settings, "client": client, "store": store, "tokens_url": tokens_url,
            "crc": store.issue("probation_crc"), "police": store.issue("police"),
        }  # fmt: skip


def _post(hub, doc: Any, token: str, path: str = "/v1/events", **kw: Any):  # type: ignore[no-untyped-def]
    return hub["client"].post(path, json=doc, headers={"Authorization": f"Bearer {token}"}, **kw)


def _doc(key: str, **payload: Any) -> dict[str, Any]:
    doc = copy.deepcopy(DOC)
    doc["source_key"] = key
    doc["payload"].update(payload)
    return doc


def _ingested(hub, codec) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    topic = bootstrap.topics(hub["settings"]).ingest("probation_crc")
    out = {}
    for m in read_all(hub["settings"].bootstrap_servers, topic):
        _, record = codec.decode(m.value(), m.topic(), m.partition(), m.offset())
        out.setdefault(record["envelope"]["event_id"], record)
    return out


def test_post_is_on_the_broker_before_the_202(hub, codec) -> None:
    answer = _post(hub, _doc("K-1"), hub["crc"])
    assert answer.status_code == 202, answer.text
    event_id = answer.json()["event_id"]
    assert event_id == event_id_for("probation_crc", "crc-case", "referral.created", "K-1")
    record = _ingested(hub, codec)[event_id]
    envelope = record["envelope"]
    assert envelope["source_agency"] == "probation_crc"
    assert envelope["jurisdiction"] == "UK-ENG"  # the agency's, from policies/agencies.yaml
    assert envelope["occurred_at"] == dt.datetime(2014, 6, 2, 10, tzinfo=dt.UTC)
    assert envelope["subject"]["identifiers"] == [{"scheme": "prison_number", "value": "A1234BC"}]
    assert record["referred_on"] == dt.date(2014, 6, 2)
    assert record["pathways"] == ["accommodation", "attitudes_thinking_behaviour"]
    assert record["offender_manager"]["name"] == "A. Jones"
    assert record["disclosure"] is None


def test_a_retried_post_sends_the_same_event_byte_for_byte(hub, codec) -> None:
    """What the router's dedupe needs: the same event_id with the same bytes (the router then
    drops the copy: test_probation_sh_eri_eo.py routes a retried POST through it)."""
    doc = _doc("K-retry")
    first, second = _post(hub, doc, hub["crc"]), _post(hub, doc, hub["crc"])
    assert first.status_code == second.status_code == 202
    assert first.json()["event_id"] == second.json()["event_id"]
    topic = bootstrap.topics(hub["settings"]).ingest("probation_crc")
    copies = [
        (m.key(), m.value())
        for m in read_all(hub["settings"].bootstrap_servers, topic)
        if codec.decode(m.value())[1]["envelope"]["event_id"] == first.json()["event_id"]
    ]
    assert len(copies) == 2 and copies[0] == copies[1]


def test_an_agency_writes_only_as_itself(hub, codec) -> None:
    with capture_logs() as logs:
        answer = _post(hub, _doc("K-forged"), hub["police"])
    assert answer.status_code == 403
    assert answer.json()["errors"][0]["field"] == "source_agency"
    assert any(e["event"] == "ingest_forbidden" and e["token_agency"] == "police"
               and e["claimed_agency"] == "probation_crc" for e in logs)  # fmt: skip
    forged = event_id_for("probation_crc", "crc-case", "referral.created", "K-forged")
    assert forged not in _ingested(hub, codec)


@pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc", "Bearer hubi_" + "x" * 43])
def test_no_valid_token_is_401(hub, header) -> None:
    headers = {} if header is None else {"Authorization": header}
    answer = hub["client"].post("/v1/events", json=_doc("K-401"), headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["errors"][0]["reason"] == "unauthenticated"


def _missing(field: str) -> dict[str, Any]:
    doc = _doc("K-bad")
    doc["payload"].pop(field)
    return doc


BAD = {
    "missing required field": (_missing("referred_on"), 422, "referred_on", "required"),
    "unparseable date": (_doc("K-bad", referred_on="02/06/2014"), 422, "payload.referred_on",
                         "invalid"),
    "unknown code": (_doc("K-bad", risk_level="huge"), 422, "risk_level", "unknown_code"),
    "unknown payload field": (_doc("K-bad", colour="red"), 422, "payload.colour",
                              "unknown_field"),
    "wrong type": (_doc("K-bad", pathways="accommodation"), 422, "payload.pathways", "invalid"),
    "no time zone": ({**_doc("K-bad"), "occurred_at": "2014-06-02T10:00:00"}, 422,
                     "occurred_at", "invalid"),
    "unknown event type": ({**_doc("K-bad"), "event_type": "referral.invented"}, 422,
                           "event_type", "unknown_event_type"),
    "no source key": ({k: v for k, v in _doc("K-bad").items() if k != "source_key"}, 422,
                      "source_key", "required"),
    "not an object": ([1, 2], 422, "document", "invalid"),
    "another jurisdiction": ({**_doc("K-bad"), "jurisdiction": "NL"}, 422, "jurisdiction",
                             "jurisdiction"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_document_names_the_field(hub, codec, case) -> None:
    doc, status, field, reason = BAD[case]
    answer = _post(hub, doc, hub["crc"])
    assert answer.status_code == status, answer.text
    error = answer.json()["errors"][0]
    assert error["field"] == field and error["reason"] == reason, error
    assert field.split(".")[-1] in error["message"]


def test_bad_requests_are_4xx_json(hub, codec) -> None:
    auth = {"Authorization": f"Bearer {hub['crc']}"}
    client = hub["client"]
    cases = {
        "bad_json": client.post("/v1/events", content=b"{not json",
                                headers={**auth, "Content-Type": "application/json"}),
        "content_type": client.post("/v1/events", content=json.dumps(DOC).encode(),
                                    headers={**auth, "Content-Type": "text/plain"}),
        "too_large": _post(hub, _doc("K-big", reason="x" * 70_000), hub["crc"]),
        "too_many": _post(hub, {"events": [_doc(f"K-{i}") for i in range(21)]}, hub["crc"],
                          "/v1/events/batch"),
        "bad_batch": _post(hub, {"events": []}, hub["crc"], "/v1/events/batch"),
    }  # fmt: skip
    for reason, answer in cases.items():
        assert 400 <= answer.status_code < 500, (reason, answer.status_code)
        assert answer.json()["errors"][0]["reason"] == reason


def test_a_batch_with_one_bad_document_publishes_nothing(hub, codec) -> None:
    events = [_doc("K-all-1"), _doc("K-all-2", referred_on="2014-13-01"), _doc("K-all-3")]
    answer = _post(hub, {"events": events}, hub["crc"], "/v1/events/batch")
    assert answer.status_code == 422
    assert answer.json()["errors"] == [
        {"index": 1, "field": "payload.referred_on", "reason": "invalid",
         "message": "payload.referred_on: '2014-13-01' is not a date YYYY-MM-DD"}
    ]  # fmt: skip
    published = _ingested(hub, codec)
    for key in ("K-all-1", "K-all-3"):
        assert event_id_for("probation_crc", "crc-case", "referral.created", key) not in published


def test_tokens_are_stored_hashed_and_made_by_the_cli(hub, tmp_path: Path) -> None:
    db = tmp_path / "tokens.db"
    made = subprocess.run(
        [str(REPO / ".venv" / "bin" / "hub"), "ingest", "add-token", "eri",
         "--tokens-db", f"sqlite:///{db}"],
        capture_output=True, text=True, check=True, env={"HUB_HOME": str(tmp_path), "PATH": ""},
    )  # fmt: skip
    token = made.stdout.strip()
    assert token.startswith("hubi_") and len(token) > 40
    assert open_token_store(f"sqlite:///{db}").agency_for(token) == "eri"
    assert token.encode() not in db.read_bytes()
    assert (
        hub["crc"].encode() not in Path(hub["tokens_url"].removeprefix("sqlite:///")).read_bytes()
    )
    rotated = hub["store"].issue("police")
    assert hub["store"].agency_for(hub["police"]) is None  # the old token no longer works
    hub["police"] = rotated


def test_a_correction_names_the_source_key_it_corrects(hub, codec) -> None:
    doc = {**_doc("K-1b", release_date="2014-06-27"), "supersedes_source_key": "K-1",
           "correction_reason": "keying_error"}  # fmt: skip
    answer = _post(hub, doc, hub["crc"])
    assert answer.status_code == 202, answer.text
    envelope = _ingested(hub, codec)[answer.json()["event_id"]]["envelope"]
    assert envelope["supersedes_event_id"] == event_id_for(
        "probation_crc", "crc-case", "referral.created", "K-1"
    )
    assert envelope["correction_reason"] == "keying_error"


def test_no_broker_acknowledgement_is_a_503_never_a_202(hub, codec) -> None:
    """A broker that does not answer: the API waits ``ack_timeout_s`` and answers 503, so the
    partner keeps the event and sends it again (the same event_id)."""
    config = IngestConfig(f"127.0.0.1:{free_port()}", bootstrap.topics(hub["settings"]),
                          {"probation_crc": "UK-ENG"}, ack_timeout_s=1.0)  # fmt: skip
    with TestClient(create_app(config, hub["store"], codec)) as client:  # purges on shutdown
        answer = client.post("/v1/events", json=_doc("K-lost"),
                             headers={"Authorization": f"Bearer {hub['crc']}"})  # fmt: skip
    assert answer.status_code == 503
    assert answer.json()["errors"][0]["reason"] == "broker_unavailable"
