"""POST .../store:rewind: admins rewind a scope to a past point; dry runs show the diff; who may."""

from __future__ import annotations

import pytest

from service.service_helpers import Service, task_path


def _history(service: Service, dag: str) -> list[dict[str, object]]:
    path = task_path(dag).removesuffix("/store") + "/history"
    events: list[dict[str, object]] = service.call("GET", path, token=service.token()).json()[
        "events"
    ]
    return events


def _seed(service: Service, dag: str) -> None:
    one = service.task_token(dag, try_number=1)
    two = service.task_token(dag, try_number=2)
    assert service.call("PUT", task_path(dag, "offset"), {"value": 100}, token=one).status == 200
    assert service.call("PUT", task_path(dag, "job"), {"value": "j-1"}, token=one).status == 200
    assert service.call("PUT", task_path(dag, "offset"), {"value": 900}, token=two).status == 200
    assert service.call("DELETE", task_path(dag, "job"), token=two).status == 200


def test_an_admin_rewinds_a_task_to_the_end_of_a_try(service: Service, dag: str) -> None:
    _seed(service, dag)
    path = task_path(dag).removesuffix("/store") + "/store:rewind"

    plan = service.call("POST", path, {"end_of_try": 1, "dry_run": True}, token=service.token())
    assert plan.status == 200, plan
    assert plan.json()["dry_run"] is True
    assert (plan.json()["added"], plan.json()["changed"]) == (
        {"job": "j-1"},
        {"offset": [900, 100]},
    )
    assert len(_history(service, dag)) == 4, "a dry run writes nothing"

    done = service.call(
        "POST", path, {"end_of_try": 1}, token=service.token(), headers={"If-Match": '"4"'}
    )
    assert done.status == 200, done
    body = done.json()
    assert (sorted(body["set"]), body["deleted"], body["version"]) == (["job", "offset"], [], 6)
    assert done.headers["etag"] == '"6"'
    items = service.call("GET", task_path(dag), token=service.token()).json()["items"]
    assert {i["key"]: i["value"] for i in items} == {"job": "j-1", "offset": 100}
    events = _history(service, dag)
    assert [e["rewound_to"] for e in events] == [None, None, None, None, 2, 2]
    assert events[-1]["actor"].startswith("api:")


def test_a_rewind_answers_conflicts_compaction_and_bad_points(service: Service, dag: str) -> None:
    _seed(service, dag)
    path = task_path(dag).removesuffix("/store") + "/store:rewind"
    admin = service.token()
    stale = service.call("POST", path, {"version": 1}, token=admin, headers={"If-Match": "3"})
    assert (stale.status, stale.reason) == (409, "version_conflict")
    never = service.call("POST", path, {"end_of_try": 7}, token=admin)
    assert (never.status, never.reason) == (404, "no_such_point")
    outside_utc = ({"at": "9999-12-31T23:59:59-01:00"}, {"at": "0001-01-01T00:00:00+14:00"})
    for body in ({}, {"seq": 1, "version": 1}, {"seq": -1}, {"seq": 1, "extra": 1}, *outside_utc):
        got = service.call("POST", path, body, token=admin)
        assert (got.status, got.reason) == (422, "bad_body"), body
    fenced = service.call("POST", path, {"version": 1}, token=admin, headers={"Tasktrail-Try": "1"})
    assert (fenced.status, fenced.reason) == (410, "stale_attempt")
    unknown = task_path(dag + "-nothing").removesuffix("/store") + "/store:rewind"
    got = service.call("POST", unknown, {"version": 0}, token=admin)
    assert (got.status, got.reason) == (404, "unknown_scope")


@pytest.mark.parametrize("role", ["auditor", "task"])
def test_only_admins_may_rewind(service: Service, dag: str, role: str) -> None:
    _seed(service, dag)
    path = task_path(dag).removesuffix("/store") + "/store:rewind"
    token = service.task_token(dag, try_number=3) if role == "task" else service.token("auditor")
    for body in ({"version": 1}, {"version": 1, "dry_run": True}):
        got = service.call("POST", path, body, token=token)
        assert (got.status, got.reason) == (403, "forbidden"), got
        assert "admin" in got.json()["message"]
    assert len(_history(service, dag)) == 4
