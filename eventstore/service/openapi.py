"""The OpenAPI 3.1 document, built from the route table and the msgspec Structs of the bodies."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import msgspec

from eventstore.service.errors import ErrorBody
from eventstore.service.operation import Operation

__all__ = ["build_openapi"]

_REF = "#/components/schemas/{name}"


def build_openapi(operations: Sequence[Operation], version: str) -> dict[str, Any]:
    types: list[Any] = [ErrorBody]
    for op in operations:
        types += [t for t in (op.body, op.response) if t is not None and t not in types]
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    ref = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.template, {})[op.method.lower()] = _operation(op, ref)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tasktrail",
            "version": version,
            "description": (
                "An event-sourced key/value store for task checkpoints. Send a bearer token "
                "(`tasktrail token ...`). Errors are JSON {reason, message, detail}. "
                'Expected versions go in If-Match ("7"); idempotency ids in Idempotency-Key.'
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(op: Operation, ref: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "operationId": op.name,
        "summary": op.summary,
        "tags": [op.tag],
        "security": [{"bearer": []}] if op.action is not None else [],
    }
    if op.params:
        doc["parameters"] = [
            {
                "name": p.name,
                "in": p.location,
                "required": p.required or p.location == "path",
                "description": p.description,
                "schema": p.schema,
            }
            for p in op.params
        ]
    if op.body is not None:
        doc["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref[op.body]}},
        }
    if op.response is not None:
        ok: dict[str, Any] = {
            "description": "OK",
            "content": {op.media_type: {"schema": ref[op.response]}},
        }
    else:
        ok = {"description": "OK", "content": {op.media_type: {"schema": {"type": "string"}}}}
    responses: dict[str, Any] = {"200": ok}
    # An operation that reads a token refuses a request that sends it twice (400).
    extra = {400, 500} if op.action is not None else {500}
    for status in sorted(set(op.statuses) | extra):
        responses[str(status)] = {
            "description": HTTPStatus(status).phrase,
            "content": {"application/json": {"schema": ref[ErrorBody]}},
        }
    doc["responses"] = responses
    return doc
