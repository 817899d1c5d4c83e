"""The loaded agreements, indexed for the engine: (event type, source, audience) -> clauses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from hub.domain.errors import PolicyError
from hub.policy.fields import (
    FieldNode,
    Plan,
    build_plan,
    event_fields,
    flatten,
    has_placeholders,
    openness,
    summaries_of,
)
from hub.policy.model import Agency, Agreement, Clause, SummarySpec
from hub.serde.catalogue import Catalogue


@dataclass(frozen=True)
class Candidate:
    """One clause as it applies to one event type, with its field plan worked out once."""

    agreement: Agreement
    clause: Clause
    event_type: str
    plan: Plan
    fields: Mapping[str, str]
    summaries: Mapping[str, SummarySpec]
    shared: int  # openness of the plan: the widest of several matching permits is used
    placeholders: bool


def expand_event_types(patterns: Iterable[str], known: Iterable[str]) -> list[str]:
    """Exact event types and ``prefix.*`` patterns, expanded against ``known`` (sorted)."""
    known = list(known)
    out: set[str] = set()
    for pattern in patterns:
        if pattern.endswith(".*"):
            out.update(t for t in known if t.startswith(pattern[:-1]))
        elif pattern == "*":
            out.update(known)
        elif pattern in known:
            out.add(pattern)
    return sorted(out)


class AgreementSet:
    """Every agency and agreement of ``policies/``, checked. Build it with
    :func:`hub.policy.load_agreements`."""

    def __init__(
        self,
        agencies: Mapping[str, Agency],
        agreements: Iterable[Agreement],
        catalogue: Catalogue,
        digest: str,
        root: Path | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.digest = digest
        schemes = catalogue.reference_list("identifier_schemes")
        self.person_schemes = frozenset(c.code for c in schemes.codes if c.kind == "person")
        self.root = root
        self._agencies = dict(sorted(agencies.items()))
        self._agreements = {a.id: a for a in sorted(agreements, key=lambda a: a.id)}
        self._audience_agency = {
            audience: agency.id
            for agency in self._agencies.values()
            for audience in agency.audiences
        }
        self._clauses = {c.id: (a, c) for a in self._agreements.values() for c in a.clauses}
        self._compartments = frozenset(
            c.compartment for _, c in self._clauses.values() if c.compartment is not None
        )
        self._trees: dict[str, dict[str, FieldNode]] = {}
        self._index: dict[tuple[str, str, str], tuple[Candidate, ...]] = {}
        self._build_index()

    # -- registry ----------------------------------------------------------------------------
    def audiences(self) -> list[str]:
        return sorted(self._audience_agency)

    def agencies(self) -> list[Agency]:
        return list(self._agencies.values())

    def agreements(self) -> list[Agreement]:
        return list(self._agreements.values())

    def agency(self, agency_id: str) -> Agency:
        try:
            return self._agencies[agency_id]
        except KeyError:
            raise PolicyError(f"unknown agency {agency_id!r}") from None

    def has_agency(self, agency_id: str) -> bool:
        return agency_id in self._agencies

    def agency_of_audience(self, audience: str) -> str:
        try:
            return self._audience_agency[audience]
        except KeyError:
            raise PolicyError(
                f"unknown audience {audience!r} (expected one of: {', '.join(self.audiences())})"
            ) from None

    def has_audience(self, audience: str) -> bool:
        return audience in self._audience_agency

    def agreement(self, agreement_id: str) -> Agreement:
        try:
            return self._agreements[agreement_id]
        except KeyError:
            raise PolicyError(f"unknown agreement {agreement_id!r}") from None

    def clause(self, clause_id: str) -> tuple[Agreement, Clause]:
        try:
            return self._clauses[clause_id]
        except KeyError:
            raise PolicyError(f"unknown clause {clause_id!r}") from None

    def compartments(self) -> frozenset[str]:
        """Compartments some clause names; an event in any other compartment is rejected."""
        return self._compartments

    def fields_of(self, event_type: str) -> dict[str, FieldNode]:
        tree = self._trees.get(event_type)
        if tree is None:
            tree = self._trees[event_type] = event_fields(self.catalogue, event_type)
        return tree

    # -- the index ---------------------------------------------------------------------------
    def candidates(self, event_type: str, source: str, audience: str) -> tuple[Candidate, ...]:
        """The clauses that could apply, forbids first, then by agreement and clause order."""
        return self._index.get((event_type, source, audience), ())

    def entries(self) -> list[tuple[tuple[str, str, str], tuple[Candidate, ...]]]:
        """Every (event type, source agency, audience) some clause names, with its clauses."""
        return sorted(self._index.items(), key=lambda item: item[0])

    def _build_index(self) -> None:
        known = self.catalogue.event_types()
        index: dict[tuple[str, str, str], list[Candidate]] = {}
        for agreement in self._agreements.values():
            parties = agreement.parties
            party_audiences = [
                aud for p in parties for aud in self._agencies[p].audiences if p in self._agencies
            ]
            for clause in agreement.clauses:
                sources = parties if "*" in clause.from_agencies else clause.from_agencies
                audiences = party_audiences if "*" in clause.to_audiences else clause.to_audiences
                for event_type in expand_event_types(clause.event_types, known):
                    candidate = self._candidate(agreement, clause, event_type)
                    for source in sources:
                        for audience in audiences:
                            index.setdefault((event_type, source, audience), []).append(candidate)
        for key, found in index.items():
            found.sort(key=lambda c: (c.clause.effect != "forbid", c.agreement.id, c.clause.index))
            self._index[key] = tuple(found)

    def _candidate(self, agreement: Agreement, clause: Clause, event_type: str) -> Candidate:
        plan = build_plan(self.fields_of(event_type), clause.fields, clause.summaries)
        return Candidate(
            agreement=agreement,
            clause=clause,
            event_type=event_type,
            plan=plan,
            fields=MappingProxyType(flatten(plan)),
            summaries=MappingProxyType(summaries_of(plan)),
            shared=openness(plan),
            placeholders=has_placeholders(plan),
        )
