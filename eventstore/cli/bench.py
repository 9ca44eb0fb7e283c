"""bench: measure tasktrail against raw SQLite and the eventsourcing library."""

from __future__ import annotations

import click

from eventstore.bench import (
    BenchSizes,
    memory_check,
    print_memory,
    print_profile,
    print_report,
    profile_writers,
    run_bench,
)
from eventstore.cli.app import cli, console, err_console


@cli.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to put the benchmark's files (a temporary directory inside it, removed after).",
)
@click.option(
    "--scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Multiply every operation count (0.2 for a quick look).",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Interleaved rounds of the write measurements; each keeps its best round.",
)
@click.option(
    "--memory",
    "memory_writes",
    type=int,
    default=None,
    help="Instead: write this many times from 100 writers and report the growth of peak RSS "
    "(the target: 1,000,000 writes grow it by under 100 MB).",
)
@click.option(
    "--profile",
    "profile",
    is_flag=True,
    help="Instead: profile 100 concurrent writers and show where the time goes.",
)
@click.option("--strict", is_flag=True, help="Exit with status 1 when a target is missed.")
def bench(
    directory: str | None,
    scale: float,
    rounds: int,
    memory_writes: int | None,
    profile: bool,
    strict: bool,
) -> None:
    """Throughput and latency against the limits of SQLite, on this machine and file system."""
    ok = True
    if profile:
        print_profile(profile_writers(int(30_000 * scale), directory=directory), console)
    elif memory_writes is not None:
        ok = print_memory(memory_check(memory_writes, directory=directory), console)
    else:
        sizes = BenchSizes().scaled(scale)
        result = run_bench(
            sizes,
            directory,
            progress=lambda step: err_console.print(f"[dim]… {step}[/]"),
            rounds=rounds,
        )
        console.print(f"[dim]files in {result.directory} (removed)[/]")
        ok = print_report(result, console)
    if strict and not ok:
        raise SystemExit(1)
