"""Signed checkpoints of the chain (Ed25519), their key files and the witness file.

A checkpoint commits to (size, head hash, time). Its signed text follows C2SP tlog-checkpoint::

    hub-audit                                     <- origin
    500                                           <- size
    q1w2...=                                      <- base64 of the head hash
    timestamp 2025-01-31T09:30:00.000Z            <- extension line

and the signature is Ed25519 over those bytes. As a C2SP signed note it is followed by a blank line
and ``— <origin> <base64(4-byte key hash || signature)>``, the key hash being
``SHA-256(origin || "\\n" || 0x01 || public key)[:4]``; ``key_id`` is that key hash in hex.
The stored columns are used verbatim to rebuild the text, so a change to any of them breaks the
signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hub.audit.entry import format_at, parse_at
from hub.domain.errors import InputError

log = structlog.get_logger(__name__)

ORIGIN = "hub-audit"
PRIVATE_KEY_FILE = "audit_ed25519.key"
PUBLIC_KEY_FILE = "audit_ed25519.pub"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{8}")
_ED25519_ALG = b"\x01"


@dataclass(frozen=True)
class Checkpoint:
    """A signed head of the chain. ``at`` is ``format_at`` text; ``signature`` is base64."""

    origin: str
    size: int
    head_hash: str
    at: str
    key_id: str
    signature: str
    id: int | None = None

    def note(self) -> bytes:
        """The signed text (raises ``InputError`` if a column cannot be part of one)."""
        return checkpoint_note(self.origin, self.size, self.head_hash, self.at)

    def signed_note(self) -> str:
        """The C2SP signed note: the text, a blank line and the signature line."""
        key_hash = bytes.fromhex(self.key_id)
        signature = base64.b64decode(self.signature)
        sig_line = base64.b64encode(key_hash + signature).decode()
        return f"{self.note().decode()}\n\u2014 {self.origin} {sig_line}\n"

    @property
    def at_datetime(self) -> datetime:
        return parse_at(self.at)


def checkpoint_note(origin: str, size: int, head_hash: str, at: str) -> bytes:
    """The text a checkpoint's signature covers; every part is checked to be well formed."""
    if not origin or any(c in origin for c in "\n\r") or not origin.isprintable():
        raise InputError(f"checkpoint origin {origin!r} (expected one printable line)")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InputError(f"checkpoint size {size!r} (expected a whole number)")
    if not isinstance(head_hash, str) or not _HEX64.fullmatch(head_hash):
        raise InputError(f"checkpoint head {head_hash!r} (expected 64 lower-case hex digits)")
    if not isinstance(at, str) or format_at(parse_at(at)) != at:
        raise InputError(f"checkpoint time {at!r} (expected text like 2025-01-31T09:30:00.000Z)")
    root = base64.b64encode(bytes.fromhex(head_hash)).decode()
    return f"{origin}\n{size}\n{root}\ntimestamp {at}\n".encode()


def key_id_for(public_key: Ed25519PublicKey, origin: str = ORIGIN) -> str:
    """The C2SP key hash of ``public_key`` under the name ``origin``, as 8 hex digits."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(origin.encode() + b"\n" + _ED25519_ALG + raw).digest()[:4].hex()


def verifier_key(public_key: Ed25519PublicKey, origin: str = ORIGIN) -> str:
    """The C2SP ``vkey`` string (``name+hash+base64(0x01||key)``) witness tooling takes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    encoded = base64.b64encode(_ED25519_ALG + raw).decode()
    return f"{origin}+{key_id_for(public_key, origin)}+{encoded}"


class CheckpointSigner:
    """Signs checkpoints with the audit private key."""

    def __init__(self, private_key: Ed25519PrivateKey, origin: str = ORIGIN) -> None:
        self._key = private_key
        self.origin = origin
        self.public_key = private_key.public_key()
        self.key_id = key_id_for(self.public_key, origin)

    def sign(self, size: int, head_hash: str, at: datetime | None = None) -> Checkpoint:
        stamp = format_at(at or datetime.now(UTC))
        signature = self._key.sign(checkpoint_note(self.origin, size, head_hash, stamp))
        return Checkpoint(
            self.origin, size, head_hash, stamp, self.key_id, base64.b64encode(signature).decode()
        )


