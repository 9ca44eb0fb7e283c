"""The web page under /ui/: static HTML, CSS and ES modules shipped in the package.

Nothing is built and nothing is fetched from elsewhere: the files in `static/` are served as
they are, with a Content-Security-Policy that lets the page talk to this service only.
The page reads the read-only routes with the auditor or admin token its user pastes once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

__all__ = ["STATIC_DIR", "ui_routes"]

STATIC_DIR: Final = Path(__file__).parent / "static"

_HEADERS: Final = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


class _Guarded:
    """Static files with the page's security headers on every answer."""

    def __init__(self, files: StaticFiles) -> None:
        self.files = files

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.files(scope, receive, send_guarded)


async def _to_ui(request: object) -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=308)


def ui_routes() -> list[BaseRoute]:
    """/ui/ (the page and its modules) and /ui, which redirects to it."""
    files = StaticFiles(directory=STATIC_DIR, html=True)
    return [Route("/ui", _to_ui, methods=["GET", "HEAD"]), Mount("/ui", _Guarded(files))]
