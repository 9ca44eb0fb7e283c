"""The auth matrix: who may do what to which scope, and 401 versus 403."""

from __future__ import annotations

import http.client
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eventstore.service import create_app, serve_in_thread
from eventstore.service.auth import make_token
from service.service_helpers import SECRET, FakeClock, Service, task_path

# (operation, method, path suffix, body): every store operation of a task instance.
OPERATIONS = [
    ("read key", "GET", "/k", None),
    ("list", "GET", "", None),
    ("set", "PUT", "/k", {"value": 1}),
    ("patch", "PATCH", "/k", {"value": 2}),
    ("batch", "POST", ":batch", {"values": {"k": 3}}),
    ("delete", "DELETE", "/k", None),
    ("clear", "DELETE", "", None),
    ("fleet clear", "DELETE", "?all_map_indices=true", None),
]
READS = {"read key", "list"}


def _seed(service: Service, dag: str) -> None:
    for map_index in (-1, 0):
        path = task_path(dag, "k", map_index=map_index)
        assert service.call("PUT", path, {"value": 0}, token=service.token("admin")).status == 200


def _path(dag: str, suffix: str, map_index: int = -1, task: str = "t") -> str:
    return task_path(dag, task=task, map_index=map_index) + suffix


@pytest.mark.parametrize(("name", "method", "suffix", "body"), OPERATIONS)
def test_task_token_may_do_everything_to_its_own_instance(
    service: Service, dag: str, name: str, method: str, suffix: str, body: object
) -> None:
    _seed(service, dag)
    got = service.call(method, _path(dag, suffix), body, token=service.task_token(dag))
    assert got.status == 200, (name, got)


@pytest.mark.parametrize(("name", "method", "suffix", "body"), OPERATIONS)
@pytest.mark.parametrize(
    "other",
    [
        {"task": "other"},
        {"map_index": 0},
        {"run": "other-run"},
        {"dag_suffix": "-other"},
    ],
    ids=["other task", "other map index", "other run", "other dag"],
)
def test_task_token_is_forbidden_other_instances(
    service: Service,
    dag: str,
    name: str,
    method: str,
    suffix: str,
    body: object,
    other: dict[str, object],
) -> None:
    _seed(service, dag)
    token = service.task_token(
        str(dag) + str(other.get("dag_suffix", "")),
        run=str(other.get("run", "r")),
        task=str(other.get("task", "t")),
        map_index=int(other.get("map_index", -1)),  # type: ignore[call-overload]
    )
    got = service.call(method, _path(dag, suffix), body, token=token)
    assert (got.status, got.reason) == (403, "forbidden"), (name, got)
    assert service.call("GET", _path(dag, ""), token=service.token("admin")).json()["version"] == 1


@pytest.mark.parametrize(("name", "method", "suffix", "body"), OPERATIONS)
def test_auditor_reads_everything_and_writes_nothing(
    service: Service, dag: str, name: str, method: str, suffix: str, body: object
) -> None:
    _seed(service, dag)
    got = service.call(method, _path(dag, suffix), body, token=service.token("auditor"))
    if name in READS:
        assert got.status == 200, (name, got)
    else:
        assert (got.status, got.reason) == (403, "forbidden"), (name, got)
        assert "auditor" in got.json()["message"]
        admin = service.token("admin")
        assert service.call("GET", _path(dag, ""), token=admin).json()["version"] == 1


@pytest.mark.parametrize(("name", "method", "suffix", "body"), OPERATIONS)
def test_admin_may_do_everything_anywhere(
    service: Service, dag: str, name: str, method: str, suffix: str, body: object
) -> None:
    _seed(service, dag)
    got = service.call(method, _path(dag, suffix), body, token=service.token("admin"))
    assert got.status == 200, (name, got)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "unauthenticated"),
        ("Basic dXNlcjpwYXNz", "unauthenticated"),
        ("Bearer not-a-token", "bad_token"),
        ("Bearer tt1.e30.AAAA", "bad_token"),
    ],
)
@pytest.mark.parametrize(("name", "method", "suffix", "body"), OPERATIONS)
def test_missing_or_bad_token_is_401_and_writes_nothing(
    service: Service,
    dag: str,
    name: str,
    method: str,
    suffix: str,
    body: object,
    header: str | None,
    reason: str,
) -> None:
    _seed(service, dag)
    headers = {} if header is None else {"Authorization": header}
    got = service.call(method, _path(dag, suffix), body, headers=headers)
    assert (got.status, got.reason) == (401, reason), got
    assert got.headers["www-authenticate"] == "Bearer"
    assert service.call("GET", _path(dag, ""), token=service.token("admin")).json()["version"] == 1


