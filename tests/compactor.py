"""A second compactor, in a process of its own, for the one-compactor-at-a-time tests.

Usage: python tests/compactor.py hold URL     take the compaction lock, print "held", keep it
                                              until a line arrives on stdin
       python tests/compactor.py compact URL  open the store, print "ready", wait for a line on
                                              stdin, compact, print the outcome as JSON
"""

from __future__ import annotations

import json
import sys

import anyio
import anyio.to_thread

from eventstore import CompactionRunningError, open_store


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def hold(url: str) -> None:
    async with open_store(url) as store, store.backend.compaction_lock():
        say("held")
        await anyio.to_thread.run_sync(sys.stdin.readline)


async def compact(url: str) -> None:
    async with open_store(url) as store:
        say("ready")
        await anyio.to_thread.run_sync(sys.stdin.readline)
        try:
            report = await store.compact()
        except CompactionRunningError as error:
            say(json.dumps({"running": str(error)}))
        else:
            say(json.dumps({"events_removed": report.events_removed}))


if __name__ == "__main__":
    command, url = sys.argv[1], sys.argv[2]
    anyio.run(hold if command == "hold" else compact, url)
