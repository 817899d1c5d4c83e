"""Confluent Schema Registry REST API over a ``RegistryService``.

Covers what ``confluent_kafka.schema_registry.SchemaRegistryClient`` and its Avro serde call:
subjects, versions, schema ids, lookup, compatibility, config, mode. Errors are Confluent's
``{"error_code": ..., "message": ...}`` with the matching HTTP status. Only AVRO schemas without
references are accepted; metadata and rule sets are refused rather than ignored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

import structlog
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.domain.errors import HubError
from hub.registry.service import (
    AVRO,
    SUPPORTED_SCHEMA_TYPES,
    InvalidCompatibilityLevelError,
    InvalidSchemaError,
    RegistryError,
    RegistryService,
    StoredSchema,
    SubjectVersion,
    parse_version,
)

log = structlog.get_logger(__name__)

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
_SCHEMA_KEYS = {"schema", "schemaType", "references", "metadata", "ruleSet"}
_CONFIG_KEYS = {"compatibility", "compatibilityLevel"}
T = TypeVar("T")


class RegistryJSONResponse(JSONResponse):
    media_type = MEDIA_TYPE


def _error(status: int, code: int, message: str) -> RegistryJSONResponse:
    return RegistryJSONResponse({"error_code": code, "message": message}, status_code=status)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise _BadRequest(f"request body is not JSON: {exc}") from exc


class _BadRequest(Exception):
    pass


def create_app(service: RegistryService) -> FastAPI:
    """The registry's HTTP app; all handlers are sync and run in the threadpool."""
    app = FastAPI(
        title="hub schema registry",
        default_response_class=RegistryJSONResponse,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    _install_error_handlers(app)
    body = Depends(_json_body)

    @app.get("/")
    def root() -> dict[str, Any]:
        return {}

    # schemas by id

    @app.get("/schemas/types")
    def schema_types() -> list[str]:
        return list(SUPPORTED_SCHEMA_TYPES)

    @app.get("/schemas/ids/{schema_id}")
    def schema_by_id(schema_id: int, subject: str | None = None) -> dict[str, Any]:
        return _schema_json(service.schema(schema_id))

    @app.get("/schemas/ids/{schema_id}/schema")
    def raw_schema_by_id(schema_id: int, subject: str | None = None) -> Response:
        return Response(service.schema(schema_id).schema, media_type=MEDIA_TYPE)

    @app.get("/schemas/ids/{schema_id}/subjects")
    def subjects_of_schema(
        schema_id: int,
        subject: str | None = None,
        deleted: bool = False,
        offset: int = Query(0, ge=0),
        limit: int = -1,
    ) -> list[str]:
        found = service.subjects_of_schema(schema_id, include_deleted=deleted)
        return _page([s for s in found if subject is None or s == subject], offset, limit)

    @app.get("/schemas/ids/{schema_id}/versions")
    def versions_of_schema(
        schema_id: int,
        subject: str | None = None,
        deleted: bool = False,
        offset: int = Query(0, ge=0),
        limit: int = -1,
    ) -> list[dict[str, Any]]:
        found = service.versions_of_schema(schema_id, include_deleted=deleted)
        pairs = [
            {"subject": v.subject, "version": v.version}
            for v in found
            if subject is None or v.subject == subject
        ]
        return _page(pairs, offset, limit)

    # subjects and versions

    @app.get("/subjects")
    def subjects(
        subject_prefix: str | None = Query(None, alias="subjectPrefix"),
        deleted: bool = False,
        deleted_only: bool = False,
        offset: int = Query(0, ge=0),
        limit: int = -1,
    ) -> list[str]:
        prefix = None if subject_prefix in (None, "", ":*:") else subject_prefix
        names = service.subjects(prefix=prefix, include_deleted=deleted, deleted_only=deleted_only)
        return _page(names, offset, limit)

    @app.get("/subjects/{subject}/versions")
    def versions(
        subject: str,
        deleted: bool = False,
        deleted_only: bool = False,
        offset: int = Query(0, ge=0),
        limit: int = -1,
    ) -> list[int]:
        found = service.versions(subject, include_deleted=deleted, deleted_only=deleted_only)
        return _page(found, offset, limit)

    @app.post("/subjects/{subject}/versions")
    def register(subject: str, normalize: bool = False, payload: Any = body) -> dict[str, Any]:
        request = _schema_request(payload)
        registered = service.register(subject, normalize=normalize, **request)
        return {"id": registered.schema_id, "version": registered.version, "subject": subject}

    @app.post("/subjects/{subject}")
    def lookup(
        subject: str, normalize: bool = False, deleted: bool = False, payload: Any = body
    ) -> dict[str, Any]:
        request = _schema_request(payload)
        found = service.lookup(subject, normalize=normalize, include_deleted=deleted, **request)
        return _version_json(found)

    @app.get("/subjects/{subject}/versions/{version}")
    def version(subject: str, version: str, deleted: bool = False) -> dict[str, Any]:
        return _version_json(service.version(subject, version, include_deleted=deleted))

    @app.get("/subjects/{subject}/versions/{version}/schema")
    def raw_version_schema(subject: str, version: str, deleted: bool = False) -> Response:
        found = service.version(subject, version, include_deleted=deleted)
        return Response(found.schema, media_type=MEDIA_TYPE)

    @app.get("/subjects/{subject}/versions/{version}/referencedby")
    def referenced_by(subject: str, version: str) -> list[int]:
        service.version(subject, version)
        return []  # references are not supported, so nothing refers to anything

    @app.delete("/subjects/{subject}")
    def delete_subject(subject: str, permanent: bool = False) -> list[int]:
        return service.delete_subject(subject, permanent=permanent)

    @app.delete("/subjects/{subject}/versions/{version}")
    def delete_version(subject: str, version: str, permanent: bool = False) -> int:
        return service.delete_version(subject, version, permanent=permanent)

    # compatibility

    @app.post("/compatibility/subjects/{subject}/versions/{version}")
    def check_version(
        subject: str,
        version: str,
        normalize: bool = False,
        verbose: bool = False,
        payload: Any = body,
    ) -> dict[str, Any]:
        parse_version(version)
        request = _schema_request(payload)
        messages = service.check(subject, version=version, normalize=normalize, **request)
        return _compatibility_json(messages, verbose)

    @app.post("/compatibility/subjects/{subject}/versions")
    def check_all(
        subject: str, normalize: bool = False, verbose: bool = False, payload: Any = body
    ) -> dict[str, Any]:
        request = _schema_request(payload)
        messages = service.check(subject, normalize=normalize, **request)
        return _compatibility_json(messages, verbose)

    # config

    @app.get("/config")
    def global_config() -> dict[str, Any]:
        return {"compatibilityLevel": service.compatibility()}

    @app.put("/config")
    def set_global_config(payload: Any = body) -> dict[str, Any]:
        return {"compatibility": service.set_compatibility(_config_level(payload))}

    @app.delete("/config")
    def delete_global_config() -> dict[str, Any]:
        return {"compatibilityLevel": service.delete_compatibility()}

    @app.get("/config/{subject}")
    def subject_config(
        subject: str, default_to_global: bool = Query(False, alias="defaultToGlobal")
    ) -> dict[str, Any]:
        level = service.compatibility(subject, default_to_global=default_to_global)
        return {"compatibilityLevel": level}

    @app.put("/config/{subject}")
    def set_subject_config(subject: str, payload: Any = body) -> dict[str, Any]:
        return {"compatibility": service.set_compatibility(_config_level(payload), subject)}

    @app.delete("/config/{subject}")
    def delete_subject_config(subject: str) -> dict[str, Any]:
        return {"compatibilityLevel": service.delete_compatibility(subject)}

    # mode: the hub's registry is always read-write

    @app.get("/mode")
    def global_mode() -> dict[str, str]:
        return {"mode": "READWRITE"}

    @app.get("/mode/{subject}")
    def subject_mode(subject: str) -> dict[str, str]:
        return {"mode": "READWRITE"}

    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RegistryError)
    def registry_error(request: Request, exc: RegistryError) -> Response:
        return _error(exc.http_status, exc.error_code, str(exc))

    @app.exception_handler(HubError)
    def hub_error(request: Request, exc: HubError) -> Response:
        log.error("registry_request_failed", path=request.url.path, error=str(exc))
        return _error(500, 50001, str(exc))

    @app.exception_handler(_BadRequest)
    def bad_request(request: Request, exc: _BadRequest) -> Response:
        return _error(400, 400, str(exc))

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}"
            for err in exc.errors()
        )
        return _error(422, 422, f"invalid request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, exc.status_code, f"HTTP {exc.status_code} {exc.detail}")


def _schema_request(payload: Any) -> dict[str, Any]:
    """The service keyword arguments of a Confluent schema request body."""
    if not isinstance(payload, dict):
        raise InvalidSchemaError('request body must be a JSON object like {"schema": "..."}')
    unknown = sorted(set(payload) - _SCHEMA_KEYS)
    if unknown:
        raise InvalidSchemaError(
            f"unknown field(s) {', '.join(unknown)} (expected {', '.join(sorted(_SCHEMA_KEYS))})"
        )
    for unsupported in ("metadata", "ruleSet"):
        if payload.get(unsupported):
            raise InvalidSchemaError(f"{unsupported} is not supported by the hub's registry")
    schema = payload.get("schema")
    if not isinstance(schema, str):
        raise InvalidSchemaError('field "schema" is missing (expected the schema as a string)')
    references = payload.get("references") or []
    if not isinstance(references, list):
        raise InvalidSchemaError('field "references" must be a list')
    return {
        "schema": schema,
        "schema_type": payload.get("schemaType") or AVRO,
        "references": references,
    }


def _config_level(payload: Any) -> str:
    if not isinstance(payload, dict) or not payload:
        raise InvalidCompatibilityLevelError(
            'request body must be a JSON object like {"compatibility": "BACKWARD"}'
        )
    unknown = sorted(k for k, v in payload.items() if k not in _CONFIG_KEYS and v is not None)
    if unknown:
        raise InvalidCompatibilityLevelError(
            f"unsupported config field(s) {', '.join(unknown)} "
            f"(expected {' or '.join(sorted(_CONFIG_KEYS))})"
        )
    level = payload.get("compatibility") or payload.get("compatibilityLevel")
    if not isinstance(level, str):
        raise InvalidCompatibilityLevelError('field "compatibility" is missing (e.g. "BACKWARD")')
    return level


def _schema_json(schema: StoredSchema) -> dict[str, Any]:
    out: dict[str, Any] = {"schema": schema.schema}
    if schema.schema_type != AVRO:
        out["schemaType"] = schema.schema_type
    return out


def _version_json(found: SubjectVersion) -> dict[str, Any]:
    out: dict[str, Any] = {
        "subject": found.subject,
        "version": found.version,
        "id": found.schema_id,
        "schema": found.schema,
    }
    if found.schema_type != AVRO:
        out["schemaType"] = found.schema_type
    return out


def _compatibility_json(messages: Sequence[str], verbose: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"is_compatible": not messages}
    if verbose:
        out["messages"] = list(messages)
    return out


def _page(items: Sequence[T], offset: int, limit: int) -> list[T]:
    selected = list(items)[offset:]
    return selected if limit < 0 else selected[:limit]
