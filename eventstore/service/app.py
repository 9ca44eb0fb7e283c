"""The ASGI app (Starlette) and the uvicorn server that runs it.

The store is opened in the app's lifespan and closed after uvicorn has let the requests in
flight finish, so a graceful shutdown (SIGINT, SIGTERM) commits every write it acknowledged.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from importlib.metadata import version as package_version
from typing import Any, Final

import anyio
import msgspec

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.convertors import Convertor, register_url_convertor
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute
    from starlette.types import ASGIApp
except ImportError as e:
    raise ImportError(
        f"the tasktrail service needs its extra ({e.name} is missing): "
        "pip install 'tasktrail[service]'"
    ) from e

from eventstore.log.config import Clock, StoreConfig
from eventstore.log.scopes import AssetScope
from eventstore.service.auth import TokenVerifier
from eventstore.service.compaction_route import COMPACTION_OPERATIONS
from eventstore.service.endpoint import endpoint
from eventstore.service.errors import HTTPProblem
from eventstore.service.feed import FEED_OPERATIONS
from eventstore.service.history import HISTORY_OPERATIONS
from eventstore.service.models import Health
from eventstore.service.openapi import build_openapi
from eventstore.service.operation import MAX_MAP_INDEX, Call, Operation, ServiceState
from eventstore.service.responses import json_response, problem_response
from eventstore.service.rewind_route import REWIND_OPERATIONS
from eventstore.service.routing import Router
from eventstore.service.scopes_route import SCOPE_OPERATIONS
from eventstore.service.store_route import STORE_OPERATIONS
from eventstore.service.ui import ui_routes
from eventstore.store import open_store
from projections.compaction import run_compaction_schedule

__all__ = ["ALL_OPERATIONS", "create_app", "openapi_document", "serve", "serve_in_thread"]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8750
VERSION: Final = package_version("tasktrail")


class _MapIndex(Convertor[int]):
    regex = "-?[0-9]+"

    def convert(self, value: str) -> int:
        # A number too long to be a map index stays one past the largest (the route answers
        # 422 bad_scope), rather than making int() read thousands of digits (or refuse to).
        if len(value.lstrip("-")) > 10:
            return MAX_MAP_INDEX + 1
        return int(value)

    def read(self, value: str) -> int | None:
        """`convert` where the regex matches, else None (`routing.Router` matches by this)."""
        digits = value[1:] if value[:1] == "-" else value
        if not (digits.isascii() and digits.isdigit()):
            return None
        return MAX_MAP_INDEX + 1 if len(digits) > 10 else int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("mapindex", _MapIndex())


_PROBE: Final = AssetScope(name="tasktrail.healthz")


async def _healthz(call: Call) -> Response:
    # One read of the database, so a lost database connection shows here as a 503.
    try:
        await call.store.version(_PROBE)
    except Exception as error:
        raise HTTPProblem(
            503, "unhealthy", f"the store does not answer: {type(error).__name__}: {error}"
        ) from error
    return json_response(Health(status="ok", version=VERSION))


async def _metrics(call: Call) -> Response:
    return Response(call.state.metrics.render(), media_type="text/plain; version=0.0.4")


async def _openapi(call: Call) -> Response:
    return Response(_openapi_json(), media_type="application/json")


_SERVICE: Final = "service"
ALL_OPERATIONS: Final[list[Operation]] = [
    Operation(
        "GET",
        "/healthz",
        "healthz",
        "Is the service up and its store answering",
        _healthz,
        _SERVICE,
        response=Health,
        statuses=(503,),
    ),
    Operation(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics",
        _metrics,
        _SERVICE,
        media_type="text/plain",
    ),
    Operation("GET", "/openapi.json", "openapi", "This document", _openapi, _SERVICE),
    *STORE_OPERATIONS,
    *HISTORY_OPERATIONS,
    *SCOPE_OPERATIONS,
    *COMPACTION_OPERATIONS,
    *REWIND_OPERATIONS,
    *FEED_OPERATIONS,
]

_document: bytes | None = None


def openapi_document() -> dict[str, Any]:
    return build_openapi(ALL_OPERATIONS, VERSION)


def _openapi_json() -> bytes:
    global _document
    if _document is None:
        _document = msgspec.json.encode(openapi_document())
    return _document


class _StateSlot:
    """Where the routes find the service's state once the lifespan has made it: one attribute,
    where `request.app.state` is three lookups and a `__getattr__` on every request."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: ServiceState | None = None

    def get(self, request: Request) -> ServiceState:
        assert self.state is not None, "a request before the lifespan started"
        return self.state


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return _http_problem(request, error)


def _http_problem(request: Request, error: HTTPException) -> Response:
    reason = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "bad_request")
    message = {
        404: f"no route {request.url.path!r}; see /openapi.json",
        405: f"{request.method} is not allowed on {request.url.path!r}",
    }.get(error.status_code, str(error.detail))
    response = problem_response(HTTPProblem(error.status_code, reason, message))
    if error.headers:
        response.headers.update(error.headers)  # Allow, on a 405
    return response


