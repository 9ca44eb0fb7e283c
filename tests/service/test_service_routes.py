"""Every route of the HTTP API against a real server on a loopback port."""

from __future__ import annotations

from datetime import timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import pytest

from eventstore.service import create_app, serve_in_thread
from service.service_helpers import SECRET, FakeClock, Service, task_path


def test_put_then_get_answers_key_value_and_times(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    put = service.call("PUT", task_path(dag, "job_id"), {"value": "spark-123"}, token=token)
    assert put.status == 200, put
    assert put.json()["version"] == 1
    assert put.headers["etag"] == '"1"'
    got = service.call("GET", task_path(dag, "job_id"), token=token)
    assert got.status == 200
    body = got.json()
    assert set(body) == {"key", "value", "updated_at", "expires_at"}
    assert body["key"] == "job_id"
    assert body["value"] == "spark-123"
    assert body["updated_at"].startswith("2026-01-01T")
    assert body["expires_at"].startswith("2026-01-31")  # the default 30 days


@pytest.mark.parametrize(
    ("retention", "expires"),
    [("never", None), (3600, "T01:00:00"), ("default", "2026-01-31")],
)
def test_put_retention_sets_expiry(
    service: Service, dag: str, retention: object, expires: str | None
) -> None:
    token = service.task_token(dag)
    body = {"value": 1, "retention": retention}
    assert service.call("PUT", task_path(dag, "k"), body, token=token).status == 200
    got = service.call("GET", task_path(dag, "k"), token=token).json()
    if expires is None:
        assert got["expires_at"] is None
    else:
        assert expires in got["expires_at"]


def test_put_expires_at_is_kept_exactly(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    expires = (service.clock.now + timedelta(hours=1, microseconds=123456)).replace(second=7)
    east = expires.astimezone(timezone(timedelta(hours=2)))
    body = {"value": 1, "expires_at": east.isoformat()}
    assert service.call("PUT", task_path(dag, "k"), body, token=token).status == 200
    got = service.call("GET", task_path(dag, "k"), token=token).json()
    assert got["expires_at"] == expires.isoformat().replace("+00:00", "Z")
    service.clock.advance(expires - service.clock.now - timedelta(microseconds=1))
    assert service.call("GET", task_path(dag, "k"), token=token).status == 200
    service.clock.advance(timedelta(microseconds=1))
    assert service.call("GET", task_path(dag, "k"), token=token).reason == "unknown_key"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"value": 1, "expires_at": "2026-03-04T05:06:07Z", "retention": "never"}, "bad_retention"),
        ({"value": 1, "expires_at": "2026-03-04T05:06:07Z", "retention": 60}, "bad_retention"),
        ({"value": 1, "expires_at": "2026-03-04T05:06:07"}, "bad_body"),  # no offset
        ({"value": 1, "expires_at": "soon"}, "bad_body"),
    ],
)
def test_put_expires_at_needs_an_offset_and_no_retention(
    service: Service, dag: str, body: object, reason: str
) -> None:
    got = service.call("PUT", task_path(dag, "k"), body, token=service.task_token(dag))
    assert (got.status, got.reason) == (422, reason)
    assert service.call("GET", task_path(dag, "k"), token=service.token()).status == 404


