"""Signed checkpoints, the audit key files and the witness file."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.audit.checkpoint import (
    ORIGIN,
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    CheckpointSigner,
    CheckpointVerifier,
    ensure_keypair,
    export_public_key,
    generate_keypair,
    key_id_for,
    load_public_key,
    load_signer,
    read_witness,
    verifier_key,
    write_witness,
)
from hub.domain.errors import InputError

HEAD = hashlib.sha256(b"head").hexdigest()
AT = datetime(2025, 1, 31, 9, 30, 0, 123000, tzinfo=UTC)


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner(Ed25519PrivateKey.generate())


def test_checkpoint_text_is_a_c2sp_checkpoint_with_a_timestamp_line(
    signer: CheckpointSigner,
) -> None:
    cp = signer.sign(500, HEAD, AT)
    root = base64.b64encode(bytes.fromhex(HEAD)).decode()
    assert cp.note() == f"hub-audit\n500\n{root}\ntimestamp 2025-01-31T09:30:00.123Z\n".encode()
    signer.public_key.verify(base64.b64decode(cp.signature), cp.note())


def test_signed_note_carries_the_key_hash_and_signature(signer: CheckpointSigner) -> None:
    cp = signer.sign(7, HEAD, AT)
    text, sig_line = cp.signed_note().split("\n\n")
    assert text + "\n" == cp.note().decode()
    dash, name, blob = sig_line.strip().split(" ")
    assert (dash, name) == ("\u2014", ORIGIN)
    raw = base64.b64decode(blob)
    assert raw[:4].hex() == cp.key_id == key_id_for(signer.public_key)
    assert raw[4:] == base64.b64decode(cp.signature)


def test_verifier_key_is_in_c2sp_vkey_form(signer: CheckpointSigner) -> None:
    name, key_hash, encoded = verifier_key(signer.public_key).split("+", 2)
    raw = signer.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert (name, key_hash) == (ORIGIN, signer.key_id)
    assert base64.b64decode(encoded) == b"\x01" + raw


def test_verifier_accepts_a_good_checkpoint_and_names_what_is_wrong_otherwise(
    signer: CheckpointSigner,
) -> None:
    verifier = CheckpointVerifier(signer.public_key)
    cp = signer.sign(10, HEAD, AT)
    assert verifier.problem(cp) is None
    changed = {
        "origin": "hub.audit/other",
        "size": 11,
        "head_hash": HEAD.upper(),
        "at": "2025-01-31T09:30:00.124Z",
        "key_id": "00000000",
        "signature": cp.signature[:-4] + "AAA=",
    }
    for name, value in changed.items():
        problem = verifier.problem(dataclasses.replace(cp, **{name: value}))
        assert problem is not None, name
        assert "\n" not in problem


def test_signature_with_changed_padding_bits_is_refused(signer: CheckpointSigner) -> None:
    cp = signer.sign(10, HEAD, AT)
    assert cp.signature.endswith("==")
    last = cp.signature[-3]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sibling = alphabet[alphabet.index(last) ^ 1]  # same 4 data bits, other padding bits
    tampered = dataclasses.replace(cp, signature=cp.signature[:-3] + sibling + "==")
    assert base64.b64decode(tampered.signature) == base64.b64decode(cp.signature)
    assert CheckpointVerifier(signer.public_key).problem(tampered) is not None


def test_verifier_trusts_every_key_it_is_given(signer: CheckpointSigner) -> None:
    old = CheckpointSigner(Ed25519PrivateKey.generate())
    verifier = CheckpointVerifier([old.public_key, signer.public_key])
    assert verifier.problem(old.sign(1, HEAD)) is None
    assert verifier.problem(signer.sign(2, HEAD)) is None


def test_generate_keypair_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    private, public = generate_keypair(keys)
    assert (private.name, public.name) == (PRIVATE_KEY_FILE, PUBLIC_KEY_FILE)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    signer = load_signer(keys)
    cp = signer.sign(1, HEAD)
    assert CheckpointVerifier(load_public_key(public)).problem(cp) is None


def test_generate_keypair_never_overwrites(tmp_path: Path) -> None:
    generate_keypair(tmp_path)
    before = (tmp_path / PRIVATE_KEY_FILE).read_bytes()
    with pytest.raises(InputError, match="already exists"):
        generate_keypair(tmp_path)
    assert (tmp_path / PRIVATE_KEY_FILE).read_bytes() == before


def test_ensure_keypair_is_idempotent(tmp_path: Path) -> None:
    first = ensure_keypair(tmp_path)
    key = (tmp_path / PRIVATE_KEY_FILE).read_bytes()
    assert ensure_keypair(tmp_path) == first
    assert (tmp_path / PRIVATE_KEY_FILE).read_bytes() == key


def test_exported_public_key_verifies_checkpoints(tmp_path: Path) -> None:
    generate_keypair(tmp_path)
    exported = tmp_path / "exported.pem"
    exported.write_text(export_public_key(tmp_path))
    cp = load_signer(tmp_path).sign(3, HEAD)
    assert CheckpointVerifier(load_public_key(exported)).problem(cp) is None


def test_unreadable_keys_are_input_errors(tmp_path: Path) -> None:
    (tmp_path / PUBLIC_KEY_FILE).write_text("not a key")
    with pytest.raises(InputError):
        load_public_key(tmp_path / PUBLIC_KEY_FILE)
    with pytest.raises(InputError):
        load_signer(tmp_path)


def test_witness_file_round_trips(tmp_path: Path, signer: CheckpointSigner) -> None:
    cp = dataclasses.replace(signer.sign(42, HEAD, AT), id=5)
    path = tmp_path / "witness.json"
    write_witness(path, cp)
    assert read_witness(path) == dataclasses.replace(cp, id=None)
    assert json.loads(path.read_text())["note"] == cp.signed_note()


@pytest.mark.parametrize("content", ["", "{}", "[1]", '{"origin": "hub-audit"}'])
def test_a_file_that_is_not_a_witness_is_an_input_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "witness.json"
    path.write_text(content)
    with pytest.raises(InputError, match="not an audit witness file"):
        read_witness(path)
