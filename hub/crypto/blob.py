"""The ciphertext blob of one encrypted field value, and the AAD that binds it to its place.

Layout (version 1), all integers big-endian::

    0       1 byte   format version (1)
    1       1 byte   length n of the key id
    2       n bytes  key id (ASCII hex: a keyed hash of the key's name, never the name itself)
    2+n     4 bytes  DEK version
    6+n     4 bytes  KEK version (that wrapped the DEK; informational, the DEK store knows it)
    10+n    12 bytes nonce
    22+n    ...      AES-256-GCM ciphertext followed by its 16-byte tag

The AAD is the blob's header (everything before the nonce) plus the context the reader expects:
the key id derived from the record's own subject, the dotted field path with array indices, the
event id and the audience (``ingest`` on an ingest topic). A blob copied into another field,
event, subject or audience, or any changed header byte, fails the tag check.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hub.domain.errors import SerdeError

FORMAT_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
_AAD_DOMAIN = b"hub.field.v1"


class DecryptError(SerdeError):
    """A blob that cannot be opened: malformed, tampered, out of place, or its key erased.

    ``reason`` is ``bad_blob``, ``decrypt_failed`` or ``key_erased``; never any plaintext."""

    def __init__(self, message: str, *, reason: str = "decrypt_failed") -> None:
        super().__init__(message, reason=reason)


@dataclass(frozen=True)
class KeyRef:
    """Which key sealed a blob: the key id, the DEK version and the KEK version that wrapped it."""

    kid: str
    dek_version: int
    kek_version: int

    def header(self) -> bytes:
        kid = self.kid.encode("ascii")
        return (
            struct.pack(">BB", FORMAT_VERSION, len(kid))
            + kid
            + struct.pack(">II", self.dek_version, self.kek_version)
        )


@dataclass(frozen=True)
class Context:
    """Where a value belongs: the AAD of its blob (with the key id the reader expects)."""

    subject: str  # the key's name (e.g. ``src:police|police_nominal_id|N1``); hashed to a kid
    field: str
    event_id: str
    audience: str


def aad(header: bytes, kid: str, context: Context) -> bytes:
    text = "\x00".join((kid, context.field, context.event_id, context.audience))
    return _AAD_DOMAIN + b"\x00" + header + b"\x00" + text.encode("utf-8")


def pack(ref: KeyRef, nonce: bytes, sealed: bytes) -> bytes:
    return ref.header() + nonce + sealed


def parse(blob: bytes) -> tuple[KeyRef, bytes, bytes, bytes]:
    """(key reference, header, nonce, ciphertext with tag); ``DecryptError`` when malformed."""
    if not isinstance(blob, bytes | bytearray) or len(blob) < 2:
        raise DecryptError("encrypted field: blob too short", reason="bad_blob")
    version, n = blob[0], blob[1]
    if version != FORMAT_VERSION:
        raise DecryptError(f"encrypted field: unknown blob version {version}", reason="bad_blob")
    end = 2 + n + 8
    if n == 0 or len(blob) < end + NONCE_BYTES + TAG_BYTES:
        raise DecryptError("encrypted field: blob truncated", reason="bad_blob")
    try:
        kid = bytes(blob[2 : 2 + n]).decode("ascii")
    except UnicodeDecodeError:
        raise DecryptError("encrypted field: key id is not ASCII", reason="bad_blob") from None
    dek_version, kek_version = struct.unpack(">II", blob[2 + n : end])
    ref = KeyRef(kid, dek_version, kek_version)
    nonce = bytes(blob[end : end + NONCE_BYTES])
    return ref, bytes(blob[:end]), nonce, bytes(blob[end + NONCE_BYTES :])
