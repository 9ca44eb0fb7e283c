"""Against a real `airflow api-server`: Airflow's REST API, CLI and UI with tasktrail.

One Airflow home for the module: `airflow dags test` runs docs/airflow/example_dag.py and
tests/airflow/dags/tasktrail_secrets.py with tasktrail as the state store (embedded), then one
`airflow api-server` on 127.0.0.1 serves Airflow's REST API and UI with tasktrail's plugin
(loaded from the plugins folder, as the `airflow.plugins` entry point loads it when installed).
The tests read and edit through Airflow's REST API and check tasktrail's log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from airflow_support import free_port

from eventstore import AssetScope, RecordedEvent, TaskScope, open_store
from eventstore.airflow import TasktrailBackend
from eventstore.log.recorded import recorded_event
from eventstore.log.scopes import scope_key
from tests.service.browser import launch, require_browser

REPO = Path(__file__).resolve().parents[2]
# The screenshots in docs/images are made by these tests, when asked:
#   TASKTRAIL_SCREENSHOTS=docs/images bash scripts/airflow_env.sh tests/airflow/test_api_server.py
SCREENSHOTS = os.environ.get("TASKTRAIL_SCREENSHOTS")


def screenshot(tab: Any, name: str, tmp_path: Path) -> None:
    folder = REPO / SCREENSHOTS if SCREENSHOTS else tmp_path
    tab.screenshot(path=str(folder / name))
    assert (folder / name).stat().st_size > 0


EXAMPLE = "tasktrail_example"
SECRETS = "tasktrail_secrets"
SECRET = "s3cr3t-token-0f-the-test"
USER, PASSWORD = "admin", "tasktrail-test-password"
ACTOR = f"api:airflow/{USER}"


@dataclass
class Airflow:
    home: Path
    url: str  # the API server
    trail: str  # tasktrail's database
    env: dict[str, str]
    token: str
    run_id: str  # of the example DAG
    secrets_run_id: str

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                text = answer.read()
                return answer.status, json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            text = error.read()
            return error.code, json.loads(text) if text else None

    def store_path(self, dag: str, run: str, task: str, key: str = "") -> str:
        q = urllib.parse.quote
        path = f"/api/v2/dags/{q(dag)}/dagRuns/{q(run, safe='')}/taskInstances/{q(task)}"
        return path + "/state-store" + (f"/{q(key)}" if key else "")

    def events(self, scope: TaskScope | AssetScope) -> list[RecordedEvent]:
        """Every event of the scope the log holds, compaction markers included."""

        async def read() -> list[RecordedEvent]:
            async with open_store(self.trail) as store:
                row = await store.backend.select_scope(scope_key(scope))
                if row is None:
                    return []
                return [
                    recorded_event(event, scope)
                    async for event in store.backend.select_all_events()
                    if event.scope_id == row.scope_id
                ]

        return anyio.run(read)

    def airflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).with_name("airflow")), *args]
        return subprocess.run(
            command, env=self.env, cwd=self.home, capture_output=True, text=True, timeout=300
        )


def _run_id(output: str) -> str:
    return output.split("DagRun Finished: ", 1)[1].split("run_id=", 1)[1].split(",", 1)[0]


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    home = tmp_path_factory.mktemp("airflow-api-home")
    dags, plugins = home / "dags", home / "plugins"
    dags.mkdir()
    plugins.mkdir()
    shutil.copy(REPO / "docs" / "airflow" / "example_dag.py", dags)
    shutil.copy(Path(__file__).parent / "dags" / "tasktrail_secrets.py", dags)
    (plugins / "tasktrail_plugin.py").write_text(
        "from eventstore.airflow.plugin import TasktrailPlugin  # noqa: F401\n"
    )
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    trail = f"sqlite:///{home / 'trail.db'}"
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "tasktrail-test-jwt-secret-0123456789abcdef",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__STATE_STORE__BACKEND": "eventstore.airflow.TasktrailBackend",
        "AIRFLOW__STATE_STORE__CLEAR_ON_SUCCESS": "False",
        "TASKTRAIL_DB": trail,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("TASKTRAIL_URL", None)
    env.pop("TASKTRAIL_TOKEN", None)
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    partial = Airflow(home, f"http://127.0.0.1:{port}", trail, env, "", "", "")
    runs = {}
    for command in (["db", "migrate"], ["dags", "test", EXAMPLE, "2026-01-01"]):
        done = partial.airflow(*command)
        (home / f"{command[-2]}.log").write_text(done.stdout + done.stderr)
        assert done.returncode == 0, f"airflow {' '.join(command)} failed; see {home}"
    runs[EXAMPLE] = _run_id(done.stdout + done.stderr)
    done = partial.airflow("dags", "test", SECRETS, "2026-01-02")
    (home / "secrets.log").write_text(done.stdout + done.stderr)
    assert "state=failed" in done.stdout + done.stderr, f"see {home / 'secrets.log'}"
    runs[SECRETS] = _run_id(done.stdout + done.stderr)
    server_env = {**env, "AIRFLOW__STATE_STORE__CLEAR_ON_SUCCESS": "True"}
    log = (home / "api-server.log").open("w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("airflow")),
            "api-server",
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ],
        env=server_env,
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(partial.url + "/api/v2/monitor/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"airflow api-server did not start; see {log.name}"
                    ) from None
                time.sleep(0.5)
        login = urllib.request.Request(
            partial.url + "/auth/token",
            data=json.dumps({"username": USER, "password": PASSWORD}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(login, timeout=30) as answer:
            token = json.loads(answer.read())["access_token"]
        yield Airflow(home, partial.url, trail, server_env, token, runs[EXAMPLE], runs[SECRETS])
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _entries(body: Any, field: str = "task_state_store") -> dict[str, Any]:
    return {e["key"]: e["value"] for e in body[field]}


# -- what tasks wrote, through Airflow's REST API --------------------------------------------------


def test_rest_lists_what_the_task_wrote_through_tasktrail(airflow: Airflow) -> None:
    status, body = airflow.request("GET", airflow.store_path(EXAMPLE, airflow.run_id, "ingest"))
    assert status == 200, body
    assert _entries(body) == {
        "done": True,
        "job_id": "spark-20260101-0001",
        "offset": 4,
        "resumed_from": 2,
    }
    status, body = airflow.request(
        "GET", airflow.store_path(EXAMPLE, airflow.run_id, "ingest", "offset")
    )
    assert (status, body["value"]) == (200, 4)


def test_rest_shows_each_map_index_of_a_mapped_task(airflow: Airflow) -> None:
    for index, part in enumerate([1, 2, 3]):
        path = airflow.store_path(EXAMPLE, airflow.run_id, "load_part") + f"?map_index={index}"
        status, body = airflow.request("GET", path)
        assert status == 200, body
        assert _entries(body) == {"rows": part * 100}


def test_rest_shows_what_a_task_wrote_on_an_asset(airflow: Airflow) -> None:
    asset_id = _asset_id(airflow, "warehouse.orders")
    status, body = airflow.request("GET", f"/api/v2/assets/{asset_id}/state-store")
    assert status == 200, body
    [entry] = body["asset_state_store"]
    assert (entry["key"], entry["value"]) == ("watermark", {"offset": 4, "source": "ingest"})
    # The writer Airflow names is the event's actor. (`airflow dags test` runs the task with
    # no task instance token, so Airflow takes the write for a watcher's.)
    writer = entry["last_updated_by"]
    [event] = airflow.events(AssetScope("warehouse.orders", "file:///data/warehouse/orders"))
    if writer["kind"] == "task":
        assert writer["task_id"] == "publish"
        assert event.actor == f"task:{EXAMPLE}/{airflow.run_id}/publish"
    else:
        assert (writer["kind"], event.actor) == ("watcher", "watcher")


def _asset_id(airflow: Airflow, name: str) -> int:
    status, body = airflow.request("GET", "/api/v2/assets?name_pattern=" + name)
    assert status == 200, body
    [asset] = [a for a in body["assets"] if a["name"] == name]
    return int(asset["id"])


# -- Airflow's UI in headless Chromium: the Storage tab and tasktrail's History tab ---------------


@pytest.fixture
def browser_page(airflow: Airflow) -> Iterator[Any]:
    """A Chromium tab signed in to Airflow (the UI's session cookie holds the user's token).

    One per test: Playwright's sync API runs an event loop in this thread while it is open."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        context = browser.new_context(viewport={"width": 1400, "height": 1500})
        context.add_cookies([{"name": "_token", "value": airflow.token, "url": airflow.url}])
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        try:
            yield tab
        finally:
            context.close()
            browser.close()


