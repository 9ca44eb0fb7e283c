"""End to end: a real Airflow 3.3.2 runs docs/airflow/example_dag.py with tasktrail as its store.

`airflow db migrate` then `airflow dags test`, in subprocesses of Airflow's own environment, with
`[state_store] clear_on_success` on; then this process reads what tasktrail recorded. Once with
the store embedded in Airflow (TASKTRAIL_DB), once through `tasktrail serve` (TASKTRAIL_URL and
an admin TASKTRAIL_TOKEN).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow_support import tasktrail_service

from eventstore import AssetScope, RecordedEvent, Store, TaskScope, open_store
from projections import At

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAG = REPO / "docs" / "airflow" / "example_dag.py"
DAG_ID = "tasktrail_example"


class Run:
    """The finished `airflow dags test` run: its tasktrail database and its Airflow environment."""

    def __init__(self, url: str, env: dict[str, str], run_id: str, actor: str) -> None:
        self.url = url
        self.env = env
        self.run_id = run_id
        self.actor = actor

    def task(self, task_id: str, map_index: int = -1) -> TaskScope:
        return TaskScope(DAG_ID, self.run_id, task_id, map_index)

    def tasktrail(self, *args: str) -> Any:
        """Run the tasktrail CLI on the run's database and return its JSON output."""
        done = subprocess.run(
            [sys.executable, "-m", "eventstore", *args, "--db", self.url, "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture(scope="module", params=["embedded", "remote"])
def run(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    service_secret: str,
    admin_token: str,
) -> Run:
    home = tmp_path_factory.mktemp("airflow-home")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(EXAMPLE_DAG, dags / EXAMPLE_DAG.name)
    url = f"sqlite:///{home / 'trail.db'}"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__STATE_STORE__BACKEND": "eventstore.airflow.TasktrailBackend",
        "AIRFLOW__STATE_STORE__CLEAR_ON_SUCCESS": "True",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    for name in ("TASKTRAIL_DB", "TASKTRAIL_URL", "TASKTRAIL_TOKEN"):
        env.pop(name, None)
    with ExitStack() as stack:
        if request.param == "embedded":
            airflow_env = {**env, "TASKTRAIL_DB": url}
        else:
            service = tasktrail_service(url, service_secret, home / "serve.log")
            airflow_env = {
                **env,
                "TASKTRAIL_URL": stack.enter_context(service),
                "TASKTRAIL_TOKEN": admin_token,
            }
        airflow = str(Path(sys.executable).with_name("airflow"))
        for command in (
            [airflow, "db", "migrate"],
            [airflow, "dags", "test", DAG_ID, "2026-01-01"],
        ):
            done = subprocess.run(
                command, env=airflow_env, cwd=home, capture_output=True, text=True, timeout=300
            )
            log = home / f"{command[1]}.log"
            log.write_text(done.stdout + done.stderr)
            assert done.returncode == 0, f"{' '.join(command[1:])} failed; see {log}"
    # The service has stopped: from here on the tests read the database it wrote.
    output = log.read_text()
    assert "state=success" in output, f"the DAG run did not succeed; see {log}"
    run_id = output.split("DagRun Finished: ", 1)[1].split("run_id=", 1)[1].split(",", 1)[0]
    actor = "airflow" if request.param == "embedded" else "api:airflow"
    return Run(url, {**env, "TASKTRAIL_DB": url}, run_id, actor)


@pytest.fixture
def make_store(run: Run) -> Callable[[], AbstractAsyncContextManager[Store]]:
    """The shared `store` fixture opens the run's database."""
    return lambda: open_store(run.url)


async def test_the_projection_matches_the_log(store: Store) -> None:
    assert (await store.verify()).ok


async def test_history_holds_both_tries_of_the_retried_task(store: Store, run: Run) -> None:
    h = store.history(run.task("ingest"))
    events = await h.events()
    assert [t.try_number for t in await h.tries()] == [1, 2]
    tries = [e.try_number for e in events]
    assert tries == sorted(tries)  # try 1's writes, then try 2's
    assert {e.actor for e in events} == {run.actor}


async def test_the_state_at_the_end_of_try_1_is_what_try_1_left(store: Store, run: Run) -> None:
    h = store.history(run.task("ingest"))
    assert await h.state(At.end_of_try(1)) == {
        "job_id": "spark-20260101-0001",
        "offset": 2,
        "resumed_from": 0,
        "scratch": {"try": 1},
    }


async def test_try_2_started_from_what_try_1_left_and_read_it(store: Store, run: Run) -> None:
    h = store.history(run.task("ingest"))
    assert await h.state(At.start_of_try(2)) == await h.state(At.end_of_try(1))
    try_2 = await h.events(try_number=2)
    # The task records the offset it read before it writes anything else.
    assert (try_2[0].kind, try_2[0].key, try_2[0].value) == ("set", "resumed_from", 2)
    assert [e.value for e in try_2 if e.key == "offset"] == [3, 4]
    # It found the job id of try 1 and did not submit another job.
    assert [e.try_number for e in await h.timeline("job_id")] == [1]


async def test_the_state_try_2_left_before_clear_on_success(store: Store, run: Run) -> None:
    h = store.history(run.task("ingest"))
    last: RecordedEvent = (await h.events())[-1]
    assert (last.kind, last.try_number) == ("clear", 2)
    assert await h.state(At.version(last.version - 1)) == {
        "done": True,
        "job_id": "spark-20260101-0001",
        "offset": 4,
        "resumed_from": 2,
    }
    assert await h.state(At.end_of_try(2)) == {}


async def test_the_never_expire_key_has_no_expiry_and_the_others_expire_in_30_days(
    store: Store, run: Run
) -> None:
    for event in await store.history(run.task("ingest")).events(kinds=["set"]):
        if event.key == "job_id":
            assert event.expires_at is None
        else:
            assert event.expires_at is not None
            to_expiry = event.expires_at - event.recorded_at
            assert timedelta(days=30) - timedelta(minutes=1) < to_expiry <= timedelta(days=30)


async def test_each_map_index_has_its_own_history_with_its_clear(store: Store, run: Run) -> None:
    for index, part in enumerate([1, 2, 3]):
        events = await store.history(run.task("load_part", index)).events()
        assert [(e.kind, e.key, e.value) for e in events] == [
            ("set", "rows", part * 100),
            ("set", "temp", [part]),
            ("clear", None, None),
            ("set", "rows", part * 100),
            ("clear", None, None),  # clear_on_success
        ]
        assert {e.try_number for e in events} == {1}


async def test_a_successful_task_that_wrote_nothing_has_no_events(store: Store, run: Run) -> None:
    # clear_on_success cleared the empty store of `publish`: nothing was appended.
    assert await store.history(run.task("publish")).events() == []


async def test_the_asset_writer_wrote_under_the_assets_name_and_uri(store: Store) -> None:
    asset = AssetScope("warehouse.orders", "file:///data/warehouse/orders")
    [event] = await store.history(asset).events()
    assert (event.kind, event.key, event.value) == (
        "set",
        "watermark",
        {"offset": 4, "source": "ingest"},
    )
    assert event.expires_at is None
    assert event.try_number is None


def test_the_how_to_commands_show_both_tries(run: Run) -> None:
    scope = ["--dag", DAG_ID, "--run", run.run_id, "--task", "ingest"]
    events = run.tasktrail("history", *scope)
    assert {e["try_number"] for e in events} == {1, 2}
    diff = run.tasktrail("diff", *scope, "--from-try", "1", "--to-try", "2")
    # Try 2 ended with a clear (clear_on_success): everything try 1 left is gone.
    assert diff["added"] == {}
    assert set(diff["removed"]) == {"job_id", "offset", "resumed_from", "scratch"}
