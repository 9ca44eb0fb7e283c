"""verify and rebuild: proving and restoring the projection."""

from __future__ import annotations

import click
from rich.table import Table

from eventstore.cli.app import cli, console, db_option, emit_json, json_option, run
from eventstore.store import open_store


@cli.command()
@db_option
@json_option
def verify(db: str, as_json: bool) -> None:
    """Fold the whole log and check that the projection agrees with it."""

    async def main() -> bool:
        async with open_store(db) as store:
            report = await store.verify()
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
        return report.ok

    if not run(main):
        raise SystemExit(1)


@cli.command()
@db_option
@json_option
def rebuild(db: str, as_json: bool) -> None:
    """Recompute the projection from the log."""

    async def main() -> int:
        async with open_store(db) as store:
            return await store.rebuild()

    keys = run(main)
    if as_json:
        emit_json({"keys": keys})
    else:
        click.echo(f"rebuilt the projection: {keys} keys")
