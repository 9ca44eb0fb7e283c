"""verify and rebuild: proving and restoring the projection, with a progress bar on stderr."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import click
from rich.table import Table

from eventstore.cli.app import (
    cli,
    console,
    db_option,
    emit_json,
    json_option,
    open_for_reading,
    read_only_option,
    run,
    stderr_progress,
)
from eventstore.store import Store, open_store
from projections.verify import Progress as ProgressCallback
from projections.verify import VerifyReport

T = TypeVar("T")


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[ProgressCallback]:
    """A bar on stderr counting folded events; it disappears when the work is done."""
    bar = stderr_progress()
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


async def with_progress(
    store: Store, description: str, work: Callable[[ProgressCallback], Awaitable[T]]
) -> T:
    total = await store.appended_events()
    with progress_bar(description, total) as advance:
        return await work(advance)


@cli.command()
@db_option
@json_option
@read_only_option
def verify(db: str, as_json: bool, read_only: bool) -> None:
    """Fold the whole log and check that the projection agrees with it."""

    async def main() -> VerifyReport:
        async with open_for_reading(db, read_only) as store:
            return await with_progress(store, "verifying", store.verify)

    report = run(main)
    if as_json:
        emit_json(report)
    else:
        table = Table("events", "scopes", "keys", "mismatches", "ok")
        table.add_row(
            str(report.events),
            str(report.scopes),
            str(report.keys),
            str(len(report.mismatches)),
            "[green]yes[/]" if report.ok else "[red]no[/]",
        )
        console.print(table)
        for m in report.mismatches[:20]:
            console.print(
                f"  scope {m.scope_id} key {m.key!r}: "
                f"projection {m.in_projection} != log {m.from_log}"
            )
    if not report.ok:
        raise SystemExit(1)


@cli.command()
@db_option
@json_option
def rebuild(db: str, as_json: bool) -> None:
    """Recompute the projection from the log."""

    async def main() -> int:
        async with open_store(db) as store:
            return await with_progress(store, "rebuilding", store.rebuild)

    keys = run(main)
    if as_json:
        emit_json({"keys": keys})
    else:
        click.echo(f"rebuilt the projection: {keys} keys")
