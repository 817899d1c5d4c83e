"""The schema registry's rules, over a ``RegistryStore``.

Confluent semantics: a schema gets one global id wherever it is registered (same schema text
modulo layout, same id); each subject numbers its versions 1, 2, ...; registering a schema the
subject already holds returns the existing version; a new version must pass the subject's
compatibility level (global default BACKWARD) against the live versions; deletes are soft first,
permanent second. Errors carry Confluent's error codes so the HTTP layer can answer as Confluent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from hub.domain.errors import InputError, SchemaError
from hub.registry import compat

log = structlog.get_logger(__name__)

AVRO = "AVRO"
SUPPORTED_SCHEMA_TYPES = (AVRO,)
LATEST = "latest"
MAX_VERSION = 2**31 - 1
MAX_SUBJECT_LENGTH = 512


# --- errors ---------------------------------------------------------------------------------


class RegistryError(InputError):
    """A request the registry refuses; ``error_code`` is Confluent's."""

    error_code = 50001

    @property
    def http_status(self) -> int:
        code = self.error_code
        return code if code < 1000 else code // 100


class SubjectNotFoundError(RegistryError):
    error_code = 40401


class VersionNotFoundError(RegistryError):
    error_code = 40402


class SchemaNotFoundError(RegistryError):
    error_code = 40403


class SubjectSoftDeletedError(RegistryError):
    error_code = 40404


class SubjectNotSoftDeletedError(RegistryError):
    error_code = 40405


class VersionSoftDeletedError(RegistryError):
    error_code = 40406


class VersionNotSoftDeletedError(RegistryError):
    error_code = 40407


class SubjectCompatibilityNotConfiguredError(RegistryError):
    error_code = 40408


