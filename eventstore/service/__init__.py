"""The tasktrail HTTP service: a Starlette app over one store, run by uvicorn.

Needs the `service` extra (`pip install 'tasktrail[service]'`); the core never imports it.
`eventstore.service.auth` (tokens) needs only the core's dependencies, so `tasktrail token` works
without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventstore.service.app import create_app, openapi_document, serve, serve_in_thread

__all__ = ["create_app", "openapi_document", "serve", "serve_in_thread"]


def __getattr__(name: str) -> Any:
    # The app is imported on first use, so importing the tokens module needs no web framework.
    if name in __all__:
        from eventstore.service import app

        return getattr(app, name)
    raise AttributeError(f"module 'eventstore.service' has no attribute {name!r}")
