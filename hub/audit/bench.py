"""``hub bench audit``: entries per second appended by the materialiser and verified by verify.

Appending runs ``materialise`` on pre-encoded ``hub.audit`` values into a fresh SQLite file,
in batches of ``batch_size`` (one transaction each, as the Kafka loop does), with a signed
checkpoint every ``checkpoint_every`` entries. Verifying re-walks the stored trail.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.audit.checkpoint import CheckpointSigner
from hub.audit.entry import AuditEntry, make_entry_id, payload_hash
from hub.audit.materialise import materialise
from hub.audit.protocols import AuditStore
from hub.audit.verify import verify

_AGENCIES = ("merseyside_police", "probation_nw", "mals", "kmbc", "hmpps")
_AUDIENCES = ("mals", "mals.mentor", "kmbc", "probation_nw", "merseyside_police")
_EVENTS = ("CustodyReleased", "RiskAssessed", "LicenceConditionsSet", "MeetingBooked")
_FIELDS = ("first_name", "date_of_birth", "address", "risk_level", "licence_end", "offence")
_TREATMENTS = ("keep", "drop", "mask", "generalise", "pseudonymise", "withheld")


def sample_entries(n: int, seed: int = 0) -> list[AuditEntry]:
    """``n`` realistic entries (decisions, deliveries, denials, reads), deterministic per seed."""
    rnd = random.Random(seed)
    start = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
    out: list[AuditEntry] = []
    for i in range(n):
        event_id = f"evt-{seed}-{i // 3:08d}"
        audience = rnd.choice(_AUDIENCES)
        kind = ("decided", "delivered", "access", "rejected")[i % 4 if i % 7 else 3]
        permit = rnd.random() < 0.8
        fields = {name: rnd.choice(_TREATMENTS) for name in rnd.sample(_FIELDS, 4)}
        out.append(
            AuditEntry(
                entry_id=make_entry_id(kind, event_id, audience, i),
                kind=kind,
                at=start + timedelta(milliseconds=i * 250),
                component="web" if kind == "access" else "router",
                actor=f"user-{rnd.randrange(40)}" if kind == "access" else "router-1",
                role="practitioner" if kind == "access" else "service",
                outcome=("permit" if permit else "deny") if kind == "decided" else "ok",
                subject_ref=f"ps-{rnd.getrandbits(64):016x}",
                event_id=event_id,
                event_type=rnd.choice(_EVENTS),
                source_agency=rnd.choice(_AGENCIES),
                audience=audience,
                agreement_id="iom-merseyside-2024",
                agreement_version="3",
                clause_ids=tuple(f"c{rnd.randrange(12)}" for _ in range(rnd.randrange(1, 3))),
                fields=fields if kind in ("decided", "delivered") else {},
                reason=None if permit else "no clause permits this audience",
                purpose="offender management",
                payload_hash=payload_hash(f"{event_id}/{audience}".encode()),
                details={"partition": str(i % 3), "offset": str(i)},
            )
        )
    return out


def bench_audit(
    n: int = 100_000,
    *,
    open_store: Callable[[str], AuditStore],
    batch_size: int = 500,
    checkpoint_every: int = 1000,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Append ``n`` entries to a fresh SQLite trail and verify it; return the figures.

    ``open_store`` opens a store for a database URL (``hub.adapters.audit_store.open_audit_store``;
    passed in because audit logic does not import adapters). The database is made in a fresh
    directory under ``workdir`` (default: the system's temporary directory), so the figure
    depends on that disk.
    """
    values = [entry.to_json_bytes() for entry in sample_entries(n)]
    signer = CheckpointSigner(Ed25519PrivateKey.generate())
    with tempfile.TemporaryDirectory(prefix="hub-bench-audit-", dir=workdir) as tmp:
        db = Path(tmp) / "audit.db"
        store = open_store(f"sqlite:///{db}")
        started = time.perf_counter()
        result = materialise(
            store,
            ((0, offset, value) for offset, value in enumerate(values)),
            signer,
            checkpoint_every=checkpoint_every,
            batch_size=batch_size,
        )
        append_s = time.perf_counter() - started
        started = time.perf_counter()
        report = verify(store, signer.public_key)
        verify_s = time.perf_counter() - started
        db_bytes = db.stat().st_size
        close = getattr(store, "close", None)
        if close is not None:
            close()
    return {
        "entries": n,
        "batch_size": batch_size,
        "checkpoints": len(result.checkpoints),
        "append_s": round(append_s, 3),
        "appended_per_s": round(result.appended / append_s),
        "verify_s": round(verify_s, 3),
        "verified_per_s": round(report.size / verify_s),
        "verify_ok": report.ok,
        "db_bytes": db_bytes,
    }
