"""The portal's users and their failed sign-ins (SQLAlchemy Core; SQLite or PostgreSQL).

A user belongs to one audience (``police.iom``, ``mals``, ``mals.mentor``...) and has one role:
``practitioner`` (their audience's view), ``mentor`` (their own mentees in the mentor view, named
by ``mentor_id``) or ``auditor``. Failed sign-ins are counted per user name, known or not, so a
lock-out says nothing about whether a name exists.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from hub.domain.errors import InfraError, InputError
from hub.web.config import ROLES
from hub.web.passwords import check_new_password, hash_password

_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")

metadata = MetaData()
web_users = Table(
    "web_users",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("audience", String(128), nullable=False),
    Column("role", String(32), nullable=False),
    Column("mentor_id", String(128), nullable=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
web_login_failures = Table(
    "web_login_failures",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("first_at", DateTime(timezone=True), nullable=False),
    Column("locked_until", DateTime(timezone=True), nullable=True),
)


@dataclass(frozen=True)
class User:
    username: str
    audience: str
    role: str
    mentor_id: str | None
    password_hash: str


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def normalise_username(name: str) -> str:
    return name.strip().lower()


class UserStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise InfraError(f"users database: {exc.__class__.__name__}: {exc}") from exc

    def create(self) -> None:
        with self._begin() as conn:
            metadata.create_all(conn)

    # -- users -----------------------------------------------------------------------------------
    def add(
        self, username: str, audience: str, role: str, password: str, mentor_id: str | None = None
    ) -> User:
        username = normalise_username(username)
        if not _NAME.match(username):
            raise InputError(
                f"user name {username!r} (expected 2-64 lower-case letters, digits, '.', '_', "
                "'-' or '@', starting with a letter or digit)"
            )
        if role not in ROLES:
            raise InputError(f"role {role!r} (expected one of {', '.join(ROLES)})")
        if role == "mentor" and not mentor_id:
            raise InputError("a mentor needs --mentor-id (the mentoring organisation's id)")
        if role != "mentor" and mentor_id:
            raise InputError(f"--mentor-id is for mentors only, not role {role!r}")
        if audience.endswith(".mentor") and role != "mentor":
            # that view holds every mentor's mentees; only the mentee filter makes it safe
            raise InputError(f"audience {audience!r} is for role mentor only, not {role!r}")
        check_new_password(password)
        user = User(username, audience, role, mentor_id, hash_password(password))
        try:
            with self._begin() as conn:
                conn.execute(
                    insert(web_users).values(
                        username=user.username, audience=audience, role=role,
                        mentor_id=mentor_id, password_hash=user.password_hash,
                        created_at=dt.datetime.now(dt.UTC),
                    )
                )  # fmt: skip
        except IntegrityError as exc:
            raise InputError(f"user {username!r} already exists") from exc
        return user

    def get(self, username: str) -> User | None:
        with self._begin() as conn:
            row = conn.execute(
                select(web_users).where(web_users.c.username == normalise_username(username))
            ).first()
        if row is None:
            return None
        return User(row.username, row.audience, row.role, row.mentor_id, row.password_hash)

    # -- failed sign-ins -------------------------------------------------------------------------
    def locked_until(self, username: str, now: dt.datetime) -> dt.datetime | None:
        """When the lock-out of ``username`` ends, if it is locked out at ``now``."""
        with self._begin() as conn:
            until = conn.execute(
                select(web_login_failures.c.locked_until).where(
                    web_login_failures.c.username == normalise_username(username)
                )
            ).scalar_one_or_none()
        if until is not None and _utc(until) > now:
            return _utc(until)
        return None

    def record_failure(
        self, username: str, now: dt.datetime, max_failures: int, window: dt.timedelta
    ) -> bool:
        """Count a failed sign-in (failures older than ``window`` are forgotten); on the
        ``max_failures``-th, lock the name out for ``window``. True when it is now locked."""
        name = normalise_username(username)[:64]
        t = web_login_failures
        with self._begin() as conn:
            row = conn.execute(select(t).where(t.c.username == name)).first()
            if row is None:
                conn.execute(insert(t).values(username=name, failures=1, first_at=now))
                failures = 1
            else:
                stale = now - _utc(row.first_at) > window
                failures = 1 if stale else row.failures + 1
                first_at = now if stale else row.first_at
                conn.execute(
                    update(t).where(t.c.username == name)
                    .values(failures=failures, first_at=first_at, locked_until=None)
                )  # fmt: skip
            if failures >= max_failures:
                conn.execute(
                    update(t).where(t.c.username == name)
                    .values(failures=0, first_at=now, locked_until=now + window)
                )  # fmt: skip
                return True
        return False

    def clear_failures(self, username: str) -> None:
        with self._begin() as conn:
            conn.execute(
                delete(web_login_failures).where(
                    web_login_failures.c.username == normalise_username(username)
                )
            )


def open_user_store(url: str) -> UserStore:
    """The user store at ``url`` (SQLite or PostgreSQL), its tables created if missing. A new
    SQLite file is made readable by its owner only: it holds the password hashes."""
    from hub import bootstrap

    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        path = Path(database)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    store = UserStore(bootstrap.engine_for(url))
    store.create()
    return store
