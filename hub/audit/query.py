"""Auditor queries: whose trail is asked about, and the ``auditor_query`` entry each question
leaves on the trail before it is answered.

The trail is itself restricted (LED Art. 25(2)/(3), RELIABILITY.md PR-6): every read is an
``auditor_query`` entry naming the actor, the role, the justification and what was asked (the
filters, never the results). Only the materialiser appends to the chain, so the entry goes to
``hub.audit`` like every other component's entries, and the answer is shown only once the broker
has acknowledged it: if the trail cannot take the entry, the query fails closed.

Subjects. The trail holds the audit pseudonym of a hub subject, never a partner's identifier. An
auditor names a subject the way a partner knows it (``police:MP-0042``, or with the scheme,
``police:police_nominal_id:MP-0042``), by hub subject id (``hs-…``), or by the pseudonym itself;
``resolve_subject`` turns any of these into the pseudonym through the policy state.
"""

from __future__ import annotations

import getpass
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, TypeVar

import structlog

from hub.audit.entry import DETAIL_VALUE_MAX, TEXT_MAX, AuditEntry
from hub.domain.errors import HubError, InfraError, InputError

log = structlog.get_logger(__name__)

T = TypeVar("T")

ROLE = "auditor"
COMPONENT = "hub-cli"
RECORD_TIMEOUT_S = 10.0

