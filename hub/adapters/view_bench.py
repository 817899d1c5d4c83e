"""``hub bench view``: delivered events applied per second into a view database, exactly once,
beside a plain bulk upsert of the same timeline rows in the same run.

The exactly-once path is what the view consumer does after decoding: ``apply_batch`` per batch of
``batch_size`` records, each in one transaction with its offsets (locks, the slice read, the
projection, timeline, withheld, tombstones, subjects, status and offsets written). The baseline
upserts the timeline rows those records give, a batch per transaction, and nothing else. Decoding
is not counted in either. Run it against a scratch database: the tables are emptied first.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

from hub.views.projection import RETRACTION, Decoded, Entry, timeline_row
from hub.views.samples import sample_deliveries

AUDIENCE = "bench"
TOPIC = "deliver.bench"
PARTITIONS = 3


def bench_view(n: int, db_url: str, *, batch_size: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Apply ``n`` sample deliveries to ``db_url`` both ways; rates in records per second."""
    from hub.adapters.view_store import open_view_store  # the harness wires an adapter

    records = sample_deliveries(n, audience=AUDIENCE, seed=seed)
    offsets = [0] * PARTITIONS
    entries: list[Entry] = []
    for record in records:
        partition = zlib.crc32(record["envelope"]["subject"]["local_id"].encode()) % PARTITIONS
        entries.append(Decoded((TOPIC, partition, offsets[partition]), record))
        offsets[partition] += 1
    rows = [timeline_row(r) for r in records if r["envelope"]["event_type"] != RETRACTION]

    store = open_view_store(db_url, AUDIENCE)
    try:
        store.reset()
        started = time.perf_counter()
        for start in range(0, len(entries), batch_size):
            store.apply_batch(entries[start : start + batch_size])
        exactly_once = time.perf_counter() - started
        subjects = store.count("view_subjects")

        store.reset()
        started = time.perf_counter()
        for start in range(0, len(rows), batch_size):
            store.bulk_upsert_timeline(rows[start : start + batch_size])
        bulk = time.perf_counter() - started
        store.reset()
    finally:
        store.dispose()
    return {
        "backend": store.engine.dialect.name,
        "records": len(entries),
        "subjects": subjects,
        "batch_size": batch_size,
        "exactly_once_s": round(exactly_once, 3),
        "exactly_once_per_s": round(len(entries) / exactly_once),
        "bulk_upsert_rows": len(rows),
        "bulk_upsert_s": round(bulk, 3),
        "bulk_upsert_per_s": round(len(rows) / bulk),
    }
