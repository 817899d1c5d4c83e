"""A subject's status folded a batch at a time onto its stored status equals the status folded
from its whole timeline at once: for random delivery sequences (corrections, retractions, events
arriving out of time order, withheld fields) in random batches, through the SQL store (which folds
onto the stored status where it can and refolds the subject where it cannot) and through the fold
itself (``status_row`` onto a base, whether the base is the folded value kept in memory or the
text read back from a database)."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.adapters.view_store import SqlViewStore, open_view_store
from hub.views.projection import (
    RETRACTION,
    Decoded,
    Entry,
    StatusRow,
    TimelineRow,
    ViewState,
    apply_batch,
    canonical_dump,
    canonical_json,
    status_row,
)
from hub.views.samples import sample_deliveries
from hub.views.status import STATUS_EVENT_TYPES, derive_status

AUDIENCE = "mals"
TOPIC = "deliver.mals"


def shuffled_late(records: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Move about one event in six back in time (so it arrives after later ones of its subject)
    and swap some neighbours in the order read (a correction or retraction may then arrive
    before what it names)."""
    for record in records:
        if record["envelope"]["event_type"] != RETRACTION and rng.random() < 1 / 6:
            record["envelope"]["occurred_at"] -= dt.timedelta(days=rng.randrange(1, 300))
    for i in range(len(records) - 1):
        if rng.random() < 0.1:
            records[i], records[i + 1] = records[i + 1], records[i]
    return records


def entries_for(records: list[dict[str, Any]]) -> list[Entry]:
    offsets = [0, 0]
    out: list[Entry] = []
    for record in records:
        p = int(record["envelope"]["subject"]["local_id"][-1], 16) % 2
        out.append(Decoded((TOPIC, p, offsets[p]), record))
        offsets[p] += 1
    return out


@pytest.fixture(scope="module")
def store() -> Iterator[SqlViewStore]:
    store = open_view_store("sqlite://", AUDIENCE)  # in memory: one database for the module
    yield store
    store.dispose()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(1, 60), min_size=1))
def test_store_folding_batch_by_batch_gives_the_status_of_the_whole_timeline(
    store: SqlViewStore, seed: int, sizes: list[int]
) -> None:
    rng = random.Random(seed)
    records = shuffled_late(sample_deliveries(300, audience=AUDIENCE, seed=seed, subjects=8), rng)
    entries = entries_for(records)
    store.reset()
    start, batch = 0, 0
    while start < len(entries):
        size = sizes[batch % len(sizes)]
        store.apply_batch(entries[start : start + size])
        start, batch = start + size, batch + 1

    whole = ViewState(AUDIENCE)
    apply_batch(whole, entries)
    tables = store.tables()
    assert tables["view_status"], "the sample informs some status"
    assert tables["view_corrections"] and tables["view_retractions"]
    assert store.dump() == canonical_dump(whole.tables())


def subject_timelines(seed: int) -> list[list[TimelineRow]]:
    """Each subject's remaining rows in timeline order (corrections and retractions applied)."""
    state = ViewState(AUDIENCE)
    records = sample_deliveries(400, audience=AUDIENCE, seed=seed, subjects=6)
    apply_batch(state, entries_for(records))
    return [state.rows_of(key) for key in sorted(state.by_subject)]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(1, 80), max_size=6))
def test_status_folded_onto_a_base_equals_the_status_folded_at_once(
    seed: int, cuts: list[int]
) -> None:
    for rows in subject_timelines(seed):
        key = (rows[0].subject_scheme, rows[0].subject_id)
        bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
        kept: StatusRow | None = None  # the folded value kept in memory between batches
        read: dict[str, Any] | None = None  # the stored text, parsed as a database gives it
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            kept = status_row(key, rows[lo:hi], kept)
            informing = [r for r in rows[lo:hi] if r.event_type in STATUS_EVENT_TYPES]
            read = derive_status(informing, json.loads(canonical_json(read)) if read else None)
        at_once = status_row(key, rows)

        assert kept == at_once
        assert canonical_json(read) == at_once.detail


def test_a_withheld_mark_in_the_base_is_kept_or_cleared_as_folded_at_once() -> None:
    marked = 0
    for rows in subject_timelines(5):
        key = rows[0].subject
        at_once = status_row(key, rows)
        for cut in range(1, len(rows)):
            base = status_row(key, rows[:cut])
            if json.loads(base.detail)["withheld"]:
                marked += 1
                assert status_row(key, rows[cut:], base) == at_once

    assert marked, "the sample withholds fields the status reads"
