"""The ingest API's OpenAPI description: the request body and every answer ``POST /batches`` gives.

The handler reads the raw body itself (size limit before parsing, its own error messages), so FastAPI
cannot infer these; they are declared here, and a fuzzing test (schemathesis) holds the API to them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from taskfan.contracts import BatchRequest


class Accepted(BaseModel):
    batch_id: str
    tasks: int


class Error(BaseModel):
    error: str


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def responses() -> dict[int | str, dict[str, Any]]:
    """Every answer of ``POST /batches`` (a new dict each time: FastAPI keeps what it is given)."""
    return {
        202: _json("Accepted", "accepted and published to the `tasks` topic"),
        400: _json("Error", "the body is not valid JSON"),
        401: _json("Error", "no or a wrong bearer token (`Authorization: Bearer <the stack's ingest token>`)"),
        409: _json("Error", "the batch id is already in use with different content"),
        413: _json("Error", "the body is over 2 MiB"),
        421: _json("Error", "the `Host` header is not this server's address (DNS rebinding protection)"),
        415: _json("Error", "the body is not application/json"),
        422: _json("Error", "the JSON is not a valid batch (the message names every problem)"),
        503: {**_json("Error", "the stack is full (Redis near its memory ceiling, or a consumer group's backlog near "
                               "a stream's cap), or pub/sub or the state store is unavailable: nothing was accepted; "
                               "try again"),
              "headers": {"Retry-After": {"description": "when the stack is full: seconds to wait before trying again",
                                          "schema": {"type": "integer"}}}},
    }


def request_body() -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/BatchRequest"}}}}}


def install(api: FastAPI) -> None:
    """Make ``api.openapi()`` include the models the declarations above refer to."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            document = get_openapi(title=api.title, version=api.version, routes=api.routes)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in (BatchRequest, Accepted, Error):
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            api.openapi_schema = document
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
