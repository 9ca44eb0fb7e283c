"""The archive from the CLI: `compact --archive`, history commands and `verify` with it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner, Result

from eventstore import NEVER_EXPIRE, open_store
from eventstore.cli import cli
from tests.conftest import FakeClock

TASK = ["--dag", "d", "--run", "r", "--task", "t"]


@pytest.fixture
def db(tmp_path: Path) -> str:
    """job kept forever and tmp for an hour, written three hours ago (by the wall clock)."""
    url = f"sqlite:///{tmp_path / 'trail.db'}"

    async def fill() -> None:
        clock = FakeClock(datetime.now(UTC) - timedelta(hours=3))
        async with open_store(url, clock=clock) as store:
            ts = store.task_store("d", "r", "t", try_number=1)
            await ts.set("job", "spark-1", retention=NEVER_EXPIRE)
            await ts.set("tmp", "scratch", retention=timedelta(hours=1))

    anyio.run(fill)
    return url


def tasktrail(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_compact_with_an_archive_writes_it_and_history_reads_it_back(
    db: str, tmp_path: Path
) -> None:
    archive = str(tmp_path / "archive")
    dry = tasktrail("compact", "--db", db, "--archive", archive, "--dry-run")
    assert "archived to" in dry.stdout
    assert not Path(archive).exists()
    compacted = tasktrail("compact", "--db", db, "--archive", archive, "--json")
    assert compacted.exit_code == 0, compacted.output
    (data,) = Path(archive).glob("*.jsonl.gz")
    assert json.loads(compacted.stdout)["archive_file"] == data.name

    refused = tasktrail("timeline", "--db", db, *TASK, "tmp")
    assert refused.exit_code == 6
    assert "timeline('tmp', after_seq=2)" in refused.stderr

    timeline = tasktrail("timeline", "--db", db, "--archive", archive, *TASK, "tmp", "--json")
    assert timeline.exit_code == 0, timeline.output
    assert [e["value"] for e in json.loads(timeline.stdout)] == ["scratch"]
    state = tasktrail("as-of", "--db", db, "--archive", archive, *TASK, "--seq", "2", "--json")
    assert json.loads(state.stdout)["state"] == {"job": "spark-1", "tmp": "scratch"}


def test_the_archive_option_reads_the_environment(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKTRAIL_ARCHIVE", str(tmp_path / "from-env"))
    assert tasktrail("compact", "--db", db).exit_code == 0
    assert len(list((tmp_path / "from-env").glob("*.jsonl.gz"))) == 1
    history = tasktrail("history", "--db", db, *TASK, "--json")
    assert [e["key"] for e in json.loads(history.stdout)] == ["job", "tmp", None]


def test_verify_checks_the_archive_and_names_a_damaged_file(db: str, tmp_path: Path) -> None:
    archive = str(tmp_path / "archive")
    assert tasktrail("compact", "--db", db, "--archive", archive).exit_code == 0
    assert tasktrail("verify", "--db", db, "--archive", archive).exit_code == 0
    (data,) = Path(archive).glob("*.jsonl.gz")
    data.write_bytes(data.read_bytes() + b"x")

    result = tasktrail("verify", "--db", db, "--archive", archive)
    assert result.exit_code == 1
    assert "archive: compaction-" in result.stdout
    report = json.loads(tasktrail("verify", "--db", db, "--archive", archive, "--json").stdout)
    assert report["ok"] is False
    (problem,) = report["archive_problems"]
    assert problem.startswith(data.name)
