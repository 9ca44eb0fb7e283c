"""The service's JSON answers, and the problem body every error answers with."""

from __future__ import annotations

import msgspec
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from eventstore.log.envelope import enc_hook
from eventstore.service.errors import ErrorBody, HTTPProblem

__all__ = ["json_response", "problem_response", "versioned_response"]


_encoder = msgspec.json.Encoder(enc_hook=enc_hook)


class _JSONResponse(Response):
    """A JSON answer with its raw headers made at once, where Starlette's `init_headers` looks
    each one up, lower-cases and encodes it again for every response."""

    media_type = "application/json"

    def __init__(self, body: bytes, status: int, headers: dict[str, str] | None) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]
        if headers:
            self.raw_headers += [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in headers.items()
            ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette's, without what a JSON answer never has (a websocket denial, a background
        # task): this runs for every request.
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": self.body})


def json_response(
    data: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return _JSONResponse(_encoder.encode(data), status, headers)


def versioned_response(data: object, version: int) -> Response:
    """A JSON answer with the scope's version as its ETag (what every write answers)."""
    response = _JSONResponse(_encoder.encode(data), 200, None)
    response.raw_headers.append((b"etag", b'"%d"' % version))
    return response


def problem_response(problem: HTTPProblem) -> Response:
    body = ErrorBody(reason=problem.reason, message=problem.message, detail=problem.detail)
    headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
    return json_response(body, problem.status, headers)