def test_token_signed_with_another_secret_is_401(service: Service, dag: str) -> None:
    token = make_token(b"another-secret-entirely-000", "admin")
    got = service.call("GET", _path(dag, ""), token=token)
    assert (got.status, got.reason) == (401, "bad_token")
    assert "signature" in got.json()["message"]


def test_expired_token_is_401(service: Service, dag: str) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=2)
    token = make_token(SECRET, "admin", ttl=timedelta(hours=1), now=long_ago)
    got = service.call("GET", _path(dag, ""), token=token)
    assert (got.status, got.reason) == (401, "bad_token")
    assert "expired" in got.json()["message"]


def test_a_token_accepted_before_is_401_once_it_expires(tmp_path: Path) -> None:
    # The service remembers the claims of an Authorization header it has checked; the expiry
    # is still compared with its clock on every request.
    app = create_app(f"sqlite:///{tmp_path / 'trail.db'}", secret=SECRET)
    with serve_in_thread(app) as base_url:
        service = Service(base_url, FakeClock())
        token = make_token(SECRET, "admin", ttl=timedelta(minutes=5))
        path = task_path("expiring", "k")
        assert service.call("PUT", path, {"value": 1}, token=token).status == 200
        state = app.state.tasktrail
        state.wall = lambda: time.time() + 600
        got = service.call("PUT", path, {"value": 2}, token=token)
        assert (got.status, got.reason) == (401, "bad_token"), got
        assert "expired" in got.json()["message"]


def test_tampered_claims_are_401(service: Service, dag: str) -> None:
    task = service.task_token(dag)
    prefix, _, signature = task.split(".")
    admin_payload = service.token("admin").split(".")[1]
    got = service.call("GET", _path(dag, ""), token=f"{prefix}.{admin_payload}.{signature}")
    assert (got.status, got.reason) == (401, "bad_token")


@pytest.mark.parametrize(
    ("method", "suffix", "body", "status"),
    [
        ("GET", "/k", None, 200),
        ("GET", "", None, 200),
        ("PUT", "/k", {"value": 1}, 200),
        ("PATCH", "/k", {"value": 1}, 200),
        ("POST", ":batch", {"values": {"k": 1}}, 200),
        ("DELETE", "/k", None, 200),
        ("DELETE", "", None, 403),
    ],
)
def test_task_token_on_assets_reads_and_writes_but_cannot_clear(
    service: Service, dag: str, method: str, suffix: str, body: object, status: int
) -> None:
    store = f"/api/v1/assets/by-name/{dag}/store"
    service.call("PUT", f"{store}/k", {"value": 0}, token=service.token("admin"))
    got = service.call(method, store + suffix, body, token=service.task_token("any-dag"))
    assert got.status == status, got


def test_auditor_cannot_write_assets(service: Service, dag: str) -> None:
    got = service.call(
        "PUT", f"/api/v1/assets/by-name/{dag}/store/k", {"value": 1}, token=service.token("auditor")
    )
    assert (got.status, got.reason) == (403, "forbidden")


def test_health_metrics_and_openapi_need_no_token(service: Service) -> None:
    for path in ("/healthz", "/metrics", "/openapi.json"):
        assert service.call("GET", path).status == 200, path


def test_admin_writes_carry_no_try_and_do_not_fence_tasks(service: Service, dag: str) -> None:
    # A later task try still writes: the admin's write does not fence it.
    admin = make_token(SECRET, "admin", name="ops")
    assert service.call("PUT", _path(dag, "/k"), {"value": 1}, token=admin).status == 200
    task = service.task_token(dag, try_number=1)
    assert service.call("PUT", _path(dag, "/k"), {"value": 2}, token=task).status == 200