def _task_page(airflow: Airflow, task: str, map_index: int | None = None) -> str:
    q = urllib.parse.quote
    page = f"{airflow.url}/dags/{EXAMPLE}/runs/{q(airflow.run_id, safe='')}/tasks/{task}"
    return page if map_index is None else f"{page}/mapped/{map_index}"


def test_the_storage_tab_shows_what_the_task_wrote(
    airflow: Airflow, browser_page: Any, tmp_path: Path
) -> None:
    tab = browser_page
    tab.goto(_task_page(airflow, "ingest") + "/task-state-store")
    tab.get_by_text("spark-20260101-0001").first.wait_for()
    text = tab.locator("body").inner_text()
    for key in ("job_id", "offset", "resumed_from", "done"):
        assert key in text
    screenshot(tab, "airflow-storage-tab.png", tmp_path)


def test_the_history_tab_shows_the_timeline_and_the_diff_of_two_tries(
    airflow: Airflow, browser_page: Any, tmp_path: Path
) -> None:
    tab = browser_page
    tab.goto(_task_page(airflow, "ingest") + "/plugin/tasktrail-history")
    frame = tab.frame_locator("iframe")
    summary = frame.locator("#summary")
    summary.filter(has_text="tries 1, 2").wait_for()
    labels = frame.locator("#timeline text[data-try-label]").all_text_contents()
    assert labels == ["try 1", "try 2"]
    lanes = frame.locator("#timeline [data-lane]").evaluate_all(
        "els => els.map(e => e.dataset.lane)"
    )
    assert {"job_id", "offset", "resumed_from", "scratch"} <= set(lanes)
    frame.locator("#quick-diffs button").first.click()
    result = frame.locator("#diff-result")
    result.locator("table").wait_for()
    diff = result.inner_text()
    assert "offset" in diff
    assert "done" in diff  # try 2 added it
    screenshot(tab, "airflow-history-tab.png", tmp_path)


