"""The service's router: operations matched by path segments, the rest left to Starlette."""

from __future__ import annotations

import pytest
from starlette.convertors import IntegerConvertor
from starlette.responses import Response

from eventstore.service.routing import Router
from service.service_helpers import Service, task_path


async def _nothing(scope: object, receive: object, send: object) -> None:
    raise AssertionError("the fallback is not reached while building")


def _not_allowed(request: object, methods: list[str]) -> Response:
    return Response(status_code=405)


async def _endpoint(request: object) -> Response:
    return Response()


def test_router_refuses_a_literal_beside_a_parameter() -> None:
    router = Router(_nothing, _not_allowed, {})
    router.add("GET", "/api/{name}/store", _endpoint)
    with pytest.raises(ValueError, match="a literal beside a parameter"):
        router.add("GET", "/api/by-uri/store", _endpoint)


def test_router_refuses_a_path_parameter_that_is_not_last() -> None:
    router = Router(_nothing, _not_allowed, {})
    with pytest.raises(ValueError, match="a path parameter must come last"):
        router.add("GET", "/files/{key:path}/meta", _endpoint)


def test_router_matches_segments_and_the_rest_of_the_path() -> None:
    router = Router(_nothing, _not_allowed, {})
    router.add("GET", "/a/{x}/store", _endpoint)
    router.add("PUT", "/a/{x}/store/{key:path}", _endpoint)
    assert router.match("GET", "/a/one/store") == (_endpoint, {"x": "one"})
    assert router.match("PUT", "/a/one/store/k/with/slashes") == (
        _endpoint,
        {"x": "one", "key": "k/with/slashes"},
    )
    assert router.match("PUT", "/a/one/store/") == (_endpoint, {"x": "one", "key": ""})
    assert router.match("DELETE", "/a/one/store") == ["GET"]
    assert router.match("GET", "/a//store") is None
    assert router.match("GET", "/b/one/store") is None


def test_router_reads_a_parameter_by_its_convertors_regex_without_a_read_of_its_own() -> None:
    router = Router(_nothing, _not_allowed, {"int": IntegerConvertor()})
    router.add("GET", "/a/{n:int}/store", _endpoint)
    assert router.match("GET", "/a/12/store") == (_endpoint, {"n": 12})
    assert router.match("GET", "/a/-1/store") is None
    assert router.match("GET", "/a/1x/store") is None


def test_wrong_method_on_a_task_route_answers_405_naming_the_methods(
    service: Service, dag: str
) -> None:
    wrong = service.call("POST", task_path(dag, "k"), {"value": 1}, token=service.token())
    assert (wrong.status, wrong.reason) == (405, "method_not_allowed")
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD", "PUT", "PATCH", "DELETE"}


def test_head_on_a_key_answers_without_a_body(service: Service, dag: str) -> None:
    token = service.task_token(dag)
    assert service.call("PUT", task_path(dag, "k"), {"value": 1}, token=token).status == 200
    head = service.call("HEAD", task_path(dag, "k"), token=token)
    assert (head.status, head.body) == (200, b"")


@pytest.mark.parametrize("map_index", ["1.5", "+1", "-", "--1", "1-", "0x1", "%D9%A1", "%C2%B2"])
def test_a_map_index_that_is_not_an_integer_matches_no_route(
    service: Service, dag: str, map_index: str
) -> None:
    # %D9%A1 and %C2%B2 are digits to str.isdigit (Arabic-Indic one, superscript two).
    got = service.call("GET", f"/api/v1/tasks/{dag}/r/t/{map_index}/store", token=service.token())
    assert (got.status, got.reason) == (404, "not_found"), got


@pytest.mark.parametrize(("map_index", "read"), [("-1", -1), ("007", 7), ("-0", 0)])
def test_a_map_index_is_read_as_the_integer_it_spells(
    service: Service, dag: str, map_index: str, read: int
) -> None:
    path = f"/api/v1/tasks/{dag}/r/t/{map_index}/store/k"
    assert service.call("PUT", path, {"value": 1}, token=service.token()).status == 200
    got = service.call("GET", task_path(dag, "k", map_index=read), token=service.token())
    assert (got.status, got.json()["value"]) == (200, 1), got
