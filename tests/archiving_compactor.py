"""A compaction with an archive, in a process of its own, for the kill -9 test.

Usage: python tests/archiving_compactor.py URL ARCHIVE_DIR NOW_ISO

Opens the store with its clock at NOW_ISO and the archive at ARCHIVE_DIR, prints "ready", then
compacts, printing one line per step after planning ("archive 0 1", "mark 8 40", "remove 20
2000", …), so the test can SIGKILL it at any of them. Events are removed 20 at a time, so there
are many moments to die at.
"""

from __future__ import annotations

import sys
from datetime import datetime

import anyio

from eventstore import StoreConfig, open_store
from projections import compaction


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def main(url: str, archive: str, now: str) -> None:
    moment = datetime.fromisoformat(now)
    compaction.DELETE_BATCH = 20

    def progress(phase: str, done: int, total: int) -> None:
        if phase != "plan":
            say(f"{phase} {done} {total}")

    config = StoreConfig(archive_url=archive)
    async with open_store(url, config=config, clock=lambda: moment) as store:
        say("ready")
        report = await store.compact(progress=progress)
        say(f"done {report.events_removed}")


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