def test_the_history_tab_of_a_mapped_task_instance_is_its_own(
    airflow: Airflow, browser_page: Any
) -> None:
    tab = browser_page
    tab.goto(_task_page(airflow, "load_part", 1) + "/plugin/tasktrail-history")
    frame = tab.frame_locator("iframe")
    frame.locator("#summary").filter(has_text="events").wait_for()
    assert "load_part [1]" in frame.locator("h1").inner_text()
    lanes = frame.locator("#timeline [data-lane]").evaluate_all(
        "els => els.map(e => e.dataset.lane)"
    )
    assert "rows" in lanes


def test_the_history_routes_answer_only_airflow_users(airflow: Airflow) -> None:
    q = urllib.parse.quote
    path = f"/tasktrail/api/v1/tasks/{EXAMPLE}/{q(airflow.run_id, safe='')}/ingest/-1/tries"
    status, body = airflow.request("GET", path)
    assert status == 200, body
    assert [t["try_number"] for t in body["tries"]] == [1, 2]
    anonymous = urllib.request.Request(airflow.url + path)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=30)
    assert refused.value.code == 401
    refused.value.close()


# -- secrets ------------------------------------------------------------------------------------


def test_a_sensitive_value_is_masked_and_never_in_airflows_database(airflow: Airflow) -> None:
    path = airflow.store_path(SECRETS, airflow.secrets_run_id, "connect", "api_token")
    status, body = airflow.request("GET", path)
    assert (status, body["value"]) == (200, "<masked>")
    for name in os.listdir(airflow.home):
        if name.startswith("airflow.db"):
            assert SECRET.encode() not in (airflow.home / name).read_bytes(), name
    [event] = [e for e in airflow.events(_secrets_task(airflow)) if e.key == "api_token"]
    assert event.sensitive
    assert event.value == SECRET  # tasktrail keeps it (masked for auditors by the service)


