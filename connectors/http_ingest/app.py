"""The HTTP ingest API: ``POST /v1/events`` (one event) and ``POST /v1/events/batch`` (up to
``max_batch`` events, all or nothing), for partners without a Kafka client.

- Authentication: ``Authorization: Bearer <token>``, one token per agency (:mod:`.tokens`).
- An agency writes only as itself: a document whose ``source_agency`` is not the token's agency is
  refused with 403 and an ``ingest_forbidden`` warning in the log (both agencies named).
- Validation at the edge (RELIABILITY.md A6): body size, JSON, the document, the event schema,
  required fields and reference codes; every error is a 4xx JSON answer naming the field.
- Nothing lost: 202 is sent only after the broker acknowledged every event of the request
  (``acks=all``, idempotent producer); a broker failure answers 503 and the partner retries.
- No duplicates: ``event_id`` is uuid5 of agency, source system, event type and ``source_key``, so
  a retried POST publishes the same event with the same bytes, which the router drops.

The routes are made inside ``create_app``; this module does not use ``from __future__ import
annotations`` because FastAPI reads the route annotations at runtime.
"""

import json
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from connectors.http_ingest.documents import record_from
from connectors.http_ingest.tokens import TokenStore
from hub.domain.errors import InfraError, ValidationError
from hub.publisher import Publisher
from hub.serde.codec import AvroCodec
from hub.topics import Topics

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class IngestConfig:
    bootstrap_servers: str
    topics: Topics
    jurisdictions: Mapping[str, str]  # agency id -> jurisdiction (policies/agencies.yaml)
    max_body_bytes: int = 1024 * 1024
    max_event_bytes: int = 64 * 1024
    max_batch: int = 500
    ack_timeout_s: float = 30.0
    fields: Any = None  # a hub.crypto.FieldCrypto: sensitive fields sealed (field encryption on)


class RequestFailed(Exception):
    def __init__(self, status: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["message"] if errors else str(status))
        self.status = status
        self.errors = errors


def _error(message: str, reason: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"message": message, "reason": reason, "field": field, **extra}


