"""Key stores behind :mod:`hub.crypto`: the local KEK file and the SQLite DEK store.

Both live under ``$HUB_HOME/keys`` with mode 0600:

- ``kek.json``: the key-encryption keys by version and the current version. ``hub keys rotate``
  adds a version; older versions stay, so every DEK they wrapped still unwraps. A cloud KMS
  replaces this class by another :class:`hub.crypto.KeyStore` (wrap/unwrap by key version, the
  KEK never leaving the KMS).
- ``deks.db``: wrapped DEKs, their usage counters, key links (key id -> hub subject) and erasure
  tombstones. ``secure_delete`` is on and the database keeps a rollback journal (no WAL), so an
  erased DEK leaves no copy in the file's free pages or in a write-ahead log.
- ``kid.key``: the secret behind key ids (a keyed hash of each key's name).
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hub.crypto import DecryptError, KeyStoreUnavailable, StoredDek
from hub.domain.errors import InfraError

KEK_FILE = "kek.json"
DEK_DB = "deks.db"
KID_FILE = "kid.key"


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def kid_secret(keys_dir: Path, *, create: bool = False) -> bytes:
    path = keys_dir / KID_FILE
    if not path.exists():
        if not create:
            raise InfraError(f"{path} does not exist; run `hub init` first")
        keys_dir.mkdir(parents=True, exist_ok=True)
        _write_private(path, secrets.token_bytes(32))
    return path.read_bytes()


class LocalKeyStore:
    """KEKs in ``kek.json`` (0600). Reads the file again whenever it changed (a rotation by
    another process is seen at the next call)."""

    def __init__(self, keys_dir: Path, *, create: bool = False) -> None:
        self.path = keys_dir / KEK_FILE
        self._stamp: int | None = None
        self._current = 0
        self._keys: dict[int, AESGCM] = {}
        if create and not self.path.exists():
            keys_dir.mkdir(parents=True, exist_ok=True)
            with self._locked():
                if not self.path.exists():
                    self._save({"current": 1, "keys": {"1": _b64(AESGCM.generate_key(256))}})

    def current_version(self) -> int:
        self._load()
        return self._current

    def wrap(self, version: int, dek: bytes, context: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._kek(version).encrypt(nonce, dek, context)

    def unwrap(self, version: int, wrapped: bytes, context: bytes) -> bytes:
        try:
            return self._kek(version).decrypt(wrapped[:12], wrapped[12:], context)
        except InvalidTag:
            raise DecryptError("a wrapped DEK does not authenticate under its KEK") from None

    def rotate(self) -> int:
        with self._locked():
            doc = self._read()
            version = max(int(v) for v in doc["keys"]) + 1
            doc["keys"][str(version)] = _b64(AESGCM.generate_key(256))
            doc["current"] = version
            self._save(doc)
        self._stamp = None
        return version

    def versions(self) -> list[int]:
        self._load()
        return sorted(self._keys)

    # -- internals -------------------------------------------------------------------------------
    def _kek(self, version: int) -> AESGCM:
        self._load()
        kek = self._keys.get(version)
        if kek is None:
            self._stamp = None
            self._load()
            kek = self._keys.get(version)
        if kek is None:
            raise DecryptError(f"no KEK version {version} in {self.path}", reason="key_erased")
        return kek

    def _load(self) -> None:
        try:
            stamp = os.stat(self.path).st_mtime_ns
        except OSError as exc:
            raise KeyStoreUnavailable(f"{self.path}: {exc.strerror}") from None
        if stamp == self._stamp:
            return
        doc = self._read()
        self._keys = {int(v): AESGCM(base64.b64decode(k)) for v, k in doc["keys"].items()}
        self._current = int(doc["current"])
        self._stamp = stamp

    def _read(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.path.read_text()))
        except (OSError, ValueError) as exc:
            raise KeyStoreUnavailable(f"{self.path}: cannot read the KEKs ({exc})") from None

    def _save(self, doc: dict[str, Any]) -> None:
        _write_private(self.path, json.dumps(doc, sort_keys=True).encode())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        lock = self.path.with_name(f".{KEK_FILE}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS deks (
    kid TEXT NOT NULL, version INTEGER NOT NULL, kek_version INTEGER NOT NULL,
    wrapped BLOB NOT NULL, nonce_base BLOB NOT NULL, used INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL, PRIMARY KEY (kid, version));
CREATE TABLE IF NOT EXISTS key_links (
    kid TEXT NOT NULL, subject TEXT NOT NULL, PRIMARY KEY (kid, subject));
CREATE INDEX IF NOT EXISTS ix_key_links_subject ON key_links (subject);
CREATE TABLE IF NOT EXISTS erased_keys (
    kid TEXT PRIMARY KEY, through INTEGER NOT NULL, at TEXT NOT NULL);
"""


