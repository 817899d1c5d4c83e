"""Small protocols the loops are written against; adapters implement them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class InRecord:
    """A record read from Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0


@dataclass(frozen=True)
class OutRecord:
    """A record to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class SchemaRegistry(Protocol):
    """The part of a Confluent-compatible schema registry the hub uses."""

    def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` (Avro JSON) under ``subject``; return its global id."""
        ...

    def schema_by_id(self, schema_id: int) -> str:
        """The schema text with this id; raises ``SerdeError(reason="unknown_schema")`` if none."""
        ...

    def latest(self, subject: str) -> tuple[int, str] | None:
        """(id, schema text) of the latest version of ``subject``, or None if it has none."""
        ...

    def incompatibilities(self, subject: str, schema: str) -> list[str]:
        """Why ``schema`` may not be the next version of ``subject`` (empty: it may)."""
        ...
