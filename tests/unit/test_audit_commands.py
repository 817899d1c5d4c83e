"""The functions the ``hub`` commands call: key set-up, export for a witness, verify with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.adapters.audit_store import open_audit_store
from hub.audit.bench import sample_entries
from hub.audit.checkpoint import load_signer
from hub.audit.commands import (
    default_public_key,
    export_checkpoint,
    init_audit_keys,
    keys_dir,
    verify_trail,
)
from hub.audit.materialise import materialise
from hub.domain.errors import AuditIntegrityError, InputError


def test_init_export_and_verify_with_the_witness(tmp_path: Path) -> None:
    home = tmp_path / "home"
    private, public = init_audit_keys(home)
    assert init_audit_keys(home) == (private, public)
    assert public == default_public_key(home)
    store = open_audit_store(f"sqlite:///{tmp_path / 'hub.db'}")
    signer = load_signer(keys_dir(home))
    values = [e.to_json_bytes() for e in sample_entries(30)]
    with pytest.raises(InputError, match="no signed checkpoint"):
        export_checkpoint(store, tmp_path / "w.json")

    materialise(store, [(0, i, v) for i, v in enumerate(values[:20])], signer, checkpoint_every=10)
    witness = tmp_path / "witness.json"
    assert export_checkpoint(store, witness).size == 20
    materialise(store, [(0, i, v) for i, v in enumerate(values)], signer, checkpoint_every=10)

    report = verify_trail(store, [public], witness)
    assert report.ok and report.witness_size == 20 and report.size == 30
    report.raise_if_broken()

    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_entries WHERE seq > 15")
        conn.exec_driver_sql("DELETE FROM audit_checkpoints WHERE size > 15")
    assert verify_trail(store, [public]).ok  # a clean cut, undetectable without the witness
    broken = verify_trail(store, [public], witness)
    with pytest.raises(AuditIntegrityError, match="truncated") as caught:
        broken.raise_if_broken()
    assert caught.value.exit_code == 3
    store.close()
