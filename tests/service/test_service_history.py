"""The history routes and the client's remote history, over a two-try story."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest

from eventstore import HistoryCompactedError, TaskScope
from eventstore.client import connect, connect_blocking
from eventstore.client.transport import error_of
from eventstore.log.errors import NoSuchPointError
from eventstore.service.auth import make_token
from eventstore.service.errors import problem_of
from projections import At
from service.service_helpers import SECRET, Service, task_path


def history_path(dag: str, route: str, **where: Any) -> str:
    return task_path(dag, **where).removesuffix("/store") + route


@pytest.fixture
def story(service: Service, dag: str) -> dict[str, Any]:
    """Try 1 sets a=1 and b=1; try 2 sets a=2, deletes b, sets c/d=3 (a slash key)."""
    first, second = service.task_token(dag, try_number=1), service.task_token(dag, try_number=2)
    times = []
    service.clock.advance(timedelta(minutes=1))
    service.call("PUT", task_path(dag, "a"), {"value": 1}, token=first)
    service.call("PUT", task_path(dag, "b"), {"value": 1}, token=first)
    times.append(service.clock.now)
    service.clock.advance(timedelta(minutes=1))
    service.call("PUT", task_path(dag, "a"), {"value": 2}, token=second)
    service.call("DELETE", task_path(dag, "b"), token=second)
    service.call("PUT", task_path(dag, "c/d"), {"value": 3}, token=second)
    times.append(service.clock.now)
    return {"token": second, "times": times}


def test_history_lists_events_oldest_first(
    service: Service, dag: str, story: dict[str, Any]
) -> None:
    got = service.call("GET", history_path(dag, "/history"), token=story["token"])
    assert got.status == 200, got
    events = got.json()["events"]
    assert [(e["kind"], e["key"], e["try_number"]) for e in events] == [
        ("set", "a", 1),
        ("set", "b", 1),
        ("set", "a", 2),
        ("delete", "b", 2),
        ("set", "c/d", 2),
    ]
    assert [e["version"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0]["value"] == 1
    assert events[0]["actor"] == "task"
    assert events[0]["scope"] == {
        "scope": "task",
        "dag_id": dag,
        "run_id": "r",
        "task_id": "t",
        "map_index": -1,
    }
    assert got.json()["next_after_seq"] is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?key=a", [("set", "a"), ("set", "a")]),
        ("?kinds=delete", [("delete", "b")]),
        ("?kinds=set,delete&try=1", [("set", "a"), ("set", "b")]),
        ("?try=2&key=c%2Fd", [("set", "c/d")]),
    ],
)
def test_history_filters(
    service: Service, dag: str, story: dict[str, Any], query: str, expected: list[tuple[str, str]]
) -> None:
    got = service.call("GET", history_path(dag, "/history") + query, token=story["token"])
    assert [(e["kind"], e["key"]) for e in got.json()["events"]] == expected


def test_history_time_range(service: Service, dag: str, story: dict[str, Any]) -> None:
    since = quote(story["times"][1].isoformat())
    got = service.call(
        "GET", history_path(dag, "/history") + f"?since={since}", token=story["token"]
    )
    assert [e["try_number"] for e in got.json()["events"]] == [2, 2, 2]
    until = quote(story["times"][0].isoformat())
    got = service.call(
        "GET", history_path(dag, "/history") + f"?until={until}", token=story["token"]
    )
    assert [e["try_number"] for e in got.json()["events"]] == [1, 1]


def test_history_pages(service: Service, dag: str, story: dict[str, Any]) -> None:
    seen: list[int] = []
    query = "?limit=2"
    while True:
        page = service.call(
            "GET", history_path(dag, "/history") + query, token=story["token"]
        ).json()
        seen += [e["version"] for e in page["events"]]
        if page["next_after_seq"] is None:
            break
        query = f"?limit=2&after_seq={page['next_after_seq']}"
    assert seen == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("query", "state"),
    [
        ("?end_of_try=1", {"a": 1, "b": 1}),
        ("?start_of_try=2", {"a": 1, "b": 1}),
        ("?end_of_try=2", {"a": 2, "c/d": 3}),
        ("?version=1", {"a": 1}),
        ("?version=0", {}),
    ],
)
def test_state_as_of_a_point(
    service: Service, dag: str, story: dict[str, Any], query: str, state: dict[str, Any]
) -> None:
    got = service.call("GET", history_path(dag, "/state") + query, token=story["token"])
    assert got.status == 200, got
    assert got.json()["state"] == state


def test_state_as_of_a_time_and_a_seq(service: Service, dag: str, story: dict[str, Any]) -> None:
    at = quote(story["times"][0].isoformat())
    got = service.call("GET", history_path(dag, "/state") + f"?at={at}", token=story["token"])
    assert got.json() == {
        "at": f"At.time({story['times'][0].isoformat()})",
        "state": {"a": 1, "b": 1},
    }
    events = service.call("GET", history_path(dag, "/history"), token=story["token"]).json()[
        "events"
    ]
    seq = events[2]["seq"]
    got = service.call("GET", history_path(dag, "/state") + f"?seq={seq}", token=story["token"])
    assert got.json()["state"] == {"a": 2, "b": 1}


def test_diff_between_tries(service: Service, dag: str, story: dict[str, Any]) -> None:
    query = "?from_end_of_try=1&to_end_of_try=2"
    got = service.call("GET", history_path(dag, "/diff") + query, token=story["token"])
    assert got.status == 200, got
    assert got.json() == {
        "from": "At.end_of_try(1)",
        "to": "At.end_of_try(2)",
        "added": {"c/d": 3},
        "removed": {"b": 1},
        "changed": {"a": [1, 2]},
    }


def test_timeline_of_a_slash_key(service: Service, dag: str, story: dict[str, Any]) -> None:
    got = service.call("GET", history_path(dag, "/timeline/c%2Fd"), token=story["token"])
    assert got.json()["key"] == "c/d"
    assert [e["value"] for e in got.json()["events"]] == [3]
    got = service.call("GET", history_path(dag, "/timeline/a"), token=story["token"])
    assert [e["value"] for e in got.json()["events"]] == [1, 2]


def test_timeline_comes_in_pages(service: Service, dag: str, story: dict[str, Any]) -> None:
    token = story["token"]
    for value in range(3, 8):
        service.call("PUT", task_path(dag, "a"), {"value": value}, token=token)
    route = history_path(dag, "/timeline/a")
    first = service.call("GET", route + "?limit=4", token=token).json()
    assert [e["value"] for e in first["events"]] == [1, 2, 3, 4]
    after = first["next_after_seq"]
    assert after == first["events"][-1]["seq"]
    last = service.call("GET", f"{route}?limit=4&after_seq={after}", token=token).json()
    assert [e["value"] for e in last["events"]] == [5, 6, 7]
    assert last["next_after_seq"] is None
    too_many = service.call("GET", route + "?limit=0", token=token)
    assert (too_many.status, too_many.reason) == (422, "bad_query")


async def test_remote_timeline_pages_to_its_limit(
    service: Service, dag: str, story: dict[str, Any]
) -> None:
    async with connect(service.base_url, token=service.token("auditor")) as remote:
        h = remote.history(TaskScope(dag, "r", "t"))
        assert [e.value for e in await h.timeline("a", limit=1)] == [1]
        whole = await h.timeline("a")
        assert [e.value for e in await h.timeline("a", after_seq=whole[0].seq)] == [2]
        with pytest.raises(ValueError, match="limit must be an int >= 0"):
            await h.timeline("a", limit=-1)


def test_tries_summarise_each_try(service: Service, dag: str, story: dict[str, Any]) -> None:
    tries = service.call("GET", history_path(dag, "/tries"), token=story["token"]).json()["tries"]
    assert [(t["try_number"], t["writes"], t["keys"]) for t in tries] == [
        (1, 2, ["a", "b"]),
        (2, 3, ["a", "b", "c/d"]),
    ]


@pytest.mark.parametrize(
    ("route", "status", "reason"),
    [
        ("/state?end_of_try=9", 404, "no_such_point"),
        ("/state", 422, "bad_query"),
        ("/state?seq=1&version=1", 422, "bad_query"),
        ("/state?at=yesterday", 422, "bad_query"),
        ("/state?at=2026-01-01T00:00:00", 422, "bad_query"),
        ("/diff?from_seq=1", 422, "bad_query"),
        ("/history?kinds=update", 422, "bad_query"),
        ("/history?limit=0", 422, "bad_query"),
    ],
)
def test_history_errors(
    service: Service, dag: str, story: dict[str, Any], route: str, status: int, reason: str
) -> None:
    got = service.call("GET", history_path(dag, route), token=story["token"])
    assert (got.status, got.reason) == (status, reason), got


@pytest.mark.parametrize(
    "route", ["/history", "/state?seq=1", "/tries", "/timeline/a", "/diff?from_seq=0&to_seq=1"]
)
def test_history_of_an_unknown_scope_is_404(service: Service, dag: str, route: str) -> None:
    got = service.call("GET", history_path(dag, route), token=service.token("auditor"))
    assert (got.status, got.reason) == (404, "unknown_scope")


def test_history_auth(service: Service, dag: str, story: dict[str, Any]) -> None:
    path = history_path(dag, "/history")
    assert service.call("GET", path, token=service.token("auditor")).status == 200
    assert service.call("GET", path, token=service.task_token(dag)).status == 200
    other = service.call("GET", path, token=service.task_token(dag, task="other"))
    assert (other.status, other.reason) == (403, "forbidden")
    assert service.call("GET", path).status == 401
    asset = f"/api/v1/assets/by-name/{dag}/history"
    assert service.call("GET", asset, token=service.task_token(dag)).status == 403


def test_admin_writes_are_recorded_as_api_actor(service: Service, dag: str) -> None:
    admin = make_token(SECRET, "admin", name="ops")
    service.call("PUT", task_path(dag, "k"), {"value": 1}, token=admin)
    event = service.call("GET", history_path(dag, "/history"), token=admin).json()["events"][0]
    assert (event["actor"], event["try_number"]) == ("api:ops", None)


def test_asset_history_by_uri(service: Service, dag: str) -> None:
    admin = service.token("admin")
    uri = quote(f"s3://bucket/{dag}", safe="")
    service.call("PUT", f"/api/v1/assets/by-uri/store/w?uri={uri}", {"value": 1}, token=admin)
    got = service.call("GET", f"/api/v1/assets/by-uri/history?uri={uri}", token=admin)
    assert got.json()["events"][0]["scope"] == {
        "scope": "asset",
        "name": None,
        "uri": f"s3://bucket/{dag}",
    }


def test_history_compacted_maps_to_410_and_back() -> None:
    scope = TaskScope("d", "r", "t")
    problem = problem_of(HistoryCompactedError(scope, "state(At.seq(3))", 17))
    assert problem is not None
    assert (problem.status, problem.reason) == (410, "history_compacted")
    assert problem.detail == {"question": "state(At.seq(3))", "earliest_seq": 17}
    body = (
        b'{"reason": "history_compacted", "message": "'
        + problem.message.encode()
        + b'", "detail": {"earliest_seq": 17, "question": "q"}}'
    )
    error = error_of(410, body, scope)
    assert isinstance(error, HistoryCompactedError)
    assert error.earliest_seq == 17
    assert "At.seq(17)" in str(error)


async def test_remote_history_answers_as_the_embedded_one(
    service: Service, dag: str, story: dict[str, Any]
) -> None:
    scope = TaskScope(dag, "r", "t")
    async with connect(service.base_url, token=service.token("auditor")) as remote:
        h = remote.history(scope)
        events = await h.events()
        assert [e.version for e in events] == [1, 2, 3, 4, 5]
        assert events[0].scope == scope
        assert [e.key for e in await h.events(kinds=["delete"])] == ["b"]
        assert len(await h.events(limit=2)) == 2
        assert [e.version for e in await h.events(after_seq=events[2].seq)] == [4, 5]
        assert await h.state(At.end_of_try(1)) == {"a": 1, "b": 1}
        assert await h.state(At.time(story["times"][0])) == {"a": 1, "b": 1}
        diff = await h.diff(At.end_of_try(1), At.end_of_try(2))
        assert (diff.added, diff.removed, diff.changed) == ({"c/d": 3}, {"b": 1}, {"a": (1, 2)})
        assert [e.value for e in await h.timeline("a")] == [1, 2]
        assert [t.try_number for t in await h.tries()] == [1, 2]
        with pytest.raises(NoSuchPointError, match=r"At\.end_of_try\(9\) does not exist"):
            await h.state(At.end_of_try(9))
        empty = remote.history(TaskScope(dag, "r", "never-written"))
        assert await empty.events() == []
        assert await empty.state(At.seq(5)) == {}
        assert await empty.tries() == []
        with pytest.raises(NoSuchPointError):
            await empty.state(At.end_of_try(1))


def test_blocking_remote_history(service: Service, dag: str, story: dict[str, Any]) -> None:
    with connect_blocking(service.base_url, token=service.token("auditor")) as remote:
        h = remote.history(TaskScope(dag, "r", "t"))
        assert len(h.events(key="a")) == 2
        assert h.state(At.start_of_try(2)) == {"a": 1, "b": 1}
        assert h.diff(At.version(0), At.version(1)).added == {"a": 1}
        assert len(h.timeline("b")) == 2
        assert len(h.tries()) == 2
