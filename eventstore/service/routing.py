"""The service's request path: its operations matched by path segments, straight from uvicorn.

Starlette's router tries each route's regular expression in turn, under three layers of
middleware (server errors, exceptions, the raw-segment rewrite) that each wrap `send`; for a
request that does a few microseconds of its own work that was a quarter of the service's CPU
per `set`. `Router` matches an operation's path in one walk over a tree of its segments and
calls the operation's endpoint (which answers every error itself, see `routes.endpoint`); a
request it does not match (the UI, a wrong method, no route at all) goes on to Starlette's
stack, which answers exactly as before.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any, Final
from urllib.parse import unquote

from starlette.convertors import Convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as ASGIScope

__all__ = ["Endpoint", "NotAllowed", "Router", "raw_scope_path"]

Endpoint = Callable[[Request], Awaitable[Response]]
# The answer to a path the router knows asked with a method it does not take: (the request,
# the methods it takes) -> a 405.
NotAllowed = Callable[[Request, list[str]], Response]

# The path segments that name a scope, matched still escaped: the server decodes `%2F` before
# routing, so an asset named `s3://bucket/orders` (Airflow names an asset by its uri unless told
# otherwise) would no longer be one path segment. `routes.scope_of` unescapes them.
_RAW_PREFIXES: Final = (("/api/v1/tasks/", 3), ("/api/v1/assets/by-name/", 1))


def raw_scope_path(scope: ASGIScope) -> str:
    """The request's path with the scope's own segments (dag, run and task ids, an asset's
    name) put back as sent, escaped; the rest of it (a key with its `/`) decoded."""
    path: str = scope["path"]
    raw_path = scope.get("raw_path")
    # Without an escape the raw path is the path (the usual request: nothing to put back).
    if not raw_path or b"%" not in raw_path:
        return path
    for prefix, count in _RAW_PREFIXES:
        if path.startswith(prefix):
            raw = raw_path.decode("latin-1").partition("?")[0]
            if not raw.startswith(prefix):
                return path
            segments = raw[len(prefix) :].split("/", count)
            if len(segments) <= count:
                tail = ""
                segments += [""] * (count - len(segments))
            else:
                tail = unquote("/" + segments[count])
            return prefix + "/".join(segments[:count]) + tail
    return path


_PARAM: Final = re.compile(r"\{(\w+)(?::(\w+))?\}")


class _Param:
    """A one-segment parameter: its name, and how to read it (None: the text as it is)."""

    __slots__ = ("name", "node", "read")

    def __init__(self, name: str, convertor: Convertor[Any] | None) -> None:
        self.name = name
        self.node = _Node()
        self.read: Callable[[str], object] | None = None
        if convertor is not None:
            # A convertor's own `read` (the value, or None where its regex would not match)
            # spares each request a regex match and a second call.
            read = getattr(convertor, "read", None)
            self.read = read if read is not None else partial(_by_regex, convertor)


def _by_regex(convertor: Convertor[Any], segment: str) -> object:
    return convertor.convert(segment) if re.fullmatch(convertor.regex, segment) else None


class _Node:
    __slots__ = ("literal", "methods", "param", "rest")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.param: _Param | None = None
        # `{name:path}`, the path's last part: the rest of the path, "/" and all (may be empty).
        self.rest: tuple[str, dict[str, Endpoint]] | None = None
        self.methods: dict[str, Endpoint] = {}


class Router:
    """An ASGI app: the operations' endpoints by method and path, the rest to `fallback`.

    Paths are Starlette's templates: literal segments, `{name}` (one segment), `{name:mapindex}`
    (one segment, an integer) and a last `{name:path}` (the rest of the path). At each segment a
    literal wins over a parameter; a tree where both could match one segment is refused when it
    is built, so the walk never has to go back and the first match is the only one.
    """

    def __init__(
        self,
        fallback: ASGIApp,
        not_allowed: NotAllowed,
        convertors: dict[str, Convertor[Any]],
    ) -> None:
        self._root = _Node()
        self._fallback = fallback
        self._not_allowed = not_allowed
        self._convertors = convertors

    def add(self, method: str, path: str, endpoint: Endpoint) -> None:
        node = self._root
        segments = path.split("/")[1:]
        for i, segment in enumerate(segments):
            param = _PARAM.fullmatch(segment)
            if param is None:
                if node.param is not None or node.rest is not None:
                    raise ValueError(f"{path}: a literal beside a parameter at {segment!r}")
                node = node.literal.setdefault(segment, _Node())
                continue
            name, kind = param.groups()
            if kind == "path":
                if i != len(segments) - 1 or node.literal or node.param is not None:
                    raise ValueError(f"{path}: a path parameter must come last, alone")
                if node.rest is None:
                    node.rest = (name, {})
                node.rest[1][method] = endpoint
                return
            if node.literal or node.rest is not None:
                raise ValueError(f"{path}: a parameter beside literals at {segment!r}")
            if node.param is None:
                node.param = _Param(name, None if kind is None else self._convertors[kind])
            elif node.param.name != name:
                raise ValueError(f"{path}: {{{name}}} where another path has {node.param.name}")
            node = node.param.node
        node.methods[method] = endpoint

    def add_all(self, routes: Iterable[tuple[str, str, Endpoint]]) -> None:
        for method, path, endpoint in routes:
            self.add(method, path, endpoint)

    def match(
        self, method: str, path: str
    ) -> tuple[Endpoint, dict[str, object]] | list[str] | None:
        """The endpoint and path parameters; the methods the path takes if not `method`; None
        when no operation has the path."""
        node = self._root
        params: dict[str, object] = {}
        segments = path.split("/")
        for i in range(1, len(segments)):
            segment = segments[i]
            child = node.literal.get(segment)
            if child is not None:
                node = child
                continue
            param = node.param
            if param is not None and segment:
                if param.read is None:
                    params[param.name] = segment
                else:
                    value = param.read(segment)
                    if value is None:
                        return None
                    params[param.name] = value
                node = param.node
                continue
            if node.rest is not None:
                name, methods = node.rest
                endpoint = methods.get(method)
                if endpoint is None:
                    return list(methods)
                params[name] = "/".join(segments[i:])
                return endpoint, params
            return None
        found = node.methods.get(method)
        if found is None:
            return list(node.methods) or None
        return found, params

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            # Without an escape the raw path is the path (the usual request: nothing to put back).
            raw_path = scope.get("raw_path")
            path = raw_scope_path(scope) if raw_path is None or b"%" in raw_path else scope["path"]
            found = self.match(scope["method"], path)
            scope["path"] = path
            if isinstance(found, tuple):
                endpoint, params = found
                scope["path_params"] = params
                response = await endpoint(Request(scope, receive))
                await response(scope, receive, send)
                return
            if found is not None:
                await self._not_allowed(Request(scope, receive), found)(scope, receive, send)
                return
        await self._fallback(scope, receive, send)
