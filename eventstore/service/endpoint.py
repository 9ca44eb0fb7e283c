"""An operation's endpoint: the token, the scope, the handler, its errors and its metrics.

Every error an operation meets is answered here (the store's through `errors.problem_of`, a
bug as a 500 with its traceback in the log), so the router needs no exception layer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from eventstore.service.auth import Claims, TokenError, TokenVerifier, authorize
from eventstore.service.errors import HTTPProblem, problem_of
from eventstore.service.operation import Call, Operation, ServiceState
from eventstore.service.responses import problem_response

__all__ = ["endpoint"]

log = logging.getLogger("tasktrail.service")


def endpoint(
    op: Operation, state_of: Callable[[Request], ServiceState]
) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint of an operation: auth, scope, handler, errors, metrics."""

    action, kind, template, method = op.action, op.scope, op.template, op.method
    writes = action in _WRITES

    async def run(request: Request) -> Response:
        state = state_of(request)
        started = time.perf_counter()
        raw = request.scope["headers"]
        # The raw headers by (lower-case) name, the last of a repeated one: made once, where
        # Starlette's `Headers` scans the whole list again on every lookup.
        headers = dict(raw)
        try:
            if len(headers) != len(raw):
                _check_repeats(raw)
            claims = None
            scope = None
            if action is not None:
                claims = _authenticate(headers.get(b"authorization"), state.verifier, state.wall())
                if kind is not None:
                    scope = state.scopes.scope(kind, request)
                denial = authorize(claims, action, scope)
                if denial is not None:
                    raise HTTPProblem(403, "forbidden", denial)
                said = headers.get(b"tasktrail-try")
                if writes and said is not None:
                    _check_try(said.decode("latin-1"), claims)
            response = await op.handler(Call(request, headers, state, op, claims, scope))
        except Exception as error:
            problem = problem_of(error)
            if problem is None:
                log.exception("%s %s failed", method, request.url.path)
                problem = HTTPProblem(
                    500, "internal_error", f"the service failed: {type(error).__name__}"
                )
            if writes:
                state.metrics.append("task" if kind == "task" else "asset", problem.reason)
            response = problem_response(problem)
        state.metrics.request(template, method, response.status_code, time.perf_counter() - started)
        return response

    run.__name__ = op.name
    return run


_WRITES: Final = frozenset({"write", "delete", "clear"})


# The headers the service reads: sent twice, which one counts would be a guess (an intermediary
# may keep the first where this service would keep the last).
_SINGLE_HEADERS: Final = (b"authorization", b"tasktrail-try", b"if-match", b"idempotency-key")


def _check_repeats(raw: list[tuple[bytes, bytes]]) -> None:
    names = [name for name, _ in raw]
    for name in _SINGLE_HEADERS:
        if names.count(name) > 1:
            raise HTTPProblem(
                400,
                "repeated_header",
                f"the request has {names.count(name)} {name.decode().title()} headers; "
                "send it once",
            )


def _check_try(said: str, claims: Claims) -> None:
    """A task that says which try it is (`Tasktrail-Try`) must hold that try's token.

    Writes are stamped with the token's try; a task running try 2 with try 1's token would
    write as try 1, unfenced against its own zombie. Saying the try turns that into a 403.
    """
    if not (said.isascii() and said.isdigit() and len(said) <= 9):
        raise HTTPProblem(422, "bad_header", f"Tasktrail-Try must be a try number, got {said!r}")
    if claims.role != "task":
        return
    if int(said) != claims.try_number:
        raise HTTPProblem(
            403,
            "try_mismatch",
            f"the request says try {said}, the token is for try {claims.try_number}; "
            "make a token for this try with `tasktrail token --try`",
        )


def _authenticate(raw: bytes | None, verifier: TokenVerifier, now: float) -> Claims:
    # A task sends the same header on every request: its claims are one lookup away.
    known = None if raw is None else verifier.known_header(raw, now)
    if known is not None:
        return known
    if raw is None:
        raise HTTPProblem(
            401, "unauthenticated", "send a bearer token: Authorization: Bearer <token>"
        )
    scheme, _, token = raw.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPProblem(401, "unauthenticated", "the Authorization header must be Bearer <token>")
    try:
        claims = verifier.verify(token.strip(), now)
    except TokenError as error:
        raise HTTPProblem(401, "bad_token", str(error)) from None
    verifier.remember_header(raw, claims)
    return claims
