"""Valid sample events for any event type of the catalogue, built from the schemas themselves.

Codes come from the reference lists, required fields are always filled, optional ones most of the
time; the same seed gives the same events.
"""

from __future__ import annotations

import datetime as dt
import decimal
import random
from typing import Any

from hub.publisher import Publisher, subject
from hub.serde.catalogue import Catalogue

BASE = dt.datetime(2014, 6, 1, 9, 0, tzinfo=dt.UTC)


class EventFactory:
    def __init__(self, catalogue: Catalogue, seed: int = 7) -> None:
        self.catalogue = catalogue
        self.rng = random.Random(seed)

    def payload(self, event_type: str) -> dict[str, Any]:
        name = self.catalogue.name_for(event_type)
        schema = self.catalogue.parsed(name)
        references = self.catalogue.reference_fields(name)
        required = set(self.catalogue.required_fields(name))
        values: dict[str, Any] = {}
        for field in schema["fields"]:
            if field["name"] in ("envelope", "disclosure"):
                continue
            if field["name"] in required or self.rng.random() < 0.7:
                values[field["name"]] = self._value(field["type"], field["name"], references)
        return values

    def _value(self, schema: Any, path: str, references: dict[str, str]) -> Any:
        rng = self.rng
        if isinstance(schema, list):
            branches = [b for b in schema if b != "null"]
            return self._value(branches[0], path, references) if branches else None
        if isinstance(schema, str):
            if schema.startswith("hub.events."):
                return self._value(self.catalogue.named_type(schema), path, references)
            schema = {"type": schema}
        kind, logical = schema["type"], schema.get("logicalType")
        if logical == "timestamp-millis":
            return BASE + dt.timedelta(minutes=rng.randrange(0, 500_000))
        if logical == "date":
            return (BASE + dt.timedelta(days=rng.randrange(0, 900))).date()
        if logical == "decimal":
            return decimal.Decimal(rng.randrange(0, 10_000_000)).scaleb(-2)
        if kind == "record":
            return {
                f["name"]: self._value(f["type"], f"{path}.{f['name']}", references)
                for f in schema["fields"]
            }
        if kind == "array":
            return [
                self._value(schema["items"], path, references) for _ in range(rng.randrange(1, 3))
            ]
        if kind == "map":
            return {"k": self._value(schema["values"], path, references)}
        if kind == "string" and path in references:
            return rng.choice(sorted(self.catalogue.reference(references[path])))
        if kind == "string":
            return f"{path.rsplit('.', 1)[-1]}-{rng.randrange(10**6)}"
        if kind in ("int", "long"):
            return rng.randrange(0, 1000)
        if kind in ("float", "double"):
            return float(rng.randrange(0, 1000)) / 4
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "bytes":
            return bytes(rng.randrange(256) for _ in range(4))
        raise ValueError(f"no sample for {schema}")

    def event(
        self, publisher: Publisher, event_type: str, key: str, local_id: str
    ) -> dict[str, Any]:
        return publisher.build(
            event_type,
            source_key=key,
            subject=subject(local_id, "police_nominal_id", pnc_id=f"PNC-{local_id}"),
            occurred_at=BASE + dt.timedelta(seconds=self.rng.randrange(0, 10**7)),
            payload=self.payload(event_type),
        )
