"""history, as-of, diff, timeline, tries: reading a scope's past from the command line.

tasktrail as-of --dag D --run R --task T --start-of-try 2      # what try 2 saw at its start
tasktrail diff  --dag D --run R --task T --from-start-of-try 2 --to-end-of-try 2
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import msgspec
from rich.table import Column, Table
from rich.text import Text

from eventstore.cli.app import (
    archive_option,
    cli,
    console,
    db_option,
    emit_json,
    encode_json,
    json_option,
    open_for_reading,
    read_only_option,
    run,
)
from eventstore.log.events import RecordedEvent
from eventstore.log.scopes import AssetScope, Scope, TaskScope
from projections.history import Diff, Position, TrySummary
from projections.points import At

F = TypeVar("F", bound=Callable[..., Any])

_VALUE_WIDTH = 60


def scope_options(command: F) -> F:
    """--dag/--run/--task [--map-index] for a task instance, or --asset-name/--asset-uri."""
    options = [
        click.option("--dag", "dag_id", help="DAG id of the task instance."),
        click.option("--run", "run_id", help="Run id of the task instance."),
        click.option("--task", "task_id", help="Task id of the task instance."),
        click.option(
            "--map-index", type=int, default=-1, show_default=True, help="Map index (-1: unmapped)."
        ),
        click.option("--asset-name", help="Name of the asset (instead of a task instance)."),
        click.option("--asset-uri", help="URI of the asset (instead of a task instance)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def scope_from(options: dict[str, Any]) -> Scope:
    task = [options.pop(k) for k in ("dag_id", "run_id", "task_id")]
    map_index = options.pop("map_index")
    name, uri = options.pop("asset_name"), options.pop("asset_uri")
    if any(task) and (name or uri):
        raise click.UsageError("give a task instance (--dag/--run/--task) or an asset, not both")
    if name or uri:
        return AssetScope(name, uri)
    if not all(task):
        raise click.UsageError(
            "name the scope: --dag D --run R --task T [--map-index N], "
            "or --asset-name NAME / --asset-uri URI"
        )
    try:
        return TaskScope(task[0], task[1], task[2], map_index)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--map-index") from error


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise click.BadParameter(
            f"{text!r} is not an ISO time; e.g. 2026-03-01T12:00:00Z", param_hint="time"
        ) from error
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_POINT_FLAGS = (
    ("seq", "global position N (inclusive)"),
    ("version", "the scope's version N"),
    ("at", "an ISO time (UTC if no offset); expiry applies as of it"),
    ("end-of-try", "the end of try N"),
    ("start-of-try", "the start of try N, just before its first write"),
)


def point_options(prefix: str = "", what: str = "") -> Callable[[F], F]:
    """--seq/--version/--at/--end-of-try/--start-of-try, optionally prefixed (--from-seq …)."""

    def decorate(command: F) -> F:
        flags = list(_POINT_FLAGS)
        if prefix:
            flags.append(("try", "the end of try N (same as --" + prefix + "end-of-try)"))
        for flag, text in reversed(flags):
            name = (prefix + flag).replace("-", "_")
            kind = str if flag == "at" else int
            metavar = "ISO" if flag == "at" else "N"
            command = click.option(
                f"--{prefix}{flag}", name, type=kind, metavar=metavar, help=f"{what}{text}."
            )(command)
        return command

    return decorate


def point_from(options: dict[str, Any], prefix: str = "") -> At:
    given: list[At] = []
    names = [flag for flag, _ in _POINT_FLAGS] + (["try"] if prefix else [])
    for flag in names:
        value = options.pop((prefix + flag).replace("-", "_"))
        if value is None:
            continue
        match flag:
            case "seq":
                given.append(At.seq(value))
            case "version":
                given.append(At.version(value))
            case "at":
                given.append(At.time(parse_time(value)))
            case "end-of-try" | "try":
                given.append(At.end_of_try(value))
            case "start-of-try":
                given.append(At.start_of_try(value))
    if len(given) != 1:
        flags = ", ".join(f"--{prefix}{flag}" for flag in names)
        raise click.UsageError(f"give exactly one point of: {flags}")
    return given[0]


def show(value: Any) -> str:
    text = encode_json(value).decode()
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 1] + "…"


def when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat()


def utc(moment: datetime | None) -> str:
    """A compact UTC time for table cells, whose column header says UTC."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


