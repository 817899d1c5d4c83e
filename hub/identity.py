"""Identity changes as records: what the router writes when the policy state merges or splits
subjects, or finds a candidate pair (DESIGN.md: identity links are events, ``hub.identity``).

- A merge (:class:`hub.policy.state.Merge`): every audience holding deliveries about the
  surviving subject gets an ``identity.subject_merged`` on ``deliver.<audience>`` for each id it
  knew the two subjects by that is not the surviving one (its own local id, otherwise its own
  pseudonym), so its view files both timelines under one subject. The record is remembered as a
  delivery (clause ``identity:merge:<merged subject>``) so that it can be retracted.
- An identifier unlink (:class:`hub.policy.state.Unlink`, S8's mis-link): the merge records that
  joined the subject the identifier derives on its own are retracted (``delivery.retracted``,
  reason ``link_retracted``), and the views split the timelines again.
- A candidate (:class:`hub.policy.state.Candidate`): an ``identity.candidate_proposed`` on
  ``hub.identity``, never delivered, for a person to confirm (``hub identity confirm``) or reject.

Record ids are uuid5 of what they say, so a batch replayed after an abort writes the same ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from hub.audit.entry import AuditEntry, make_entry_id, payload_hash
from hub.policy.agreements import AgreementSet
from hub.policy.state import Candidate, Merge, PolicyState, Unlink
from hub.policy.transform import PSEUDONYM_SCHEME, PseudonymKeys
from hub.ports import OutRecord
from hub.serde.codec import AvroCodec
from hub.topics import Topics

IDENTITY_NAMESPACE = uuid.UUID("5d1f7c9e-2b8a-4c61-9a37-0e4b6f2d8c15")
MERGED = "identity.subject_merged"
PROPOSED = "identity.candidate_proposed"
DECIDED = "identity.candidate_decided"
HUB_ONLY = frozenset({"delivery.retracted", MERGED, PROPOSED, DECIDED})
HUB_AGENCY = "hub"


class RouterParts(Protocol):
    """What the identity records need from the router."""

    topics: Topics
    codec: AvroCodec
    agreements: AgreementSet
    state: PolicyState
    keys: PseudonymKeys

    def _retraction(
        self, cause: Mapping[str, Any], retracted: str, audience: str, clause: str | None,
        reason: str, subject: str, subject_ref: str,
    ) -> list[OutRecord]: ...  # fmt: skip

    def _audit_record(self, entry: AuditEntry) -> OutRecord: ...

    def _headers(self, event_type: str | None) -> tuple[tuple[str, bytes], ...]: ...

    def clock(self) -> Any: ...


def candidate_id(a: str, b: str) -> str:
    """The stable id of a candidate pair of subjects (either order)."""
    left, right = sorted((a, b))
    return str(uuid.uuid5(IDENTITY_NAMESPACE, f"candidate|{left}|{right}"))


def _envelope(
    cause: Mapping[str, Any], event_id: str, event_type: str, subject: tuple[str, str]
) -> dict[str, Any]:
    return hub_envelope(
        event_id, event_type, occurred_at=cause["occurred_at"],
        recorded_at=cause["recorded_at"], jurisdiction=cause["jurisdiction"], subject=subject,
    )  # fmt: skip


def hub_envelope(
    event_id: str, event_type: str, *, occurred_at: Any, recorded_at: Any, jurisdiction: str,
    subject: tuple[str, str], source_system: str = "router",
) -> dict[str, Any]:
    """The envelope of an event the hub writes itself (a retraction, an identity decision): from
    the hub, no identifiers, the subject as (scheme, local id) of whoever receives it."""
    return {
        "event_id": event_id,
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": occurred_at,
        "recorded_at": recorded_at,
        "effective_date": None,
        "source_agency": HUB_AGENCY,
        "source_system": source_system,
        "jurisdiction": jurisdiction,
        "subject": {
            "local_id_scheme": subject[0],
            "local_id": subject[1],
            "identifiers": [],
            "hub_subject_id": None,
        },
        "supersedes_event_id": None,
        "correction_reason": None,
        "sensitivity": "standard",
        "compartment": None,
        "consent_ref": None,
        "responsible_org": None,
    }


def _key(
    r: RouterParts, audience: str, subject: str, local: Mapping[str, tuple[str, str]] | None
) -> tuple[str, str]:
    """How ``audience`` knows ``subject``: its agency's local id, else its own pseudonym."""
    agency = r.agreements.agency_of_audience(audience)
    own = local.get(agency) if local is not None else r.state.local_identifier_for(subject, agency)
    return own if own is not None else (PSEUDONYM_SCHEME, r.keys.pseudonym(audience, subject))