def test_tasktrail_try_header_must_match_a_task_tokens_try(service: Service, dag: str) -> None:
    token = service.task_token(dag, try_number=1)
    wrong = service.call(
        "PUT", _path(dag, "/k"), {"value": 1}, token=token, headers={"Tasktrail-Try": "2"}
    )
    assert (wrong.status, wrong.reason) == (403, "try_mismatch")
    right = service.call(
        "PUT", _path(dag, "/k"), {"value": 1}, token=token, headers={"Tasktrail-Try": "1"}
    )
    assert right.status == 200
    admin = service.call(
        "PUT", _path(dag, "/k"), {"value": 2}, token=service.token(), headers={"Tasktrail-Try": "7"}
    )
    assert admin.status == 200


def _tries(service: Service, dag: str, map_index: int = -1) -> list[tuple[str, int | None]]:
    path = _path(dag, "", map_index).removesuffix("/store") + "/history"
    events = service.call("GET", path, token=service.token("auditor")).json()["events"]
    return [(e["kind"], e["try_number"]) for e in events]


def test_admin_writes_are_stamped_with_the_try_they_name(service: Service, dag: str) -> None:
    # One admin token writes for many task instances, each as its own try (Airflow's API server).
    admin = service.token(name="airflow")
    for method, suffix, body, said in [
        ("PUT", "/k", {"value": 1}, "1"),
        ("PATCH", "/k", {"value": 2}, "1"),
        ("POST", ":batch", {"values": {"j": 1}}, "2"),
        ("DELETE", "/j", None, "2"),
        ("DELETE", "", None, "3"),
    ]:
        got = service.call(
            method, _path(dag, suffix), body, token=admin, headers={"Tasktrail-Try": said}
        )
        assert got.status == 200, got
    put = service.call(
        "PUT", _path(dag, "/k", 0), {"value": 1}, token=admin, headers={"Tasktrail-Try": "4"}
    )
    assert put.status == 200
    assert _tries(service, dag) == [
        ("set", 1),
        ("set", 1),
        ("set", 2),
        ("delete", 2),
        ("clear", 3),
    ]
    assert _tries(service, dag, 0) == [("set", 4)]


def test_an_admin_write_with_a_try_is_fenced_by_a_newer_try(service: Service, dag: str) -> None:
    admin = service.token()
    newer = service.call(
        "PUT", _path(dag, "/k"), {"value": 2}, token=admin, headers={"Tasktrail-Try": "2"}
    )
    assert newer.status == 200
    older = service.call(
        "PUT", _path(dag, "/k"), {"value": 1}, token=admin, headers={"Tasktrail-Try": "1"}
    )
    assert (older.status, older.reason) == (410, "stale_attempt")
    unsaid = service.call("PUT", _path(dag, "/k"), {"value": 3}, token=admin)
    assert unsaid.status == 200  # an operator's fix names no try and is not fenced
    assert _tries(service, dag) == [("set", 2), ("set", None)]


def test_the_try_header_of_an_auditor_gives_no_write(service: Service, dag: str) -> None:
    got = service.call(
        "PUT",
        _path(dag, "/k"),
        {"value": 1},
        token=service.token("auditor"),
        headers={"Tasktrail-Try": "1"},
    )
    assert got.status == 403


@pytest.mark.parametrize("second", ["same", "auditor"])
def test_request_with_two_authorization_headers_is_400(
    service: Service, dag: str, second: str
) -> None:
    _seed(service, dag)
    admin = service.token("admin")
    other = admin if second == "same" else service.token("auditor")
    connection = http.client.HTTPConnection(service.host, service.port, timeout=30)
    try:
        connection.putrequest("DELETE", _path(dag, ""))
        connection.putheader("Authorization", f"Bearer {other}")
        connection.putheader("Authorization", f"Bearer {admin}")
        connection.endheaders()
        response = connection.getresponse()
        status, body = response.status, json.loads(response.read())
    finally:
        connection.close()
    assert (status, body["reason"]) == (400, "repeated_header")
    assert "2 Authorization headers" in body["message"]
    assert service.call("GET", _path(dag, ""), token=admin).json()["version"] == 1
