"""The History tab: tasktrail's scope page inside Airflow's UI, reading a task instance's history.

A FastAPI app Airflow's API server mounts at `/tasktrail` (`history_app`), behind Airflow's own
authentication (the session cookie of Airflow's UI, or a bearer token) and its DAG permissions.
The page is tasktrail's own scope page (the service's static modules, served from the package);
its history routes are answered in process by the service app as an auditor would see them
(sensitive values masked).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final, NamedTuple

import anyio.to_thread
import msgspec

# At module level: FastAPI reads the routes' annotations (strings here) from these globals.
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from eventstore.airflow.backend import installed_backend
from eventstore.airflow.loop import PROCESS_LOOP
from eventstore.log.config import StoreConfig

__all__ = ["PREFIX", "history_app"]

PREFIX: Final = "/tasktrail"
STATIC: Final = Path(__file__).parent / "static"


def _make_history_app() -> Any:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from starlette.staticfiles import StaticFiles

    from eventstore.service.ui import STATIC_DIR

    app = FastAPI(title="tasktrail history", docs_url=None, redoc_url=None, openapi_url=None)
    can_read = [
        Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.TASK_INSTANCE))
    ]

    @app.get("/history/{dag_id}/{run_id}/{task_id}/{map_index}", dependencies=can_read)
    async def history_page(
        request: Request, dag_id: str, run_id: str, task_id: str, map_index: str
    ) -> HTMLResponse:
        # An unmapped task instance's tab keeps Airflow's placeholder: "{MAP_INDEX}".
        index = int(map_index) if re.fullmatch(r"-?\d+", map_index) else -1
        scope = {
            "scope": "task",
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id,
            "map_index": index,
        }
        base = request.scope.get("root_path", "").rstrip("/")
        return HTMLResponse(_PAGE.format(base=base, scope=_script_json(scope)), headers=_HEADERS)

    @app.get("/ui/airflow-history.js")
    async def entry_module() -> FileResponse:
        return FileResponse(
            STATIC / "airflow-history.js",
            media_type="text/javascript",
            headers=_HEADERS,
        )

    @app.get("/api/v1/tasks/{dag_id}/{rest:path}", dependencies=can_read)
    async def task_history(request: Request, dag_id: str, rest: str) -> Response:
        if not re.fullmatch(r"[^/]+/[^/]+/-?\d+/(history|tries|state|diff|timeline/.+)", rest):
            raise HTTPException(404, "tasktrail's History view reads a task's history only")
        return await _answer_from_tasktrail(request)

    app.mount("/ui", StaticFiles(directory=STATIC_DIR), name="tasktrail-ui")
    return app


def _script_json(value: Any) -> str:
    # In a <script type="application/json">: "</" must not close the element.
    return json.dumps(value).replace("</", "<\\/")


_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}

_PAGE: Final = """<!doctype html>
<html lang="en" data-base="{base}">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>tasktrail history</title>
  <link rel="stylesheet" href="{base}/ui/style.css">
  <link rel="icon" href="data:,">
  <script type="application/json" id="scope">{scope}</script>
  <script type="module" src="{base}/ui/airflow-history.js"></script>
</head>
<body>
  <header class="bar">
    <span class="brand">tasktrail</span><span id="crumb" class="crumb"></span>
  </header>
  <main id="main"></main>
</body>
</html>
"""


async def _answer_from_tasktrail(request: Any) -> Any:
    """Answer one of tasktrail's history routes in process, as an auditor (sensitive values
    masked), over the backend's database."""
    from fastapi.responses import JSONResponse, Response

    backend = installed_backend()
    if backend is None:
        return JSONResponse({"detail": "the state store backend is not tasktrail's"}, 404)
    if backend.token is not None:
        return JSONResponse(
            {
                "detail": (
                    "the History view reads tasktrail's database (TASKTRAIL_DB); through a "
                    f"service, open the service's own page: {backend.url}/ui/"
                )
            },
            501,
        )
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    path = raw.decode("latin-1")
    path = path[path.index("/api/v1/") :]
    scope = {
        **request.scope,
        "path": request.url.path[request.url.path.index("/api/v1/") :],
        "raw_path": path.encode("latin-1"),
        "root_path": "",
    }
    for name in ("router", "endpoint", "route", "app", "state"):
        scope.pop(name, None)
    # The service app and its read-only store are made once per process, on the backend's loop,
    # and closed with it at exit: a request costs a hop there, not an app and a store.
    opener = partial(_history_service, backend.url, backend.config)
    status, content_type, body = await anyio.to_thread.run_sync(
        PROCESS_LOOP.call, ("history", backend.url), opener, _serve, scope
    )
    return Response(body, status_code=status, media_type=content_type)


class _Service(NamedTuple):
    app: Any
    secret: bytes


@asynccontextmanager
async def _history_service(url: str, config: StoreConfig) -> AsyncIterator[_Service]:
    from eventstore.service.app import create_app

    secret = secrets.token_bytes(32)
    # Read-only: the History view never writes (no schema step, no key made, no secret file).
    config = msgspec.structs.replace(config, read_only=True)
    app = create_app(url, secret=secret, config=config)
    async with app.router.lifespan_context(app):
        yield _Service(app, secret)


async def _serve(service: _Service, scope: dict[str, Any]) -> tuple[int, str | None, bytes]:
    """One request to the service app, as an auditor: (status, content type, body)."""
    from eventstore.service.auth import make_token

    token = make_token(service.secret, "auditor", ttl=timedelta(minutes=5), name="airflow-history")
    scope = {
        **scope,
        "headers": [
            (b"authorization", f"Bearer {token}".encode()),
            (b"accept", b"application/json"),
        ],
    }
    held: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def hold(message: MutableMapping[str, Any]) -> None:
        held.append(dict(message))

    await service.app(scope, receive, hold)
    start = next(m for m in held if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
    headers = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    return start["status"], headers.get("content-type"), body


history_app: Final = _make_history_app()
