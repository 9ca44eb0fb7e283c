"""What the API is made of: operations (method, path, auth action, parameters, bodies) and the
`Call` each handler gets: the request, the verified claims, and the scope the path names,
already authorized.

Expected versions travel in `If-Match` (`If-Match: "7"` or `If-Match: 7`: write only if the
scope is at version 7, else 409); writes answer with the scope's new version in `ETag`.
Idempotency ids travel in `Idempotency-Key`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final, Literal
from urllib.parse import unquote

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from eventstore.log.scopes import AssetScope, Scope, TaskScope
from eventstore.log.values import check_key
from eventstore.service.auth import Action, Claims, TokenVerifier
from eventstore.service.errors import HTTPProblem
from eventstore.service.metrics import Metrics
from eventstore.service.parsing import INLINE_BODY_BYTES, decode_body, read_body, too_large
from eventstore.store import AssetStore, Store, TaskStore

__all__ = [
    "MAX_LIST_LIMIT",
    "MAX_MAP_INDEX",
    "Call",
    "Handler",
    "Operation",
    "Param",
    "ScopeKind",
    "ServiceState",
    "header_of",
    "scope_of",
    "unknown_scope",
]

ScopeKind = Literal["task", "asset_name", "asset_uri"]

MAX_MAP_INDEX: Final = 2**31 - 1
MAX_LIST_LIMIT: Final = 1000


class ScopeCache:
    """Scopes as `scope_of` parses them, by the path segments and query parameter that name them,
    and the accessors that write them, by scope, try and actor.

    A task writes to its own scope over and over; unescaping and checking each part again on
    every request costs more than the rest of its routing.
    """

    def __init__(self, size: int = 4096) -> None:
        self._scopes: dict[tuple[object, ...], Scope] = {}
        self._accessors: dict[tuple[Scope, int | None, Claims], TaskStore | AssetStore] = {}
        self._size = size

    def accessor(
        self, store: Store, scope: Scope, try_number: int | None, claims: Claims
    ) -> TaskStore | AssetStore:
        # By the claims, which hash in C, rather than the actor they name (made anew each time).
        key = (scope, try_number, claims)
        accessor = self._accessors.get(key)
        if accessor is None or accessor.store is not store:
            if isinstance(scope, TaskScope):
                accessor = store.open_task(scope, try_number, claims.actor)
            else:
                accessor = store.open_asset(scope, claims.actor)
            if len(self._accessors) >= self._size:
                self._accessors.clear()
            self._accessors[key] = accessor
        return accessor

    def scope(self, kind: ScopeKind, request: Request) -> Scope:
        params = request.scope["path_params"]
        if kind == "task":
            named: tuple[object, ...] = (
                params["dag_id"],
                params["run_id"],
                params["task_id"],
                params["map_index"],
            )
        else:
            # By the uri alone, not the whole query: history's filters and pages vary with it.
            named = (kind, params.get("name"), request.query_params.get("uri"))
        scope = self._scopes.get(named)
        if scope is None:
            scope = scope_of(kind, request)
            if len(self._scopes) >= self._size:
                self._scopes.clear()
            self._scopes[named] = scope
        return scope


@dataclass
class ServiceState:
    """What every request reaches: the open store, the token verifier, the metrics."""

    store: Store
    verifier: TokenVerifier
    metrics: Metrics = field(default_factory=Metrics)
    scopes: ScopeCache = field(default_factory=ScopeCache)
    max_body_bytes: int = 16 * 1024 * 1024
    wall: Callable[[], float] = time.time


@dataclass(frozen=True)
class Param:
    name: str
    location: Literal["path", "query", "header"]
    schema: dict[str, Any]
    description: str
    required: bool = False


Handler = Callable[["Call"], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # Starlette's form, with convertors: {key:path}, {map_index:mapindex}
    name: str
    summary: str
    handler: Handler
    tag: str
    action: Action | None = None  # None: no token needed
    scope: ScopeKind | None = None
    body: type | None = None
    response: type | None = None
    params: tuple[Param, ...] = ()
    statuses: tuple[int, ...] = ()
    media_type: str = "application/json"

    @cached_property
    def template(self) -> str:
        """The path as OpenAPI writes it: {key}, {map_index}."""
        return self.path.replace(":path}", "}").replace(":mapindex}", "}")


class Call:
    """One authorized request to one operation."""

    __slots__ = ("claims", "headers", "op", "request", "scope", "state")

    def __init__(
        self,
        request: Request,
        headers: dict[bytes, bytes],
        state: ServiceState,
        op: Operation,
        claims: Claims | None,
        scope: Scope | None,
    ) -> None:
        self.request = request
        self.headers = headers
        self.state = state
        self.op = op
        self.claims = claims
        self.scope = scope

    @property
    def store(self) -> Store:
        return self.state.store

    def the_scope(self) -> Scope:
        assert self.scope is not None, self.op.name
        return self.scope

    def accessor(self) -> TaskStore | AssetStore:
        claims, scope = self.claims, self.scope
        assert claims is not None, self.op.name
        assert scope is not None, self.op.name
        try_number = self.try_number() if isinstance(scope, TaskScope) else None
        return self.state.scopes.accessor(self.store, scope, try_number, claims)

    def try_number(self) -> int | None:
        """The try a task write is stamped with: a task token's own; an admin's says it.

        An admin token serves many task instances (Airflow's API server holds one), so it
        names the try of each write in `Tasktrail-Try`; without the header it writes no try.
        """
        claims = self.claims
        assert claims is not None
        said = self.headers.get(b"tasktrail-try")
        # bytes.isdigit: ASCII digits only.
        if claims.role == "admin" and said is not None and said.isdigit():
            return int(said)
        return claims.try_number

    def key(self) -> str:
        return check_key(self.request.scope["path_params"]["key"])

    def header(self, name: str) -> str | None:
        """A request header by its lower-case name."""
        return header_of(self.headers, name.encode("latin-1"))

    async def raw_body(self) -> bytes:
        """The body's bytes, 413 once they are over the service's limit."""
        return await read_body(self.request.receive, self.state.max_body_bytes)

    async def body(self, kind: type[Any]) -> Any:
        limit = self.state.max_body_bytes
        declared = self.headers.get(b"content-length")
        # A declared length over the limit is refused before reading; a lying one once the
        # body read passes the limit.
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(f"{int(declared)} bytes", limit)
        raw = await read_body(self.request.receive, limit)
        if len(raw) <= INLINE_BODY_BYTES:
            return decode_body(raw, kind)
        # Decoding many megabytes takes longer than any request may hold the event loop; in a
        # worker thread the loop gets its turns between the steps of the decoding.
        return await anyio.to_thread.run_sync(decode_body, raw, kind)

    def expected_version(self) -> int | None:
        raw = self.headers.get(b"if-match")
        if raw is None:
            return None
        header = raw.decode("latin-1")
        text = header.strip().removeprefix("W/").strip('"')
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise HTTPProblem(
                422,
                "bad_header",
                f'If-Match must be a scope version like "7", got {header!r}',
            )
        return int(text)

    def idempotency_id(self) -> str | None:
        raw = self.headers.get(b"idempotency-key")
        if raw is None:
            return None
        if not 0 < len(raw) <= 200:
            raise HTTPProblem(422, "bad_header", "Idempotency-Key must be 1 to 200 characters")
        return raw.decode("latin-1")

    def query_int(self, name: str, default: int | None, low: int, high: int) -> int | None:
        text = self.request.query_params.get(name)
        if text is None:
            return default
        try:
            number = int(text)
        except ValueError:
            raise HTTPProblem(
                422, "bad_query", f"{name} must be an integer, got {text!r}"
            ) from None
        if not low <= number <= high:
            raise HTTPProblem(
                422, "bad_query", f"{name} must be between {low} and {high}, got {number}"
            )
        return number

    def query_bool(self, name: str) -> bool:
        text = self.request.query_params.get(name, "false").lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise HTTPProblem(422, "bad_query", f"{name} must be true or false, got {text!r}")


def scope_of(kind: ScopeKind, request: Request) -> Scope:
    # The scope's own segments arrive still escaped (see `routing.raw_scope_path`).
    params = request.path_params
    try:
        match kind:
            case "task":
                map_index = params["map_index"]
                if map_index > MAX_MAP_INDEX:
                    raise ValueError(f"map_index must be from -1 to {MAX_MAP_INDEX}")
                dag, run, task = (unquote(params[n]) for n in ("dag_id", "run_id", "task_id"))
                return TaskScope(dag, run, task, map_index)
            case "asset_name":
                name = unquote(params["name"])
                return AssetScope(name=name, uri=request.query_params.get("uri"))
            case "asset_uri":
                uri = request.query_params.get("uri")
                if uri is None:
                    raise ValueError("the by-uri routes need ?uri=")
                return AssetScope(uri=uri)
    except ValueError as error:
        raise HTTPProblem(422, "bad_scope", str(error)) from None
    raise AssertionError(kind)


def unknown_scope(scope: Scope) -> HTTPProblem:
    what = "dag, run, task and map index" if isinstance(scope, TaskScope) else "asset name and uri"
    return HTTPProblem(
        404, "unknown_scope", f"nothing was ever written to {scope}; check the {what}"
    )


def header_of(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")