class IncompatibleSchemaError(RegistryError, SchemaError):
    """The schema breaks the subject's compatibility level; ``messages`` name the fields."""

    error_code = 409

    def __init__(self, message: str, messages: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.messages = list(messages)


class InvalidSchemaError(RegistryError, SchemaError):
    error_code = 42201


class InvalidVersionError(RegistryError):
    error_code = 42202


class InvalidCompatibilityLevelError(RegistryError):
    error_code = 42203


# --- what the store holds -------------------------------------------------------------------


@dataclass(frozen=True)
class StoredSchema:
    id: int
    schema: str
    schema_type: str
    fingerprint: str


@dataclass(frozen=True)
class SubjectVersion:
    subject: str
    version: int
    schema_id: int
    schema: str
    schema_type: str
    fingerprint: str
    deleted: bool = False


class RegistryStore(Protocol):
    """Persistence for the registry. Versions come back ordered by subject, then version."""

    def add_version(
        self, subject: str, schema: str, schema_type: str, fingerprint: str
    ) -> SubjectVersion:
        """Store the schema once (by fingerprint) and append it as the subject's next version."""
        ...

    def schema_by_id(self, schema_id: int) -> StoredSchema | None: ...

    def versions(self, subject: str) -> list[SubjectVersion]:
        """Every version of ``subject``, soft-deleted ones included."""
        ...

    def versions_of_schema(self, schema_id: int) -> list[SubjectVersion]: ...

    def subjects(self) -> list[tuple[str, bool]]:
        """Each subject with whether it has a live (not soft-deleted) version."""
        ...

    def mark_deleted(self, subject: str, versions: Sequence[int]) -> None: ...

    def remove_versions(self, subject: str, versions: Sequence[int]) -> None: ...

    def get_compatibility(self, subject: str | None) -> str | None:
        """The level configured for ``subject`` (``None``: the global one), if any."""
        ...

    def set_compatibility(self, subject: str | None, level: str) -> None: ...

    def delete_compatibility(self, subject: str | None) -> None: ...


# --- the service ----------------------------------------------------------------------------


class RegistryService:
    def __init__(
        self, store: RegistryStore, default_compatibility: str = compat.DEFAULT_COMPATIBILITY
    ) -> None:
        self._store = store
        self._default_compatibility = _level(default_compatibility)

    # schemas and versions

    def register(
        self,
        subject: str,
        schema: str,
        *,
        schema_type: str | None = AVRO,
        references: Sequence[object] = (),
        normalize: bool = False,
    ) -> SubjectVersion:
        """Register ``schema`` under ``subject``; the existing version if it is already there."""
        _check_subject(subject)
        text, prints = _prepare(schema, schema_type, references, normalize)
        live = [v for v in self._store.versions(subject) if not v.deleted]
        for existing in reversed(live):
            if existing.fingerprint in prints:
                return existing
        level = self.compatibility(subject, default_to_global=True)
        messages = compat.check_compatibility(text, [(v.version, v.schema) for v in live], level)
        if messages:
            raise IncompatibleSchemaError(
                f"schema for subject {subject!r} is incompatible with an earlier version "
                f"({level}): {'; '.join(messages)}",
                messages,
            )
        registered = self._store.add_version(subject, text, AVRO, compat.fingerprint(text))
        log.info(
            "schema_registered",
            subject=subject,
            version=registered.version,
            schema_id=registered.schema_id,
        )
        return registered

    def lookup(
        self,
        subject: str,
        schema: str,
        *,
        schema_type: str | None = AVRO,
        references: Sequence[object] = (),
        normalize: bool = False,
        include_deleted: bool = False,
    ) -> SubjectVersion:
        """The version of ``subject`` that holds ``schema``."""
        _, prints = _prepare(schema, schema_type, references, normalize)
        versions = self._versions_or_raise(subject, include_deleted)
        for existing in reversed(versions):
            if existing.fingerprint in prints:
                return existing
        raise SchemaNotFoundError(f"schema not found under subject {subject!r}")

    def schema(self, schema_id: int) -> StoredSchema:
        found = self._store.schema_by_id(schema_id)
        if found is None or not self._store.versions_of_schema(schema_id):
            raise SchemaNotFoundError(f"schema {schema_id} not found")
        return found

    def versions_of_schema(
        self, schema_id: int, *, include_deleted: bool = False
    ) -> list[SubjectVersion]:
        self.schema(schema_id)
        return [
            v for v in self._store.versions_of_schema(schema_id) if include_deleted or not v.deleted
        ]

    def subjects_of_schema(self, schema_id: int, *, include_deleted: bool = False) -> list[str]:
        found = self.versions_of_schema(schema_id, include_deleted=include_deleted)
        return list(dict.fromkeys(v.subject for v in found))

    def subjects(
        self,
        *,
        prefix: str | None = None,
        include_deleted: bool = False,
        deleted_only: bool = False,
    ) -> list[str]:
        names = []
        for subject, live in self._store.subjects():
            if prefix and not subject.startswith(prefix):
                continue
            if deleted_only and live or not (live or include_deleted or deleted_only):
                continue
            names.append(subject)
        return names

    def versions(
        self, subject: str, *, include_deleted: bool = False, deleted_only: bool = False
    ) -> list[int]:
        found = self._versions_or_raise(subject, include_deleted or deleted_only)
        return [v.version for v in found if v.deleted or not deleted_only]

    def version(
        self, subject: str, version: int | str, *, include_deleted: bool = False
    ) -> SubjectVersion:
        number = parse_version(version)
        versions = self._versions_or_raise(subject, include_deleted)
        if number is None:
            return versions[-1]
        for candidate in versions:
            if candidate.version == number:
                return candidate
        raise VersionNotFoundError(f"version {number} of subject {subject!r} not found")

    # deletes

    def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        """Soft-delete every live version, or remove a soft-deleted subject for good."""
        versions = self._store.versions(subject)
        if not versions:
            raise SubjectNotFoundError(f"subject {subject!r} not found")
        live = [v.version for v in versions if not v.deleted]
        if permanent:
            if live:
                raise SubjectNotSoftDeletedError(
                    f"subject {subject!r} was not soft-deleted before being permanently deleted"
                )
            removed = [v.version for v in versions]
            self._store.remove_versions(subject, removed)
            self._store.delete_compatibility(subject)
            log.info("subject_deleted", subject=subject, versions=removed, permanent=True)
            return removed
        if not live:
            raise SubjectSoftDeletedError(
                f"subject {subject!r} was soft-deleted; set permanent=true to delete it for good"
            )
        self._store.mark_deleted(subject, live)
        log.info("subject_deleted", subject=subject, versions=live, permanent=False)
        return live

    def delete_version(self, subject: str, version: int | str, *, permanent: bool = False) -> int:
        """Soft-delete one version, or remove a soft-deleted version for good."""
        explicit = parse_version(version) is not None  # "latest" means the latest live version
        target = self.version(subject, version, include_deleted=permanent or explicit)
        if permanent:
            if not target.deleted:
                raise VersionNotSoftDeletedError(
                    f"version {target.version} of subject {subject!r} was not soft-deleted "
                    "before being permanently deleted"
                )
            self._store.remove_versions(subject, [target.version])
        else:
            if target.deleted:
                raise VersionSoftDeletedError(
                    f"version {target.version} of subject {subject!r} was soft-deleted; "
                    "set permanent=true to delete it for good"
                )
            self._store.mark_deleted(subject, [target.version])
        log.info("version_deleted", subject=subject, version=target.version, permanent=permanent)
        return target.version

    # compatibility

    def check(
        self,
        subject: str,
        schema: str,
        *,
        version: int | str | None = None,
        schema_type: str | None = AVRO,
        references: Sequence[object] = (),
        normalize: bool = False,
    ) -> list[str]:
        """Why ``schema`` would break ``subject``'s level; empty when it would not.

        With ``version``, against that version only (``"latest"`` of a subject without live
        versions is compatible, as in Confluent 7+); without, against the versions the level
        names (the latest, or all for the transitive levels).
        """
        text, _ = _prepare(schema, schema_type, references, normalize)
        level = self.compatibility(subject, default_to_global=True)
        live = [v for v in self._store.versions(subject) if not v.deleted]
        if version is None:
            previous = live
        elif parse_version(version) is None and not live:  # "latest" of nothing: compatible
            previous = []
        else:
            previous = [self.version(subject, version)]
            level = level.removesuffix("_TRANSITIVE")
        return compat.check_compatibility(text, [(v.version, v.schema) for v in previous], level)

    def compatibility(self, subject: str | None = None, *, default_to_global: bool = False) -> str:
        level = self._store.get_compatibility(subject)
        if level is not None:
            return level
        if subject is None:
            return self._default_compatibility
        if default_to_global:
            return self.compatibility(None)
        raise SubjectCompatibilityNotConfiguredError(
            f"subject {subject!r} has no subject-level compatibility configured"
        )

    def set_compatibility(self, level: str, subject: str | None = None) -> str:
        if subject is not None:
            _check_subject(subject)
        parsed = _level(level)
        self._store.set_compatibility(subject, parsed)
        log.info("compatibility_set", subject=subject, compatibility=parsed)
        return parsed

    def delete_compatibility(self, subject: str | None = None) -> str:
        """Forget the level of ``subject`` (or reset the global one); returns the old level."""
        previous = self._store.get_compatibility(subject)
        if previous is None:
            if subject is not None:
                raise SubjectNotFoundError(
                    f"subject {subject!r} has no subject-level compatibility configured"
                )
            previous = self._default_compatibility
        self._store.delete_compatibility(subject)
        log.info("compatibility_deleted", subject=subject, compatibility=previous)
        return previous

    # helpers

    def _versions_or_raise(self, subject: str, include_deleted: bool) -> list[SubjectVersion]:
        versions = [v for v in self._store.versions(subject) if include_deleted or not v.deleted]
        if not versions:
            raise SubjectNotFoundError(f"subject {subject!r} not found")
        return versions


def parse_version(version: int | str) -> int | None:
    """A version number, or ``None`` for the latest (``"latest"`` or ``-1``)."""
    text = str(version).strip()
    if text.lower() == LATEST or text == "-1":
        return None
    if text.isdigit() and 1 <= int(text) <= MAX_VERSION:
        return int(text)
    raise InvalidVersionError(
        f"version {version!r} is not valid (expected 1 to {MAX_VERSION}, -1 or 'latest')"
    )


def _level(level: str) -> str:
    try:
        return compat.parse_level(level)
    except SchemaError as exc:
        raise InvalidCompatibilityLevelError(str(exc)) from exc


def _check_subject(subject: str) -> None:
    if not subject or len(subject) > MAX_SUBJECT_LENGTH or not subject.isprintable():
        raise InvalidSchemaError(
            f"subject {subject[:80]!r} is not valid (expected 1 to {MAX_SUBJECT_LENGTH} "
            "printable characters)"
        )


def _prepare(
    schema: str, schema_type: str | None, references: Sequence[object], normalize: bool
) -> tuple[str, set[str]]:
    """The text to store and the fingerprints that count as "the same schema"."""
    kind = (schema_type or AVRO).upper()
    if kind not in SUPPORTED_SCHEMA_TYPES:
        raise InvalidSchemaError(
            f"schema type {schema_type!r} is not supported "
            f"(expected {', '.join(SUPPORTED_SCHEMA_TYPES)})"
        )
    if references:
        raise InvalidSchemaError(
            "schema references are not supported: register a self-contained schema"
        )
    if not isinstance(schema, str) or not schema.strip():
        raise InvalidSchemaError("schema is empty (expected an Avro schema as a JSON string)")
    try:
        compat.parse_schema(schema)
        text = compat.normalized_text(schema) if normalize else compat.canonical_text(schema)
    except SchemaError as exc:
        raise InvalidSchemaError(str(exc)) from exc
    prints = {compat.fingerprint(text), compat.fingerprint(schema)}
    return text, prints
