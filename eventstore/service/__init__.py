"""The tasktrail HTTP service: a Starlette app over one store, run by uvicorn.

Needs the `service` extra (`pip install 'tasktrail[service]'`); the core never imports it.
"""

from eventstore.service.app import create_app, openapi_document, serve, serve_in_thread
from eventstore.service.auth import Claims, load_secret, make_token

__all__ = [
    "Claims",
    "create_app",
    "load_secret",
    "make_token",
    "openapi_document",
    "serve",
    "serve_in_thread",
]
