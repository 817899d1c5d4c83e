"""The disclosure oracle: what a subject's disclosure report must list, computed with the pure
policy function (``evaluate`` over ``MemoryState``) from the events in the order they were
routed, never from the trail. Shared by the golden scenarios through the broker (S1, S7) and
PR-4 in test_audit_trail_through_broker.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from hub.audit import reports
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
