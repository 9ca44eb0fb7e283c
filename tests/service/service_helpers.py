"""Calling the service under test: raw HTTP with exact paths, tokens, a clock it runs on."""

from __future__ import annotations

import http.client
import json
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from eventstore.service.auth import make_token
from eventstore.testing import FakeClock

__all__ = ["SECRET", "Answer", "FakeClock", "Service"]

SECRET = b"test-secret-of-enough-length-0123456789"


class Answer:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def reason(self) -> str:
        reason: str = self.json()["reason"]
        return reason

    def __repr__(self) -> str:
        return f"<Answer {self.status} {self.body[:300]!r}>"


class Service:
    """The running service: its URL, its clock, tokens for it, and raw HTTP calls."""

    def __init__(self, base_url: str, clock: FakeClock) -> None:
        self.base_url = base_url
        self.clock = clock
        split = urlsplit(base_url)
        self.host = split.hostname or "127.0.0.1"
        self.port = split.port or 80

    def token(self, role: str = "admin", **claims: Any) -> str:
        return make_token(SECRET, role, ttl=timedelta(hours=1), **claims)  # type: ignore[arg-type]

    def task_token(
        self, dag: str, run: str = "r", task: str = "t", map_index: int = -1, **claims: Any
    ) -> str:
        return self.token("task", dag=dag, run=run, task=task, map_index=map_index, **claims)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request, the path sent exactly as given (already escaped)."""
        send = dict(headers or {})
        if token is not None:
            send["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        if data is not None:
            send["Content-Type"] = "application/json"
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.request(method, path, body=data, headers=send)
            response = connection.getresponse()
            return Answer(response.status, response.read(), dict(response.getheaders()))
        finally:
            connection.close()


def task_path(
    dag: str, key: str | None = None, *, run: str = "r", task: str = "t", map_index: int = -1
) -> str:
    parts = "/".join(quote(part, safe="") for part in (dag, run, task))
    path = f"/api/v1/tasks/{parts}/{map_index}/store"
    return path if key is None else f"{path}/{quote(key, safe='')}"