def _not_allowed(request: Request, methods: list[str]) -> Response:
    return _http_problem(request, HTTPException(405, headers={"Allow": ", ".join(methods)}))


class _App(Starlette):
    """Starlette (the lifespan, the UI's files, 404s) behind the operations' own `Router`."""

    def __init__(
        self,
        operations: Sequence[Operation],
        state_of: Callable[[Request], ServiceState],
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._operations = operations
        self._state_of = state_of

    def build_middleware_stack(self) -> ASGIApp:
        router = Router(super().build_middleware_stack(), _not_allowed, {"mapindex": _MapIndex()})
        for op in self._operations:
            run = endpoint(op, self._state_of)
            router.add(op.method, op.path, run)
            if op.method == "GET":
                router.add("HEAD", op.path, run)
        return router


def create_app(
    url: str,
    *,
    secret: bytes,
    config: StoreConfig | None = None,
    clock: Clock | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    extra_operations: Sequence[Operation] = (),
    compact_every: float | None = None,
) -> Starlette:
    """The service over the store at `url`, checking tokens signed with `secret`.

    `extra_operations` are served beside the API's (and left out of its OpenAPI document);
    `extra_routes` are Starlette routes, tried after them.

    With `compact_every` (seconds), the service compacts its store on that interval, from
    startup to shutdown; None or 0: never by itself (`POST /api/v1/compact` still does).
    """
    verifier = TokenVerifier(secret)
    slot = _StateSlot()
    if compact_every is not None and compact_every < 0:
        raise ValueError(f"compact_every must be >= 0 seconds (0: never), got {compact_every}")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Without a schedule the lifespan holds nothing bound to a task, so a host may start
        # the app in one task and stop it in another; the schedule's task group belongs to
        # the lifespan's own task (Starlette and uvicorn run the lifespan in one).
        async with open_store(url, config, clock) as store:
            state = ServiceState(store=store, verifier=verifier)
            app.state.tasktrail = slot.state = state
            if not compact_every:
                yield
                return
            # The schedule stops before the store closes: at shutdown its task group is
            # cancelled, and a compaction in progress stops between its short transactions.
            async with anyio.create_task_group() as tg:
                await tg.start(
                    partial(
                        run_compaction_schedule,
                        store,
                        compact_every,
                        lambda report: state.metrics.compacted(report, state.wall()),
                        on_error=state.metrics.compaction_error,
                    )
                )
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()

    app = _App(
        [*ALL_OPERATIONS, *extra_operations],
        slot.get,
        routes=[*ui_routes(), *extra_routes],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    # A key may end in "/": never redirect it to the key without.
    app.router.redirect_slashes = False

    def end_streams() -> None:
        if slot.state is not None:
            slot.state.store.end_subscriptions()

    # Called by the server as it starts shutting down (`_Server`): uvicorn waits for requests
    # in flight, and an event stream would otherwise hold it for the whole graceful timeout.
    app.state.end_streams = end_streams
    return app


class _Server(uvicorn.Server):
    """uvicorn's server, ending the app's event streams when it starts shutting down."""

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        end_streams = getattr(getattr(self.config.app, "state", None), "end_streams", None)
        if end_streams is not None:
            end_streams()
        await super().shutdown(sockets)


# uvicorn's settings the service runs with; `serve`'s options may change the first two.
_DEFAULTS: Final[dict[str, Any]] = {"log_level": "warning", "timeout_graceful_shutdown": 30}
_FIXED: Final[dict[str, Any]] = {
    "access_log": False,
    "proxy_headers": False,
    "server_header": False,
    "date_header": False,
}


def _config(app: Any, host: str, port: int, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, **{**_DEFAULTS, **_FIXED, **options})


def serve(
    app: Starlette, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, **options: Any
) -> None:
    """Run the service until SIGINT or SIGTERM, then finish in-flight requests and close."""
    options.setdefault("log_level", "info")
    _tune_gc()
    _Server(_config(app, host, port, **options)).run()


_YOUNG_GC_THRESHOLD: Final = 50_000


def _tune_gc() -> None:
    """The service owns its process, so it sets the cyclic garbage collector for its load.

    A request allocates hundreds of short-lived objects, nearly all freed by reference counting
    alone; at the default threshold (700) the young generation was collected every few requests,
    about 8% of the service's CPU under a write load. What is loaded by now (modules, the route
    table) lives as long as the process: frozen, no collection walks it again.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_YOUNG_GC_THRESHOLD, middle, old)


@contextmanager
def serve_in_thread(app: Starlette, host: str = DEFAULT_HOST, port: int = 0) -> Iterator[str]:
    """Run the service in a background thread for the block; yields its base URL.

    For tests and examples: port 0 picks a free port.
    """
    server = _Server(_config(app, host, port))
    thread = threading.Thread(target=server.run, name="tasktrail-service", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the service failed to start; see the log above")
            thread.join(0.01)
        bound = server.servers[0].sockets[0].getsockname()
        yield f"http://{host}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join()