class SqliteDekStore:
    """The DEK store in ``deks.db`` (see the module docs)."""

    def __init__(self, path: Path, *, clock: Callable[[], dt.datetime] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.path = path
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=30, isolation_level=None,
                                     check_same_thread=False)  # fmt: skip
        self._conn.execute("PRAGMA journal_mode=DELETE")
        self._conn.execute("PRAGMA secure_delete=ON")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            finally:
                cur.close()

    def _one(self, sql: str, args: Sequence[Any]) -> Any:
        with self._lock:
            return self._conn.execute(sql, args).fetchone()

    def latest(self, kid: str) -> StoredDek | None:
        row = self._one(
            "SELECT kid, version, kek_version, wrapped, nonce_base FROM deks WHERE kid = ? "
            "ORDER BY version DESC LIMIT 1", (kid,)
        )  # fmt: skip
        return StoredDek(*row) if row else None

    def get(self, kid: str, version: int) -> StoredDek | None:
        row = self._one(
            "SELECT kid, version, kek_version, wrapped, nonce_base FROM deks "
            "WHERE kid = ? AND version = ?", (kid, version)
        )  # fmt: skip
        return StoredDek(*row) if row else None

    def create(self, dek: StoredDek) -> StoredDek:
        with self._write() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO deks (kid, version, kek_version, wrapped, nonce_base, "
                "used, created) VALUES (?, ?, ?, ?, ?, 0, ?)",
                (dek.kid, dek.version, dek.kek_version, dek.wrapped, dek.nonce_base,
                 self._clock().isoformat()),
            )  # fmt: skip
        stored = self.get(dek.kid, dek.version)
        if stored is None:
            raise InfraError(f"DEK {dek.kid} v{dek.version} vanished while being made")
        return stored

    def reserve(self, kid: str, version: int, n: int, cap: int) -> tuple[int, int]:
        with self._write() as cur:
            row = cur.execute(
                "SELECT used FROM deks WHERE kid = ? AND version = ?", (kid, version)
            ).fetchone()
            if row is None:
                return 0, 0
            start = int(row[0])
            granted = max(0, min(n, cap - start))
            if granted:
                cur.execute(
                    "UPDATE deks SET used = ? WHERE kid = ? AND version = ?",
                    (start + granted, kid, version),
                )
        return start, granted

    def erased_through(self, kid: str) -> int:
        row = self._one("SELECT through FROM erased_keys WHERE kid = ?", (kid,))
        return int(row[0]) if row else 0

    def erasures(self) -> int:
        return int(self._one("SELECT count(*) FROM erased_keys", ())[0])

    def link(self, kid: str, subject: str) -> None:
        if self._one("SELECT 1 FROM key_links WHERE kid = ? AND subject = ?", (kid, subject)):
            return  # read first: a link is written once per key and subject, not per event
        with self._write() as cur:
            cur.execute("INSERT OR IGNORE INTO key_links (kid, subject) VALUES (?, ?)",
                        (kid, subject))  # fmt: skip

    def kids_of(self, subjects: Sequence[str]) -> list[str]:
        with self._lock:
            found: set[str] = set()
            for subject in subjects:
                found.update(r[0] for r in self._conn.execute(
                    "SELECT kid FROM key_links WHERE subject = ?", (subject,)))  # fmt: skip
            return sorted(found)

    def destroy(self, kids: Sequence[str], at: dt.datetime) -> int:
        """Delete every version of these DEKs and their links; keep a tombstone per key id."""
        destroyed = 0
        with self._write() as cur:
            for kid in kids:
                top = cur.execute("SELECT max(version) FROM deks WHERE kid = ?", (kid,)).fetchone()
                through = max(int(top[0] or 0), self._through(cur, kid))
                destroyed += cur.execute("DELETE FROM deks WHERE kid = ?", (kid,)).rowcount
                cur.execute("DELETE FROM key_links WHERE kid = ?", (kid,))
                cur.execute(
                    "INSERT INTO erased_keys (kid, through, at) VALUES (?, ?, ?) ON CONFLICT "
                    "(kid) DO UPDATE SET through = excluded.through, at = excluded.at",
                    (kid, through, at.isoformat()),
                )
        with self._lock:
            self._conn.execute("VACUUM")  # no free page keeps a copy either
        return destroyed

    @staticmethod
    def _through(cur: sqlite3.Cursor, kid: str) -> int:
        row = cur.execute("SELECT through FROM erased_keys WHERE kid = ?", (kid,)).fetchone()
        return int(row[0]) if row else 0


def open_keyring(keys_dir: Path, *, create: bool = False, **options: Any) -> Any:
    """The keyring over the local KEK file and DEK store in ``keys_dir``."""
    from hub.crypto import Keyring

    return Keyring(
        LocalKeyStore(keys_dir, create=create), SqliteDekStore(keys_dir / DEK_DB),
        kid_secret(keys_dir, create=create), **options,
    )  # fmt: skip


def field_crypto_for(settings: Any, catalogue: Any = None) -> Any:
    """The :class:`~hub.crypto.FieldCrypto` of the hub's settings, or None when field
    encryption is off (``HUB_FIELD_ENCRYPTION``)."""
    if not settings.field_encryption:
        return None
    from hub.crypto import FieldCrypto
    from hub.serde.catalogue import Catalogue

    return FieldCrypto(catalogue or Catalogue.load(), open_keyring(settings.home / "keys"))
