"""Erasure of a person (crypto-shredding) and the retention purge's audit entry.

``erase(...)`` for hub subject ids (a merged person: every id that was merged into the survivor
can be given too):

1. destroys every DEK version of every key linked to them (``hub.crypto.Keyring.erase``): their
   sensitive values become unreadable in every topic, backup and copy of a record, for good;
2. tells every audience that received something about them: a ``delivery.retracted`` with reason
   ``erased`` for each delivery not yet retracted, on ``deliver.<audience>``, under the subject as
   that audience knows it. The view deletes those rows (and with them the subject's own rows);
   a replay from offset 0 does not bring them back, since a record whose key was erased does not
   open (``key_erased``) and the view stores only its position;
3. writes one ``erased`` audit entry: the audit pseudonym of the subject, the actor and the
   justification, the counts; no name, identifier or value (ICO: "do not record the data itself
   in your logs of erasure").
4. (``hub.bootstrap.erase_subjects``) deletes the subject's identity links, local ids,
   registrations and facts from the policy state, so their pseudonyms can no longer be tied to
   anyone (DESIGN 8) and no case key (a victim reference) stays in the hub database.

The records of steps 2 and 3 go out in one Kafka transaction. The keys are destroyed first: if
the transaction then fails, the command is run again (it is idempotent).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hub.audit.entry import AuditEntry, make_entry_id
from hub.crypto import Keyring
from hub.identity import hub_envelope
from hub.policy import AgreementSet, PseudonymKeys
from hub.policy.transform import PSEUDONYM_SCHEME
from hub.ports import OutRecord
from hub.router import RETRACTION_NAMESPACE
from hub.serde.codec import AvroCodec
from hub.topics import Topics

ERASED = "erased"


@dataclass(frozen=True)
class Delivered:
    event_id: str
    audience: str
    clause_id: str
    retracted: bool


class ErasureState(Protocol):
    def local_identifier_for(self, subject: str, agency: str) -> tuple[str, str] | None: ...

    def mark_retracted(self, event_id: str, audience: str) -> None: ...


@dataclass
class Erasure:
    subjects: list[str]
    keys_destroyed: int
    retractions: int
    audiences: list[str]
    records: list[OutRecord]


def erase(
    subjects: Sequence[str],
    *,
    justification: str,
    actor: str,
    deliveries: Callable[[str], Sequence[Delivered]],
    state: ErasureState,
    keyring: Keyring,
    keys: PseudonymKeys,
    agreements: AgreementSet,
    codec: AvroCodec,
    topics: Topics,
    jurisdiction: Callable[[str], str],
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> Erasure:
    """Destroy the keys and build the retractions and the ``erased`` entry (see the module docs).
    ``deliveries(subject)`` lists what was delivered about a subject; the caller produces
    ``records`` in one transaction and then marks the retractions in the state."""
    if not subjects:
        raise ValueError("no subject to erase")
    if not justification.strip():
        raise ValueError("an erasure needs a justification")
    at = clock()
    kids = keyring.erase(subjects, at=at)
    records: list[OutRecord] = []
    audiences: set[str] = set()
    main = subjects[0]
    for subject in subjects:
        for d in deliveries(subject):
            if d.retracted:
                continue
            audiences.add(d.audience)
            records.append(_retraction(d, subject, state, keys, agreements, codec, topics,
                                       jurisdiction, at))  # fmt: skip
    entry = AuditEntry(
        entry_id=make_entry_id("erased", *sorted(subjects)),
        kind="erased",
        at=at,
        component="cli",
        outcome="ok",
        actor=actor,
        subject_ref=keys.pseudonym("audit", main),
        justification=justification,
        reason="subject_erased",
        details={
            "keys_destroyed": str(len(kids)),
            "retractions": str(len(records)),
            "audiences": ",".join(sorted(audiences)) or "-",
            "subjects": str(len(subjects)),
        },
    )
    records.append(OutRecord(topics.audit, entry.entry_id.encode(), entry.to_json_bytes(), ()))
    return Erasure(list(subjects), len(kids), len(records) - 1, sorted(audiences), records)


def _retraction(
    d: Delivered, subject: str, state: ErasureState, keys: PseudonymKeys,
    agreements: AgreementSet, codec: AvroCodec, topics: Topics,
    jurisdiction: Callable[[str], str], at: dt.datetime,
) -> OutRecord:  # fmt: skip
    agency = agreements.agency_of_audience(d.audience)
    local = state.local_identifier_for(subject, agency)
    event_id = uuid.uuid5(RETRACTION_NAMESPACE, f"{d.event_id}|{d.audience}|{ERASED}")
    record: dict[str, Any] = {
        "envelope": hub_envelope(
            str(event_id), "delivery.retracted", occurred_at=at, recorded_at=at,
            jurisdiction=jurisdiction(agency), source_system="erasure",
            subject=local or (PSEUDONYM_SCHEME, keys.pseudonym(d.audience, subject)),
        ),
        "retracted_event_id": d.event_id,
        "reason": ERASED,
        "clause_id": d.clause_id or None,
        "cause_event_id": None,
        "disclosure": None,
    }
    value = codec.encode(record)
    return OutRecord(
        topics.deliver(d.audience),
        record["envelope"]["subject"]["local_id"].encode(),
        value,
        (("event_type", b"delivery.retracted"),),
    )


def purge_entry(
    *, audience: str, rows: int, subjects: int, as_of: dt.date, actor: str, at: dt.datetime
) -> AuditEntry:
    """The one ``retention_purge`` entry of a purge run (PR-3): counts, never content."""
    return AuditEntry(
        entry_id=make_entry_id("retention_purge", audience, at.isoformat()),
        kind="retention_purge",
        at=at,
        component="view",
        outcome="ok",
        actor=actor,
        audience=audience,
        reason="retention_expired",
        details={"rows": str(rows), "subjects": str(subjects), "as_of": as_of.isoformat()},
    )
