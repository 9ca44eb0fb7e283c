"""A process doing awaited writes is killed with SIGKILL; every write it acknowledged survives."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import postgres_schema_url

from eventstore import open_store

WRITER = Path(__file__).with_name("crash_writer.py")


def run_and_kill(path: Path | str, writers: int, acknowledged_before_kill: int) -> dict[str, int]:
    """Start the writer, SIGKILL it once it has acknowledged enough writes; return every ack."""
    process = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), str(writers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        lines = []
        while len(lines) < acknowledged_before_kill:
            line = process.stdout.readline()
            assert line, (
                f"the writer stopped early: {process.stderr.read() if process.stderr else ''}"
            )
            lines.append(line)
        process.send_signal(signal.SIGKILL)
        # What is still in the pipe was acknowledged before the kill too.
        lines += process.stdout.readlines()
    finally:
        process.kill()
        process.wait(timeout=30)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert process.returncode == -signal.SIGKILL
    acked = {}
    for line in lines:
        if line.endswith("\n"):  # a line cut by the kill was not a whole acknowledgement
            name, value = line.split()
            acked[name] = int(value)
    return acked


@pytest.fixture(params=["sqlite", "postgres"])
def crash_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store the writer is killed over: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crash.db'}"
    else:
        with postgres_schema_url() as url:
            yield url


@pytest.mark.slow
@pytest.mark.parametrize("writers", [1, 20])
async def test_acknowledged_writes_survive_sigkill(crash_url: str, writers: int) -> None:
    target = crash_url.removeprefix("sqlite:///")
    acked = run_and_kill(target, writers, acknowledged_before_kill=150)
    assert len(acked) >= 150

    async with open_store(crash_url) as store:
        items = await store.task_store("crash", "run", "writer").items()
        for name, value in acked.items():
            assert items.get(f"{name}-a") == value, name
            assert items.get(f"{name}-b") == value, name
        # set_many is atomic: no write is there by half, acknowledged or not.
        halves = {key.rsplit("-", 1)[0] for key in items}
        for name in halves:
            assert f"{name}-a" in items
            assert f"{name}-b" in items
        report = await store.verify()
        assert report.ok, report.mismatches
        assert report.events == len(items)
        # Positions have no holes, and the store goes on after the last one.
        events = [row async for row in store.backend.select_all_events()]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        after = store.task_store("crash", "run", "writer", try_number=2)
        result = await after.set("resumed", True)
        assert result.seq == len(events) + 1
        assert await after.get("resumed") is True
