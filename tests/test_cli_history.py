"""The history commands of the CLI: history, as-of, diff, timeline, tries, and the progress of
verify and rebuild, on a SQLite file."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner, Result

from eventstore import open_store
from eventstore.cli import cli
from eventstore.log.events import Compacted
from eventstore.log.scopes import TaskScope
from tests.conftest import FakeClock
from tests.test_history import append_marker

TASK = ["--dag", "etl", "--run", "run_1", "--task", "load"]


@pytest.fixture
def db(tmp_path: Path) -> str:
    """Try 1 left job_id and offset; try 2 moved offset, set done and dropped job_id."""
    url = f"sqlite:///{tmp_path / 'trail.db'}"

    async def write() -> None:
        clock = FakeClock()
        async with open_store(url, clock=clock) as store:
            t1 = store.task_store("etl", "run_1", "load", try_number=1)
            await t1.set("job_id", "spark-1")
            clock.advance()
            await t1.set("offset", 100)
            clock.advance()
            t2 = store.task_store("etl", "run_1", "load", try_number=2)
            await t2.set("offset", 250)
            clock.advance()
            await t2.set("done", True)
            clock.advance()
            await t2.delete("job_id")
            await store.asset_store(name="warehouse.orders").set("watermark", 1042)

    anyio.run(write)
    return url


def tasktrail(db: str, *args: str) -> Result:
    return CliRunner().invoke(cli, [args[0], "--db", db, *args[1:]], catch_exceptions=False)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_as_of_the_start_of_a_try_shows_what_it_saw(db: str) -> None:
    result = tasktrail(db, "as-of", *TASK, "--start-of-try", "2")
    assert result.exit_code == 0, result.output
    assert (
        "At.start_of_try(2) → seq 2 (version 2) recorded 2026-01-01T00:00:01+00:00" in result.stdout
    )
    assert "(expiry applied as of 2026-01-01T00:00:02+00:00)" in result.stdout
    assert '"spark-1"' in result.stdout
    assert "offset" in result.stdout
    data = as_json(tasktrail(db, "as-of", *TASK, "--start-of-try", "2", "--json"))
    assert data["state"] == {"job_id": "spark-1", "offset": 100}
    assert data["at"]["point"] == "At.start_of_try(2)"
    assert data["at"]["seq"] == 2


def test_diff_over_a_try_shows_what_changed_by_its_end(db: str) -> None:
    args = ["--from-start-of-try", "2", "--to-end-of-try", "2"]
    result = tasktrail(db, "diff", *TASK, *args)
    assert result.exit_code == 0, result.output
    assert "done" in result.stdout
    assert "job_id" in result.stdout
    data = as_json(tasktrail(db, "diff", *TASK, *args, "--json"))
    assert data["added"] == {"done": True}
    assert data["removed"] == {"job_id": "spark-1"}
    assert data["changed"] == {"offset": {"old": 100, "new": 250}}
    assert (data["from"]["seq"], data["to"]["seq"]) == (2, 5)


def test_diff_between_the_ends_of_two_tries(db: str) -> None:
    data = as_json(tasktrail(db, "diff", *TASK, "--from-try", "1", "--to-try", "2", "--json"))
    assert data["changed"] == {"offset": {"old": 100, "new": 250}}
    same = as_json(tasktrail(db, "diff", *TASK, "--from-seq", "3", "--to-version", "3", "--json"))
    assert same["added"] == same["removed"] == same["changed"] == {}
    result = tasktrail(db, "diff", *TASK, "--from-seq", "3", "--to-version", "3")
    assert "(no changes)" in result.stdout


def test_as_of_a_time_and_a_version(db: str) -> None:
    first = as_json(tasktrail(db, "as-of", *TASK, "--at", "2026-01-01T00:00:00Z", "--json"))
    assert first["state"] == {"job_id": "spark-1"}
    naive = as_json(tasktrail(db, "as-of", *TASK, "--at", "2026-01-01T00:00:01", "--json"))
    assert naive["state"] == {"job_id": "spark-1", "offset": 100}
    before = tasktrail(db, "as-of", *TASK, "--version", "0")
    assert "before the scope's first event" in before.stdout
    assert "(no live keys)" in before.stdout


def test_history_lists_filters_and_pages_events(db: str) -> None:
    events = as_json(tasktrail(db, "history", *TASK, "--json"))
    assert [(e["seq"], e["kind"], e["key"]) for e in events] == [
        (1, "set", "job_id"),
        (2, "set", "offset"),
        (3, "set", "offset"),
        (4, "set", "done"),
        (5, "delete", "job_id"),
    ]
    tried = as_json(tasktrail(db, "history", *TASK, "--try", "2", "--kind", "set", "--json"))
    assert [e["seq"] for e in tried] == [3, 4]
    since = tasktrail(db, "history", *TASK, "--since", "2026-01-01T00:00:03+00:00", "--json")
    assert [e["seq"] for e in as_json(since)] == [4, 5]
    page = tasktrail(db, "history", *TASK, "--limit", "2")
    assert "more may follow: --after-seq 2" in page.stdout
    rest = as_json(tasktrail(db, "history", *TASK, "--after-seq", "2", "--json"))
    assert [e["seq"] for e in rest] == [3, 4, 5]


def test_timeline_of_a_key(db: str) -> None:
    events = as_json(tasktrail(db, "timeline", *TASK, "offset", "--json"))
    assert [(e["seq"], e["value"], e["try_number"]) for e in events] == [(2, 100, 1), (3, 250, 2)]
    table = tasktrail(db, "timeline", *TASK, "job_id")
    assert "delete" in table.stdout


def test_tries_summarise_each_try(db: str) -> None:
    tries = as_json(tasktrail(db, "tries", *TASK, "--json"))
    assert [(t["try_number"], t["writes"], t["keys"]) for t in tries] == [
        (1, 2, ["job_id", "offset"]),
        (2, 3, ["done", "job_id", "offset"]),
    ]
    table = tasktrail(db, "tries", *TASK).stdout
    assert "2026-01-01 00:00:00" in table
    assert "job_id," in table


def test_an_asset_scope_by_name(db: str) -> None:
    data = as_json(
        tasktrail(db, "as-of", "--asset-name", "warehouse.orders", "--seq", "6", "--json")
    )
    assert data["state"] == {"watermark": 1042}


def test_a_scope_must_be_named_once(db: str) -> None:
    result = tasktrail(db, "history", "--dag", "etl")
    assert result.exit_code == 2
    assert "name the scope: --dag D --run R --task T" in result.output
    both = tasktrail(db, "history", *TASK, "--asset-name", "x")
    assert both.exit_code == 2
    assert "not both" in both.output


def test_a_point_must_be_given_once(db: str) -> None:
    none = tasktrail(db, "as-of", *TASK)
    assert none.exit_code == 2
    assert "give exactly one point of: --seq, --version, --at" in none.output
    two = tasktrail(db, "diff", *TASK, "--from-seq", "1", "--from-try", "1", "--to-seq", "2")
    assert two.exit_code == 2
    assert "--from-seq" in two.output
    bad = tasktrail(db, "as-of", *TASK, "--at", "yesterday")
    assert bad.exit_code == 2
    assert "not an ISO time" in bad.output


def test_a_try_that_never_wrote_exits_with_its_own_code(db: str) -> None:
    result = tasktrail(db, "as-of", *TASK, "--end-of-try", "3")
    assert result.exit_code == 8
    assert "tries that wrote: [1, 2]" in result.stderr


def test_a_compacted_question_exits_with_its_own_code(db: str) -> None:
    async def compact() -> None:
        clock = FakeClock(FakeClock().now + timedelta(hours=1))
        async with open_store(db, clock=clock) as store:
            marker = Compacted(reason="expired", answerable_from_seq=4)
            await append_marker(store, TaskScope("etl", "run_1", "load"), marker)

    anyio.run(compact)
    result = tasktrail(db, "as-of", *TASK, "--end-of-try", "1")
    assert result.exit_code == 6
    assert "earliest point still answerable is At.seq(4)" in result.stderr
    assert as_json(tasktrail(db, "as-of", *TASK, "--seq", "4", "--json"))["state"]["done"] is True


def test_verify_and_rebuild_report_after_their_progress(db: str) -> None:
    verified = tasktrail(db, "verify", "--json")
    report = as_json(verified)
    assert report["ok"] is True
    assert report["events"] == 6
    rebuilt = tasktrail(db, "rebuild")
    assert rebuilt.exit_code == 0
    assert "rebuilt the projection: 3 keys" in rebuilt.stdout
