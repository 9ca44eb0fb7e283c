"""The test kit `eventstore.testing`: its clock, TaskTries, and the how-to run through the plugin.

The how-to's code is run by pytest in a fresh process outside this project, so the plugin is
loaded the way users get it (the `pytest11` entry point), in pytest-asyncio's strict mode (its
default) and in auto mode, and on each backend `--tasktrail-db` can name.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import require_postgres_url

from eventstore import StaleAttemptError, Store
from eventstore.testing import FakeClock, TaskTries
from projections import At

ROOT = Path(__file__).resolve().parent.parent
HOW_TO = ROOT / "docs" / "how-to" / "test-your-resumable-task.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
HOW_TO_TESTS = 3


def test_the_clock_moves_by_timedelta_keywords_or_a_timedelta() -> None:
    clock = FakeClock()
    assert clock() == clock.now == datetime(2026, 1, 1, tzinfo=UTC)
    assert clock.advance(hours=2) == datetime(2026, 1, 1, 2, tzinfo=UTC)
    assert clock.advance(timedelta(minutes=30)) == datetime(2026, 1, 1, 2, 30, tzinfo=UTC)
    assert clock.advance() == datetime(2026, 1, 1, 2, 30, 1, tzinfo=UTC)
    assert clock() == clock.now == datetime(2026, 1, 1, 2, 30, 1, tzinfo=UTC)


def test_the_clock_goes_back_when_told_and_refuses_to_be_told_twice() -> None:
    clock = FakeClock()
    assert clock.advance(hours=-1) == datetime(2025, 12, 31, 23, tzinfo=UTC)
    with pytest.raises(TypeError, match="not both"):
        clock.advance(timedelta(hours=1), minutes=1)
    with pytest.raises(ValueError, match="aware UTC datetime"):
        FakeClock(datetime(2026, 1, 1))
    assert clock.now == datetime(2025, 12, 31, 23, tzinfo=UTC)


async def test_the_store_fixture_runs_on_the_clock_fixture(
    tasktrail_store: Store, tasktrail_clock: FakeClock
) -> None:
    ts = tasktrail_store.task_store("d", "r", "t")
    tasktrail_clock.advance(days=3)
    result = await ts.set("k", 1, retention=timedelta(hours=1))
    assert result.recorded_at == datetime(2026, 1, 4, tzinfo=UTC)
    tasktrail_clock.advance(hours=1)
    assert await ts.get("k") is None


async def test_task_tries_hand_out_each_next_try_of_one_task_instance(
    tasktrail_store: Store,
) -> None:
    tries = TaskTries(tasktrail_store, "d", "r", "t", map_index=2)
    first = tries.next()
    await first.set("page", 3)
    second = tries.next()
    assert (first.try_number, second.try_number, tries.try_number) == (1, 2, 2)
    assert first.scope == second.scope == tries.scope
    assert tries.scope.map_index == 2
    await second.set("page", 6)
    with pytest.raises(StaleAttemptError):
        await first.set("page", 4)
    summaries = await tries.history().tries()
    assert [s.try_number for s in summaries] == [1, 2]
    assert await tries.history().state(At.end_of_try(1)) == {"page": 3}


def how_to_module() -> str:
    blocks = BLOCK.findall(HOW_TO.read_text())
    assert len(blocks) == 2, "the how-to has the task's code, then its tests"
    return "\n\n".join(blocks)


def run_how_to(tmp_path: Path, *options: str, env: dict[str, str] | None = None) -> str:
    (tmp_path / "test_ingest.py").write_text(how_to_module())
    # pytest-asyncio warns about a project without this setting; a user's project sets it.
    options = ("-o", "asyncio_default_fixture_loop_scope=function", *options)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", "error", *options],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_the_how_to_runs_through_the_plugin_in_either_asyncio_mode(
    tmp_path: Path, mode: str
) -> None:
    out = run_how_to(tmp_path, "-o", f"asyncio_mode={mode}")
    assert re.search(rf"asyncio: mode=(Mode\.)?{mode}\b", out, re.IGNORECASE)
    assert "tasktrail: tasktrail_store on memory://" in out
    assert f"{HOW_TO_TESTS} passed" in out


@pytest.mark.slow
def test_the_how_to_runs_on_sqlite_named_by_option_or_environment(tmp_path: Path) -> None:
    by_option = run_how_to(tmp_path, "--tasktrail-db", "sqlite://", f"--basetemp={tmp_path / 'a'}")
    by_environment = run_how_to(
        tmp_path, f"--basetemp={tmp_path / 'b'}", env={"TASKTRAIL_TEST_DB": "sqlite://"}
    )
    for out, base in [(by_option, "a"), (by_environment, "b")]:
        assert "tasktrail: tasktrail_store on SQLite, a fresh file per test" in out
        assert f"{HOW_TO_TESTS} passed" in out
        assert len(list((tmp_path / base).rglob("tasktrail.db"))) == HOW_TO_TESTS


@pytest.mark.slow
def test_the_how_to_runs_on_postgresql_in_a_schema_per_test(tmp_path: Path) -> None:
    out = run_how_to(tmp_path, "--tasktrail-db", require_postgres_url())
    assert "tasktrail: tasktrail_store on PostgreSQL" in out
    assert "a schema per test" in out
    assert f"{HOW_TO_TESTS} passed" in out
