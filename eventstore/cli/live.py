"""rewind, tail, scopes: put a scope back to a past point, follow the log live, find scopes.

tasktrail scopes --dag D                                   # runs of a DAG, most recent first
tasktrail rewind --dag D --run R --task T --to-end-of-try 1 --dry-run
tasktrail tail --dag D --from-seq 0                        # catch up, then follow
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click
import msgspec
from rich.table import Column, Table
from rich.text import Text

from eventstore.cli.app import cli, console, db_option, emit_json, encode_json, json_option, run
from eventstore.cli.history import (
    diff_json,
    diff_table,
    parse_time,
    scope_from,
    scope_options,
    show,
    utc,
)
from eventstore.feed import ScopeMatch
from eventstore.log.backends.base import ScopeFilter, ScopeRow
from eventstore.log.events import RecordedEvent, from_micros
from eventstore.log.scopes import AssetScope, TaskScope, scope_from_key
from eventstore.store import open_store
from projections.points import At
from projections.rewind import RewindResult

__all__: list[str] = []


def _rewind_point(options: dict[str, Any]) -> At:
    given: list[At] = []
    for name, make in (
        ("to_seq", At.seq),
        ("to_version", At.version),
        ("to_end_of_try", At.end_of_try),
        ("to_start_of_try", At.start_of_try),
    ):
        value = options.pop(name)
        if value is not None:
            given.append(make(value))
    moment = options.pop("to_time")
    if moment is not None:
        given.append(At.time(parse_time(moment)))
    if len(given) != 1:
        raise click.UsageError(
            "give exactly one point: --to-end-of-try N, --to-start-of-try N, --to-seq P, "
            "--to-version V or --to-time ISO"
        )
    return given[0]


@cli.command("rewind")
@db_option
@scope_options
@click.option("--to-end-of-try", type=int, metavar="N", help="As try N left it.")
@click.option("--to-start-of-try", type=int, metavar="N", help="As try N saw it at its start.")
@click.option("--to-seq", type=int, metavar="P", help="As of global position P.")
@click.option("--to-version", type=int, metavar="V", help="As of the scope's version V.")
@click.option("--to-time", metavar="ISO", help="As of a time (UTC if no offset).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option(
    "--try",
    "try_number",
    type=int,
    help="Stamp the rewind's events with this try (fenced like any write of it).",
)
@click.option("--expected-version", type=int, help="Rewind only if the scope is at this version.")
@click.option("--actor", default="cli", show_default=True, help="Recorded as who rewound.")
@json_option
def rewind_command(
    db: str,
    dry_run: bool,
    try_number: int | None,
    expected_version: int | None,
    actor: str,
    as_json: bool,
    **options: Any,
) -> None:
    """Make a scope's current values what they were at a past point.

    Appends, in one step, the sets and deletes that get there; each event records the point,
    and nothing earlier is removed. Keys whose values have expired by now stay absent.

    \b
    What would going back to the end of try 1 change?
      tasktrail rewind --dag D --run R --task T --to-end-of-try 1 --dry-run
    """
    scope = scope_from(options)
    at = _rewind_point(options)

    async def main() -> RewindResult:
        async with open_store(db) as store:
            return await store.history(scope).rewind(
                at,
                try_number=try_number,
                actor=actor,
                expected_version=expected_version,
                dry_run=dry_run,
            )

    result = run(main)
    if as_json:
        emit_json(
            {
                "scope": str(scope),
                **msgspec.to_builtins(result),
                "diff": diff_json(result.diff),
            }
        )
        return
    where = (
        "before the scope's first event" if not result.rewound_to else f"seq {result.rewound_to}"
    )
    verb = "would rewind" if dry_run else "rewound"
    console.print(f"{scope}\n{verb} to {result.point} → {where}", highlight=False)
    if not (result.set or result.deleted):
        console.print("(already there: nothing to change)")
        return
    console.print(diff_table(result.diff, "now", "after"))
    if dry_run:
        console.print(f"nothing written; the scope is at version {result.version}")
    else:
        console.print(
            f"set {len(result.set)}, deleted {len(result.deleted)}; "
            f"the scope is at version {result.version}",
            highlight=False,
        )


def _line(event: RecordedEvent) -> Text:
    scope = event.scope
    if isinstance(scope, TaskScope):
        where = f"{scope.dag_id}/{scope.run_id}/{scope.task_id}"
        where += "" if scope.map_index == -1 else f"[{scope.map_index}]"
    else:
        where = f"asset {scope.name or scope.uri}"
    tried = "" if event.try_number is None else f" try {event.try_number}"
    if event.erased:
        value = "<erased>"
    elif event.kind == "set":
        value = show(event.value)
    else:
        value = show(event.detail) if event.detail else ""
    rewound = "" if event.rewound_to is None else f" (rewind to seq {event.rewound_to})"
    key = "" if event.key is None else f" {event.key}"
    return Text(
        f"{event.seq:>8} {utc(event.recorded_at)} {where}{tried} {event.actor} "
        f"{event.kind}{key} {value}{rewound}".rstrip()
    )


@cli.command("tail")
@db_option
@click.option("--dag", "dag_id", help="Only task instances of this DAG.")
@click.option("--run", "run_id", help="Only task instances of this run.")
@click.option("--task", "task_id", help="Only task instances of this task.")
@click.option("--map-index", type=int, help="Only this map index.")
@click.option("--kind", type=click.Choice(["task", "asset"]), help="Only tasks or assets.")
@click.option(
    "--from-seq", type=int, default=None, help="Start after this position (default: the end)."
)
@click.option("--no-follow", is_flag=True, help="Stop once caught up instead of following.")
@click.option("--count", type=int, help="Stop after this many events.")
@json_option
def tail_command(
    db: str,
    dag_id: str | None,
    run_id: str | None,
    task_id: str | None,
    map_index: int | None,
    kind: str | None,
    from_seq: int | None,
    no_follow: bool,
    count: int | None,
    as_json: bool,
) -> None:
    """Print the log's events as they commit, one line each (--json: one JSON object a line).

    \b
    Everything of one DAG, from the beginning, then live:
      tasktrail tail --dag D --from-seq 0
    """
    match = None
    if any(v is not None for v in (dag_id, run_id, task_id, map_index, kind)):
        match = ScopeMatch(
            kind=kind,  # type: ignore[arg-type]
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            map_index=map_index,
        )

    async def main() -> None:
        async with open_store(db) as store:
            head = await store.backend.select_last_seq()
            after = head if from_seq is None else from_seq
            printed = 0
            subscription = store.subscribe(after, match, through_seq=head if no_follow else None)
            async with subscription:
                async for event in subscription:
                    if as_json:
                        sys.stdout.write(encode_json(event).decode() + "\n")
                        sys.stdout.flush()
                    else:
                        console.print(_line(event), highlight=False, soft_wrap=True)
                    printed += 1
                    if count is not None and printed >= count:
                        return

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends a tail: not an error
        run(main)


def _scope_cells(row: ScopeRow) -> tuple[str, str, str, str]:
    scope = scope_from_key(row.scope_key)
    if isinstance(scope, AssetScope):
        return "asset", scope.name or "", scope.uri or "", ""
    where = "" if scope.map_index == -1 else str(scope.map_index)
    return f"{scope.dag_id}", scope.run_id, scope.task_id, where


@cli.command("scopes")
@db_option
@click.option("--dag", "dag_id", help="Only task instances of this DAG.")
@click.option("--run", "run_id", help="Only task instances of this run.")
@click.option("--task", "task_id", help="Only task instances of this task.")
@click.option("--kind", type=click.Choice(["task", "asset"]), help="Only tasks or assets.")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many.")
@json_option
def scopes_command(
    db: str,
    dag_id: str | None,
    run_id: str | None,
    task_id: str | None,
    kind: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Task instances and assets, most recently written first: where to find a run id.

    \b
    The runs of a DAG, newest first:
      tasktrail scopes --dag D
    """
    if limit < 1:
        raise click.BadParameter("must be at least 1", param_hint="--limit")
    if kind is None and any((dag_id, run_id, task_id)):
        kind = "task"

    async def main() -> list[ScopeRow]:
        async with open_store(db) as store:
            return await store.recent_scopes(
                ScopeFilter(kind=kind, dag_id=dag_id, run_id=run_id, task_id=task_id, limit=limit)
            )

    rows = run(main)
    if as_json:
        emit_json(
            [
                {
                    "scope": scope_from_key(r.scope_key),
                    "kind": "task" if r.dag_id is not None else "asset",
                    "version": r.version,
                    "max_try": r.max_try,
                    "updated_at": from_micros(r.updated_at),
                }
                for r in rows
            ]
        )
        return
    table = Table(
        Column("last write (UTC)", no_wrap=True),
        "dag / asset",
        "run / name",
        "task / uri",
        "map",
        "events",
        "tries",
        title="scopes, most recently written first",
    )
    for r in rows:
        dag, run_, task, where = _scope_cells(r)
        table.add_row(
            utc(from_micros(r.updated_at)),
            Text(dag),
            Text(run_),
            Text(task),
            where,
            str(r.version),
            "-" if r.max_try is None else str(r.max_try),
        )
    console.print(table)
    if len(rows) == limit:
        console.print(f"more may follow: --limit {limit * 2}", highlight=False)
