"""One bearer token per agency for the HTTP ingest API (SQLAlchemy Core; SQLite or PostgreSQL).

A token is 32 random bytes (URL-safe base64, ``hubi_`` prefix) shown once when it is made; only
its SHA-256 is stored. A slow password hash (scrypt) would add nothing: the token carries 256 bits
of entropy, so its hash cannot be reversed by guessing, and a fast hash keeps each request cheap.
Making a new token for an agency replaces the old one (rotation); revoking removes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, delete, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from hub.domain.errors import InfraError

PREFIX = "hubi_"
metadata = MetaData()
ingest_tokens = Table(
    "ingest_tokens",
    metadata,
    Column("agency", String(64), primary_key=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class TokenInfo:
    agency: str
    created_at: dt.datetime
    fingerprint: str  # the first 8 hex digits of the hash: enough to tell tokens apart


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self) -> None:
        try:
            metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise InfraError(f"cannot create the ingest token table: {exc}") from exc

    def issue(self, agency: str) -> str:
        """A new token for ``agency``, replacing any earlier one; returned once, never stored."""
        token = PREFIX + secrets.token_urlsafe(32)
        now = dt.datetime.now(dt.UTC)
        with self.engine.begin() as conn:
            conn.execute(delete(ingest_tokens).where(ingest_tokens.c.agency == agency))
            conn.execute(
                insert(ingest_tokens).values(
                    agency=agency, token_sha256=_digest(token), created_at=now
                )
            )
        return token

    def revoke(self, agency: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(delete(ingest_tokens).where(ingest_tokens.c.agency == agency))
        return bool(result.rowcount)

    def agency_for(self, token: str) -> str | None:
        """The agency a presented token belongs to, or None."""
        if not token.startswith(PREFIX) or len(token) > 100:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(ingest_tokens.c.agency).where(ingest_tokens.c.token_sha256 == _digest(token))
            ).first()
        return None if row is None else str(row.agency)

    def list(self) -> list[TokenInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(ingest_tokens).order_by(ingest_tokens.c.agency)).all()
        return [TokenInfo(r.agency, r.created_at, r.token_sha256[:8]) for r in rows]


def open_token_store(url: str) -> TokenStore:
    """The token store at ``url`` (a SQLite file's directory is made), tables created."""
    from hub.bootstrap import engine_for

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    store = TokenStore(engine_for(url))
    store.create()
    return store