def test_expired_key_reads_as_unknown_key(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    service.call("PUT", task_path(dag, "k"), {"value": 1, "retention": 10}, token=token)
    service.clock.advance(timedelta(seconds=11))
    got = service.call("GET", task_path(dag, "k"), token=token)
    assert got.status == 404
    assert got.reason == "unknown_key"


@pytest.mark.parametrize(
    "key", ["a/b", "a//b", "/a", "a/b/", "..", ".", "a%2Fb", "ünï côdé", "?#&"]
)
def test_keys_with_slashes_and_odd_characters_round_trip(
    service: Service, dag: str, key: str
) -> None:
    token = service.task_token(dag)
    assert service.call("PUT", task_path(dag, key), {"value": key}, token=token).status == 200
    got = service.call("GET", task_path(dag, key), token=token)
    assert got.status == 200, got
    assert got.json()["key"] == key
    assert got.json()["value"] == key
    listed = service.call("GET", task_path(dag), token=token).json()
    assert [item["key"] for item in listed["items"]] == [key]


def test_slash_keys_stay_distinct(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    keys = ["a/b", "a//b", "/a/b", "a/b/", "a"]
    for number, key in enumerate(keys):
        service.call("PUT", task_path(dag, key), {"value": number}, token=token)
    listed = service.call("GET", task_path(dag), token=token).json()
    assert {i["key"]: i["value"] for i in listed["items"]} == {k: n for n, k in enumerate(keys)}


def test_unknown_scope_and_unknown_key_have_distinct_reasons(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    first = service.call("GET", task_path(dag, "nothing"), token=token)
    assert (first.status, first.reason) == (404, "unknown_scope")
    service.call("PUT", task_path(dag, "something"), {"value": 1}, token=token)
    second = service.call("GET", task_path(dag, "nothing"), token=token)
    assert (second.status, second.reason) == (404, "unknown_key")


def test_list_is_ordered_by_key_and_paginated(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    keys = [f"k{n:02d}" for n in range(7)]
    for key in reversed(keys):
        service.call("PUT", task_path(dag, key), {"value": key}, token=token)
    seen: list[str] = []
    query = "?limit=3"
    pages = 0
    while True:
        page = service.call("GET", task_path(dag) + query, token=token).json()
        pages += 1
        seen += [item["key"] for item in page["items"]]
        if page["next"] is None:
            break
        query = f"?limit=3&after={quote(page['next'])}"
    assert seen == keys
    assert pages == 3
    assert page["version"] == 7


def test_list_of_unknown_scope_is_empty(service: Service, dag: str) -> None:
    got = service.call("GET", task_path(dag), token=service.task_token(dag))
    assert got.status == 200
    assert got.json() == {"items": [], "next": None, "version": 0}


def test_patch_changes_value_and_keeps_expiry(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    service.call("PUT", task_path(dag, "k"), {"value": 1, "retention": 60}, token=token)
    before = service.call("GET", task_path(dag, "k"), token=token).json()
    service.clock.advance(timedelta(seconds=5))
    patched = service.call("PATCH", task_path(dag, "k"), {"value": 2}, token=token)
    assert patched.status == 200, patched
    after = service.call("GET", task_path(dag, "k"), token=token).json()
    assert after["value"] == 2
    assert after["expires_at"] == before["expires_at"]
    assert after["updated_at"] != before["updated_at"]


def test_patch_keeps_never_expire(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    service.call("PUT", task_path(dag, "k"), {"value": 1, "retention": "never"}, token=token)
    service.call("PATCH", task_path(dag, "k"), {"value": 2}, token=token)
    assert service.call("GET", task_path(dag, "k"), token=token).json()["expires_at"] is None


def test_patch_of_absent_key_is_404_and_writes_nothing(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    service.call("PUT", task_path(dag, "other"), {"value": 1}, token=token)
    got = service.call("PATCH", task_path(dag, "k"), {"value": 2}, token=token)
    assert (got.status, got.reason) == (404, "unknown_key")
    assert service.call("GET", task_path(dag), token=token).json()["version"] == 1


def test_delete_key_then_delete_again_appends_nothing(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    service.call("PUT", task_path(dag, "k"), {"value": 1}, token=token)
    first = service.call("DELETE", task_path(dag, "k"), token=token).json()
    assert first["events"] == 1
    second = service.call("DELETE", task_path(dag, "k"), token=token).json()
    assert second == {**second, "events": 0, "seq": None, "version": 2}
    assert service.call("GET", task_path(dag, "k"), token=token).reason == "unknown_key"


def test_batch_sets_all_keys_in_one_step(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    body = {"values": {"offset": 1200, "progress": {"rows": 5}}, "retention": "never"}
    got = service.call("POST", task_path(dag) + ":batch", body, token=token)
    assert got.status == 200, got
    assert got.json()["events"] == 2
    listed = service.call("GET", task_path(dag), token=token).json()
    assert {i["key"]: i["value"] for i in listed["items"]} == {
        "offset": 1200,
        "progress": {"rows": 5},
    }
    assert all(i["expires_at"] is None for i in listed["items"])


def test_batch_with_one_bad_value_writes_nothing(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    body = {"values": {"good": 1, "bad": None}}
    got = service.call("POST", task_path(dag) + ":batch", body, token=token)
    assert (got.status, got.reason) == (422, "null_value")
    assert service.call("GET", task_path(dag), token=token).json()["items"] == []


def test_clear_one_map_index_leaves_the_others(service: Service, dag: str) -> None:
    admin = service.token("admin")
    for index in (0, 1):
        service.call("PUT", task_path(dag, "k", map_index=index), {"value": index}, token=admin)
    cleared = service.call("DELETE", task_path(dag, map_index=0), token=admin)
    assert cleared.status == 200
    assert service.call("GET", task_path(dag, map_index=0), token=admin).json()["items"] == []
    assert len(service.call("GET", task_path(dag, map_index=1), token=admin).json()["items"]) == 1


def test_fleet_clear_by_task_token_clears_every_map_index(service: Service, dag: str) -> None:
    admin = service.token("admin")
    for index in (0, 1, 2):
        service.call("PUT", task_path(dag, "k", map_index=index), {"value": index}, token=admin)
    token = service.task_token(dag, map_index=1)
    got = service.call("DELETE", task_path(dag, map_index=1) + "?all_map_indices=true", token=token)
    assert got.status == 200, got
    for index in (0, 1, 2):
        items = service.call("GET", task_path(dag, map_index=index), token=admin).json()["items"]
        assert items == []


def test_if_match_writes_only_at_that_version(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    service.call("PUT", task_path(dag, "k"), {"value": 1}, token=token)
    stale = service.call(
        "PUT", task_path(dag, "k"), {"value": 2}, token=token, headers={"If-Match": '"0"'}
    )
    assert (stale.status, stale.reason) == (409, "version_conflict")
    assert stale.json()["detail"] == {"expected_version": 0, "actual_version": 1}
    fresh = service.call(
        "PUT", task_path(dag, "k"), {"value": 2}, token=token, headers={"If-Match": '"1"'}
    )
    assert fresh.status == 200
    assert service.call("GET", task_path(dag, "k"), token=token).json()["value"] == 2


def test_idempotency_key_replays_the_first_result(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    headers = {"Idempotency-Key": "write-1"}
    first = service.call("PUT", task_path(dag, "k"), {"value": 1}, token=token, headers=headers)
    again = service.call("PUT", task_path(dag, "k"), {"value": 1}, token=token, headers=headers)
    assert first.json() == again.json()
    assert service.call("GET", task_path(dag), token=token).json()["version"] == 1


def test_writes_carry_the_tokens_try(service: Service, dag: str) -> None:
    new = service.task_token(dag, try_number=2)
    old = service.task_token(dag, try_number=1)
    assert service.call("PUT", task_path(dag, "k"), {"value": 2}, token=new).status == 200
    stale = service.call("PUT", task_path(dag, "k"), {"value": 1}, token=old)
    assert (stale.status, stale.reason) == (410, "stale_attempt")
    assert stale.json()["detail"] == {"try_number": 1, "latest_try": 2}
    assert service.call("GET", task_path(dag, "k"), token=new).json()["value"] == 2


ASSET_PATHS = [
    ("/api/v1/assets/by-name/{name}/store", ""),
    ("/api/v1/assets/by-uri/store", "?uri=s3%3A%2F%2Fbucket%2F{name}"),
    ("/api/v1/assets/by-name/{name}/store", "?uri=s3%3A%2F%2Fboth%2F{name}"),
]


@pytest.mark.parametrize(("path", "query"), ASSET_PATHS, ids=["by-name", "by-uri", "name+uri"])
def test_asset_routes(service: Service, dag: str, path: str, query: str) -> None:
    token = service.task_token(dag)
    store = path.format(name=dag)
    q = query.format(name=dag)
    key = quote("water/mark", safe="")
    assert service.call("PUT", f"{store}/{key}{q}", {"value": 1041}, token=token).status == 200
    assert service.call("PATCH", f"{store}/{key}{q}", {"value": 1042}, token=token).status == 200
    got = service.call("GET", f"{store}/{key}{q}", token=token).json()
    assert got["value"] == 1042
    assert got["expires_at"] is None
    batch = service.call("POST", f"{store}:batch{q}", {"values": {"a": 1, "b": 2}}, token=token)
    assert batch.status == 200, batch
    listed = service.call("GET", f"{store}{q}", token=token).json()
    assert [i["key"] for i in listed["items"]] == ["a", "b", "water/mark"]
    assert service.call("DELETE", f"{store}/{key}{q}", token=token).json()["events"] == 1
    admin = service.token("admin")
    assert service.call("DELETE", f"{store}{q}", token=admin).json()["events"] == 1
    assert service.call("GET", f"{store}{q}", token=token).json()["items"] == []


def test_asset_put_rejects_retention(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    path = f"/api/v1/assets/by-name/{dag}/store/k"
    got = service.call("PUT", path, {"value": 1, "retention": "never"}, token=token)
    assert (got.status, got.reason) == (422, "bad_body")
    assert "retention" in got.json()["message"]


def test_by_uri_without_uri_is_422(service: Service) -> None:
    got = service.call("GET", "/api/v1/assets/by-uri/store", token=service.token("admin"))
    assert (got.status, got.reason) == (422, "bad_scope")


def test_healthz(service: Service) -> None:
    got = service.call("GET", "/healthz")
    assert got.status == 200
    assert got.json()["status"] == "ok"


def test_metrics_count_requests_latencies_and_appends(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    service.call("PUT", task_path(dag, "k"), {"value": 1}, token=token)
    service.call("PUT", task_path(dag, "k"), {"value": None}, token=token)
    text = service.call("GET", "/metrics").body.decode()
    route = "/api/v1/tasks/{dag_id}/{run_id}/{task_id}/{map_index}/store/{key}"
    assert f'tasktrail_http_requests_total{{route="{route}",method="PUT",status="200"}}' in text
    assert "tasktrail_http_request_duration_seconds_bucket" in text
    assert 'tasktrail_appends_total{scope="task",outcome="ok"}' in text
    assert 'tasktrail_appends_total{scope="task",outcome="null_value"}' in text
    assert "tasktrail_compactions_total 0" in text


def test_openapi_document_lists_every_route(service: Service) -> None:
    doc = service.call("GET", "/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    task = "/api/v1/tasks/{dag_id}/{run_id}/{task_id}/{map_index}/store"
    assert set(paths[task]) == {"get", "delete"}
    assert set(paths[task + "/{key}"]) == {"get", "put", "patch", "delete"}
    assert set(paths[task + ":batch"]) == {"post"}
    assert "/api/v1/assets/by-uri/store/{key}" in paths
    assert doc["components"]["schemas"]["PutBody"]["additionalProperties"] is False


def test_unknown_route_and_method_answer_json(service: Service) -> None:
    missing = service.call("GET", "/api/v1/nothing")
    assert (missing.status, missing.reason) == (404, "not_found")
    wrong = service.call("POST", "/healthz")
    assert (wrong.status, wrong.reason) == (405, "method_not_allowed")


def test_unknown_asset_scope_names_the_asset(service: Service, dag: str) -> None:
    got = service.call("GET", f"/api/v1/assets/by-name/{dag}/store/k", token=service.token())
    assert (got.status, got.reason) == (404, "unknown_scope")
    assert "check the asset name and uri" in got.json()["message"]


def test_healthz_is_503_when_the_store_does_not_answer(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'trail.db'}", secret=SECRET)
    with serve_in_thread(app) as url:
        service = Service(url, FakeClock())
        assert service.call("GET", "/healthz").status == 200

        async def lost(scope: object) -> int:
            raise ConnectionError("the database went away")

        app.state.tasktrail.store.version = lost
        got = service.call("GET", "/healthz")
        assert (got.status, got.reason) == (503, "unhealthy")
        assert "the database went away" in got.json()["message"]
