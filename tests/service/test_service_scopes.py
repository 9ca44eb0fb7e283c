"""GET /api/v1/scopes and the /ui/ mount, against a real server."""

from __future__ import annotations

from urllib.parse import quote

from service.service_helpers import Service, task_path


def _put(service: Service, dag: str, run: str, task: str, key: str = "k") -> None:
    token = service.task_token(dag, run=run, task=task, try_number=1)
    answer = service.call("PUT", task_path(dag, key, run=run, task=task), {"value": 1}, token=token)
    assert answer.status == 200, answer


def test_scopes_list_newest_first_with_filters_and_pages(service: Service, dag: str) -> None:
    for run, task in [("r1", "a"), ("r1", "b"), ("r2", "a")]:
        _put(service, dag, run, task)
        service.clock.advance()
    auditor = service.token("auditor")
    answer = service.call("GET", f"/api/v1/scopes?dag={dag}", token=auditor)
    assert answer.status == 200, answer
    body = answer.json()
    assert [i["scope"]["run_id"] + "/" + i["scope"]["task_id"] for i in body["items"]] == [
        "r2/a",
        "r1/b",
        "r1/a",
    ]
    first = body["items"][0]
    assert first["kind"] == "task"
    assert first["version"] == 1
    assert first["max_try"] == 1
    assert first["scope"] == {
        "scope": "task",
        "dag_id": dag,
        "run_id": "r2",
        "task_id": "a",
        "map_index": -1,
    }
    assert body["next"] is None

    answer = service.call("GET", f"/api/v1/scopes?dag={dag}&task=a&run=r1", token=auditor)
    assert [i["scope"]["run_id"] for i in answer.json()["items"]] == ["r1"]

    page = service.call("GET", f"/api/v1/scopes?dag={dag}&limit=2", token=auditor).json()
    assert len(page["items"]) == 2
    assert page["next"]
    rest = service.call(
        "GET", f"/api/v1/scopes?dag={dag}&limit=2&after={page['next']}", token=auditor
    ).json()
    assert [i["scope"]["task_id"] for i in rest["items"]] == ["a"]
    assert rest["next"] is None


def test_scopes_filter_by_time(service: Service, dag: str) -> None:
    _put(service, dag, "early", "t")
    middle = service.clock.advance().isoformat()
    service.clock.advance()
    _put(service, dag, "late", "t")
    auditor = service.token("auditor")
    since = service.call(
        "GET", f"/api/v1/scopes?dag={dag}&since={quote(middle)}", token=auditor
    ).json()
    assert [i["scope"]["run_id"] for i in since["items"]] == ["late"]
    until = service.call(
        "GET", f"/api/v1/scopes?dag={dag}&until={quote(middle)}", token=auditor
    ).json()
    assert [i["scope"]["run_id"] for i in until["items"]] == ["early"]


def test_scopes_list_assets_by_kind(service: Service, dag: str) -> None:
    name = f"asset-{dag}"
    answer = service.call(
        "PUT", f"/api/v1/assets/by-name/{name}/store/w", {"value": 3}, token=service.token()
    )
    assert answer.status == 200, answer
    items = service.call("GET", "/api/v1/scopes?kind=asset", token=service.token("auditor")).json()[
        "items"
    ]
    assert {"scope": "asset", "name": name, "uri": None} in [i["scope"] for i in items]
    assert {i["kind"] for i in items} == {"asset"}
    # Assets have no dag: asking for both finds nothing.
    none = service.call("GET", f"/api/v1/scopes?kind=asset&dag={dag}", token=service.token())
    assert none.json() == {"items": [], "next": None}


def test_scopes_need_an_auditor_or_admin_token(service: Service, dag: str) -> None:
    assert service.call("GET", "/api/v1/scopes").status == 401
    task = service.task_token(dag)
    answer = service.call("GET", "/api/v1/scopes", token=task)
    assert answer.status == 403
    assert answer.reason == "forbidden"
    assert service.call("GET", "/api/v1/scopes", token=service.token("admin")).status == 200


def test_scopes_refuse_bad_queries(service: Service) -> None:
    auditor = service.token("auditor")
    for query, fragment in [
        ("kind=tasks", "kind must be task or asset"),
        ("dag=", "dag must not be empty"),
        ("until=", "until must be an ISO time"),
        ("since=yesterday", "since must be an ISO time"),
        ("after=12", "after must be the `next` of a page"),
        ("limit=0", "limit must be between 1 and 500"),
    ]:
        answer = service.call("GET", f"/api/v1/scopes?{query}", token=auditor)
        assert answer.status == 422, query
        assert answer.reason == "bad_query"
        assert fragment in answer.json()["message"], query


def test_the_page_is_served_under_ui_with_a_strict_content_policy(service: Service) -> None:
    answer = service.call("GET", "/ui/")
    assert answer.status == 200
    assert b'<script type="module" src="app.js">' in answer.body
    policy = answer.headers["content-security-policy"]
    assert "connect-src 'self'" in policy
    assert "default-src 'none'" in policy
    module = service.call("GET", "/ui/timeline.js")
    assert module.status == 200
    assert "javascript" in module.headers["content-type"]
    redirect = service.call("GET", "/ui")
    assert redirect.status == 308
    assert redirect.headers["location"] == "/ui/"
    assert service.call("GET", "/ui/nothing.js").status == 404


def test_the_listing_route_is_in_the_openapi_document(service: Service) -> None:
    document = service.call("GET", "/openapi.json").json()
    operation = document["paths"]["/api/v1/scopes"]["get"]
    assert operation["operationId"] == "list_scopes"
    assert {p["name"] for p in operation["parameters"]} >= {"dag", "run", "task", "since", "after"}