def merge_outputs(
    r: RouterParts, event: Mapping[str, Any], merges: Sequence[Merge], subject_ref: str
) -> list[OutRecord]:
    """The ``identity.subject_merged`` records (and their audit entries) for ``merges``."""
    envelope = event["envelope"]
    outputs: list[OutRecord] = []
    for merge in merges:
        before = {merge.old: dict(merge.old_locals), merge.new: dict(merge.new_locals)}
        for audience in r.state.audiences_of(merge.new):
            after = _key(r, audience, merge.new, None)
            for subject, local in before.items():
                known = _key(r, audience, subject, local)
                if known == after:
                    continue
                record_id = str(uuid.uuid5(
                    IDENTITY_NAMESPACE,
                    f"merge|{audience}|{known[0]}:{known[1]}|{after[0]}:{after[1]}|"
                    f"{merge.event_id}",
                ))  # fmt: skip
                record = {
                    "envelope": _envelope(envelope, record_id, MERGED, after),
                    "merged_local_id_scheme": known[0],
                    "merged_local_id": known[1],
                    "cause_event_id": merge.event_id,
                    "disclosure": None,
                }
                value = r.codec.encode(record)
                clause = f"identity:merge:{merge.old}"  # what an unlink of it retracts
                r.state.record_delivery(record_id, audience, merge.new, clause, False, None)
                topic = r.topics.deliver(audience)
                outputs.append(OutRecord(topic, after[1].encode(), value, r._headers(MERGED)))
                entry = AuditEntry(
                    entry_id=make_entry_id("delivered", record_id, audience),
                    kind="delivered",
                    at=r.clock(),
                    component="router",
                    outcome="ok",
                    subject_ref=subject_ref,
                    event_id=record_id,
                    event_type=MERGED,
                    source_agency=HUB_AGENCY,
                    audience=audience,
                    clause_ids=(clause,),
                    payload_hash=payload_hash(value),
                    details={"topic": topic, "cause_event_id": merge.event_id},
                )
                outputs.append(r._audit_record(entry))
    return outputs


def unlink_outputs(
    r: RouterParts, event: Mapping[str, Any], unlinks: Sequence[Unlink], subject_ref: str
) -> list[OutRecord]:
    """Retractions of the merge records an identifier unlink undoes."""
    outputs: list[OutRecord] = []
    for unlink in unlinks:
        for record_id, audience in r.state.merge_deliveries(unlink.holder, unlink.alone):
            outputs += r._retraction(
                event, record_id, audience, None, "link_retracted", unlink.holder, subject_ref
            )
    return outputs


def event_unlink_outputs(
    r: RouterParts, event: Mapping[str, Any], retracted: str, subject: str, subject_ref: str
) -> list[OutRecord]:
    """An event attached to the wrong person: retract it from everyone who received it."""
    outputs: list[OutRecord] = []
    for audience in r.state.deliveries_of(retracted):
        outputs += r._retraction(
            event, retracted, audience, None, "link_retracted", subject, subject_ref
        )
    return outputs


def candidate_outputs(
    r: RouterParts, event: Mapping[str, Any], candidates: Sequence[Candidate]
) -> list[OutRecord]:
    """``identity.candidate_proposed`` records on ``hub.identity`` (never delivered)."""
    envelope = event["envelope"]
    outputs: list[OutRecord] = []
    for c in candidates:
        pair = candidate_id(c.subject, c.other)
        record_id = str(uuid.uuid5(IDENTITY_NAMESPACE, f"proposed|{pair}|{envelope['event_id']}"))
        record = {
            "envelope": {
                **_envelope(envelope, record_id, PROPOSED, ("anonymous_ref", pair)),
                "sensitivity": envelope.get("sensitivity") or "standard",
            },
            "candidate_id": pair,
            "left_ref": c.ref,
            "right_ref": c.other_ref,
            "date_of_birth": c.born,
            "name_similarity": c.score,
            "disclosure": None,
        }
        value = r.codec.encode(record)
        outputs.append(OutRecord(r.topics.identity, pair.encode(), value, r._headers(PROPOSED)))
    return outputs
