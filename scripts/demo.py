"""A small demo on the embedded SQLite default: a task checkpoints, fails, and its retry resumes.

Run: python scripts/demo.py [--db sqlite:///demo.db]
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import anyio
from rich.console import Console
from rich.table import Table

from eventstore import NEVER_EXPIRE, TaskScope, open_store
from projections import At

console = Console()


async def main(url: str) -> None:
    async with open_store(url) as store:
        scope = ("etl", f"demo_{datetime.now(UTC):%Y%m%dT%H%M%S}", "ingest")

        # Try 1 submits an external job, checkpoints three pages, then its worker dies.
        try1 = store.task_store(*scope, try_number=1)
        await try1.set("job_id", "spark-20261127-001", retention=NEVER_EXPIRE)
        for page in (1, 2, 3):
            await try1.set_many({"offset": page * 100, "progress": {"pages": page}})
        await try1.set("scratch", {"tmp": "/tmp/part-3"}, retention=timedelta(hours=1))

        # Try 2 starts where try 1 left off, finishes the work and removes its scratch key.
        try2 = store.task_store(*scope, try_number=2)
        resumed = await try2.get("offset", default=0)
        console.print(f"try 2 resumes at offset {resumed}, job {await try2.get('job_id')}")
        for page in (4, 5):
            await try2.set_many({"offset": page * 100, "progress": {"pages": page}})
        await try2.delete("scratch")

        # A zombie worker of try 1 wakes up and is refused.
        try:
            await try1.set("offset", 0)
        except Exception as error:  # StaleAttemptError
            console.print(f"[yellow]zombie try 1 refused:[/] {error}")

        table = Table(title=f"current values of {'/'.join(scope)}")
        table.add_column("key")
        table.add_column("value")
        for key, value in (await try2.items()).items():
            table.add_row(key, repr(value))
        console.print(table)

        # The log kept everything: what try 1 left, what try 2 saw, and what try 2 changed.
        history = store.history(TaskScope(*scope))
        console.print(f"try 1 left:        {await history.state(At.end_of_try(1))}")
        console.print(f"try 2 saw at start: {await history.state(At.start_of_try(2))}")
        diff = await history.diff(At.end_of_try(1), At.end_of_try(2))
        console.print(f"try 2 changed:      {diff.changed}, removed {sorted(diff.removed)}")
        for summary in await history.tries():
            console.print(f"  try {summary.try_number}: {summary.writes} writes")

        report = await store.verify()
        console.print(f"log verified: {report.ok} ({report.events} events in the whole log)")
        console.print(
            f"see it from the shell: tasktrail history --dag etl --run {scope[1]} --task ingest; "
            f"tasktrail diff --dag etl --run {scope[1]} --task ingest --from-try 1 --to-try 2"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="sqlite:///tasktrail.db")
    anyio.run(main, parser.parse_args().db)
