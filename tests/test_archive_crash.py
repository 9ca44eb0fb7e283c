"""A compaction that archives is killed with SIGKILL at random moments: afterwards every event
it removed from the log is in the archive, exactly once after dedupe by position, none lost;
verify is ok, and history reads log + archive as if nothing had been compacted."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import FakeClock, postgres_schema_url

from eventstore import StoreConfig, TaskScope, open_store
from eventstore.log.archive import open_archive

COMPACTOR = Path(__file__).with_name("archiving_compactor.py")
START = datetime(2026, 1, 1, tzinfo=UTC)
SCOPES = 40


@pytest.fixture(params=["sqlite", "postgres"])
def crash_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crash.db'}"
    else:
        with postgres_schema_url() as url:
            yield url


async def build(url: str) -> dict[int, bytes]:
    """40 scopes, each with 5 keys set 5 times for an hour: all of it expires. Returns every
    event's stored payload by position."""
    clock = FakeClock(START)
    async with open_store(url, clock=clock) as store:
        for s in range(SCOPES):
            ts = store.task_store("crash", f"run{s}", "task", try_number=1)
            for round_ in range(5):
                await ts.set_many(
                    {f"k{k}": {"s": s, "k": k, "round": round_} for k in range(5)},
                    retention=timedelta(hours=1),
                )
        await store.task_store("crash", "kept", "task").set("job", "spark-1")
        return {row.seq: row.payload async for row in store.backend.select_all_events()}


def compact_and_kill(url: str, archive: Path, after_lines: int) -> list[str]:
    """Run the compactor, SIGKILL it after `after_lines` lines of progress (or let it finish)."""
    now = (START + timedelta(days=1)).isoformat()
    process = subprocess.Popen(
        [sys.executable, str(COMPACTOR), url, str(archive), now],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n", process.stderr and process.stderr.read()
        while len(lines) < after_lines:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    return lines


# The whole run prints 2 archive, 5 mark, about 16 remove lines, then reclaim and done. It dies
# after one of them: while the archive file is written, once it is, and at random moments after.
KILL_AFTER = sorted({1, 2, *random.Random(17).sample(range(3, 25), 6)})


@pytest.mark.slow
@pytest.mark.parametrize("after_lines", KILL_AFTER)
async def test_a_killed_archiving_compaction_loses_no_event(
    crash_url: str, tmp_path: Path, after_lines: int
) -> None:
    original = await build(crash_url)
    archive_dir = tmp_path / "archive"
    lines = compact_and_kill(crash_url, archive_dir, after_lines)

    config = StoreConfig(archive_url=str(archive_dir))
    clock = FakeClock(START + timedelta(days=1))
    async with open_store(crash_url, config=config, clock=clock) as store:
        report = await store.verify()
        assert report.ok, (lines, report.mismatches, report.archive_problems)
        held = {row.seq: row.payload async for row in store.backend.select_all_events()}
        archive = open_archive(str(archive_dir))
        assert archive is not None
        archived = {e.seq: bytes(e.event) for e in archive.all_events()}
        # Every event is in the log or the archive, byte for byte as stored; none lost.
        for seq, payload in original.items():
            assert held.get(seq, archived.get(seq)) == payload, (seq, lines)
        assert all(archived[seq] == original[seq] for seq in archived)
        # The interrupted compaction is finished by the next one.
        await store.compact()
        held = {row.seq: row.payload async for row in store.backend.select_all_events()}
        archived = {e.seq: bytes(e.event) for e in archive.all_events()}
        removed = set(original) - set(held)
        assert len(removed) == SCOPES * 25
        assert removed <= set(archived)
        assert (await store.verify()).ok
        # History answers from log + archive as if nothing had been compacted.
        h = store.history(TaskScope("crash", "run7", "task"))
        events = [e for e in await h.events() if e.kind != "compacted"]
        assert len(events) == 25
        assert [e.value["round"] for e in await h.timeline("k3")] == [0, 1, 2, 3, 4]
