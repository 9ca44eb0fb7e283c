"""The click group, the options every command shares, and the one map of errors to exit codes."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import anyio
import click
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from eventstore.log.config import StoreConfig
from eventstore.log.envelope import enc_hook
from eventstore.log.errors import (
    ConcurrencyError,
    ConfigError,
    EventStoreError,
    HistoryCompactedError,
    InvalidKeyError,
    InvalidValueError,
    NoSuchPointError,
    ReadOnlyStoreError,
    SchemaVersionError,
    StaleAttemptError,
    StorageError,
)
from eventstore.store import Store, default_url, open_store

__all__ = [
    "cli",
    "db_option",
    "emit_json",
    "encode_json",
    "json_option",
    "main",
    "open_for_reading",
    "read_only_option",
    "run",
]

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

# Exit codes: 0 ok, 1 a check failed (verify), 2 bad usage (click's own), then one per error kind
# (7: any other tasktrail error; 9: the storage failed, e.g. a full disk; 10: a write to a store
# that is or must be read-only).
EXIT_CODES: dict[type[BaseException], int] = {
    ConfigError: 3,
    SchemaVersionError: 3,
    InvalidKeyError: 4,
    InvalidValueError: 4,
    ConcurrencyError: 5,
    StaleAttemptError: 5,
    HistoryCompactedError: 6,
    NoSuchPointError: 8,
    StorageError: 9,
    ReadOnlyStoreError: 10,
    EventStoreError: 7,
}


def exit_code_of(error: BaseException) -> int:
    for kind in type(error).__mro__:
        if kind in EXIT_CODES:
            return EXIT_CODES[kind]
    return 1


db_option = click.option(
    "--db",
    "db",
    default=default_url,
    show_default="$TASKTRAIL_DB or sqlite:///tasktrail.db",
    help="Store URL: sqlite:///PATH, sqlite://:memory:, postgresql://USER@HOST/DB.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
archive_option = click.option(
    "--archive",
    "archive",
    default=None,
    envvar="TASKTRAIL_ARCHIVE",
    show_envvar=True,
    metavar="DIR",
    help="The audit archive (a directory or file:// URL): compaction writes what it removes "
    "there first, history reads log + archive, verify checks it.",
)
read_only_option = click.option(
    "--read-only",
    "read_only",
    is_flag=True,
    help="Open the store without writing anything (no migration, nothing made). Without it, a "
    "store that cannot be written (read-only file, folder or mount; full disk) is read "
    "read-only all the same, with a note on stderr.",
)


@asynccontextmanager
async def open_for_reading(
    db: str, read_only: bool, archive: str | None = None
) -> AsyncIterator[Store]:
    """The store, for a command that only reads.

    Such a command never writes, so a store that cannot be written is no reason to fail: when
    opening it for writing fails because it is read-only or its disk is full, it is opened
    read-only instead. (The library does not do this by itself: a program that means to write
    learns at open that it cannot.) `archive`: the audit archive history reads too.
    """
    async with AsyncExitStack() as stack:
        store: Store | None = None
        if not read_only:
            try:
                store = await stack.enter_async_context(
                    open_store(db, config=StoreConfig(archive_url=archive))
                )
            except StorageError as error:
                if error.cause not in ("read_only", "full"):
                    raise
                err_console.print(
                    f"[yellow]note:[/] {error}\nreading it read-only", highlight=False
                )
        if store is None:
            store = await stack.enter_async_context(
                open_store(db, config=StoreConfig(read_only=True, archive_url=archive))
            )
        yield store


_json = msgspec.json.Encoder(enc_hook=enc_hook)


def stderr_progress(*, disable: bool = False) -> Progress:
    """The progress bar of a long command: on stderr, so --json output stays clean, and gone
    once the work is done."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=disable,
    )


def encode_json(data: Any) -> bytes:
    """JSON of data, with an erased value (ERASED) as "<erased>"."""
    return _json.encode(data)


def emit_json(data: Any) -> None:
    sys.stdout.write(msgspec.json.format(_json.encode(data)).decode() + "\n")


def emit(data: Any, as_json: bool, line: str) -> None:
    """A command's answer: `data` as JSON with --json, else one line for people."""
    if as_json:
        emit_json(data)
    else:
        click.echo(line)


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; tasktrail's errors become a message and an exit code."""
    try:
        return anyio.run(main)
    except EventStoreError as error:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False)
        raise SystemExit(exit_code_of(error)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tasktrail")
def cli() -> None:
    """tasktrail: an event-sourced checkpoint store for data-pipeline tasks."""


def main() -> None:
    cli()
