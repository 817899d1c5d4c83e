"""Password hashes: scrypt (memory-hard), a fresh 16-byte salt per password, constant-time check.

The stored form names its parameters, so they can be raised later without breaking old hashes:
``scrypt$<n>$<r>$<p>$<salt, base64>$<hash, base64>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import cache

from hub.domain.errors import InputError

N, R, P = 2**14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
MAXMEM = 64 * 1024 * 1024  # scrypt needs 128 * n * r bytes: 16 MiB at these parameters
MIN_LENGTH = 12
MAX_LENGTH = 1024


def check_new_password(password: str) -> None:
    """The rules a new password must meet (length only, as NCSC and NIST advise)."""
    if len(password) < MIN_LENGTH:
        raise InputError(f"password: {len(password)} characters (at least {MIN_LENGTH})")
    if len(password) > MAX_LENGTH:
        raise InputError(f"password: {len(password)} characters (at most {MAX_LENGTH})")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=MAXMEM, dklen=HASH_BYTES
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(_scrypt(password, salt, N, R, P))}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; a malformed hash never matches."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or len(password) > MAX_LENGTH:
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@cache
def dummy_hash() -> str:
    """Checked against when the user name is unknown, so that takes as long as a known name."""
    return hash_password(secrets.token_urlsafe(16))
