"""``hub identity``: a person's decisions about who is who, turned into events the router applies
like any other (DESIGN.md: identity links are events).

- ``candidates``: the router's proposals on ``hub.identity`` (same date of birth, similar names,
  different strong identifiers) that nobody has decided yet.
- ``confirm``: a ``person.identifier_linked`` from the deciding user's agency naming both
  records' identifiers (the router merges the two subjects and tells every view), and an
  ``identity.candidate_decided`` on ``hub.identity``. ``reject`` records the decision only.
- ``link``: the same link without a proposal (two identifiers known to be one person).
- ``unlink``: a ``record.link_retracted``: an identifier linked to the wrong person (the router
  splits the subject it was merged into and retracts the merge from every view), or an event
  attached to the wrong person (``--event``; only the agency that published it may).

The deciding agency publishes with its own Publisher, so the router's checks (an agency writes
only as itself, in its jurisdiction) hold. The decision events' subject is an ``anonymous_ref``
(the decision's own id): they link no one by their subject block, only by the identifiers named.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hub.domain.errors import InputError
from hub.identity import DECIDED, IDENTITY_NAMESPACE, PROPOSED
from hub.publisher import Publisher, subject


@dataclass(frozen=True)
class Proposal:
    candidate_id: str
    left: tuple[str, str, str]  # agency, scheme, local id
    right: tuple[str, str, str]
    similarity: float | None
    proposed_at: dt.datetime


def _ref(text: str) -> tuple[str, str, str]:
    agency, scheme, local_id = text.split("|", 2)
    return agency, scheme, local_id


def open_candidates(records: Sequence[Mapping[str, Any]]) -> list[Proposal]:
    """Proposals (first of each pair) with no decision, oldest first."""
    decided = {r["candidate_id"] for r in records if r["envelope"]["event_type"] == DECIDED}
    found: dict[str, Proposal] = {}
    for r in records:
        if r["envelope"]["event_type"] != PROPOSED or r["candidate_id"] in decided:
            continue
        found.setdefault(
            r["candidate_id"],
            Proposal(r["candidate_id"], _ref(r["left_ref"]), _ref(r["right_ref"]),
                     r.get("name_similarity"), r["envelope"]["occurred_at"]),
        )  # fmt: skip
    return sorted(found.values(), key=lambda p: (p.proposed_at, p.candidate_id))


def find(records: Sequence[Mapping[str, Any]], candidate: str) -> Proposal:
    for proposal in open_candidates(records):
        if proposal.candidate_id == candidate:
            return proposal
    raise InputError(f"no open identity candidate {candidate!r} (see hub identity candidates)")


def _decision_subject(decision_id: str, **identifiers: str) -> dict[str, Any]:
    return subject(decision_id, "anonymous_ref", **identifiers)


def link_event(
    publisher: Publisher, *, by: str, left: tuple[str, str], right: tuple[str, str],
    reason: str | None, key: str, now: dt.datetime,
) -> dict[str, Any]:  # fmt: skip
    """A ``person.identifier_linked`` naming both identifiers (scheme, value)."""
    if left[0] == right[0] and left[1] == right[1]:
        raise InputError("an identifier cannot be linked to itself")
    identifiers = {left[0]: left[1]} if left[0] != right[0] else {}
    identifiers[right[0]] = right[1]
    block = _decision_subject(str(uuid.uuid5(IDENTITY_NAMESPACE, f"link|{key}")), **identifiers)
    if left[0] == right[0]:  # two values of one scheme: the subject block holds one per scheme
        block["identifiers"] = [
            {"scheme": left[0], "value": left[1]}, {"scheme": right[0], "value": right[1]}
        ]  # fmt: skip
    record = publisher.build(
        "person.identifier_linked", source_key=f"identity-link:{key}", subject=block,
        occurred_at=now,
        payload={"identifier_scheme": right[0], "identifier_value": right[1],
                 "match_method": "manual", "matched_by": by, "reason": reason},
    )  # fmt: skip
    publisher.publish(record)
    return record


def unlink_event(
    publisher: Publisher, *, by: str, reason: str, identifier: tuple[str, str] | None,
    event_id: str | None, relinked_local_id: str | None, notes: str | None, now: dt.datetime,
) -> dict[str, Any]:  # fmt: skip
    """A ``record.link_retracted`` for an identifier or for an event."""
    if (identifier is None) == (event_id is None):
        raise InputError("unlink needs either an identifier (--scheme/--id) or --event")
    key = f"{identifier}|{event_id}|{now.isoformat()}"
    decision = str(uuid.uuid5(IDENTITY_NAMESPACE, f"unlink|{key}"))
    record = publisher.build(
        "record.link_retracted", source_key=f"identity-unlink:{key}",
        subject=_decision_subject(decision), occurred_at=now,
        payload={"retracted_event_id": event_id,
                 "identifier_scheme": identifier[0] if identifier else None,
                 "identifier_value": identifier[1] if identifier else None,
                 "reason": reason, "retracted_by": by, "relinked_local_id": relinked_local_id,
                 "notes": notes},
    )  # fmt: skip
    publisher.publish(record)
    return record


def decision_record(
    publisher: Publisher, proposal: Proposal, *, decision: str, by: str, reason: str | None,
    link_event_id: str | None, now: dt.datetime,
) -> dict[str, Any]:  # fmt: skip
    """The ``identity.candidate_decided`` for ``hub.identity`` (built, validated, not sent)."""
    record = publisher.build(
        DECIDED, source_key=f"identity-decision:{proposal.candidate_id}:{decision}",
        subject=_decision_subject(proposal.candidate_id), occurred_at=now,
        payload={"candidate_id": proposal.candidate_id, "decision": decision,
                 "decided_by": by, "link_event_id": link_event_id, "reason": reason},
    )  # fmt: skip
    publisher.validate(record)
    return record


def decide(
    records: Sequence[Mapping[str, Any]], candidate: str, *, confirm: bool,
    publisher: Publisher, append: Callable[[Mapping[str, Any]], None], by: str,
    reason: str | None, now: dt.datetime,
) -> dict[str, Any]:  # fmt: skip
    """Confirm (link, then record) or reject (record) an open candidate; returns the decision."""
    proposal = find(records, candidate)
    link_id = None
    if confirm:
        link = link_event(
            publisher, by=by, left=proposal.left[1:], right=proposal.right[1:], reason=reason,
            key=proposal.candidate_id, now=now,
        )  # fmt: skip
        publisher.flush()
        link_id = link["envelope"]["event_id"]
    decision = decision_record(
        publisher, proposal, decision="confirmed" if confirm else "rejected", by=by,
        reason=reason, link_event_id=link_id, now=now,
    )  # fmt: skip
    append(decision)
    return decision