class AckedSends:
    """The records one request sent through the shared producer, and the broker's answers."""

    def __init__(self, producer: Producer, timeout_s: float) -> None:
        self._producer = producer
        self._timeout_s = timeout_s
        self._sent = 0
        self._answers: list[KafkaError | None] = []  # list.append is atomic under the GIL

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        self._answers.append(err)

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: Sequence[tuple[str, bytes]] = ()) -> None:  # fmt: skip
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=list(headers),
                                       on_delivery=self._on_delivery)  # fmt: skip
                break
            except BufferError:
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise InfraError(f"cannot produce to {topic}: {exc}") from exc
        self._sent += 1

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the broker answered every record sent; raise if one was refused."""
        deadline = time.monotonic() + (timeout or self._timeout_s)
        while len(self._answers) < self._sent:
            if time.monotonic() > deadline:
                raise InfraError(f"{self._sent - len(self._answers)} event(s) not acknowledged "
                                 f"by the broker within {self._timeout_s:.0f}s")  # fmt: skip
            self._producer.poll(0.05)
        refused = [e for e in self._answers if e is not None]
        if refused:
            raise InfraError(f"{len(refused)} event(s) refused by the broker: {refused[0].str()}")


def create_app(config: IngestConfig, tokens: TokenStore, codec: AvroCodec) -> FastAPI:
    from hub.adapters.kafka import producer_config

    producer = Producer(producer_config(config.bootstrap_servers))
    encode_lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # every 202 was acknowledged already; what is left belongs to requests answered 503
        left = producer.flush(config.ack_timeout_s)
        if left:
            producer.purge()
            log.warning("ingest_unacknowledged_purged", events=left)

    app = FastAPI(title="hub ingest", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)  # fmt: skip

    def agency_of(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        agency = tokens.agency_for(token.strip()) if scheme.lower() == "bearer" else None
        if agency is None:
            raise RequestFailed(401, [_error("a valid bearer token is required",
                                             "unauthenticated")])  # fmt: skip
        return agency

    async def body_of(request: Request) -> Any:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise RequestFailed(
                415,
                [
                    _error(
                        f"content type {content_type!r} is not accepted "
                        "(expected application/json)",
                        "content_type",
                    )
                ],
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
            raise _too_large(int(declared))
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_body_bytes:
                raise _too_large(size)
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestFailed(400, [_error(f"body is not UTF-8 JSON: {exc}",
                                             "bad_json")]) from None  # fmt: skip

    def _too_large(size: int) -> RequestFailed:
        return RequestFailed(413, [_error(f"body of {size}+ bytes exceeds the limit of "
                                          f"{config.max_body_bytes}", "too_large")])  # fmt: skip

    def publish(agency: str, docs: list[Any]) -> list[str]:
        sends = AckedSends(producer, config.ack_timeout_s)
        publishers: dict[tuple[str, str, str], Publisher] = {}

        def publisher_for(source_agency: str, source_system: str, jurisdiction: str) -> Publisher:
            if source_agency != agency:
                log.warning("ingest_forbidden", token_agency=agency, claimed_agency=source_agency)
                raise RequestFailed(403, [_error(
                    f"source_agency: {source_agency!r} is not the token's agency {agency!r}",
                    "forbidden_agency", "source_agency")])  # fmt: skip
            key = (source_agency, source_system, jurisdiction)
            if key not in publishers:
                publishers[key] = Publisher(
                    agency=source_agency, source_system=source_system,
                    jurisdiction=jurisdiction, codec=codec, sink=sends, topics=config.topics,
                    fields=config.fields,
                )  # fmt: skip
            return publishers[key]

        built: list[tuple[Publisher, dict[str, Any]]] = []
        errors = []
        for index, doc in enumerate(docs):
            where = {"index": index} if len(docs) > 1 or isinstance(docs, _Batch) else {}
            try:
                record = record_from(doc, publisher_for, config.jurisdictions)
                publisher = publishers[(agency, record["envelope"]["source_system"],
                                        record["envelope"]["jurisdiction"])]  # fmt: skip
                with encode_lock:
                    publisher.validate(record)
                    size = len(codec.encode(record))
                if size > config.max_event_bytes:
                    raise ValidationError(
                        f"event of {size} bytes exceeds the limit of {config.max_event_bytes}",
                        reason="too_large",
                    )
                built.append((publisher, record))
            except ValidationError as exc:
                errors.append(_error(str(exc), exc.reason, exc.field, **where))
        if errors:
            raise RequestFailed(422, errors)
        ids = []
        with encode_lock:
            for publisher, record in built:
                ids.append(publisher.publish(record))
        try:
            sends.flush()
        except InfraError as exc:
            log.error("ingest_not_acknowledged", agency=agency, events=len(ids), error=str(exc))
            raise RequestFailed(
                503,
                [
                    _error(
                        f"{exc}; nothing is confirmed, send the request again", "broker_unavailable"
                    )
                ],
            ) from None
        log.info("events_ingested", agency=agency, events=len(ids))
        return ids

    @app.exception_handler(RequestFailed)
    async def _failed(_request: Request, exc: RequestFailed) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"errors": exc.errors}, status_code=exc.status, headers=headers)

    @app.post("/v1/events", status_code=202)
    async def post_event(request: Request) -> JSONResponse:
        agency = agency_of(request)
        doc = await body_of(request)
        ids = await run_in_threadpool(publish, agency, [doc])
        return JSONResponse({"event_id": ids[0], "status": "published"}, status_code=202)

    @app.post("/v1/events/batch", status_code=202)
    async def post_batch(request: Request) -> JSONResponse:
        agency = agency_of(request)
        body = await body_of(request)
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list) or not events:
            raise RequestFailed(
                400,
                [
                    _error(
                        'expected {"events": [document, ...]} with at least one document',
                        "bad_batch",
                        "events",
                    )
                ],
            )
        if len(events) > config.max_batch:
            raise RequestFailed(
                413,
                [
                    _error(
                        f"{len(events)} events exceed the batch limit of {config.max_batch}",
                        "too_many",
                        "events",
                    )
                ],
            )
        ids = await run_in_threadpool(publish, agency, _Batch(events))
        return JSONResponse({"event_ids": ids, "status": "published"}, status_code=202)

    @app.get("/healthz")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


class _Batch(list):  # type: ignore[type-arg]
    """The documents of a batch request: errors carry their index even for one document."""


def serve(config: IngestConfig, tokens: TokenStore, codec: AvroCodec, host: str, port: int) -> None:
    import uvicorn

    app = create_app(config, tokens, codec)
    uvicorn.run(app, host=host, port=port, server_header=False, log_config=None)
