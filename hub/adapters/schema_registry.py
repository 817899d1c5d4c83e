"""The hub's ``SchemaRegistry`` port over any Confluent-compatible registry (the hub's own,
Confluent's or Karapace), through the stock ``confluent_kafka.schema_registry`` client."""

from __future__ import annotations

import httpx
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from hub.domain.errors import InfraError, SerdeError

_NOT_FOUND = {40401, 40402, 40403}


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What an unreachable registry raises: the stock client uses httpx2 when it is installed
    (confluent-kafka >= 2.16), httpx otherwise; this module's own calls use httpx."""
    errors: tuple[type[BaseException], ...] = (httpx.HTTPError, OSError)
    try:
        import httpx2  # type: ignore[import-not-found]
    except ImportError:
        return errors
    return (*errors, httpx2.HTTPError)


_UNREACHABLE = _transport_errors()


class HttpSchemaRegistry:
    def __init__(self, url: str, *, retries: int = 3) -> None:
        """``retries``: attempts after the first on a transport error (the stock client backs
        off exponentially from one second between them)."""
        self.url = url.rstrip("/")
        self._client = SchemaRegistryClient({"url": self.url, "max.retries": retries})
        self._by_id: dict[int, str] = {}

    def register(self, subject: str, schema: str) -> int:
        try:
            return int(self._client.register_schema(subject, Schema(schema, "AVRO")))
        except SchemaRegistryError as exc:
            raise InfraError(f"registry {self.url} refused {subject}: {exc.error_message}") from exc
        except _UNREACHABLE as exc:
            raise InfraError(f"registry {self.url} is unreachable: {exc}") from exc

    def schema_by_id(self, schema_id: int) -> str:
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        try:
            text = self._client.get_schema(schema_id).schema_str
        except SchemaRegistryError as exc:
            if exc.error_code in _NOT_FOUND or exc.http_status_code == 404:
                raise SerdeError(
                    f"unknown schema id {schema_id}", reason="unknown_schema", schema_id=schema_id
                ) from exc
            raise InfraError(f"registry {self.url}: {exc.error_message}") from exc
        except _UNREACHABLE as exc:
            raise InfraError(f"registry {self.url} is unreachable: {exc}") from exc
        assert text is not None
        self._by_id[schema_id] = text
        return text

    def latest(self, subject: str) -> tuple[int, str] | None:
        try:
            registered = self._client.get_latest_version(subject)
        except SchemaRegistryError as exc:
            if exc.error_code in _NOT_FOUND or exc.http_status_code == 404:
                return None
            raise InfraError(f"registry {self.url}: {exc.error_message}") from exc
        except _UNREACHABLE as exc:
            raise InfraError(f"registry {self.url} is unreachable: {exc}") from exc
        return int(registered.schema_id), str(registered.schema.schema_str)

    def incompatibilities(self, subject: str, schema: str) -> list[str]:
        response = httpx.post(
            f"{self.url}/compatibility/subjects/{subject}/versions/latest",
            params={"verbose": "true"},
            json={"schema": schema},
            timeout=10,
        )
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise InfraError(f"registry {self.url}: {response.text[:200]}")
        body = response.json()
        if body.get("is_compatible", False):
            return []
        return [str(m) for m in body.get("messages", [])] or [
            "incompatible with the latest version"
        ]
