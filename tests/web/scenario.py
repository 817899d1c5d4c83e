"""Audience views for the portal tests: scenario S1 (Jordan's release into the Knowsley IOM
cohort, mentored by MENTOR-17) plus two more MALS clients, decided by the real policy engine.

- Sam is mentored by MENTOR-99 only.
- Alex was first assigned to MENTOR-17, then reassigned to MENTOR-99.

``deliveries`` runs each event through ``evaluate`` and ``apply`` as the router does (the event
applied to the policy state first); ``fill_views`` writes each audience's deliveries into its view
database with the view store, as ``hub view run`` would.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from hub.adapters.view_store import open_view_store
from hub.policy import MemoryState, PseudonymKeys, apply, evaluate, load_agreements
from hub.views.projection import Decoded
from tests.golden.policy.builder import EventBuilder

S1 = Path(__file__).resolve().parents[1] / "golden" / "policy" / "s01_short_sentence_release.yaml"
KEYS = PseudonymKeys(b"portal-test-master-secret-012345")
AUDIENCES = ("police.iom", "mals.mentor", "mals")
JORDAN = {  # the same person, as each audience sees him
    "police.iom": ("police_nominal_id", "MP-0042"),
    "mals.mentor": ("mals_client_id", "MALS-0107"),
    "mals": ("mals_client_id", "MALS-0107"),
}
SAM = ("mals_client_id", "MALS-0200")
ALEX = ("mals_client_id", "MALS-0300")

EXTRA_PEOPLE = {
    "sam": {
        "identifiers": {"pnc_id": "15/0000200S"},
        "local_ids": {"mals": {"mals_client_id": SAM[1]}},
    },
    "alex": {
        "identifiers": {"pnc_id": "15/0000300A"},
        "local_ids": {"mals": {"mals_client_id": ALEX[1]}},
    },
}


def _registered(person: str, given: str, family: str, at: str) -> dict[str, Any]:
    payload = {"given_name": given, "family_name": family, "home_area": "Knowsley"}
    return {"type": "person.registered", "from": "mals", "subject": person, "at": at,
            "payload": payload}  # fmt: skip


def _assigned(person: str, mentor: str, at: str) -> dict[str, Any]:
    return {"type": "mentor.assigned", "from": "mals", "subject": person, "at": at,
            "payload": {"organisation": "mals", "mentor_id": mentor, "assigned_on": at[:10],
                        "first_meeting_place": f"Huyton library ({person})",
                        "meeting_arrangements": f"Thursdays at 10:00 ({person})"}}  # fmt: skip


EXTRA_EVENTS = {
    "sam_assigned": _assigned("sam", "MENTOR-99", "2015-04-01T09:00:00Z"),
    "sam_registered": _registered("sam", "Sam", "CANARY-SAM-FAMILY", "2015-04-01T09:05:00Z"),
    "alex_assigned": _assigned("alex", "MENTOR-17", "2015-04-02T09:00:00Z"),
    "alex_registered": _registered("alex", "Alex", "CANARY-ALEX-FAMILY", "2015-04-02T09:05:00Z"),
    "alex_reassigned": _assigned("alex", "MENTOR-99", "2015-04-10T09:00:00Z"),
}


def deliveries(catalogue: Any) -> dict[str, list[dict[str, Any]]]:
    """Every audience of ``AUDIENCES``: the records the router would deliver to it, in order."""
    agreements = load_agreements(catalogue=catalogue)
    doc = copy.deepcopy(yaml.safe_load(S1.read_text(encoding="utf-8")))
    doc["people"].update(EXTRA_PEOPLE)
    doc["events"].update(EXTRA_EVENTS)
    jurisdictions = {a.id: a.jurisdiction for a in agreements.agencies()}
    builder = EventBuilder(catalogue, jurisdictions, doc["people"], namespace="portal-s1")
    order: list[str] = []
    for step in doc["steps"]:
        for name in [*step.get("apply", []), *([step["check"]] if "check" in step else [])]:
            if name not in order:
                order.append(name)
    order += list(EXTRA_EVENTS)
    state = MemoryState(catalogue)
    out: dict[str, list[dict[str, Any]]] = {audience: [] for audience in AUDIENCES}
    for name in order:
        event = builder.build(name, doc["events"][name])
        state.apply_event(event)
        for audience in AUDIENCES:
            decision = evaluate(event, audience, state, agreements)
            if decision.permitted:
                out[audience].append(apply(event, decision, KEYS, state))
    return out


def fill_views(home: Path, catalogue: Any) -> str:
    """Write the views under ``home/views``; return the views URL template of the portal."""
    for audience, records in deliveries(catalogue).items():
        store = open_view_store(f"sqlite:///{home / 'views' / audience}.db", audience)
        try:
            topic = f"deliver.{audience}"
            store.apply_batch([Decoded((topic, 0, i), r) for i, r in enumerate(records)])
        finally:
            store.dispose()
    return f"sqlite:///{home / 'views'}/{{audience}}.db"
