"""A scope's history through the service: events, state, diff, timeline, tries, rewind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from eventstore.client.transport import Transport, decode_error, error_of, segment
from eventstore.log.errors import NoSuchPointError
from eventstore.log.events import RecordedEvent
from eventstore.log.scopes import Scope
from eventstore.log.values import check_key
from eventstore.service.models import RewindAnswer
from projections import At, Diff, RewindResult, TrySummary
from projections.events_query import EventQuery, EventsReader, check_limit

__all__ = ["RemoteHistory"]

T = TypeVar("T")


def _point_query(at: At, prefix: str = "") -> dict[str, str]:
    if at.kind == "time":
        assert at.moment is not None
        return {prefix + "at": at.moment.isoformat()}
    return {prefix + at.kind: str(at.number)}


class _StateAnswer(msgspec.Struct):
    state: dict[str, Any]


class _EventPage(msgspec.Struct):
    events: list[RecordedEvent]
    next_after_seq: int | None


class _Tries(msgspec.Struct):
    tries: list[TrySummary]


def _point_body(at: At) -> dict[str, Any]:
    if at.kind == "time":
        assert at.moment is not None
        return {"at": at.moment.isoformat()}
    return {at.kind: at.number}


class RemoteHistory(EventsReader):
    """`store.history(scope)` through the service: events, state, diff, timeline, tries."""

    def __init__(self, remote: Transport, scope: Scope) -> None:
        self.remote = remote
        self.scope = scope

    def __repr__(self) -> str:
        return f"<RemoteHistory of {self.scope}>"

    async def _get(self, path: str, query: Mapping[str, str], kind: type[T]) -> T | None:
        """The answer, or None if nothing was ever written to the scope."""
        status, content = await self.remote.request(
            "GET",
            path,
            query=query,
            scope=self.scope,
            ok=frozenset({200, 404}),
        )
        if status == 404:
            if decode_error(content).reason == "unknown_scope":
                return None
            raise error_of(status, content, self.scope)
        return msgspec.json.decode(content, type=kind)

    async def _events(self, query: EventQuery) -> list[RecordedEvent]:
        """The events the query asks for, fetched page by page up to its `limit`."""
        params: dict[str, str] = {}
        if query.key is not None:
            params["key"] = check_key(query.key)
        if query.kinds is not None:
            params["kinds"] = ",".join(sorted(query.kinds))
        if query.try_number is not None:
            params["try"] = str(query.try_number)
        if query.since is not None:
            params["since"] = query.since.isoformat()
        if query.until is not None:
            params["until"] = query.until.isoformat()
        return await self._pages("/history", params, query.after_seq, query.limit)

    async def _pages(
        self, path: str, params: dict[str, str], after_seq: int | None, limit: int | None
    ) -> list[RecordedEvent]:
        """The events of a paged route, fetched page by page up to `limit` (None: all)."""
        found: list[RecordedEvent] = []
        while limit is None or len(found) < limit:
            page_size = 1000 if limit is None else min(1000, limit - len(found))
            if page_size == 0:
                break
            params["limit"] = str(page_size)
            if after_seq is not None:
                params["after_seq"] = str(after_seq)
            page = await self._get(path, params, _EventPage)
            if page is None:
                return []
            found += page.events
            if page.next_after_seq is None:
                break
            after_seq = page.next_after_seq
        return found

    async def state(self, at: At) -> dict[str, Any]:
        """The scope's {key: value} as of `at`."""
        answer = await self._get("/state", _point_query(at), _StateAnswer)
        if answer is None:
            return self._empty(at)
        return answer.state

    async def diff(self, a: At, b: At) -> Diff:
        """What changed from the state as of `a` to the state as of `b`."""
        query = {**_point_query(a, "from_"), **_point_query(b, "to_")}
        answer = await self._get("/diff", query, Diff)
        if answer is None:
            self._empty(a)
            self._empty(b)
            return Diff(added={}, removed={}, changed={})
        return answer

    async def timeline(
        self, key: str, *, after_seq: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Every set and delete of one key, oldest first; page with `after_seq` and `limit`."""
        check_limit(limit)
        path = "/timeline/" + segment(check_key(key))
        return await self._pages(path, {}, after_seq, limit)

    async def tries(self) -> list[TrySummary]:
        """One summary per try that wrote to the scope, in try order."""
        answer = await self._get("/tries", {}, _Tries)
        return [] if answer is None else answer.tries

    async def rewind(
        self,
        at: At,
        *,
        try_number: int | None = None,
        expected_version: int | None = None,
        dry_run: bool = False,
    ) -> RewindResult:
        """`History.rewind` through the service (admin tokens); the actor is the token's."""
        body = {**_point_body(at), "dry_run": dry_run}
        headers: dict[str, str] = {}
        if try_number is not None:
            headers["Tasktrail-Try"] = str(try_number)
        if expected_version is not None:
            headers["If-Match"] = f'"{expected_version}"'
        _, content = await self.remote.request(
            "POST",
            "/store:rewind",
            body=msgspec.json.encode(body),
            headers=headers,
            scope=self.scope,
        )
        answer = msgspec.json.decode(content, type=RewindAnswer)
        return RewindResult(
            point=answer.point,
            rewound_to=answer.rewound_to,
            version=answer.version,
            seq=answer.seq,
            set=answer.set,
            deleted=answer.deleted,
            diff=Diff(added=answer.added, removed=answer.removed, changed=answer.changed),
            dry_run=answer.dry_run,
        )

    def _empty(self, at: At) -> dict[str, Any]:
        # What the embedded history answers for a scope nothing was written to.
        if at.kind in ("end_of_try", "start_of_try") or (at.kind == "version" and at.number):
            raise NoSuchPointError(self.scope, str(at), "nothing was ever written to it")
        return {}