def _secrets_task(airflow: Airflow) -> TaskScope:
    return TaskScope(SECRETS, airflow.secrets_run_id, "connect")


# -- edits through Airflow's REST API reach the log ---------------------------------------------


def test_a_rest_put_is_recorded_with_the_user_and_read_by_the_next_try(airflow: Airflow) -> None:
    path = airflow.store_path(EXAMPLE, airflow.run_id, "ingest", "operator/note")
    status, body = airflow.request("PUT", path, {"value": {"fixed": "by hand"}})
    assert status == 204, body
    scope = TaskScope(EXAMPLE, airflow.run_id, "ingest")
    last = airflow.events(scope)[-1]
    assert (last.kind, last.key, last.value, last.actor) == (
        "set",
        "operator/note",
        {"fixed": "by hand"},
        ACTOR,
    )
    assert last.try_number is None  # not a try's write: never fenced
    # The next try reads through the backend, as Airflow's execution API does.
    backend = TasktrailBackend(airflow.trail)
    assert backend.get(scope, "operator/note") == json.dumps({"fixed": "by hand"})


def test_a_rest_patch_is_recorded_with_the_expiry_airflow_kept(airflow: Airflow) -> None:
    path = airflow.store_path(EXAMPLE, airflow.run_id, "ingest", "offset")
    status, body = airflow.request("PATCH", path, {"value": 2})
    assert status == 200, body
    scope = TaskScope(EXAMPLE, airflow.run_id, "ingest")
    offsets = [e for e in airflow.events(scope) if e.key == "offset"]
    assert (offsets[-1].value, offsets[-1].actor) == (2, ACTOR)
    assert offsets[-1].expires_at == offsets[-2].expires_at  # PATCH keeps the expiry
    assert TasktrailBackend(airflow.trail).get(scope, "offset") == "2"


def test_a_rest_delete_of_a_key_is_recorded(airflow: Airflow) -> None:
    path = airflow.store_path(EXAMPLE, airflow.run_id, "ingest", "resumed_from")
    status, body = airflow.request("DELETE", path)
    assert status == 204, body
    scope = TaskScope(EXAMPLE, airflow.run_id, "ingest")
    last = airflow.events(scope)[-1]
    assert (last.kind, last.key, last.actor) == ("delete", "resumed_from", ACTOR)
    assert TasktrailBackend(airflow.trail).get(scope, "resumed_from") is None


def test_a_rest_clear_of_every_map_index_is_recorded(airflow: Airflow) -> None:
    path = airflow.store_path(EXAMPLE, airflow.run_id, "load_part") + "?all_map_indices=true"
    status, body = airflow.request("DELETE", path)
    assert status == 204, body
    backend = TasktrailBackend(airflow.trail)
    for index in range(3):
        scope = TaskScope(EXAMPLE, airflow.run_id, "load_part", index)
        last = airflow.events(scope)[-1]
        assert (last.kind, last.actor) == ("clear", ACTOR)
        assert backend.get(scope, "rows") is None


