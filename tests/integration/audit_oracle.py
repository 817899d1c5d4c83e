"""The disclosure oracle: what a subject's disclosure report must list, computed with the pure
policy function (``evaluate`` over ``MemoryState``) from the events in the order they were
routed, never from the trail. Shared by the golden scenarios through the broker (S1, S7) and
PR-4 in test_audit_trail_through_broker.py; and what each kind of entry must carry (AU-8).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from hub.audit import reports
from hub.audit.entry import OUTCOMES, format_at
from hub.audit.protocols import StoredEntry
from hub.policy import MemoryState, evaluate

Delivered = dict[tuple[str, str], tuple[dict[str, str], frozenset[str]]]


def disclosure_oracle(
    events: Iterable[Mapping[str, Any]], catalogue: Any, agreements: Any, keys: Any
) -> dict[str, Delivered]:
    """audit pseudonym -> (event id, audience) -> (fields shared with their treatment, fields
    withheld), for every delivery the agreements permit."""
    state = MemoryState(catalogue)
    audiences = list(agreements.audiences())
    out: dict[str, Delivered] = defaultdict(dict)
    seen: set[str] = set()
    for event in events:
        event_id = event["envelope"]["event_id"]
        if event_id in seen:
            continue
        seen.add(event_id)
        state.apply_event(event)
        decisions = [evaluate(event, audience, state, agreements) for audience in audiences]
        if any(d.effect == "reject" for d in decisions):
            continue  # to the DLQ: nobody receives it
        subject_ref = keys.pseudonym("audit", state.subject_of(event))
        for decision in decisions:
            if decision.permitted:
                shared = {name: rule for name, rule in decision.fields.items() if rule != "drop"}
                withheld = frozenset(n for n, rule in decision.fields.items() if rule == "drop")
                out[subject_ref][(event_id, decision.audience)] = (shared, withheld)
    return dict(out)


def reported(report: reports.DisclosureReport) -> Delivered:
    """The same shape, read from a disclosure report."""
    return {
        (d.entry.event_id or "", d.entry.audience or ""): (d.shared, frozenset(d.withheld))
        for d in report.deliveries
    }


# AU-8: what each kind of entry must carry, beyond the UTC millisecond time, the component and the
# outcome that all carry. Router entries name the router as actor; people's entries their role.
ENTRY_CONTENT = {
    "policy_loaded": ("actor",),
    "published": ("actor", "subject_ref", "event_id", "event_type", "source_agency",
                  "payload_hash"),
    "decided": ("actor", "subject_ref", "event_id", "event_type", "source_agency", "audience",
                "reason"),
    "delivered": ("actor", "subject_ref", "event_id", "event_type", "source_agency", "audience",
                  "agreement_id", "agreement_version", "clause_ids", "purpose", "payload_hash"),
    "retracted": ("actor", "subject_ref", "event_id", "source_agency", "audience", "reason",
                  "payload_hash"),
    "corrected": ("actor", "subject_ref", "event_id", "event_type", "source_agency", "reason"),
    "rejected": ("actor", "source_agency", "reason", "payload_hash"),
    "login_ok": ("actor", "role", "audience"),
    "login_failed": ("actor", "reason"),
    "access": ("actor", "role", "audience", "subject_ref", "purpose"),
    "access_denied": ("actor", "role", "audience", "reason"),
    "auditor_query": ("actor", "role", "justification"),
}  # fmt: skip


def entry_content_problems(entries: Iterable[StoredEntry]) -> list[str]:
    """Every entry that lacks what its kind must carry, as ``#seq kind: what``."""
    problems = []
    for stored in entries:
        e = stored.entry
        where = f"#{stored.seq} {e.kind}"
        offset = e.at.utcoffset()
        if offset is None or offset or not format_at(e.at).endswith("Z"):
            problems.append(f"{where}: time {e.at!r} is not UTC")
        if not e.component or e.outcome not in OUTCOMES:
            problems.append(f"{where}: component {e.component!r}, outcome {e.outcome!r}")
        problems += [f"{where}: no {name}" for name in ENTRY_CONTENT.get(e.kind, ())
                     if not getattr(e, name)]  # fmt: skip
        if e.subject_ref is not None and len(e.subject_ref) != 64:
            problems.append(f"{where}: subject_ref {e.subject_ref!r} is not a pseudonym")
    return problems