class CheckpointVerifier:
    """Checks checkpoint signatures against one or more trusted public keys (key rotation)."""

    def __init__(
        self, public_keys: Ed25519PublicKey | list[Ed25519PublicKey], origin: str = ORIGIN
    ) -> None:
        keys = public_keys if isinstance(public_keys, list) else [public_keys]
        self.origin = origin
        self._keys = {
            key_id_for(key, origin): key.public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            for key in keys
        }

    def problem(self, cp: Checkpoint) -> str | None:
        """Why ``cp`` is not a valid signed checkpoint, or None if it is."""
        if cp.origin != self.origin:
            return f"origin {cp.origin!r} is not {self.origin!r}"
        raw_key = self._keys.get(cp.key_id) if isinstance(cp.key_id, str) else None
        if raw_key is None:
            return f"key id {cp.key_id!r} is not a trusted audit key"
        try:
            note = cp.note()
        except InputError as exc:
            return str(exc)
        signature = _strict_b64(cp.signature)
        if signature is None or len(signature) != 64:
            return f"signature {cp.signature!r} is not base64 of 64 bytes"
        if not _signature_valid(raw_key, note, signature):
            return "signature does not verify"
        return None


@lru_cache(maxsize=4096)
def _signature_valid(raw_key: bytes, message: bytes, signature: bytes) -> bool:
    """A pure function of its arguments, so repeated verifications of a trail (the auditor UI's,
    the tests' thousands of mutants) check each unchanged checkpoint once."""
    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _strict_b64(text: object) -> bytes | None:
    """Decode canonical base64 only: a changed padding bit or character is never ignored."""
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode() == text else None


# keys


def generate_keypair(keys_dir: Path, origin: str = ORIGIN) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair (private key mode 0600) under ``keys_dir``; never overwrite."""
    private_path, public_path = keys_dir / PRIVATE_KEY_FILE, keys_dir / PUBLIC_KEY_FILE
    if private_path.exists() or public_path.exists():
        raise InputError(f"{private_path}: an audit key already exists (refusing to overwrite)")
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(private_path, private_pem, 0o600)
    _write_new(public_path, _public_pem(key.public_key()), 0o644)
    log.info(
        "audit_key_generated", path=str(private_path), key_id=key_id_for(key.public_key(), origin)
    )
    return private_path, public_path


def ensure_keypair(keys_dir: Path, origin: str = ORIGIN) -> tuple[Path, Path]:
    """The key pair under ``keys_dir``, generated if there is none (what ``hub init`` calls)."""
    private_path, public_path = keys_dir / PRIVATE_KEY_FILE, keys_dir / PUBLIC_KEY_FILE
    if private_path.exists():
        if not public_path.exists():
            _write_new(public_path, _public_pem(_load_private(private_path).public_key()), 0o644)
        return private_path, public_path
    return generate_keypair(keys_dir, origin)


def load_signer(keys_dir: Path, origin: str = ORIGIN) -> CheckpointSigner:
    """The signer for the private key under ``keys_dir``."""
    path = keys_dir / PRIVATE_KEY_FILE
    if path.exists() and path.stat().st_mode & 0o077:
        log.warning("audit_key_permissions_too_open", path=str(path), mode=oct(path.stat().st_mode))
    return CheckpointSigner(_load_private(path), origin)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (``audit_ed25519.pub`` or an exported copy)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the audit public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path}: not an Ed25519 public key")
    return key


def export_public_key(keys_dir: Path) -> str:
    """The audit public key as PEM text, for auditors and witnesses."""
    return (
        load_public_key(keys_dir / PUBLIC_KEY_FILE)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: cannot read the audit signing key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path}: not an Ed25519 private key")
    return key


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


# witness file


def write_witness(path: Path, cp: Checkpoint) -> None:
    """Export ``cp`` for an outside witness: JSON with the fields and the C2SP signed note."""
    data = {key: value for key, value in asdict(cp).items() if key != "id"}
    data["note"] = cp.signed_note()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    log.info("audit_checkpoint_exported", path=str(path), size=cp.size)


def read_witness(path: Path) -> Checkpoint:
    """The checkpoint in a witness file; a file that is not one is an ``InputError``.

    The fields are authoritative and ``verify`` checks their signature; ``note`` is the same
    checkpoint for outside tooling and is not read back.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        cp = Checkpoint(
            origin=data["origin"],
            size=data["size"],
            head_hash=data["head_hash"],
            at=data["at"],
            key_id=data["key_id"],
            signature=data["signature"],
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not an audit witness file: {exc}") from exc
    return cp
