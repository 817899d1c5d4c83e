"""The state the policies need, derived from events: identity links, consent, IOM cohort
membership, open referrals (and victim-liaison and cross-border cases), who supervises whom, the
assigned mentor, each agency's local id for a subject, and what was delivered to whom.

:class:`PolicyState` is the port. :class:`StateLogic` holds everything the backends share (how
events change the state, how queries read it); a backend implements a dozen storage primitives.
:class:`MemoryState` keeps them in dicts; :class:`hub.adapters.policy_store.SqlPolicyState` in
SQL tables. One contract suite (``tests/contract/test_policy_state.py``) runs against both.

Time: every change takes effect at an instant (epoch milliseconds, UTC): the payload's own
effective date where it has one (a transfer effective 2014-06-01 starts at 00:00Z that day),
otherwise the envelope's ``occurred_at``. A fact holds at ``t`` when ``start <= t < end``.
Updates are idempotent by ``event_id``: :meth:`PolicyState.apply_event` returns False for an
event already applied and changes nothing. Each applied event gets a position (1, 2, 3...) and
every fact records the position of the event that created it and of the one that ended it. The
engine asks "as of" the evaluated event's position (:meth:`PolicyState.position`), so an event
is judged on exactly what was known when it was first applied: apply an event, then evaluate it,
and a replay after a crash (state already holding later events) gives the same decisions.

Identity (``subject_of``): only identifier schemes whose reference-data ``kind`` is ``person``
link people. The subject block's local id and identifiers are looked up in the link table; a hit
gives the hub subject id (several hits: the smallest id, and ``apply_event`` merges the others
into it). With no hit the id is derived deterministically from the strongest identifier held
(PNC id, BSN, codice fiscale, prison number, police nominal id, probation case reference, MALS
client id, Safety House file id, ERI participant id), or else from (source agency, local id).
Identifiers of schemes that no jurisdiction owns (prison number, probation case reference) are
keyed with the event's jurisdiction so that an English and a Dutch number never collide.

Pseudonyms the hub issued (``hub_pseudonym``) never create a link, but one the hub issued to the
publishing agency itself resolves back to its subject: the router records each pseudonym it
delivers under (:meth:`StateLogic.record_pseudonym`, link key ``hub_pseudonym#<agency>:<value>``),
so MALS echoing the pseudonym it was addressed with (its ``hub_id_map``) links its client id to
the right person, while a pseudonym issued to another agency matches nothing.

Merges (two subjects found to be one) are remembered for the router (:meth:`StateLogic.take_merges`)
so that it can tell each audience's view to re-key; an identifier unlink (``record.link_retracted``
naming an identifier) is remembered too (:meth:`StateLogic.take_unlinks`): the subject the
identifier derives on its own is split off again for future events and views. A
``record.link_retracted`` naming an event voids the facts that event created (like a correction).
Name + date-of-birth similarity (:mod:`hub.policy.similarity`) only proposes a candidate
(:meth:`StateLogic.candidates_for`), never links.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from hub.domain.errors import PolicyError
from hub.serde.catalogue import Catalogue

STRONG_SCHEMES = (
    "pnc_id",
    "bsn",
    "codice_fiscale",
    "prison_number",
    "police_nominal_id",
    "probation_case_ref",
    "mals_client_id",
    "sh_file_id",
    "eri_participant_id",
)
NEVER_LINK = frozenset({"hub_pseudonym"})  # the hub's own output, never an input link
PSEUDONYM = "hub_pseudonym"

Instant = dt.datetime | dt.date | None


@runtime_checkable
class PolicyState(Protocol):
    """What the engine asks (queries) and what the router tells it (updates)."""

    def subject_of(self, event: Mapping[str, Any]) -> str: ...

    def position(self, event_id: str) -> int | None: ...

    def consent_in_force(
        self, subject: str, scope: str, at: Instant, seq: int | None = None
    ) -> bool: ...

    def in_cohort(self, subject: str, at: Instant, seq: int | None = None) -> bool: ...

    def open_referral(
        self,
        subject: str,
        agency: str,
        at: Instant,
        from_agency: str | None = None,
        seq: int | None = None,
    ) -> bool: ...

    def supervisor(self, subject: str, at: Instant, seq: int | None = None) -> str | None: ...

    def mentor_of(
        self, subject: str, at: Instant, seq: int | None = None
    ) -> tuple[str, str] | None: ...

    def local_id_for(self, subject: str, agency: str) -> str | None: ...

    def local_identifier_for(self, subject: str, agency: str) -> tuple[str, str] | None: ...

    def consent_based_deliveries(
        self, subject: str, scopes: Sequence[str]
    ) -> list[tuple[str, str, str]]: ...

    def deliveries_of(self, event_id: str) -> list[str]: ...

    def apply_event(self, event: Mapping[str, Any]) -> bool: ...

    def record_delivery(
        self,
        event_id: str,
        audience: str,
        subject: str,
        clause_id: str,
        consent_based: bool,
        consent_scope: str | None,
    ) -> None: ...

    def mark_retracted(self, event_id: str, audience: str) -> None: ...

    # identity: what the last apply_event merged or unlinked, issued pseudonyms, candidates
    def take_merges(self) -> list[Merge]: ...

    def take_unlinks(self) -> list[Unlink]: ...

    def merge_deliveries(self, subject: str, old: str) -> list[tuple[str, str]]: ...

    def audiences_of(self, subject: str) -> list[str]: ...

    def record_pseudonym(self, agency: str, pseudonym: str, subject: str) -> None: ...

    def candidates_for(self, event: Mapping[str, Any]) -> list[Candidate]: ...


@dataclass(frozen=True)
class Interval:
    """One fact over time. ``kind``: consent (key consent id, value scope), cohort (key cohort,
    value borough), referral (key referral or case id, value receiving agency, extra referring
    agency), supervision (value supervising body), mentor (key mentor id, value organisation)."""

    row_id: int
    kind: str
    subject: str
    key: str
    value: str
    extra: str | None
    start: int
    end: int | None
    start_event: str
    end_event: str | None
    start_seq: int = 0
    end_seq: int | None = None
    void_seq: int | None = None  # a correction voided the fact from this position on

    def holds(self, t: int) -> bool:
        """In the latest state: the fact holds at ``t``."""
        return self.void_seq is None and self.start <= t and (self.end is None or t < self.end)

    def held(self, t: int, seq: int) -> bool:
        """As known just after the event at position ``seq``: the fact holds at ``t``."""
        if self.start_seq > seq or (self.void_seq is not None and self.void_seq <= seq):
            return False
        ended = self.end is not None and self.end_seq is not None and self.end_seq <= seq
        return self.start <= t and (not ended or t < self.end)  # type: ignore[operator]


@dataclass(frozen=True)
class Delivery:
    seq: int
    event_id: str
    audience: str
    subject: str
    clause_id: str
    consent_based: bool
    consent_scope: str | None
    retracted: bool = False


@dataclass(frozen=True)
class Merge:
    """``old`` was merged into ``new`` by ``event_id``; ``old_locals``: the agencies' local ids
    of ``old`` just before (agency, (scheme, local id))."""

    old: str
    new: str
    event_id: str
    old_locals: tuple[tuple[str, tuple[str, str]], ...] = ()
    new_locals: tuple[tuple[str, tuple[str, str]], ...] = ()


@dataclass(frozen=True)
class Unlink:
    """The identifier ``key`` no longer belongs to ``holder``: ``alone``, merged into ``holder``
    earlier, is a subject of its own again (its link keys point at it again)."""

    key: str
    holder: str
    alone: str
    event_id: str


@dataclass(frozen=True)
class Candidate:
    """``subject`` and ``other`` may be one person (same date of birth, similar names)."""

    subject: str
    other: str
    ref: str  # agency|scheme|local id of the record that proposed it
    other_ref: str
    born: dt.date
    score: float


def issued_key(agency: str, pseudonym: str) -> str:
    """The link key of a pseudonym the hub issued to ``agency``."""
    return f"{PSEUDONYM}#{agency}:{pseudonym}"


def to_ms(at: Instant) -> int | None:
    """Epoch milliseconds of an aware datetime, or of 00:00Z on a date."""
    if at is None:
        return None
    if isinstance(at, dt.datetime):
        if at.tzinfo is None:
            raise PolicyError(f"naive datetime {at.isoformat()} (expected a timezone-aware one)")
        return int(at.timestamp() * 1000)
    return int(dt.datetime(at.year, at.month, at.day, tzinfo=dt.UTC).timestamp() * 1000)


def _day_after(day: dt.date | None) -> int | None:
    return None if day is None else to_ms(day + dt.timedelta(days=1))


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:24]


_CATALOGUE: list[Catalogue] = []


def _catalogue(catalogue: Catalogue | None) -> Catalogue:
    if catalogue is not None:
        return catalogue
    if not _CATALOGUE:
        _CATALOGUE.append(Catalogue.load())
    return _CATALOGUE[0]


class StateLogic:
    """Event handling and queries over storage primitives (the ``_``-methods a backend fills)."""

    def __init__(self, catalogue: Catalogue | None = None) -> None:
        schemes = _catalogue(catalogue).reference_list("identifier_schemes")
        self._person_schemes = frozenset(
            c.code for c in schemes.codes if c.kind == "person" and c.code not in NEVER_LINK
        )
        self._scoped_schemes = frozenset(c.code for c in schemes.codes if not c.jurisdictions)
        self._merges: list[Merge] = []
        self._unlinks: list[Unlink] = []
        self._applying = 0  # the position of the event being applied

    # -- storage primitives (backends) -------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All updates inside happen together or not at all."""
        raise NotImplementedError
        yield  # pragma: no cover

    def _begin_apply(self, event_id: str, event_type: str) -> int | None:
        """The new event's position, or None if it was applied before."""
        raise NotImplementedError

    def position(self, event_id: str) -> int | None:
        """The position of an applied event (None: not applied)."""
        raise NotImplementedError

    def _links(self, keys: Sequence[str]) -> dict[str, str]:
        raise NotImplementedError

    def _set_link(self, key: str, subject: str, event_id: str) -> None:
        raise NotImplementedError

    def _delete_link(self, key: str) -> None:
        raise NotImplementedError

    def _link_keys_of(self, subject: str) -> list[str]:
        """Every link key pointing at ``subject``."""
        raise NotImplementedError

    def _link_event(self, key: str) -> str | None:
        """The event that last set the link ``key``."""
        raise NotImplementedError

    def _rename_subject(self, old: str, new: str) -> None:
        raise NotImplementedError

    def _set_local(self, subject: str, agency: str, scheme: str, local_id: str) -> None:
        raise NotImplementedError

    def _locals_of(self, subject: str) -> dict[str, tuple[str, str]]:
        """agency -> (scheme, local id) of every agency's local id for ``subject``."""
        raise NotImplementedError

    def _delete_local(self, subject: str, agency: str) -> None:
        raise NotImplementedError

    def _put_person(self, subject: str, born: str, name_key: str, ref: str) -> None:
        """Remember a registered person's normalised name for candidate proposals (idempotent
        by (subject, ref)); ``ref``: ``agency|scheme|local id`` of the registering record."""
        raise NotImplementedError

    def _people_born(self, born: str) -> list[tuple[str, str, str]]:
        """(subject, name key, ref) of every remembered person born on ``born`` (ISO date)."""
        raise NotImplementedError

    def _get_local(self, subject: str, agency: str) -> tuple[str, str] | None:
        raise NotImplementedError

    def _intervals(self, kind: str, subject: str) -> list[Interval]:
        raise NotImplementedError

    def _intervals_by_key(self, kind: str, key: str) -> list[Interval]:
        raise NotImplementedError

    def _insert_interval(
        self,
        kind: str,
        subject: str,
        key: str,
        value: str,
        extra: str | None,
        start: int,
        end: int | None,
        event_id: str,
        seq: int,
    ) -> None:
        raise NotImplementedError

    def _end_interval(self, row_id: int, end: int, event_id: str, seq: int) -> None:
        raise NotImplementedError

    def _void_interval(self, row_id: int, seq: int) -> None:
        raise NotImplementedError

    def _intervals_of_event(self, event_id: str) -> list[Interval]:
        """Intervals ``event_id`` started or ended."""
        raise NotImplementedError

    def _put_delivery(self, delivery: Delivery) -> None:
        """Insert unless (event_id, audience) is already there."""
        raise NotImplementedError

    def _deliveries_of_subject(self, subject: str) -> list[Delivery]:
        raise NotImplementedError

    def _deliveries_of_event(self, event_id: str) -> list[Delivery]:
        raise NotImplementedError

    def _set_retracted(self, event_id: str, audience: str) -> None:
        raise NotImplementedError

    # -- identity ----------------------------------------------------------------------------
    def _identity_keys(self, envelope: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(scheme, link key) of every person identifier in the subject block, strongest first."""
        subject = envelope["subject"]
        jurisdiction = envelope.get("jurisdiction") or ""
        pairs = [(subject["local_id_scheme"], subject["local_id"])]
        pairs += [(i["scheme"], i["value"]) for i in subject.get("identifiers") or ()]
        out: list[tuple[str, str]] = []
        for scheme, value in pairs:
            if scheme not in self._person_schemes or not value:
                continue
            scope = f"@{jurisdiction}" if scheme in self._scoped_schemes else ""
            key = f"{scheme}{scope}:{value}"
            if all(k != key for _, k in out):
                out.append((scheme, key))
        rank = {s: i for i, s in enumerate(STRONG_SCHEMES)}
        out.sort(key=lambda p: rank.get(p[0], len(rank)))
        agency = envelope.get("source_agency") or ""
        for scheme, value in pairs:
            if scheme == PSEUDONYM and value:
                key = issued_key(agency, value)
                if all(k != key for _, k in out):
                    out.append((PSEUDONYM, key))  # looked up, never linked
        return out

    def _derived_subject(self, envelope: Mapping[str, Any], keys: list[tuple[str, str]]) -> str:
        subject = envelope["subject"]
        keys = [(s, k) for s, k in keys if s != PSEUDONYM]
        if not keys:
            return "rec-" + _hash(
                envelope["source_agency"], subject["local_id_scheme"], subject["local_id"]
            )
        strong = next((k for s, k in keys if s in STRONG_SCHEMES), None)
        if strong is not None:
            return "hs-" + _hash(strong)
        return "hs-" + _hash(
            "local", envelope["source_agency"], subject["local_id_scheme"], subject["local_id"]
        )

    def subject_of(self, event: Mapping[str, Any]) -> str:
        envelope = event["envelope"]
        keys = self._identity_keys(envelope)
        if keys:
            found = self._links([k for _, k in keys])
            if found:
                return min(found.values())
        return self._derived_subject(envelope, keys)

    def _resolve(self, event: Mapping[str, Any], event_id: str) -> str:
        envelope = event["envelope"]
        keys = self._identity_keys(envelope)
        if not keys:
            return self._derived_subject(envelope, keys)
        found = self._links([k for _, k in keys])
        ids = set(found.values())
        subject = min(ids) if ids else self._derived_subject(envelope, keys)
        for other in sorted(ids - {subject}):
            self._merge(other, subject, event_id)
        for scheme, key in keys:
            if scheme != PSEUDONYM and found.get(key) != subject:
                self._set_link(key, subject, event_id)
        local = envelope["subject"]
        if local["local_id_scheme"] in self._person_schemes:
            self._set_local(
                subject, envelope["source_agency"], local["local_id_scheme"], local["local_id"]
            )
        return subject

    def _link(
        self, subject: str, scheme: str, value: str, jurisdiction: str, event_id: str
    ) -> None:
        if scheme not in self._person_schemes or not value:
            return
        scope = f"@{jurisdiction}" if scheme in self._scoped_schemes else ""
        key = f"{scheme}{scope}:{value}"
        existing = self._links([key]).get(key)
        if existing is not None and existing != subject:
            keep, other = sorted((existing, subject))
            self._merge(other, keep, event_id)
            subject = keep
        self._set_link(key, subject, event_id)

    def _merge(self, old: str, new: str, event_id: str) -> None:
        """``old`` is the same person as ``new``: move everything of ``old`` to ``new``, and
        remember which link keys came from ``old`` (facts ``merge`` and ``merged_key``) so that
        an unlink can split it off again."""
        seq = self._applying
        for key in self._link_keys_of(old):
            if not key.startswith(PSEUDONYM):
                self._insert_interval("merged_key", new, key, old, None, 0, None, event_id, seq)
        for agency, (scheme, local_id) in sorted(self._locals_of(old).items()):
            value = f"{scheme}\x1f{local_id}"
            self._insert_interval("merged_local", new, agency, value, old, 0, None, event_id, seq)
        self._insert_interval("merge", new, old, event_id, None, 0, None, event_id, seq)
        self._merges.append(
            Merge(
                old,
                new,
                event_id,
                tuple(sorted(self._locals_of(old).items())),
                tuple(sorted(self._locals_of(new).items())),
            )
        )
        self._rename_subject(old, new)

    def take_merges(self) -> list[Merge]:
        """The merges the last :meth:`apply_event` made (and forget them)."""
        merges, self._merges = self._merges, []
        return merges

    def take_unlinks(self) -> list[Unlink]:
        """The identifier unlinks the last :meth:`apply_event` made (and forget them)."""
        unlinks, self._unlinks = self._unlinks, []
        return unlinks

    def record_pseudonym(self, agency: str, pseudonym: str, subject: str) -> None:
        """The router delivered ``subject`` to an audience of ``agency`` under ``pseudonym``:
        remember it, so that the agency may echo it back (idempotent)."""
        key = issued_key(agency, pseudonym)
        with self.transaction():
            if self._links([key]).get(key) != subject:
                self._set_link(key, subject, "issued")

    def candidates_for(self, event: Mapping[str, Any]) -> list[Candidate]:
        """Subjects that may be the same person as the subject of a ``person.registered``
        event (same date of birth, similar name, another subject): proposals for a person to
        confirm, never links. Call after :meth:`apply_event`."""
        from hub.policy.similarity import name_key, similar

        born, key = event.get("date_of_birth"), _name_of(event)
        if born is None or not key:
            return []
        subject = self.subject_of(event)
        mine = name_key(key)
        out: dict[str, Candidate] = {}
        for other, other_key, ref in self._people_born(born.isoformat()):
            if other == subject or other in out:
                continue
            score = similar(mine, other_key)
            if score is not None:
                out[other] = Candidate(subject, other, _ref(event), ref, born, score)
        return [out[k] for k in sorted(out)]

    # -- queries -----------------------------------------------------------------------------
    def _holding(self, kind: str, subject: str, at: Instant, seq: int | None) -> list[Interval]:
        """Facts holding at ``at``: in the latest state, or as known at position ``seq``."""
        t = to_ms(at)
        if t is None:
            raise PolicyError(f"a {kind} query needs a time")
        rows = self._intervals(kind, subject)
        if seq is None:
            return [r for r in rows if r.holds(t)]
        return [r for r in rows if r.held(t, seq)]

    def consent_in_force(
        self, subject: str, scope: str, at: Instant, seq: int | None = None
    ) -> bool:
        return any(r.value == scope for r in self._holding("consent", subject, at, seq))

    def in_cohort(self, subject: str, at: Instant, seq: int | None = None) -> bool:
        return bool(self._holding("cohort", subject, at, seq))

    def open_referral(
        self,
        subject: str,
        agency: str,
        at: Instant,
        from_agency: str | None = None,
        seq: int | None = None,
    ) -> bool:
        return any(
            r.value == agency and (from_agency is None or r.extra == from_agency)
            for r in self._holding("referral", subject, at, seq)
        )

    def supervisor(self, subject: str, at: Instant, seq: int | None = None) -> str | None:
        rows = self._holding("supervision", subject, at, seq)
        return max(rows, key=lambda r: (r.start, r.row_id)).value if rows else None

    def mentor_of(
        self, subject: str, at: Instant, seq: int | None = None
    ) -> tuple[str, str] | None:
        rows = self._holding("mentor", subject, at, seq)
        if not rows:
            return None
        row = max(rows, key=lambda r: (r.start, r.row_id))
        return row.value, row.key

    def local_id_for(self, subject: str, agency: str) -> str | None:
        found = self._get_local(subject, agency)
        return found[1] if found else None

    def local_identifier_for(self, subject: str, agency: str) -> tuple[str, str] | None:
        """(scheme, local id) the agency uses for the subject, if the state has seen one."""
        return self._get_local(subject, agency)

    def consent_based_deliveries(
        self, subject: str, scopes: Sequence[str]
    ) -> list[tuple[str, str, str]]:
        """(event_id, audience, clause_id) of every delivery of ``subject`` made under a
        consent-based clause with one of ``scopes``, not yet retracted, oldest first."""
        wanted = set(scopes)
        return [
            (d.event_id, d.audience, d.clause_id)
            for d in sorted(self._deliveries_of_subject(subject), key=lambda d: d.seq)
            if d.consent_based and d.consent_scope in wanted and not d.retracted
        ]

    def merge_deliveries(self, subject: str, old: str) -> list[tuple[str, str]]:
        """(record id, audience) of the not retracted ``identity.subject_merged`` records that
        told audiences ``old`` is ``subject`` (recorded with clause ``identity:merge:<old>``)."""
        clause = f"identity:merge:{old}"
        return [
            (d.event_id, d.audience)
            for d in sorted(self._deliveries_of_subject(subject), key=lambda d: d.seq)
            if d.clause_id == clause and not d.retracted
        ]

    def audiences_of(self, subject: str) -> list[str]:
        """Audiences holding some delivery about ``subject`` that was not retracted."""
        return sorted({d.audience for d in self._deliveries_of_subject(subject) if not d.retracted})

    def deliveries_of(self, event_id: str) -> list[str]:
        """Audiences that received ``event_id`` (and have not had it retracted)."""
        return sorted(d.audience for d in self._deliveries_of_event(event_id) if not d.retracted)

    # -- updates -----------------------------------------------------------------------------
    def record_delivery(
        self,
        event_id: str,
        audience: str,
        subject: str,
        clause_id: str,
        consent_based: bool,
        consent_scope: str | None,
    ) -> None:
        """Remember a delivery (idempotent by (event_id, audience))."""
        with self.transaction():
            self._put_delivery(
                Delivery(0, event_id, audience, subject, clause_id, consent_based, consent_scope)
            )

    def mark_retracted(self, event_id: str, audience: str) -> None:
        """The router retracted this delivery (consent withdrawn, link retracted)."""
        with self.transaction():
            self._set_retracted(event_id, audience)

    def apply_event(self, event: Mapping[str, Any]) -> bool:
        """Update the state from one event; False (and no change) if it was applied before."""
        envelope = event["envelope"]
        event_id, event_type = envelope["event_id"], envelope["event_type"]
        self._merges, self._unlinks = [], []
        with self.transaction():
            seq = self._begin_apply(event_id, event_type)
            if seq is None:
                return False
            self._applying = seq
            subject = self._resolve(event, event_id)
            if envelope.get("supersedes_event_id"):
                self._undo(envelope["supersedes_event_id"], seq)
            handler = _HANDLERS.get(event_type)
            if handler is not None:
                handler(self, event, _Change(subject, event_id, envelope, seq))
        return True

    def _undo(self, event_id: str, seq: int) -> None:
        """A correction: the facts ``event_id`` created are void from ``seq`` on, and the facts
        it ended hold again (a new row from ``seq``, so earlier positions keep their view)."""
        for row in self._intervals_of_event(event_id):
            if row.start_event == event_id and row.void_seq is None:
                self._void_interval(row.row_id, seq)
            elif row.end_event == event_id and row.void_seq is None:
                self._void_interval(row.row_id, seq)
                self._insert_interval(
                    row.kind,
                    row.subject,
                    row.key,
                    row.value,
                    row.extra,
                    row.start,
                    None,
                    row.start_event,
                    seq,
                )

    # -- helpers for handlers ----------------------------------------------------------------
    def _open(
        self,
        kind: str,
        c: _Change,
        key: str,
        value: str,
        start: int,
        end: int | None = None,
        extra: str | None = None,
    ) -> None:
        self._insert_interval(kind, c.subject, key, value, extra, start, end, c.event_id, c.seq)

    def _close(
        self, kind: str, c: _Change, at: int, match: Callable[[Interval], bool]
    ) -> list[Interval]:
        closed = []
        for row in self._intervals(kind, c.subject):
            current = row.void_seq is None and row.start <= at and (row.end is None or at < row.end)
            if current and match(row):
                self._end_interval(row.row_id, at, c.event_id, c.seq)
                closed.append(row)
        return closed


@dataclass(frozen=True)
class _Change:
    subject: str
    event_id: str
    envelope: Mapping[str, Any]
    seq: int

    @property
    def occurred(self) -> int:
        at = to_ms(self.envelope["occurred_at"])
        assert at is not None
        return at

    def at(self, day: dt.date | None) -> int:
        """The payload's effective date (00:00Z), else the effective date, else occurred_at."""
        effective = day or self.envelope.get("effective_date")
        return to_ms(effective) if effective is not None else self.occurred  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# How each event type changes the state
# ---------------------------------------------------------------------------------------------


def _consent_given(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    start = c.occurred
    end = _day_after(e.get("expires_on"))
    open_rows = [r for r in s._intervals("consent", c.subject) if r.holds(start)]
    for scope in e.get("scopes") or ():
        if not any(r.value == scope for r in open_rows):
            s._open("consent", c, e["consent_id"], scope, start, end)


def _consent_withdrawn(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    at = c.occurred
    if e.get("withdrawn_on") is not None:
        at = min(at, to_ms(e["withdrawn_on"]) or at)
    scopes = set(e.get("scopes") or ())
    s._close("consent", c, at, lambda r: r.value in scopes)


def _consent_scope_changed(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    at = c.occurred
    consent_id = e["consent_id"]
    current = {
        r.value for r in s._intervals("consent", c.subject) if r.key == consent_id and r.holds(at)
    }
    wanted = set(e.get("scopes") or ())
    added = set(e.get("scopes_added") or ()) or (wanted - current)
    removed = set(e.get("scopes_removed") or ()) or (current - wanted if wanted else set())
    s._close("consent", c, at, lambda r: r.key == consent_id and r.value in removed)
    for scope in sorted(added - current):
        s._open("consent", c, consent_id, scope, at)


def _cohort_entered(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    start = c.at(e.get("entry_date"))
    if any(r.key == e["cohort"] and r.holds(start) for r in s._intervals("cohort", c.subject)):
        return
    s._open("cohort", c, e["cohort"], e.get("borough") or "", start)


def _cohort_exited(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    s._close("cohort", c, c.at(e.get("exit_date")), lambda r: r.key == e["cohort"])


def _referral_created(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    key = e["referral_id"]
    if any(r.end is None and r.void_seq is None for r in s._intervals_by_key("referral", key)):
        return
    s._open(
        "referral",
        c,
        key,
        e["receiving_org"],
        c.occurred,
        extra=e.get("referrer_org") or c.envelope["source_agency"],
    )


def _referral_declined(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    at = c.occurred
    for row in s._intervals_by_key("referral", e["referral_id"]):
        if row.void_seq is None and row.start <= at and (row.end is None or at < row.end):
            s._end_interval(row.row_id, at, c.event_id, c.seq)


def _mentoring_closed(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    at = c.at(e.get("closed_on"))
    source = c.envelope["source_agency"]
    s._close("referral", c, at, lambda r: r.value == source and not r.key.startswith("case:"))
    s._close("mentor", c, at, lambda r: r.value == source)


def _victim_case(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    officer = e.get("victim_liaison_officer") or {}
    agency = officer.get("organisation") or c.envelope["source_agency"]
    key = f"case:victim:{e['victim_ref']}"
    if any(
        r.key == key and r.value == agency and r.holds(c.occurred)
        for r in s._intervals("referral", c.subject)
    ):
        return
    s._open("referral", c, key, agency, c.occurred, extra=c.envelope["source_agency"])


def _cross_border(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    key = f"case:cross_border:{c.event_id}"
    s._open(
        "referral",
        c,
        key,
        e["receiving_force"],
        c.at(e.get("moved_on")),
        extra=e.get("sending_force") or c.envelope["source_agency"],
    )


def _supervision_assigned(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    # The assigned offender manager works the case from the assignment (pre-release), even when
    # supervision formally starts on release.
    start = min(c.at(e.get("effective_from")), c.occurred)
    s._close("supervision", c, start, lambda r: True)
    s._open(
        "supervision", c, "", e["supervising_body"], start, _day_after(e.get("supervision_end"))
    )


def _supervision_transferred(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    at = c.at(e.get("effective_from"))
    closed = s._close("supervision", c, at, lambda r: True)
    end = next((r.end for r in closed if r.value == e["from_body"]), None)
    s._open("supervision", c, "", e["to_body"], at, end)
    # Open referrals made by the old body now belong to the new one (S15).
    for row in s._close("referral", c, at, lambda r: r.extra == e["from_body"]):
        s._open("referral", c, row.key, row.value, at, extra=e["to_body"])


def _custody_released(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    body = e.get("supervising_body")
    if not body:
        return
    at = c.at(None)
    if any(r.value == body for r in s._intervals("supervision", c.subject) if r.holds(at)):
        return
    s._close("supervision", c, at, lambda r: True)
    s._open("supervision", c, "", body, at, _day_after(e.get("supervision_end_date")))


def _mentor_assigned(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    start = c.at(e.get("assigned_on"))
    org = e["organisation"]
    s._close("mentor", c, start, lambda r: r.value == org)
    s._open("mentor", c, e["mentor_id"], org, start)


def _identifier_linked(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    s._link(
        c.subject,
        e["identifier_scheme"],
        e["identifier_value"],
        c.envelope.get("jurisdiction") or "",
        c.event_id,
    )


def _link_retracted(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    if e.get("retracted_event_id"):
        # the event was about someone else: the facts it created do not hold for this subject
        s._undo(e["retracted_event_id"], c.seq)
    scheme, value = e.get("identifier_scheme"), e.get("identifier_value")
    if not scheme or not value or scheme not in s._person_schemes:
        return
    scope = f"@{c.envelope.get('jurisdiction') or ''}" if scheme in s._scoped_schemes else ""
    key = f"{scheme}{scope}:{value}"
    holder = s._links([key]).get(key)
    if holder is None:
        return
    link_event = s._link_event(key)
    s._delete_link(key)
    # Which subject merged into the holder does the wrong link undo? The one the identifier
    # came with; else (the identifier is the holder's own) the ones the event that last linked
    # it merged in; else every subject merged into the holder.
    keys = [r for r in s._intervals("merged_key", holder) if r.end is None and r.void_seq is None]
    merges = [r for r in s._intervals("merge", holder) if r.end is None and r.void_seq is None]
    sides = {r.value for r in keys if r.key == key}
    if not sides:
        sides = {r.key for r in merges if r.value == link_event} or {r.key for r in merges}
    at = c.occurred
    for side in sorted(sides):
        for row in keys:
            if row.value == side:
                if row.key != key:
                    s._set_link(row.key, side, c.event_id)
                s._end_interval(row.row_id, at, c.event_id, c.seq)
        for row in merges:
            if row.key == side:
                s._end_interval(row.row_id, at, c.event_id, c.seq)
        for row in s._intervals("merged_local", holder):
            if row.extra == side and row.end is None and row.void_seq is None:
                scheme, local_id = row.value.split("\x1f", 1)
                if s._get_local(holder, row.key) == (scheme, local_id):
                    s._delete_local(holder, row.key)
                s._set_local(side, row.key, scheme, local_id)
                s._end_interval(row.row_id, at, c.event_id, c.seq)
        s._unlinks.append(Unlink(key, holder, side, c.event_id))


def _person_registered(s: StateLogic, e: Mapping[str, Any], c: _Change) -> None:
    from hub.policy.similarity import name_key

    born, name = e.get("date_of_birth"), _name_of(e)
    if born is not None and name:
        s._put_person(c.subject, born.isoformat(), name_key(name), _ref(e))


def _name_of(e: Mapping[str, Any]) -> str:
    return " ".join(str(e.get(f) or "") for f in ("given_name", "family_name")).strip()


def _ref(e: Mapping[str, Any]) -> str:
    envelope = e["envelope"]
    subject = envelope["subject"]
    return f"{envelope['source_agency']}|{subject['local_id_scheme']}|{subject['local_id']}"


_HANDLERS: dict[str, Callable[[StateLogic, Mapping[str, Any], _Change], None]] = {
    "consent.given": _consent_given,
    "consent.withdrawn": _consent_withdrawn,
    "consent.scope_changed": _consent_scope_changed,
    "iom.cohort_entered": _cohort_entered,
    "iom.cohort_exited": _cohort_exited,
    "referral.created": _referral_created,
    "referral.declined": _referral_declined,
    "mentoring.closed": _mentoring_closed,
    "victim.release_notification_due": _victim_case,
    "cross_border.notification": _cross_border,
    "supervision.responsibility_assigned": _supervision_assigned,
    "supervision.responsibility_transferred": _supervision_transferred,
    "custody.released": _custody_released,
    "mentor.assigned": _mentor_assigned,
    "person.identifier_linked": _identifier_linked,
    "record.link_retracted": _link_retracted,
    "person.registered": _person_registered,
}
STATE_EVENT_TYPES = frozenset(_HANDLERS)


# ---------------------------------------------------------------------------------------------
# The in-memory backend
# ---------------------------------------------------------------------------------------------


class MemoryState(StateLogic):
    """Policy state in dicts: for tests, tools (``hub policy explain``) and the golden cases.

    Values are immutable (frozen rows, tuples), so a transaction snapshots the dicts shallowly."""

    _TABLES = (
        "_applied",
        "_link_table",
        "_local",
        "_rows",
        "_by_subject",
        "_by_key",
        "_by_event",
        "_deliveries",
        "_deliveries_by_subject",
        "_deliveries_by_event",
        "_people",
    )

    def __init__(self, catalogue: Catalogue | None = None) -> None:
        super().__init__(catalogue)
        self._applied: dict[str, int] = {}
        self._link_table: dict[str, tuple[str, str]] = {}
        self._local: dict[tuple[str, str], tuple[str, str]] = {}
        self._rows: dict[int, Interval] = {}
        self._by_subject: dict[tuple[str, str], tuple[int, ...]] = {}
        self._by_key: dict[tuple[str, str], tuple[int, ...]] = {}
        self._by_event: dict[str, tuple[int, ...]] = {}
        self._deliveries: dict[tuple[str, str], Delivery] = {}
        self._deliveries_by_subject: dict[str, tuple[tuple[str, str], ...]] = {}
        self._deliveries_by_event: dict[str, tuple[tuple[str, str], ...]] = {}
        self._people: dict[tuple[str, str], tuple[str, str]] = {}  # (subject, ref) -> (born, key)
        self._seq = 0
        self._depth = 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        saved = {name: dict(getattr(self, name)) for name in self._TABLES}
        seq = self._seq
        self._depth = 1
        try:
            yield
        except BaseException:
            for name, table in saved.items():
                setattr(self, name, table)
            self._seq = seq
            raise
        finally:
            self._depth = 0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    @staticmethod
    def _add(index: dict[Any, tuple[Any, ...]], key: Any, value: Any) -> None:
        index[key] = (*index.get(key, ()), value)

    def _begin_apply(self, event_id: str, event_type: str) -> int | None:
        if event_id in self._applied:
            return None
        seq = len(self._applied) + 1
        self._applied[event_id] = seq
        return seq

    def position(self, event_id: str) -> int | None:
        return self._applied.get(event_id)

    def _links(self, keys: Sequence[str]) -> dict[str, str]:
        return {k: self._link_table[k][0] for k in keys if k in self._link_table}

    def _set_link(self, key: str, subject: str, event_id: str) -> None:
        self._link_table[key] = (subject, event_id)

    def _delete_link(self, key: str) -> None:
        self._link_table.pop(key, None)

    def _link_keys_of(self, subject: str) -> list[str]:
        return sorted(k for k, (s, _) in self._link_table.items() if s == subject)

    def _link_event(self, key: str) -> str | None:
        found = self._link_table.get(key)
        return found[1] if found else None

    def _rename_subject(self, old: str, new: str) -> None:
        for key, (subject, event_id) in list(self._link_table.items()):
            if subject == old:
                self._link_table[key] = (new, event_id)
        for (subject, agency), value in list(self._local.items()):
            if subject == old:
                del self._local[(subject, agency)]
                self._local.setdefault((new, agency), value)
        for (kind, subject), row_ids in list(self._by_subject.items()):
            if subject != old:
                continue
            del self._by_subject[(kind, subject)]
            for row_id in row_ids:
                self._rows[row_id] = replace(self._rows[row_id], subject=new)
                self._add(self._by_subject, (kind, new), row_id)
        for (subject, ref), value in list(self._people.items()):
            if subject == old:
                del self._people[(subject, ref)]
                self._people[(new, ref)] = value
        for delivery in self._deliveries_by_subject.pop(old, ()):
            self._deliveries[delivery] = replace(self._deliveries[delivery], subject=new)
            self._add(self._deliveries_by_subject, new, delivery)

    def _set_local(self, subject: str, agency: str, scheme: str, local_id: str) -> None:
        self._local[(subject, agency)] = (scheme, local_id)

    def _get_local(self, subject: str, agency: str) -> tuple[str, str] | None:
        return self._local.get((subject, agency))

    def _locals_of(self, subject: str) -> dict[str, tuple[str, str]]:
        return {agency: v for (s, agency), v in self._local.items() if s == subject}

    def _delete_local(self, subject: str, agency: str) -> None:
        self._local.pop((subject, agency), None)

    def _put_person(self, subject: str, born: str, name_key: str, ref: str) -> None:
        self._people[(subject, ref)] = (born, name_key)

    def _people_born(self, born: str) -> list[tuple[str, str, str]]:
        return sorted((s, key, ref) for (s, ref), (b, key) in self._people.items() if b == born)

    def _intervals(self, kind: str, subject: str) -> list[Interval]:
        return [self._rows[i] for i in self._by_subject.get((kind, subject), ())]

    def _intervals_by_key(self, kind: str, key: str) -> list[Interval]:
        return [self._rows[i] for i in self._by_key.get((kind, key), ())]

    def _intervals_of_event(self, event_id: str) -> list[Interval]:
        return [self._rows[i] for i in sorted(set(self._by_event.get(event_id, ())))]

    def _insert_interval(
        self,
        kind: str,
        subject: str,
        key: str,
        value: str,
        extra: str | None,
        start: int,
        end: int | None,
        event_id: str,
        seq: int,
    ) -> None:
        row_id = self._next()
        self._rows[row_id] = Interval(
            row_id,
            kind,
            subject,
            key,
            value,
            extra,
            start,
            end,
            event_id,
            None,
            seq,
            seq if end is not None else None,
        )
        self._add(self._by_subject, (kind, subject), row_id)
        self._add(self._by_key, (kind, key), row_id)
        self._add(self._by_event, event_id, row_id)

    def _end_interval(self, row_id: int, end: int, event_id: str, seq: int) -> None:
        row = self._rows[row_id]
        self._rows[row_id] = replace(row, end=end, end_event=event_id, end_seq=seq)
        self._add(self._by_event, event_id, row_id)

    def _void_interval(self, row_id: int, seq: int) -> None:
        self._rows[row_id] = replace(self._rows[row_id], void_seq=seq)

    def _put_delivery(self, delivery: Delivery) -> None:
        key = (delivery.event_id, delivery.audience)
        if key not in self._deliveries:
            self._deliveries[key] = replace(delivery, seq=self._next())
            self._add(self._deliveries_by_subject, delivery.subject, key)
            self._add(self._deliveries_by_event, delivery.event_id, key)

    def _deliveries_of_subject(self, subject: str) -> list[Delivery]:
        return [self._deliveries[k] for k in self._deliveries_by_subject.get(subject, ())]

    def _deliveries_of_event(self, event_id: str) -> list[Delivery]:
        return [self._deliveries[k] for k in self._deliveries_by_event.get(event_id, ())]

    def _set_retracted(self, event_id: str, audience: str) -> None:
        key = (event_id, audience)
        if key in self._deliveries:
            self._deliveries[key] = replace(self._deliveries[key], retracted=True)
