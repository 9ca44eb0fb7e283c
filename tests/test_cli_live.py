"""The rewind, tail and scopes commands of the CLI, on a SQLite file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner, Result

from eventstore import StoreConfig, TaskScope, open_store
from eventstore.cli import cli
from tests.conftest import FakeClock

TASK = ["--dag", "etl", "--run", "run_1", "--task", "load"]
SCOPE = TaskScope("etl", "run_1", "load")


@pytest.fixture
def db(tmp_path: Path) -> str:
    """Try 1 left job_id and offset 100; try 2 moved offset, set done and dropped job_id."""
    url = f"sqlite:///{tmp_path / 'trail.db'}"

    async def write() -> None:
        clock = FakeClock()
        # Values never expire: the commands run on the real clock, long after the fake one.
        async with open_store(url, StoreConfig(default_retention_days=0), clock=clock) as store:
            t1 = store.task_store("etl", "run_1", "load", try_number=1)
            await t1.set("job_id", "spark-1")
            await t1.set("offset", 100)
            clock.advance()
            t2 = store.task_store("etl", "run_1", "load", try_number=2)
            await t2.set("offset", 250)
            await t2.set("done", True)
            await t2.delete("job_id")
            clock.advance()
            await store.task_store("etl", "run_2", "load").set("k", 1)
            clock.advance()
            await store.asset_store(name="warehouse.orders").set("watermark", 1042)

    anyio.run(write)
    return url


def tasktrail(db: str, *args: str) -> Result:
    return CliRunner().invoke(cli, [args[0], "--db", db, *args[1:]], catch_exceptions=False)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def items(db: str) -> dict[str, Any]:
    async with open_store(db) as store:
        return await store.task_store("etl", "run_1", "load").items()


def test_rewind_dry_run_shows_the_diff_and_writes_nothing(db: str) -> None:
    result = tasktrail(db, "rewind", *TASK, "--to-end-of-try", "1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would rewind to At.end_of_try(1)" in result.stdout
    assert "job_id" in result.stdout
    assert "nothing written" in result.stdout
    assert anyio.run(items, db) == {"offset": 250, "done": True}


def test_rewind_to_the_end_of_a_try_puts_its_values_back(db: str) -> None:
    answer = as_json(tasktrail(db, "rewind", *TASK, "--to-end-of-try", "1", "--json"))
    assert sorted(answer["set"]) == ["job_id", "offset"]
    assert answer["deleted"] == ["done"]
    assert answer["diff"]["changed"] == {"offset": {"old": 250, "new": 100}}
    assert anyio.run(items, db) == {"job_id": "spark-1", "offset": 100}
    history = as_json(tasktrail(db, "history", *TASK, "--json"))
    assert [e["rewound_to"] for e in history[-3:]] == [2, 2, 2]
    assert {e["actor"] for e in history[-3:]} == {"cli"}


def test_rewind_to_a_seq_or_a_time_and_its_errors(db: str) -> None:
    assert as_json(tasktrail(db, "rewind", *TASK, "--to-seq", "1", "--json"))["rewound_to"] == 1
    assert anyio.run(items, db) == {"job_id": "spark-1"}
    moved = as_json(tasktrail(db, "rewind", *TASK, "--to-time", "2026-01-01T00:00:01", "--json"))
    assert moved["point"] == "At.time(2026-01-01T00:00:01+00:00)"
    assert anyio.run(items, db) == {"offset": 250, "done": True}
    assert tasktrail(db, "rewind", *TASK).exit_code == 2  # no point
    stale = tasktrail(db, "rewind", *TASK, "--to-seq", "1", "--expected-version", "1")
    assert stale.exit_code == 5
    assert "expected 1" in stale.stderr
    never = tasktrail(db, "rewind", *TASK, "--to-end-of-try", "9")
    assert never.exit_code == 8


def test_tail_catches_up_from_a_position_and_filters(db: str) -> None:
    lines = tasktrail(db, "tail", "--from-seq", "0", "--no-follow", "--json").stdout.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4, 5, 6, 7]
    runs = tasktrail(db, "tail", "--run", "run_2", "--from-seq", "0", "--no-follow", "--json")
    assert [json.loads(line)["value"] for line in runs.stdout.splitlines()] == [1]
    human = tasktrail(db, "tail", "--from-seq", "5", "--no-follow")
    assert human.exit_code == 0, human.output
    assert "etl/run_2/load" in human.stdout
    assert "asset warehouse.orders" in human.stdout
    assert "etl/run_1/load" not in human.stdout
    counted = tasktrail(db, "tail", "--from-seq", "0", "--count", "2", "--json")
    assert len(counted.stdout.splitlines()) == 2


def test_tail_follows_writes_made_while_it_runs(db: str, tmp_path: Path) -> None:
    async def scenario() -> list[int]:
        async with anyio.create_task_group() as tg:

            async def write_later() -> None:
                async with open_store(db) as store:
                    await store.task_store("etl", "run_3", "load").set("late", 1)

            tg.start_soon(write_later)
            result = await anyio.to_thread.run_sync(
                lambda: tasktrail(db, "tail", "--from-seq", "7", "--count", "1", "--json")
            )
        return [json.loads(line)["seq"] for line in result.stdout.splitlines()]

    assert anyio.run(scenario) == [8]


def test_scopes_lists_the_most_recently_written_first(db: str) -> None:
    listed = as_json(tasktrail(db, "scopes", "--json"))
    assert [s["kind"] for s in listed] == ["asset", "task", "task"]
    assert [s["scope"].get("run_id") for s in listed[1:]] == ["run_2", "run_1"]
    runs = as_json(tasktrail(db, "scopes", "--dag", "etl", "--json"))
    assert [s["scope"]["run_id"] for s in runs] == ["run_2", "run_1"]
    assert as_json(tasktrail(db, "scopes", "--run", "run_1", "--json"))[0]["version"] == 5
    table = tasktrail(db, "scopes", "--dag", "etl")
    assert "run_1" in table.stdout
    assert "run_2" in table.stdout
