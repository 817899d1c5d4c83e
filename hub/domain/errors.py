"""The hub's error tree.

Every error the hub raises on purpose is a ``HubError``. Adapters translate third-party errors
into one of these (``raise SerdeError(...) from exc``) so the loops and the CLI deal with one tree.
Messages are one line, name the file/field/offset, quote the input and say what would be accepted.
"""

from __future__ import annotations


class HubError(Exception):
    """Base of every error the hub raises on purpose."""

    exit_code = 1


class InputError(HubError):
    """Bad input from a user or a partner: a file, a field, a command-line value."""


class ValidationError(InputError):
    """A record does not match its schema. ``field`` is the dotted path of the first bad field."""

    def __init__(self, message: str, *, field: str | None = None, reason: str = "invalid") -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason


class PolicyError(HubError):
    """An agreement document is invalid, or a policy could not be evaluated."""


class SerdeError(HubError):
    """A value could not be encoded or decoded.

    ``reason`` is a stable code (``bad_magic``, ``unknown_schema``, ``truncated``,
    ``trailing_bytes``, ``invalid_avro``, ``invalid_record``, ``empty_value``, ``oversize``...)
    used in DLQ headers.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        schema_id: int | None = None,
    ) -> None:
        where = ""
        if topic is not None:
            where = f"{topic}[{partition}]@{offset}: "
        super().__init__(f"{where}{message}")
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.schema_id = schema_id


class SchemaError(InputError):
    """A schema file is invalid or incompatible with the registered version."""


class AuditIntegrityError(HubError):
    """The audit trail failed verification."""

    exit_code = 3


class InfraError(HubError):
    """The infrastructure (broker, database, Java, Maven) is missing or misbehaving."""


class TransactionAborted(InfraError):
    """A Kafka transaction was aborted and the consumer rewound; the batch will be read again."""


class Fenced(InfraError):
    """Another instance took over this transactional.id (or a fatal producer error): exit."""