def events_table(events: list[RecordedEvent], title: str) -> Table:
    table = Table(
        Column("seq", no_wrap=True),
        Column("recorded (UTC)", min_width=10),
        Column("try", no_wrap=True),
        Column("actor", min_width=4),
        Column("kind", no_wrap=True),
        Column("key", min_width=6),
        Column("value", min_width=8, ratio=1),
        Column("expires (UTC)", min_width=10),
        title=title,
    )
    for e in events:
        if e.erased:
            value = "<erased>"
        else:
            value = show(e.value) if e.kind == "set" else (show(e.detail) if e.detail else "")
        table.add_row(
            str(e.seq),
            utc(e.recorded_at),
            "-" if e.try_number is None else str(e.try_number),
            e.actor,
            e.kind,
            Text("" if e.key is None else e.key),
            Text(value),
            "" if e.kind != "set" else ("never" if e.expires_at is None else utc(e.expires_at)),
        )
    return table


def diff_json(diff: Diff) -> dict[str, Any]:
    """A diff for --json: added, removed, and changed as {"old": ..., "new": ...}."""
    return {
        "added": diff.added,
        "removed": diff.removed,
        "changed": {k: {"old": o, "new": n} for k, (o, n) in diff.changed.items()},
    }


def diff_table(diff: Diff, old: str, new: str) -> Table:
    """A diff as a table, one row a key in key order: + added, - removed, ~ changed."""
    table = Table("", "key", old, new)
    rows: list[tuple[str, str, Text, Text]] = []
    rows += [("[green]+[/]", k, Text(""), Text(show(v))) for k, v in diff.added.items()]
    rows += [("[red]-[/]", k, Text(show(v)), Text("")) for k, v in diff.removed.items()]
    rows += [
        ("[yellow]~[/]", k, Text(show(o)), Text(show(n))) for k, (o, n) in diff.changed.items()
    ]
    for mark, key, before, after in sorted(rows, key=lambda r: r[1]):
        table.add_row(mark, Text(key), before, after)
    return table


def position_text(at: At, position: Position) -> str:
    """`At.end_of_try(1) → seq 3 (version 3) recorded …`, and the expiry time if it differs."""
    if position.seq == 0:
        where = "before the scope's first event"
    else:
        where = (
            f"seq {position.seq} (version {position.version}) recorded {when(position.recorded_at)}"
        )
    expiry = ""
    if position.expiry_at is not None and position.expiry_at != position.recorded_at:
        expiry = f"\n     (expiry applied as of {when(position.expiry_at)})"
    return f"{at} → {where}{expiry}"


def position_json(at: At, position: Position) -> dict[str, Any]:
    return {"point": str(at), **msgspec.to_builtins(position)}


@cli.command("history")
@db_option
@archive_option
@scope_options
@click.option("--key", help="Only events of this key.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(["set", "delete", "clear", "compacted"]),
    help="Only events of these kinds (repeatable).",
)
@click.option("--try", "try_number", type=int, help="Only events written by this try.")
@click.option("--since", help="Only events recorded at or after this ISO time.")
@click.option("--until", help="Only events recorded at or before this ISO time.")
@click.option("--after-seq", type=int, help="Only events after this position (to page).")
@click.option("--limit", type=int, default=100, show_default=True, help="At most this many.")
@json_option
@read_only_option
def history_command(
    db: str,
    archive: str | None,
    key: str | None,
    kinds: tuple[str, ...],
    try_number: int | None,
    since: str | None,
    until: str | None,
    after_seq: int | None,
    limit: int,
    as_json: bool,
    read_only: bool,
    **options: Any,
) -> None:
    """The events of a scope, oldest first, filtered and paged."""
    scope = scope_from(options)

    async def main() -> list[RecordedEvent]:
        async with open_for_reading(db, read_only, archive) as store:
            return await store.history(scope).events(
                key=key,
                kinds=kinds or None,
                try_number=try_number,
                since=None if since is None else parse_time(since),
                until=None if until is None else parse_time(until),
                after_seq=after_seq,
                limit=limit,
            )

    events = run(main)
    if as_json:
        emit_json(events)
        return
    console.print(events_table(events, f"history of {scope}"))
    if len(events) == limit:
        console.print(f"more may follow: --after-seq {events[-1].seq}", highlight=False)


