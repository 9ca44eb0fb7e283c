"""End to end: a real Airflow 3.3.2 runs docs/airflow/example_dag.py with tasktrail as its store.

`airflow db migrate` then `airflow dags test`, in subprocesses of Airflow's own environment, with
`[state_store] clear_on_success` on; then this process reads what tasktrail recorded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from eventstore import AssetScope, TaskScope, open_store
from eventstore.backends.base import EventRow
from eventstore.events import RecordedEvent
from eventstore.log import recorded_event
from eventstore.scopes import Scope, scope_from_key
from eventstore.values import decode_value
from projections import ScopeState, apply

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAG = REPO / "docs" / "airflow" / "example_dag.py"
DAG_ID = "tasktrail_example"


@dataclass
class Trail:
    """What tasktrail holds after the run: every event with its stored row, and verify's verdict."""

    rows: list[tuple[EventRow, RecordedEvent]]
    verified: bool

    def of(self, scope: Scope) -> list[tuple[EventRow, RecordedEvent]]:
        return [(row, event) for row, event in self.rows if event.scope == scope]

    def task(self, task_id: str, map_index: int = -1) -> list[tuple[EventRow, RecordedEvent]]:
        return [
            (row, event)
            for row, event in self.rows
            if isinstance(event.scope, TaskScope)
            and (event.scope.task_id, event.scope.map_index) == (task_id, map_index)
        ]


def state_through(rows: list[tuple[EventRow, RecordedEvent]], last_seq: int) -> dict[str, Any]:
    """{key: value} of a scope as of a position, folded the way the projection is defined."""
    state: ScopeState = {}
    for row, _ in rows:
        if row.seq <= last_seq:
            apply(state, row)
    return {key: decode_value(current.value) for key, current in state.items()}


def end_of_try(rows: list[tuple[EventRow, RecordedEvent]], try_number: int) -> int:
    return max(row.seq for row, event in rows if event.try_number == try_number)


def start_of_try(rows: list[tuple[EventRow, RecordedEvent]], try_number: int) -> int:
    return min(row.seq for row, event in rows if event.try_number == try_number) - 1


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    home = tmp_path_factory.mktemp("airflow-home")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(EXAMPLE_DAG, dags / EXAMPLE_DAG.name)
    trail_url = f"sqlite:///{home / 'trail.db'}"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__STATE_STORE__BACKEND": "eventstore.airflow.TasktrailBackend",
        "AIRFLOW__STATE_STORE__CLEAR_ON_SUCCESS": "True",
        "TASKTRAIL_DB": trail_url,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("TASKTRAIL_URL", None)
    airflow = str(Path(sys.executable).with_name("airflow"))
    for command in ([airflow, "db", "migrate"], [airflow, "dags", "test", DAG_ID, "2026-01-01"]):
        done = subprocess.run(
            command, env=env, cwd=home, capture_output=True, text=True, timeout=300
        )
        log = home / f"{command[1]}.log"
        log.write_text(done.stdout + done.stderr)
        assert done.returncode == 0, f"{' '.join(command[1:])} failed; see {log}"
    assert "state=success" in log.read_text(), f"the DAG run did not succeed; see {log}"
    return anyio.run(read_trail, trail_url)


async def read_trail(url: str) -> Trail:
    async with open_store(url) as store:
        scopes = {
            r.scope_id: scope_from_key(r.scope_key) for r in await store.backend.select_all_scopes()
        }
        rows = [
            (row, recorded_event(row, scopes[row.scope_id]))
            async for row in store.backend.select_all_events()
        ]
        return Trail(rows, (await store.verify()).ok)


def test_the_projection_matches_the_log(trail: Trail) -> None:
    assert trail.verified


def test_history_holds_both_tries_of_the_retried_task(trail: Trail) -> None:
    rows = trail.task("ingest")
    assert sorted({event.try_number for _, event in rows}) == [1, 2]
    tries = [event.try_number for _, event in rows]
    assert tries == sorted(tries)  # try 1's writes, then try 2's
    assert {event.actor for _, event in rows} == {"airflow"}


def test_the_state_at_the_end_of_try_1_is_what_try_1_left(trail: Trail) -> None:
    rows = trail.task("ingest")
    assert state_through(rows, end_of_try(rows, 1)) == {
        "job_id": "spark-20260101-0001",
        "resumed_from": 0,
        "scratch": {"try": 1},
        "offset": 2,
    }


def test_try_2_started_from_what_try_1_left_and_read_it(trail: Trail) -> None:
    rows = trail.task("ingest")
    assert state_through(rows, start_of_try(rows, 2)) == state_through(rows, end_of_try(rows, 1))
    try_2 = [event for _, event in rows if event.try_number == 2]
    # The task records the offset it read before it writes anything else.
    assert (try_2[0].kind, try_2[0].key, try_2[0].value) == ("set", "resumed_from", 2)
    assert [e.value for e in try_2 if e.key == "offset"] == [3, 4]
    # It found the job id of try 1 and did not submit another job.
    assert [e.try_number for _, e in rows if e.key == "job_id"] == [1]


def test_the_state_try_2_left_before_clear_on_success(trail: Trail) -> None:
    rows = trail.task("ingest")
    last_row, last = rows[-1]
    assert (last.kind, last.try_number) == ("clear", 2)
    assert state_through(rows, last_row.seq - 1) == {
        "job_id": "spark-20260101-0001",
        "resumed_from": 2,
        "offset": 4,
        "done": True,
    }
    assert state_through(rows, last_row.seq) == {}


def test_the_never_expire_key_has_no_expiry_and_the_others_expire_in_30_days(
    trail: Trail,
) -> None:
    for _, event in trail.task("ingest"):
        if event.kind != "set":
            continue
        if event.key == "job_id":
            assert event.expires_at is None
        else:
            assert event.expires_at is not None
            to_expiry = event.expires_at - event.recorded_at
            assert timedelta(days=30) - timedelta(minutes=1) < to_expiry <= timedelta(days=30)


def test_each_map_index_has_its_own_history_with_its_clear(trail: Trail) -> None:
    for index, part in enumerate([1, 2, 3]):
        events = [event for _, event in trail.task("load_part", index)]
        assert [(e.kind, e.key, e.value) for e in events] == [
            ("set", "rows", part * 100),
            ("set", "temp", [part]),
            ("clear", None, None),
            ("set", "rows", part * 100),
            ("clear", None, None),  # clear_on_success
        ]
        assert {e.try_number for e in events} == {1}


def test_a_successful_task_that_wrote_nothing_has_no_events(trail: Trail) -> None:
    # clear_on_success cleared the empty store of `publish`: nothing was appended.
    assert trail.task("publish") == []


def test_the_asset_writer_wrote_under_the_assets_name_and_uri(trail: Trail) -> None:
    asset = AssetScope("warehouse.orders", "file:///data/warehouse/orders")
    [(_, event)] = trail.of(asset)
    assert (event.kind, event.key, event.value) == (
        "set",
        "watermark",
        {"offset": 4, "source": "ingest"},
    )
    assert event.expires_at is None
    assert event.try_number is None
