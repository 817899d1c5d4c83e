"""What the ``hub`` commands call for the audit trail (``hub init``, ``hub audit verify``,
``hub audit checkpoint --export``). The CLI stays a thin shell: it opens the store, calls these
and prints; ``AuditIntegrityError`` carries exit code 3.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from hub.audit.checkpoint import (
    PUBLIC_KEY_FILE,
    Checkpoint,
    ensure_keypair,
    load_public_key,
    read_witness,
    write_witness,
)
from hub.audit.protocols import AuditStore, TrailSource
from hub.audit.verify import VerifyReport, verify
from hub.domain.errors import InputError

log = structlog.get_logger(__name__)

KEYS_DIR = "keys"


def keys_dir(home: Path) -> Path:
    """Where the audit key pair lives: ``HUB_HOME/keys``."""
    return home / KEYS_DIR


def init_audit_keys(home: Path) -> tuple[Path, Path]:
    """``hub init``: make the audit signing key pair unless there is one; (private, public)."""
    return ensure_keypair(keys_dir(home))


def verify_trail(
    source: TrailSource,
    public_keys: list[Path],
    witness: Path | None = None,
) -> VerifyReport:
    """``hub audit verify [--public-key FILE]... [--witness FILE]``.

    ``public_keys`` should be copies the auditor holds; the default, ``HUB_HOME/keys``, trusts
    whoever can write the hub's state directory. Call ``report.raise_if_broken()`` to exit 3.
    """
    if not public_keys:
        raise InputError("hub audit verify: no public key given")
    keys = [load_public_key(path) for path in public_keys]
    return verify(source, keys, read_witness(witness) if witness is not None else None)


def default_public_key(home: Path) -> Path:
    return keys_dir(home) / PUBLIC_KEY_FILE


def export_checkpoint(store: AuditStore, path: Path) -> Checkpoint:
    """``hub audit checkpoint --export FILE``: write the latest signed checkpoint as a witness
    file. Only the materialiser signs (one writer keeps checkpoints in order); it signs every N
    entries and, with ``checkpoint_interval_s``, the head after T seconds."""
    cp = store.latest_checkpoint()
    if cp is None:
        raise InputError("the audit trail has no signed checkpoint yet (is hub audit run running?)")
    write_witness(path, cp)
    return cp
