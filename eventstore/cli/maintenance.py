"""compact, verify and rebuild: the log's upkeep, each with a progress bar on stderr.

compact is retention GC (a table of what went); verify and rebuild prove and restore the
projection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import click
from rich.progress import TaskID
from rich.table import Table

from eventstore.cli.app import (
    archive_option,
    cli,
    console,
    db_option,
    emit,
    emit_json,
    json_option,
    open_for_reading,
    read_only_option,
    run,
    stderr_progress,
)
from eventstore.log.config import StoreConfig
from eventstore.store import Store, open_store
from projections.compaction import CompactionReport
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


def run_with_progress(
    db: str, description: str, job: Callable[[Store], Callable[[ProgressCallback], Awaitable[T]]]
) -> T:
    """Run one of the store's long jobs (`job(store)`) on the store at db, with a progress bar."""

    async def main() -> T:
        async with open_store(db) as store:
            return await with_progress(store, description, job(store))

    return run(main)


@cli.command()
@db_option
@archive_option
@json_option
@read_only_option
def verify(db: str, archive: str | None, as_json: bool, read_only: bool) -> None:
    """Fold the whole log and check that the projection agrees with it (and, with an archive,
    that every archive file matches its manifest's checksum)."""

    async def main() -> VerifyReport:
        async with open_for_reading(db, read_only, archive) as store:
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
        for problem in report.archive_problems:
            console.print(f"  archive: {problem}")
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
    keys = run_with_progress(db, "rebuilding", lambda store: store.rebuild)
    emit({"keys": keys}, as_json, f"rebuilt the projection: {keys} keys")


_PHASES = {
    "plan": "planning (scopes)",
    "archive": "archiving what goes (file)",
    "mark": "appending markers (scopes)",
    "remove": "removing (events)",
    "forget": "forgetting old idempotency ids",
    "reclaim": "giving space back (pages)",
}


@cli.command()
@db_option
@archive_option
@json_option
@click.option("--dry-run", is_flag=True, help="Show what would go, change nothing.")
@click.option(
    "--horizon-days",
    type=click.FloatRange(min=0),
    default=None,
    help="Also remove superseded history older than this many days (default: keep it).",
)
@click.option(
    "--idempotency-days",
    type=click.FloatRange(min=0, min_open=True),
    default=StoreConfig().idempotency_days,
    show_default=True,
    help="Forget the idempotency ids of writes older than this many days.",
)
def compact(
    db: str,
    archive: str | None,
    as_json: bool,
    dry_run: bool,
    horizon_days: float | None,
    idempotency_days: float,
) -> None:
    """Remove expired keys (and superseded history beyond the horizon) from the log."""

    async def main() -> CompactionReport:
        config = StoreConfig(
            history_horizon_days=horizon_days,
            idempotency_days=idempotency_days,
            archive_url=archive,
        )
        bar = stderr_progress(disable=as_json)
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            task = tasks.get(phase)
            if task is None:
                task = tasks[phase] = bar.add_task(_PHASES.get(phase, phase), total=total)
            bar.update(task, completed=done, total=total)

        async with open_store(db, config=config) as store:
            with bar:
                return await store.compact(dry_run=dry_run, progress=progress)

    report = run(main)
    if as_json:
        emit_json(report)
        return
    title = "compaction (dry run: nothing changed)" if dry_run else "compaction"
    table = Table(title=title, show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    rows = [
        ("keys expired", f"{report.keys_expired:,}"),
        ("events removed", f"{report.events_removed:,}"),
        ("  of expired keys", f"{report.expired_events:,}"),
        ("  superseded, beyond the horizon", f"{report.superseded_events:,}"),
        ("  deletes/clears hiding nothing", f"{report.tombstones:,}"),
        ("scopes touched", f"{report.scopes_touched:,}"),
        ("markers appended", f"{report.markers_appended:,}"),
        ("horizon", "none" if report.horizon is None else report.horizon.isoformat()),
        ("idempotency ids forgotten", f"{report.idempotency_ids_forgotten:,}"),
        (
            "archived to",
            "-"
            if report.archive_file is None
            else f"{report.archive_file} ({_size(report.archive_bytes)})",
        ),
        ("size before", _size(report.bytes_before)),
        ("size after", "-" if report.bytes_after is None else _size(report.bytes_after)),
        ("duration", f"{report.duration_seconds:.2f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError
