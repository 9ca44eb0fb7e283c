"""keygen, rotate-keys, reencrypt, erase: the commands of encryption at rest.

The master keys come from $TASKTRAIL_MASTER_KEYS (comma-separated, the new key first).
"""

from __future__ import annotations

from typing import Any

import click

from eventstore.cli.app import cli, db_option, emit, emit_json, json_option, run
from eventstore.cli.history import scope_from, scope_options
from eventstore.cli.maintenance import run_with_progress
from eventstore.log.master_keys import generate_master_key
from eventstore.log.requests import AppendResult
from eventstore.log.vault import RotationReport
from eventstore.store import open_store


@cli.command()
def keygen() -> None:
    """Print a new master key (<id>.<urlsafe base64 of 32 random bytes>).

    Put it first in TASKTRAIL_MASTER_KEYS (comma-separated) to encrypt with it.
    """
    click.echo(generate_master_key())


@cli.command("rotate-keys")
@db_option
@json_option
def rotate_keys(db: str, as_json: bool) -> None:
    """Re-wrap every data key with the first master key; retire keys no longer needed.

    Resumable: each data key commits on its own, and running it again continues.
    """

    async def main() -> RotationReport:
        async with open_store(db) as store:
            return await store.rotate_keys()

    report = run(main)
    if as_json:
        emit_json(report)
        return
    click.echo(f"re-wrapped {report.rewrapped} of {report.data_keys} data keys")
    if report.retired:
        click.echo(f"retired master keys: {', '.join(report.retired)} (no data key needs them)")


@cli.command()
@db_option
@json_option
def reencrypt(db: str, as_json: bool) -> None:
    """Seal every value written before encryption was turned on, in place (resumable)."""
    report = run_with_progress(db, "re-encrypting", lambda store: store.reencrypt)
    emit(report, as_json, f"sealed {report.sealed} plain values ({report.events} set events read)")


@cli.command()
@db_option
@json_option
@scope_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def erase(db: str, as_json: bool, yes: bool, **options: Any) -> None:
    """Erase a scope: destroy its data key and its current values (cannot be undone).

    Its history keeps each event's kind, key, time, try and actor; every value reads as erased.
    """
    scope = scope_from(options)
    if not yes:
        click.confirm(f"erase every value of {scope}? This cannot be undone", abort=True)

    async def main() -> AppendResult:
        async with open_store(db) as store:
            return await store.erase(scope)

    result = run(main)
    answer = {"scope": str(scope), "version": result.version, "seq": result.seq}
    emit(answer, as_json, f"erased {scope} (erasure recorded at position {result.seq})")