def test_a_rest_put_of_a_sensitive_key_is_recorded_sensitive_and_masked_again(
    airflow: Airflow,
) -> None:
    path = airflow.store_path(EXAMPLE, airflow.run_id, "ingest", "db_password")
    status, body = airflow.request("PUT", path, {"value": "hunter2-by-hand"})
    assert status == 204, body
    status, body = airflow.request("GET", path)
    assert (status, body["value"]) == (200, "<masked>")
    last = airflow.events(TaskScope(EXAMPLE, airflow.run_id, "ingest"))[-1]
    assert (last.key, last.value, last.sensitive) == ("db_password", "hunter2-by-hand", True)


def test_rest_edits_of_an_asset_store_are_recorded(airflow: Airflow) -> None:
    asset_id = _asset_id(airflow, "warehouse.orders")
    scope = AssetScope("warehouse.orders", "file:///data/warehouse/orders")
    path = f"/api/v2/assets/{asset_id}/state-store/backfill/from"
    status, body = airflow.request("PUT", path, {"value": "2025-12-01"})
    assert status == 204, body
    last = airflow.events(scope)[-1]
    assert (last.kind, last.key, last.value, last.actor) == (
        "set",
        "backfill/from",
        "2025-12-01",
        ACTOR,
    )
    assert last.expires_at is None  # asset entries never expire
    status, body = airflow.request("DELETE", path)
    assert status == 204, body
    assert (airflow.events(scope)[-1].kind, airflow.events(scope)[-1].actor) == ("delete", ACTOR)
    status, body = airflow.request("DELETE", f"/api/v2/assets/{asset_id}/state-store")
    assert status == 204, body
    assert airflow.events(scope)[-1].kind == "clear"
    assert TasktrailBackend(airflow.trail).get(scope, "watermark") is None


def test_the_plugin_is_declared_for_airflow_to_find() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    entry = project["entry-points"]["airflow.plugins"]["tasktrail"]
    assert entry == "eventstore.airflow.plugin:TasktrailPlugin"


def test_marking_a_task_successful_clears_its_store_in_tasktrail(airflow: Airflow) -> None:
    scope = _secrets_task(airflow)
    assert TasktrailBackend(airflow.trail).get(scope, "step") == "1"
    q = urllib.parse.quote
    path = f"/api/v2/dags/{SECRETS}/dagRuns/{q(airflow.secrets_run_id, safe='')}"
    status, body = airflow.request(
        "PATCH", path + "/taskInstances/connect", {"new_state": "success"}
    )
    assert status == 200, body
    last = airflow.events(scope)[-1]
    assert (last.kind, last.actor, last.try_number) == ("clear", ACTOR, None)
    assert TasktrailBackend(airflow.trail).get(scope, "step") is None
    status, body = airflow.request(
        "GET", airflow.store_path(SECRETS, airflow.secrets_run_id, "connect")
    )
    assert (status, body["total_entries"]) == (200, 0)


# -- `airflow state-store clean` ------------------------------------------------------------------


def test_state_store_clean_removes_an_expired_key_from_tasktrail(airflow: Airflow) -> None:
    scope = TaskScope(EXAMPLE, airflow.run_id, "ingest")
    path = airflow.store_path(EXAMPLE, airflow.run_id, "ingest", "stale")
    status, body = airflow.request(
        "PUT", path, {"value": "old", "expires_at": "2026-01-01T00:00:00Z"}
    )
    assert status == 204, body
    assert [e.key for e in airflow.events(scope)][-1] == "stale"

    dry = airflow.airflow("state-store", "clean", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Would delete 1 task state store row(s)" in dry.stdout
    assert "key 'stale'" in dry.stdout
    assert "stale" in [e.key for e in airflow.events(scope)]  # the dry run changed nothing

    done = airflow.airflow("state-store", "clean")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stale" not in [e.key for e in airflow.events(scope) if e.key is not None]
    status, body = airflow.request("GET", path)
    assert status == 404, body  # gone from Airflow's table too
    again = airflow.airflow("state-store", "clean", "--dry-run")
    assert "Nothing to delete." in again.stdout