_REF = re.compile(r"[0-9a-f]{64}")
_HUB_ID = re.compile(r"(hs|rec)-[0-9a-f]{24}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


# -- times -------------------------------------------------------------------------------------


def parse_when(text: str, option: str) -> datetime:
    """A command-line instant: a day (``2015-03-01``, meaning the end of that day, i.e. the next
    midnight UTC, so ``--until 2015-03-31`` includes the 31st) or an ISO-8601 time (UTC when it
    has no offset). Bounds are exclusive at the end: ``--until`` and ``--as-of`` take what
    happened before the instant."""
    value = text.strip()
    try:
        if _DATE.fullmatch(value):
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        at = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InputError(
            f"{option} {text!r} (expected a day such as 2015-03-01 or a time such as "
            "2015-03-01T10:00:00Z)"
        ) from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def parse_since(text: str, option: str = "--since") -> datetime:
    """Like ``parse_when``, but a day means its start: ``--since 2015-03-01`` includes the 1st."""
    at = parse_when(text, option)
    return at - timedelta(days=1) if _DATE.fullmatch(text.strip()) else at


# -- subjects ----------------------------------------------------------------------------------


class SubjectDirectory(Protocol):
    """The part of the policy state that links identifiers to hub subjects (``SqlPolicyState``)."""

    def subject_of(self, event: Mapping[str, Any]) -> str: ...

    def local_identifier_for(self, subject: str, agency: str) -> tuple[str, str] | None: ...


class Pseudonyms(Protocol):
    """``hub.policy.PseudonymKeys``: the audit pseudonym is ``pseudonym("audit", hub_id)``."""

    def pseudonym(self, audience: str, hub_subject_id: str) -> str: ...


@dataclass(frozen=True)
class SubjectSources:
    """Where a subject is looked up; each is opened only if the way it is named needs it."""

    keys: Callable[[], Pseudonyms]
    state: Callable[[], SubjectDirectory]
    agencies: Callable[[], Mapping[str, str]]  # agency id -> jurisdiction
    schemes: Callable[[], Sequence[str]]  # the identifier schemes that name a person


def resolve_subject(text: str, sources: SubjectSources) -> str:
    """The audit pseudonym of the subject an auditor named (see the module docs for the forms).

    ``AGENCY:LOCAL_ID`` is accepted only when the policy state holds exactly one subject for
    whom that agency last used that local id, under whichever scheme; ``AGENCY:SCHEME:LOCAL_ID``
    is resolved the way the router attributes an event carrying that identifier.
    """
    value = text.strip()
    if _REF.fullmatch(value):
        return value
    if _HUB_ID.fullmatch(value):
        return sources.keys().pseudonym("audit", value)
    agency, sep, rest = value.partition(":")
    if not sep or not agency or not rest:
        raise InputError(
            f"--subject {text!r} (expected AGENCY:LOCAL_ID such as police:MP-0042, "
            "AGENCY:SCHEME:LOCAL_ID, a hub subject id such as hs-… or a 64-hex audit pseudonym)"
        )
    agencies = sources.agencies()
    if agency not in agencies:
        raise InputError(
            f"--subject {text!r}: unknown agency {agency!r} (expected one of "
            f"{', '.join(sorted(agencies))})"
        )
    schemes = list(sources.schemes())
    state = sources.state()
    scheme, sep, local_id = rest.partition(":")
    if sep and scheme in schemes:
        subject = state.subject_of(_lookup_event(agency, agencies[agency], scheme, local_id))
        return sources.keys().pseudonym("audit", subject)
    found = set()
    for scheme in schemes:
        subject = state.subject_of(_lookup_event(agency, agencies[agency], scheme, rest))
        if state.local_identifier_for(subject, agency) == (scheme, rest):
            found.add(subject)
    if not found:
        raise InputError(
            f"--subject {text!r}: the hub knows no subject with {agency} local id {rest!r} "
            "(name the scheme, e.g. police:pnc_id:VALUE, or give the hub subject id)"
        )
    if len(found) > 1:
        raise InputError(
            f"--subject {text!r}: {len(found)} subjects have {agency} local id {rest!r} under "
            "different schemes (name the scheme: AGENCY:SCHEME:LOCAL_ID)"
        )
    return sources.keys().pseudonym("audit", found.pop())


def _lookup_event(agency: str, jurisdiction: str, scheme: str, local_id: str) -> dict[str, Any]:
    """The envelope part ``subject_of`` reads: an event from ``agency`` about this local id."""
    return {
        "envelope": {
            "source_agency": agency,
            "jurisdiction": jurisdiction,
            "subject": {"local_id_scheme": scheme, "local_id": local_id, "identifiers": []},
        }
    }


# -- recording the query -----------------------------------------------------------------------


class EntrySink(Protocol):
    """A producer to ``hub.audit`` (``hub.adapters.kafka.SafeProducer``): ``flush`` raises an
    ``InfraError`` when a record was not acknowledged."""

    def send(self, topic: str, key: bytes | None, value: bytes) -> None: ...

    def flush(self, timeout: float = ...) -> None: ...


def default_actor() -> str:
    """The operating-system user running the command."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        raise InputError("cannot tell which user is asking; give --actor") from None


@dataclass
class AuditedQueries:
    """Runs auditor queries so that none is answered without its entry on the trail."""

    sink: EntrySink
    topic: str
    actor: str
    justification: str | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    timeout_s: float = RECORD_TIMEOUT_S
    component: str = COMPONENT  # who asks on the auditor's behalf: the CLI, or "web"

    def __post_init__(self) -> None:
        self.entry("check", {}, None, "ok")  # a bad --actor or --justification fails up front

    def run(
        self,
        command: str,
        filters: Mapping[str, object],
        answer: Callable[[], T],
        *,
        subject_ref: str | None = None,
    ) -> T:
        """Compute ``answer()``, put the ``auditor_query`` entry on the trail, then return the
        answer. A query that fails is recorded too (outcome ``error``) and its error re-raised;
        if the trail does not acknowledge the entry, ``InfraError`` and no answer."""
        try:
            result = answer()
        except HubError as exc:
            entry = self.entry(command, filters, subject_ref, "error", str(exc))
            try:
                self.record(entry)
            except InfraError as record_exc:
                log.error("auditor_query_not_recorded", command=command, error=str(record_exc))
            raise
        self.record(self.entry(command, filters, subject_ref, "ok"))
        return result

    def entry(
        self,
        command: str,
        filters: Mapping[str, object],
        subject_ref: str | None,
        outcome: str,
        reason: str | None = None,
    ) -> AuditEntry:
        details = {"command": command}
        for name, value in filters.items():
            if value is None or value == "" or name in details:
                continue
            text = value.isoformat() if isinstance(value, datetime) else str(value)
            details[name] = text[:DETAIL_VALUE_MAX]
        return AuditEntry(
            entry_id=f"auditor_query-{uuid.uuid4().hex}",
            kind="auditor_query",
            at=self.clock(),
            component=self.component,
            outcome=outcome,
            actor=self.actor,
            role=ROLE,
            subject_ref=subject_ref,
            reason=reason[:TEXT_MAX] if reason else None,
            justification=self.justification or None,
            details=details,
        )

    def record(self, entry: AuditEntry) -> None:
        try:
            self.sink.send(self.topic, entry.entry_id.encode(), entry.to_json_bytes())
            self.sink.flush(self.timeout_s)
        except InfraError as exc:
            raise InfraError(
                f"the audit trail ({self.topic}) did not take the record of this query, so no "
                f"result is shown (every auditor query is audited): {exc}"
            ) from exc
        log.info(
            "auditor_query_recorded",
            entry_id=entry.entry_id,
            command=entry.details.get("command"),
            outcome=entry.outcome,
        )
