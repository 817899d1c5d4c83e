"""Envelope encryption: one data key (DEK) per key name, wrapped by a key-encryption key (KEK).

- A key name is what a key belongs to: ``src:<agency>|<scheme>|<local id>`` for what a source
  publishes, ``aud:<audience>|<scheme>|<local id>`` for what an audience receives. Blobs and the
  DEK store hold only the key id, a keyed hash of the name (``kid``).
- The KEK lives in a :class:`KeyStore` (a local file by default, a cloud KMS pluggable): the
  keyring hands it a DEK to wrap or a wrapped DEK to unwrap and never sees the KEK itself.
- Nonces are never reused: :meth:`Keyring.encrypt` takes no nonce. Each DEK version has a random
  96-bit base; the nonce of the i-th encryption is base + i (mod 2^96), and the counter i comes
  from ranges reserved atomically in the :class:`DekStore`, so two processes sharing a DEK never
  draw the same i. A DEK version serves at most ``max_encryptions`` (CR-7); then a new version is
  made. A KEK rotation also starts a new DEK version (new writes name the new KEK version; old
  blobs keep naming theirs, and the old KEK stays able to unwrap them).
- Erasure destroys every DEK version of the given keys and leaves a tombstone (key id and the last
  version destroyed, no name): a blob of an erased version raises ``DecryptError(key_erased)``.
- If the key store cannot be reached, :class:`KeyStoreUnavailable` is raised (after a short
  retry): callers stop, they never fall back to plaintext (CR-6).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hub.crypto.blob import NONCE_BYTES, Context, DecryptError, KeyRef, aad, parse
from hub.domain.errors import InfraError

log = structlog.get_logger(__name__)

DEFAULT_MAX_ENCRYPTIONS = 5_000_000  # per DEK version, as Kroxylicious' maxEncryptionsPerDek
RESERVE_BLOCK = 4096  # encryptions reserved per store write (a process exit wastes the rest)
KEK_CHECK_S = 0.25  # how often a running keyring looks for a rotated KEK
_NONCE_SPACE = 1 << (8 * NONCE_BYTES)
_T = TypeVar("_T")


class KeyStoreUnavailable(InfraError):
    """The KEK store (file, KMS) cannot be reached: stop and retry later, never go on in clear."""


@dataclass(frozen=True)
class StoredDek:
    kid: str
    version: int
    kek_version: int
    wrapped: bytes
    nonce_base: bytes


class KeyStore(Protocol):
    """The KEK side (a local file, a cloud KMS): wraps and unwraps DEKs by KEK version."""

    def current_version(self) -> int: ...

    def wrap(self, version: int, dek: bytes, context: bytes) -> bytes: ...

    def unwrap(self, version: int, wrapped: bytes, context: bytes) -> bytes: ...

    def rotate(self) -> int: ...


class DekStore(Protocol):
    """Wrapped DEKs by key id and version, usage counters, key links and erasure tombstones."""

    def latest(self, kid: str) -> StoredDek | None: ...

    def get(self, kid: str, version: int) -> StoredDek | None: ...

    def create(self, dek: StoredDek) -> StoredDek: ...

    def reserve(self, kid: str, version: int, n: int, cap: int) -> tuple[int, int]: ...

    def erased_through(self, kid: str) -> int: ...

    def erasures(self) -> int: ...

    def link(self, kid: str, subject: str) -> None: ...

    def kids_of(self, subjects: Sequence[str]) -> list[str]: ...

    def destroy(self, kids: Sequence[str], at: dt.datetime) -> int: ...


@dataclass
class _Active:
    ref: KeyRef
    aead: AESGCM
    base: int
    next: int
    end: int
    header: bytes = b""


class Keyring:
    def __init__(
        self,
        kms: KeyStore,
        deks: DekStore,
        kid_secret: bytes,
        *,
        max_encryptions: int = DEFAULT_MAX_ENCRYPTIONS,
        cache_ttl_s: float = 300.0,
        unavailable_wait_s: float = 1.0,
        kek_check_s: float = KEK_CHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(kid_secret) < 16:
            raise ValueError("the key id secret must be at least 16 bytes")
        if not 0 < max_encryptions < _NONCE_SPACE:
            raise ValueError("max_encryptions must be positive and below 2^96")
        self.kms = kms
        self.deks = deks
        self._kid_secret = kid_secret
        self.max_encryptions = max_encryptions
        self.cache_ttl_s = cache_ttl_s
        self.unavailable_wait_s = unavailable_wait_s
        self.kek_check_s = kek_check_s
        self._clock = clock
        self._lock = threading.RLock()
        self._active: dict[str, _Active] = {}
        self._open: dict[tuple[str, int], tuple[AESGCM, float]] = {}
        self._erasures_seen = -1
        self._erasures_checked = float("-inf")
        self._linked: set[tuple[str, str]] = set()
        self._kek = 0
        self._kids: dict[str, str] = {}
        self._kek_checked = float("-inf")

    # -- names ---------------------------------------------------------------------------------
    def kid(self, name: str) -> str:
        kid = self._kids.get(name)
        if kid is None:
            digest = hmac.new(self._kid_secret, b"hub.kid.v1\x00" + name.encode(), hashlib.sha256)
            kid = digest.hexdigest()[:32]
            if len(self._kids) >= 100_000:
                self._kids.clear()
            self._kids[name] = kid
        return kid

    # -- the two operations ---------------------------------------------------------------------
    def encrypt(self, plaintext: bytes, context: Context) -> bytes:
        """Seal ``plaintext`` under the current DEK of ``context.subject``. No nonce parameter:
        the keyring draws it (see the module docs)."""
        kid = self.kid(context.subject)
        with self._lock:
            active = self._current(kid)
            counter = active.next
            active.next += 1
        nonce = ((active.base + counter) % _NONCE_SPACE).to_bytes(NONCE_BYTES, "big")
        sealed = active.aead.encrypt(nonce, plaintext, aad(active.header, kid, context))
        return active.header + nonce + sealed

    def decrypt(self, blob: bytes, context: Context) -> bytes:
        """Open ``blob`` for ``context``; ``DecryptError`` when it is malformed, tampered, out of
        place or its key was erased (``reason`` says which). Never returns partial plaintext."""
        ref, header, nonce, sealed = parse(blob)
        aead = self._dek(ref)
        try:
            return aead.decrypt(nonce, sealed, aad(header, self.kid(context.subject), context))
        except InvalidTag:
            raise DecryptError(
                f"encrypted field {context.field}: authentication failed (tampered, or moved "
                "from another field, event, subject or audience)"
            ) from None

    def current_ref(self, name: str) -> KeyRef:
        """The key reference new blobs of ``name`` carry (made if there is none yet)."""
        with self._lock:
            return self._current(self.kid(name)).ref

    def is_erased(self, ref: KeyRef) -> bool:
        self._check_erasures()
        return ref.dek_version <= self.deks.erased_through(ref.kid)

    # -- key links and erasure -------------------------------------------------------------------
    def link(self, name: str, subject: str) -> None:
        """Record that key ``name`` belongs to hub subject ``subject`` (erasure finds it so)."""
        kid = self.kid(name)
        if (kid, subject) not in self._linked:
            self.deks.link(kid, subject)
            self._linked.add((kid, subject))

    def erase(self, subjects: Iterable[str], names: Iterable[str] = (), *,
              at: dt.datetime) -> list[str]:  # fmt: skip
        """Destroy every DEK version of every key linked to ``subjects`` and of ``names``;
        returns the key ids destroyed."""
        kids = sorted(set(self.deks.kids_of(sorted(set(subjects)))) | {self.kid(n) for n in names})
        self.deks.destroy(kids, at)
        with self._lock:
            for kid in kids:
                self._active.pop(kid, None)
            for key in [k for k in self._open if k[0] in set(kids)]:
                del self._open[key]
            self._linked = {pair for pair in self._linked if pair[0] not in set(kids)}
        log.info("keys_erased", keys=len(kids))
        return kids

    def rotate_kek(self) -> int:
        version = self._kms(lambda: self.kms.rotate())
        with self._lock:
            self._active.clear()
            self._kek_checked = float("-inf")
        log.info("kek_rotated", kek_version=version)
        return version

    def forget(self) -> None:
        """Drop every unwrapped DEK held in this process."""
        with self._lock:
            self._active.clear()
            self._open.clear()

    # -- internals -------------------------------------------------------------------------------
    def _current(self, kid: str) -> _Active:
        active = self._active.get(kid)
        now = self._clock()
        if now - self._kek_checked >= self.kek_check_s:
            self._kek = self._kms(self.kms.current_version)
            self._kek_checked = now
        kek = self._kek
        if active is not None and active.next < active.end and active.ref.kek_version == kek:
            return active
        stored = self.deks.latest(kid)
        floor = self.deks.erased_through(kid)
        for _ in range(3):
            if stored is None or stored.version <= floor or stored.kek_version != kek:
                stored = self._new_dek(kid, max(floor, stored.version if stored else 0) + 1, kek)
            block = min(RESERVE_BLOCK, self.max_encryptions)
            start, granted = self.deks.reserve(kid, stored.version, block, self.max_encryptions)
            if granted > 0:
                aead = self._unwrap(stored)
                ref = KeyRef(kid, stored.version, stored.kek_version)
                active = _Active(ref, aead, int.from_bytes(stored.nonce_base, "big"), start,
                                 start + granted, ref.header())  # fmt: skip
                self._active[kid] = active
                return active
            log.info("dek_cap_reached", version=stored.version)  # CR-7: a new version
            stored = self._new_dek(kid, stored.version + 1, kek)
        raise InfraError(f"key {kid}: could not reserve encryptions under a fresh DEK")

    def _new_dek(self, kid: str, version: int, kek: int) -> StoredDek:
        dek = AESGCM.generate_key(bit_length=256)
        wrapped = self._kms(lambda: self.kms.wrap(kek, dek, _wrap_context(kid, version)))
        made = StoredDek(kid, version, kek, wrapped, os.urandom(NONCE_BYTES))
        stored = self.deks.create(made)  # a racing process may have made it first: use theirs
        if stored.wrapped == wrapped:
            self._open[(kid, version)] = (AESGCM(dek), self._clock() + self.cache_ttl_s)
        return stored

    def _dek(self, ref: KeyRef) -> AESGCM:
        self._check_erasures()
        key = (ref.kid, ref.dek_version)
        with self._lock:
            cached = self._open.get(key)
            if cached is not None and cached[1] > self._clock():
                return cached[0]
        if ref.dek_version <= self.deks.erased_through(ref.kid):
            raise DecryptError("encrypted field: the subject's key was erased", reason="key_erased")
        stored = self.deks.get(ref.kid, ref.dek_version)
        if stored is None:
            raise DecryptError("encrypted field: no such key (erased or never made)",
                               reason="key_erased")  # fmt: skip
        return self._unwrap(stored)

    def _unwrap(self, stored: StoredDek) -> AESGCM:
        key = (stored.kid, stored.version)
        with self._lock:
            cached = self._open.get(key)
            if cached is not None and cached[1] > self._clock():
                return cached[0]
        context = _wrap_context(stored.kid, stored.version)
        dek = self._kms(lambda: self.kms.unwrap(stored.kek_version, stored.wrapped, context))
        aead = AESGCM(dek)
        with self._lock:
            self._open[key] = (aead, self._clock() + self.cache_ttl_s)
        return aead

    def _check_erasures(self) -> None:
        """Another process may have erased keys: drop what this one holds when the count moved."""
        now = self._clock()
        if now - self._erasures_checked < 1.0:
            return
        self._erasures_checked = now
        count = self.deks.erasures()
        if count != self._erasures_seen:
            self._erasures_seen = count
            self.forget()

    def _kms(self, call: Callable[[], _T]) -> _T:
        """Call the key store; retry an outage for ``unavailable_wait_s``, then raise it."""
        deadline = self._clock() + self.unavailable_wait_s
        delay = 0.05
        while True:
            try:
                return call()
            except KeyStoreUnavailable:
                if self._clock() >= deadline:
                    log.error("key_store_unavailable")
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)


def _wrap_context(kid: str, version: int) -> bytes:
    return f"hub.dek.v1\x00{kid}\x00{version}".encode()