@cli.command("as-of")
@db_option
@archive_option
@scope_options
@point_options()
@json_option
@read_only_option
def as_of_command(
    db: str, archive: str | None, as_json: bool, read_only: bool, **options: Any
) -> None:
    """The state of a scope as of one point: what a reader saw there.

    \b
    What try 2 saw when it started:
      tasktrail as-of --dag D --run R --task T --start-of-try 2
    """
    scope = scope_from(options)
    at = point_from(options)

    async def main() -> tuple[Position, dict[str, Any]]:
        async with open_for_reading(db, read_only, archive) as store:
            history = store.history(scope)
            return await history.resolve(at), await history.state(at)

    position, state = run(main)
    if as_json:
        emit_json({"scope": str(scope), "at": position_json(at, position), "state": state})
        return
    console.print(f"{scope}\nas of {position_text(at, position)}", highlight=False)
    if not state:
        console.print("(no live keys)")
        return
    table = Table("key", "value")
    for key, value in state.items():
        table.add_row(Text(key), Text(show(value)))
    console.print(table)


@cli.command("diff")
@db_option
@archive_option
@scope_options
@point_options("from-", "From ")
@point_options("to-", "To ")
@json_option
@read_only_option
def diff_command(
    db: str, archive: str | None, as_json: bool, read_only: bool, **options: Any
) -> None:
    """What changed in a scope between two points: keys added, removed, changed.

    \b
    What try 2 changed, from its start to its end:
      tasktrail diff --dag D --run R --task T --from-start-of-try 2 --to-end-of-try 2
    What changed between the ends of tries 1 and 2:
      tasktrail diff --dag D --run R --task T --from-try 1 --to-try 2
    """
    scope = scope_from(options)
    a = point_from(options, "from-")
    b = point_from(options, "to-")

    async def main() -> tuple[Position, Position, Diff]:
        async with open_for_reading(db, read_only, archive) as store:
            history = store.history(scope)
            return await history.resolve(a), await history.resolve(b), await history.diff(a, b)

    pa, pb, diff = run(main)
    if as_json:
        emit_json(
            {
                "scope": str(scope),
                "from": position_json(a, pa),
                "to": position_json(b, pb),
                **diff_json(diff),
            }
        )
        return
    console.print(f"{scope}", highlight=False)
    console.print(f"from {position_text(a, pa)}", highlight=False)
    console.print(f"to   {position_text(b, pb)}", highlight=False)
    if not diff:
        console.print("(no changes)")
        return
    console.print(diff_table(diff, "old", "new"))


@cli.command("timeline")
@db_option
@archive_option
@scope_options
@click.argument("key")
@click.option("--after-seq", type=int, help="Only events after this position.")
@json_option
@read_only_option
def timeline_command(
    db: str,
    archive: str | None,
    key: str,
    after_seq: int | None,
    as_json: bool,
    read_only: bool,
    **options: Any,
) -> None:
    """Every event of one key of a scope, oldest first."""
    scope = scope_from(options)

    async def main() -> list[RecordedEvent]:
        async with open_for_reading(db, read_only, archive) as store:
            return await store.history(scope).timeline(key, after_seq=after_seq)

    events = run(main)
    if as_json:
        emit_json(events)
    else:
        console.print(events_table(events, f"timeline of {key!r} in {scope}"))


@cli.command("tries")
@db_option
@archive_option
@scope_options
@json_option
@read_only_option
def tries_command(
    db: str, archive: str | None, as_json: bool, read_only: bool, **options: Any
) -> None:
    """One line per try that wrote to a scope: first/last write, writes, keys touched."""
    scope = scope_from(options)

    async def main() -> list[TrySummary]:
        async with open_for_reading(db, read_only, archive) as store:
            return await store.history(scope).tries()

    tries = run(main)
    if as_json:
        emit_json(tries)
        return
    table = Table(
        "try",
        Column("first write (UTC)", no_wrap=True),
        Column("last write (UTC)", no_wrap=True),
        "seqs",
        "writes",
        "keys touched",
        title=f"tries of {scope}",
    )
    for t in tries:
        table.add_row(
            str(t.try_number),
            utc(t.first_write_at),
            utc(t.last_write_at),
            f"{t.first_seq}–{t.last_seq}",
            str(t.writes),
            Text(", ".join(t.keys)),
        )
    console.print(table)
