"""Envelope encryption: nonces (CR-1), AAD binding (CR-2), tampering (CR-3), the DEK usage cap
(CR-7), KEK rotation and erasure at the keyring level, with the real local key stores."""

from __future__ import annotations

import datetime as dt
import decimal
import inspect
import os
import random
from pathlib import Path

import pytest

from hub.adapters.key_store import LocalKeyStore, SqliteDekStore, kid_secret
from hub.crypto import Context, DecryptError, FieldCrypto, Keyring, KeyStoreUnavailable
from hub.crypto.blob import parse
from hub.crypto.fields import HEADER_ENC, HEADER_KEY, decode_value, encode_value
from hub.serde.catalogue import Catalogue

SOAK = os.environ.get("HUBTEST_TIER") == "soak"
NOW = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)


def keyring(home: Path, **kwargs: object) -> Keyring:
    return Keyring(
        LocalKeyStore(home, create=True), SqliteDekStore(home / "deks.db"),
        kid_secret(home, create=True), **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def ctx(subject: str = "src:police|police_nominal_id|N1", field: str = "notes",
        event_id: str = "e-1", audience: str = "ingest") -> Context:  # fmt: skip
    return Context(subject, field, event_id, audience)


def test_encrypt_has_no_nonce_parameter() -> None:
    for function in (Keyring.encrypt, FieldCrypto.seal):
        names = [p.lower() for p in inspect.signature(function).parameters]
        assert not [n for n in names if "nonce" in n or n in ("iv", "counter")], names


def test_no_nonce_repeats_under_one_dek(tmp_path: Path) -> None:
    """CR-1 with 10^5 encryptions (10^6 under HUBTEST_TIER=soak), across two keyrings (two
    processes) sharing the DEK: the nonce counter ranges they reserve never overlap."""
    size = 1_000_000 if SOAK else 100_000
    first, second = keyring(tmp_path), keyring(tmp_path)
    context = ctx()
    nonces: set[bytes] = set()
    versions: set[int] = set()
    for i in range(size):
        blob = (first if i % 2 else second).encrypt(b"x", context)
        ref, _, nonce, _ = parse(blob)
        nonces.add(nonce)
        versions.add(ref.dek_version)
    assert versions == {1}
    assert len(nonces) == size


def test_moved_ciphertexts_fail_as_decrypt_errors(tmp_path: Path) -> None:
    """CR-2: 10^3 swaps to another field, event, subject or audience: all InvalidTag, reported as
    DecryptError, never plaintext."""
    ring = keyring(tmp_path)
    rnd = random.Random(7)
    other = [
        lambda c: ctx(c.subject, c.field + "x", c.event_id, c.audience),
        lambda c: ctx(c.subject, c.field, c.event_id + "0", c.audience),
        lambda c: ctx(c.subject + "9", c.field, c.event_id, c.audience),
        lambda c: ctx(c.subject, c.field, c.event_id, "mals"),
    ]
    failures = 0
    for i in range(1000):
        origin = ctx(f"src:police|police_nominal_id|N{i % 50}", rnd.choice(["notes", "summary"]),
                     f"e-{i}", rnd.choice(["ingest", "police.iom"]))  # fmt: skip
        blob = ring.encrypt(f"canary-{i}".encode(), origin)
        assert ring.decrypt(blob, origin) == f"canary-{i}".encode()
        with pytest.raises(DecryptError) as caught:
            ring.decrypt(blob, other[i % 4](origin))
        assert caught.value.reason == "decrypt_failed"
        failures += 1
    assert failures == 1000


def test_every_flipped_byte_is_rejected(tmp_path: Path) -> None:
    """CR-3: flip each byte of 100 blobs (version, key id, versions, nonce, ciphertext, tag)."""
    ring = keyring(tmp_path)
    rejected = flips = 0
    for i in range(100):
        context = ctx(event_id=f"e-{i}")
        blob = ring.encrypt(f"canary value {i}".encode(), context)
        for at in range(len(blob)):
            bad = bytearray(blob)
            bad[at] ^= 0x01 << (at % 8)
            flips += 1
            with pytest.raises(DecryptError):
                ring.decrypt(bytes(bad), context)
            rejected += 1
    assert rejected == flips > 100 * 60


def test_dek_cap_makes_a_new_version(tmp_path: Path) -> None:
    """CR-7: with a cap of 1,000 encryptions, the 1,001st uses DEK version 2; all decrypt."""
    ring = keyring(tmp_path, max_encryptions=1000)
    context = ctx()
    blobs = [ring.encrypt(str(i).encode(), context) for i in range(2500)]
    versions = [parse(b)[0].dek_version for b in blobs]
    assert versions[:1000] == [1] * 1000
    assert versions[1000:2000] == [2] * 1000
    assert set(versions[2000:]) == {3}
    assert [ring.decrypt(b, context) for b in blobs] == [str(i).encode() for i in range(2500)]
    fresh = keyring(tmp_path, max_encryptions=1000)  # another process: DEKs from the store
    assert fresh.decrypt(blobs[0], context) == b"0"


def test_kek_rotation_keeps_old_blobs_readable(tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    old = ring.encrypt(b"before", ctx())
    assert ring.rotate_kek() == 2
    new = ring.encrypt(b"after", ctx())
    assert (parse(old)[0].kek_version, parse(new)[0].kek_version) == (1, 2)
    assert parse(new)[0].dek_version == 2
    reader = keyring(tmp_path)
    assert (reader.decrypt(old, ctx()), reader.decrypt(new, ctx())) == (b"before", b"after")


def test_erased_key_cannot_decrypt_and_leaves_no_bytes(tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    gone, kept = ctx("src:a|s|GONE"), ctx("src:a|s|KEPT")
    blob, other = ring.encrypt(b"secret", gone), ring.encrypt(b"kept", kept)
    ring.link("src:a|s|GONE", "hs-1")
    wrapped = SqliteDekStore(tmp_path / "deks.db").latest(ring.kid("src:a|s|GONE"))
    assert wrapped is not None
    assert ring.erase(["hs-1"], at=NOW) == [ring.kid("src:a|s|GONE")]
    for reader in (ring, keyring(tmp_path)):
        with pytest.raises(DecryptError) as caught:
            reader.decrypt(blob, gone)
        assert caught.value.reason == "key_erased"
        assert reader.decrypt(other, kept) == b"kept"
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert wrapped.wrapped not in data
    again = ring.encrypt(b"new", gone)  # a new event after erasure gets a new DEK version
    assert parse(again)[0].dek_version == 2 and ring.decrypt(again, gone) == b"new"


def test_key_store_outage_raises_and_never_encrypts(tmp_path: Path) -> None:
    ring = keyring(tmp_path, unavailable_wait_s=0.1)
    kek = tmp_path / "kek.json"
    kek.rename(tmp_path / "kek.away")
    with pytest.raises(KeyStoreUnavailable):
        ring.encrypt(b"x", ctx())
    (tmp_path / "kek.away").rename(kek)
    assert ring.decrypt(ring.encrypt(b"x", ctx()), ctx()) == b"x"
    assert oct(kek.stat().st_mode & 0o777) == "0o600"


def test_typed_values_round_trip() -> None:
    for value in ("tëxt", True, False, 42, decimal.Decimal("1234.50"), 1.5, b"\x00",
                  dt.date(2026, 1, 2), NOW, ["a", "b"], [], None):  # fmt: skip
        assert decode_value(encode_value(value)) == value


def test_sensitive_fields_travel_in_a_header(tmp_path: Path) -> None:
    catalogue = Catalogue.load()
    fields = FieldCrypto(catalogue, keyring(tmp_path))
    envelope = {"event_id": "e-1", "event_type": "assessment.needs", "source_agency": "probation",
                "subject": {"local_id": "P1", "local_id_scheme": "probation_case_ref"}}  # fmt: skip
    record = {"envelope": envelope, "disclosure": None, "needs": [
        {"need_code": "health", "clinical_detail": "CANARY-A"},
        {"need_code": "housing", "clinical_detail": None}]}  # fmt: skip
    sealed, headers = fields.seal(record)
    assert record["needs"][0]["clinical_detail"] == "CANARY-A"  # the caller's record is untouched
    assert [n["clinical_detail"] for n in sealed["needs"]] == [None, None]
    assert [n["need_code"] for n in sealed["needs"]] == [None, None]
    assert [k for k, _ in headers] == [HEADER_KEY, HEADER_ENC]
    assert b"CANARY-A" not in b"".join(v for _, v in headers)
    opened = fields.open(sealed, headers)
    assert opened["needs"] == record["needs"]
    moved = {**sealed, "envelope": {**envelope, "event_id": "e-2"}}
    moved["needs"] = [{"need_code": None, "clinical_detail": None} for _ in range(2)]
    with pytest.raises(DecryptError):
        fields.open(moved, headers)
