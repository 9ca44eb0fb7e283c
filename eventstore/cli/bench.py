"""bench: measure tasktrail against raw SQLite and the eventsourcing library.

The benchmark itself is development code and lives beside the other benchmarks, in
scripts/bench_cli.py of a source checkout: its raw baselines, its profiler and its comparison with
another library have no place in the runtime package, and no command but this one loads them.
From an installed wheel, which has no scripts/, the command says where to find it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Final

import click

from eventstore.cli.app import cli, console, err_console

__all__ = ["load_benchmark"]

# eventstore/cli/bench.py -> the checkout's root, where scripts/ is.
SCRIPTS: Final = Path(__file__).resolve().parents[2] / "scripts"


def load_benchmark() -> ModuleType:
    """scripts/bench_cli.py of the source checkout this package runs from."""
    if not (SCRIPTS / "bench_cli.py").is_file():
        raise click.ClickException(
            "tasktrail bench runs the benchmark of a source checkout (scripts/bench_cli.py), "
            "and this tasktrail is installed without one: clone the repository, "
            "pip install -e '.[bench]' in it, and run tasktrail bench there"
        )
    if str(SCRIPTS) not in sys.path:
        sys.path.append(str(SCRIPTS))  # it imports its neighbour, bench_cli_es.py
    return importlib.import_module("bench_cli")


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
    """Throughput and latency against the limits of SQLite, on this machine and file system.

    Runs scripts/bench_cli.py of a source checkout (scripts/bench_store.py measures against the
    physical limit: no secondary index)."""
    benchmark = load_benchmark()
    ok = True
    if profile:
        benchmark.print_profile(
            benchmark.profile_writers(int(30_000 * scale), directory=directory), console
        )
    elif memory_writes is not None:
        ok = benchmark.print_memory(
            benchmark.memory_check(memory_writes, directory=directory), console
        )
    else:
        sizes = benchmark.BenchSizes().scaled(scale)
        result = benchmark.run_bench(
            sizes,
            directory,
            progress=lambda step: err_console.print(f"[dim]… {step}[/]"),
            rounds=rounds,
        )
        console.print(f"[dim]files in {result.directory} (removed)[/]")
        ok = benchmark.print_report(result, console)
    if strict and not ok:
        raise SystemExit(1)
