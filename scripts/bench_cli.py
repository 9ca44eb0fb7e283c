"""The throughput benchmark behind `tasktrail bench` (which loads this file from a source
checkout: see eventstore/cli/bench.py); `python scripts/bench_cli.py --help` runs it too.

Everything runs in one process, one after the other, on files in one directory, so the ratios
compare like with like: the same machine, the same file system, the same fsync.

1. raw stdlib sqlite3 (WAL, synchronous=FULL): an event insert plus a projection upsert, into
   tasktrail's own tables and indexes, per transaction and in batches of 100, and a plain
   upsert-only key/value table in batches of 100;
2. tasktrail's embedded `set` with 1, 10 and 100 concurrent writers, durability full;
3. the same workload through the `eventsourcing` library on SQLite, when it is installed
   (`pip install 'tasktrail[bench]'`; the workload is in bench_cli_es.py);
4. `get` latency through tasktrail beside a raw point select on the same file.

`memory_check` writes many times from 100 writers and reports how much the peak RSS grew;
`profile_writers` runs the 100-writer workload under cProfile and shows where the time goes.
"""

from __future__ import annotations

import cProfile
import gc
import pstats
import re
import resource
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from eventstore.log.backends.sqlite import backend as sqlite_backend
from eventstore.log.config import StoreConfig
from eventstore.store import Store, open_store

__all__ = [
    "BenchResult",
    "BenchSizes",
    "MemoryResult",
    "ProfileResult",
    "memory_check",
    "print_memory",
    "print_profile",
    "print_report",
    "profile_writers",
    "run_bench",
]

# The raw baselines write the same rows into tasktrail's own tables, with all their indexes, so
# they measure the same physical work minus tasktrail's Python; plus a plain key/value table.
_SCHEMA: Final = (
    *(statement for step in sqlite_backend.MIGRATIONS for statement in step.statements),
    """CREATE TABLE kv (
        scope_id INTEGER NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
        updated_at INTEGER NOT NULL, PRIMARY KEY (scope_id, key)) WITHOUT ROWID""",
)
_INSERT_EVENT: Final = "INSERT INTO events VALUES (?, ?, ?, 'set', 'progress', ?, ?, 1, 'task', ?)"
_UPSERT_CURRENT: Final = (
    "INSERT INTO current VALUES (?, 'progress', ?, ?, ?, ?, ?) ON CONFLICT (scope_id, key) "
    "DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at, "
    "version = excluded.version, seq = excluded.seq, updated_at = excluded.updated_at"
)
_UPSERT_KV: Final = (
    "INSERT INTO kv VALUES (?, 'progress', ?, ?) ON CONFLICT (scope_id, key) "
    "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
_SELECT_RAW: Final = "SELECT value FROM current WHERE scope_id = ? AND key = ?"

_encode = msgspec.json.Encoder().encode
_EXPIRES: Final = b',"expires_at":"2026-12-27T16:36:17.123456Z"'


@dataclass(frozen=True)
class BenchSizes:
    """How many operations each measurement makes; the defaults keep a run under a minute."""

    batched: int = 150_000  # writes of the batched and concurrent runs, over all rounds
    serial: int = 3_000  # writes of the one-transaction-per-write runs, over all rounds
    gets: int = 20_000
    tasks: int = 100  # distinct task scopes written

    def scaled(self, factor: float) -> BenchSizes:
        return BenchSizes(
            batched=max(1000, int(self.batched * factor)),
            serial=max(50, int(self.serial * factor)),
            gets=max(500, int(self.gets * factor)),
            tasks=self.tasks,
        )


@dataclass(frozen=True)
class Throughput:
    name: str
    writes: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.writes / self.seconds if self.seconds else float("inf")


@dataclass(frozen=True)
class Latency:
    name: str
    samples_ns: list[int] = field(repr=False)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples_ns)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    @property
    def p50_us(self) -> float:
        return self.percentile(0.50)

    @property
    def p99_us(self) -> float:
        return self.percentile(0.99)

    @property
    def mean_us(self) -> float:
        return statistics.fmean(self.samples_ns) / 1000


@dataclass
class BenchResult:
    sizes: BenchSizes
    directory: str
    throughput: dict[str, Throughput] = field(default_factory=dict)
    latency: dict[str, Latency] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MemoryResult:
    writes: int
    writers: int
    seconds: float
    baseline_kib: int
    peak_kib: int

    @property
    def growth_mib(self) -> float:
        return (self.peak_kib - self.baseline_kib) / 1024


# -- raw sqlite3 ------------------------------------------------------------------------------


def _raw_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    for statement in _SCHEMA:
        conn.execute(statement)
    return conn


def _payload(i: int) -> tuple[bytes, bytes]:
    value = _encode({"rows": i, "page": i // 10})
    # The same shape as tasktrail's stored event, with its expiry.
    event = b'{"kind":"set","key":"progress","value":' + value + _EXPIRES + b"}"
    return value, event


def raw_event_projection(path: Path, writes: int, batch: int, tasks: int) -> Throughput:
    """Append an event and upsert its projection row, `batch` writes per transaction."""
    conn = _raw_connect(path)
    versions = [0] * tasks
    started = time.perf_counter()
    seq = 0
    for first in range(0, writes, batch):
        conn.execute("BEGIN IMMEDIATE")
        for i in range(first, min(first + batch, writes)):
            scope = i % tasks
            versions[scope] += 1
            seq += 1
            now = time.time_ns() // 1000
            value, payload = _payload(i)
            expires = now + 30 * 86_400_000_000
            conn.execute(_INSERT_EVENT, (seq, scope, versions[scope], expires, now, payload))
            conn.execute(_UPSERT_CURRENT, (scope, value, expires, versions[scope], seq, now))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return Throughput(f"raw event+projection, {batch}/tx", writes, elapsed)


def raw_upsert(path: Path, writes: int, batch: int, tasks: int) -> Throughput:
    """Upsert a key/value row in place, no log: what a plain checkpoint table does."""
    conn = _raw_connect(path)
    started = time.perf_counter()
    for first in range(0, writes, batch):
        conn.execute("BEGIN IMMEDIATE")
        for i in range(first, min(first + batch, writes)):
            value, _ = _payload(i)
            conn.execute(_UPSERT_KV, (i % tasks, value, time.time_ns() // 1000))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return Throughput(f"raw plain upsert, {batch}/tx", writes, elapsed)


# -- tasktrail --------------------------------------------------------------------------------


async def _write_concurrently(store: Store, writes: int, writers: int) -> None:
    per_writer = [writes // writers + (1 if w < writes % writers else 0) for w in range(writers)]

    async def writer(w: int, count: int) -> None:
        ts = store.task_store("bench", "run", f"task_{w}", try_number=1)
        for i in range(count):
            await ts.set("progress", {"rows": i, "page": i // 10})

    async with anyio.create_task_group() as tg:
        for w, count in enumerate(per_writer):
            tg.start_soon(writer, w, count)


async def tasktrail_set(path: Path, writes: int, writers: int) -> Throughput:
    async with open_store(f"sqlite:///{path}", StoreConfig(durability="full")) as store:
        started = time.perf_counter()
        await _write_concurrently(store, writes, writers)
        elapsed = time.perf_counter() - started
    noun = "writer" if writers == 1 else "writers"
    return Throughput(f"tasktrail set, {writers} {noun}", writes, elapsed)


async def get_latency(path: Path, gets: int, tasks: int) -> tuple[Latency, Latency]:
    """`get` through tasktrail and a raw point select, both on the file `tasktrail_set` wrote."""
    async with open_store(f"sqlite:///{path}") as store:
        accessors = [store.task_store("bench", "run", f"task_{w}") for w in range(tasks)]
        for ts in accessors:  # warm both paths: statement caches, scope ids
            await ts.get("progress")
        samples: list[int] = []
        clock = time.perf_counter_ns
        for i in range(gets):
            ts = accessors[i % tasks]
            started = clock()
            await ts.get("progress")
            samples.append(clock() - started)
    tasktrail = Latency("tasktrail get", samples)

    conn = sqlite3.connect(path, isolation_level=None)
    ids = [row[0] for row in conn.execute("SELECT scope_id FROM scopes ORDER BY scope_id")]
    raw_samples: list[int] = []
    for i in range(gets + len(ids)):
        scope_id = ids[i % len(ids)]
        started = clock()
        conn.execute(_SELECT_RAW, (scope_id, "progress")).fetchone()
        if i >= len(ids):
            raw_samples.append(clock() - started)
    conn.close()
    return tasktrail, Latency("raw point select", raw_samples)


# -- the run ----------------------------------------------------------------------------------


@contextmanager
def _workdir(directory: str | None) -> Iterator[Path]:
    if directory is not None:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path, prefix="tasktrail-bench-") as tmp:
            yield Path(tmp)
    else:
        with tempfile.TemporaryDirectory(prefix="tasktrail-bench-") as tmp:
            yield Path(tmp)


def run_bench(
    sizes: BenchSizes = BenchSizes(),
    directory: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
    rounds: int = 3,
) -> BenchResult:
    """Run every measurement on files in one temporary directory and return the figures.

    The writes are measured in `rounds` interleaved rounds of a share of the writes each, and
    each workload keeps its best round: on a shared machine the disk's fsync latency drifts
    during a run, and interleaving exposes every workload to the same drift.
    """
    try:
        import bench_cli_es as es
    except ImportError:
        es = None
    with _workdir(directory) as work:
        result = BenchResult(sizes, str(work))
        if es is None:
            result.notes.append(
                "eventsourcing is not installed: pip install 'tasktrail[bench]' to compare"
            )
        n, serial, tasks = sizes.batched // rounds, sizes.serial // rounds, sizes.tasks
        workloads: list[tuple[str, Callable[[Path], Throughput]]] = [
            ("raw_1", lambda f: raw_event_projection(f, serial, 1, tasks)),
            ("raw_100", lambda f: raw_event_projection(f, n, 100, tasks)),
            ("kv_100", lambda f: raw_upsert(f, n, 100, tasks)),
            ("tt_1", lambda f: anyio.run(tasktrail_set, f, serial, 1)),
            ("tt_10", lambda f: anyio.run(tasktrail_set, f, n // 4, 10)),
            ("tt_100", lambda f: anyio.run(tasktrail_set, f, n, 100)),
        ]
        if es is not None:
            run_es = es.run
            workloads.append(
                (
                    "es",
                    lambda f: Throughput(
                        "eventsourcing, 1 save/write", serial, run_es(str(f), serial, tasks)
                    ),
                )
            )
        best = result.throughput
        for round_ in range(1, rounds + 1):
            for name, measure in workloads:
                progress(f"round {round_}/{rounds}: {name}")
                gc.collect()
                measured = measure(work / f"{name}-{round_}.db")
                if name not in best or measured.rate > best[name].rate:
                    best[name] = measured

        progress("get latency")
        gets = anyio.run(get_latency, work / f"tt_100-{rounds}.db", sizes.gets, tasks)
        result.latency["tt_get"], result.latency["raw_get"] = gets
    return result


async def _memory_run(path: Path, writes: int, writers: int) -> tuple[float, int, int]:
    async with open_store(f"sqlite:///{path}", StoreConfig(durability="full")) as store:
        await _write_concurrently(store, min(writes, 2000), writers)  # warm up
        gc.collect()
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        await _write_concurrently(store, writes, writers)
        elapsed = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return elapsed, baseline, peak


def memory_check(
    writes: int = 1_000_000, writers: int = 100, directory: str | None = None
) -> MemoryResult:
    """Write `writes` times from `writers` concurrent tasks; report the growth of peak RSS."""
    with _workdir(directory) as work:
        elapsed, baseline, peak = anyio.run(_memory_run, work / "memory.db", writes, writers)
    return MemoryResult(writes, writers, elapsed, baseline, peak)


# Where the time of the 100-writer workload goes: (label, file suffix, function name).
_PROFILE_PARTS: Final = (
    ("tasks: set() on the caller's task", "eventstore/writes.py", "set"),
    ("  checking and encoding values", "eventstore/log/values.py", "encode_value"),
    ("  joining a batch and waking up", "eventstore/log/writer.py", "append"),
    ("writer: append_batch, one per batch", "eventstore/log/append.py", "append_batch"),
    (
        "  reading the log's and the scopes' heads",
        "eventstore/log/backends/sqlite/transaction.py",
        "select_head_and_scopes",
    ),
    ("  planning: checks, versions, event rows", "eventstore/log/append.py", "plan"),
    ("  writing events, projection, heads", "eventstore/log/append.py", "apply"),
    ("  BEGIN and COMMIT (loop side)", "contextlib.py", "__aexit__"),
    (
        "SQLite statements on the loop (C)",
        "~",
        "<method 'executemany' of 'sqlite3.Connection' objects>",
    ),
    ("loop idle: the commit thread (fsync)", "~", "<method 'poll' of 'select.epoll' objects>"),
)


@dataclass(frozen=True)
class ProfileResult:
    throughput: Throughput
    parts: list[tuple[str, float]]  # label, seconds (cumulative, on the loop thread)
    top: list[tuple[str, float, float]]  # function, own seconds, cumulative seconds


async def _profiled(path: Path, writes: int, writers: int) -> tuple[Throughput, pstats.Stats]:
    profiler = cProfile.Profile()
    async with open_store(f"sqlite:///{path}", StoreConfig(durability="full")) as store:
        await _write_concurrently(store, min(writes, 2000), writers)  # warm up
        started = time.perf_counter()
        profiler.enable()
        await _write_concurrently(store, writes, writers)
        profiler.disable()
        elapsed = time.perf_counter() - started
    return Throughput(
        f"tasktrail set, {writers} writers (profiled)", writes, elapsed
    ), pstats.Stats(profiler)


def profile_writers(
    writes: int = 30_000, writers: int = 100, directory: str | None = None
) -> ProfileResult:
    """Run the concurrent-writer workload under cProfile and sum where its time goes."""
    with _workdir(directory) as work:
        throughput, stats = anyio.run(_profiled, work / "profile.db", writes, writers)
    table = stats.stats  # type: ignore[attr-defined]
    parts = []
    for label, suffix, name in _PROFILE_PARTS:
        total = sum(
            entry[3]
            for (file, _, function), entry in table.items()
            if function == name and file.endswith(suffix)
        )
        parts.append((label, total))
    ranked = sorted(table.items(), key=lambda item: item[1][2], reverse=True)[:15]
    top = [(_function_name(f, line, fn), e[2], e[3]) for (f, line, fn), e in ranked]
    return ProfileResult(throughput, parts, top)


def _function_name(file: str, line: int, function: str) -> str:
    if file == "~":  # a builtin: "<method 'poll' of 'select.epoll' objects>"
        return re.sub(
            r"<(?:method|built-in method) '?([\w.]+)'?(?: of '([\w.]+)' objects)?>",
            lambda m: f"{m[2]}.{m[1]}" if m[2] else m[1],
            function,
        )
    return f"{Path(file).name}:{line} {function}"


def print_profile(result: ProfileResult, console: Console | None = None) -> None:
    console = console or Console()
    writes = result.throughput.writes
    console.print(
        f"{result.throughput.name}: {result.throughput.rate:,.0f} writes/s under cProfile "
        "(its overhead slows the Python parts more than SQLite)"
    )
    parts = Table(title="where the time goes, per write")
    parts.add_column("part", no_wrap=True)
    parts.add_column("µs/write", justify="right")
    parts.add_column("% of run", justify="right")
    for label, seconds in result.parts:
        parts.add_row(
            label,
            f"{seconds / writes * 1e6:.1f}",
            f"{100 * seconds / result.throughput.seconds:.0f}",
        )
    console.print(parts)
    top = Table(title="top functions by own time")
    top.add_column("function", no_wrap=True)
    top.add_column("own µs/write", justify="right", no_wrap=True)
    top.add_column("cum µs/write", justify="right", no_wrap=True)
    for name, own, cumulative in result.top:
        top.add_row(name[:48], f"{own / writes * 1e6:.1f}", f"{cumulative / writes * 1e6:.1f}")
    console.print(top)


# -- the report -------------------------------------------------------------------------------

_TARGETS: Final = (
    # (label, numerator, denominator, the least ratio that passes)
    ("100 writers / raw event+projection 100/tx", "tt_100", "raw_100", 0.5),
    ("100 writers / 1 writer", "tt_100", "tt_1", 15.0),
    ("100 writers / eventsourcing", "tt_100", "es", 5.0),
    ("100 writers / raw plain upsert 100/tx", "tt_100", "kv_100", 0.4),
)


def _verdict(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]missed[/]"


def print_report(result: BenchResult, console: Console | None = None) -> bool:
    """Print the tables; return whether every target was met."""
    console = console or Console()
    out = result.throughput
    reference = out["raw_100"].rate
    table = Table(title="writes, durability full (WAL, synchronous=FULL); best of the rounds")
    table.add_column("workload", no_wrap=True)
    table.add_column("writes", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("writes/s", justify="right")
    table.add_column("× raw 100/tx", justify="right")
    for measure in out.values():
        table.add_row(
            measure.name,
            f"{measure.writes:,}",
            f"{measure.seconds:.2f}",
            f"{measure.rate:,.0f}",
            f"{measure.rate / reference:.2f}",
        )
    console.print(table)

    lat = Table(title="point reads")
    lat.add_column("read")
    for column in ("reads", "p50 µs", "p99 µs", "mean µs"):
        lat.add_column(column, justify="right")
    for reads in result.latency.values():
        lat.add_row(
            reads.name,
            f"{len(reads.samples_ns):,}",
            f"{reads.p50_us:.1f}",
            f"{reads.p99_us:.1f}",
            f"{reads.mean_us:.1f}",
        )
    console.print(lat)

    targets = Table(title="targets (issue 7)")
    targets.add_column("ratio")
    targets.add_column("measured", justify="right")
    targets.add_column("target", justify="right")
    targets.add_column("")
    every = True
    for label, num, den, least in _TARGETS:
        if num not in out or den not in out:
            targets.add_row(label, "n/a", f"≥ {least:g}", "[yellow]not run[/]")
            continue
        ratio = out[num].rate / out[den].rate
        every &= ratio >= least
        targets.add_row(label, f"{ratio:.2f}", f"≥ {least:g}", _verdict(ratio >= least))
    get, raw = result.latency["tt_get"], result.latency["raw_get"]
    ratio = get.p50_us / raw.p50_us
    every &= ratio <= 3
    targets.add_row("get p50 / raw point select p50", f"{ratio:.2f}", "≤ 3", _verdict(ratio <= 3))
    console.print(targets)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    return every


def print_memory(result: MemoryResult, console: Console | None = None) -> bool:
    console = console or Console()
    ok = result.growth_mib < 100
    table = Table(title="memory: peak RSS (getrusage), target growth < 100 MiB")
    for column in ("writes", "writers", "writes/s", "baseline MiB", "peak MiB", "growth MiB", ""):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_row(
        f"{result.writes:,}",
        str(result.writers),
        f"{result.writes / result.seconds:,.0f}",
        f"{result.baseline_kib / 1024:.1f}",
        f"{result.peak_kib / 1024:.1f}",
        f"{result.growth_mib:.1f}",
        _verdict(ok),
    )
    console.print(table)
    return ok


if __name__ == "__main__":
    from eventstore.cli.bench import bench

    bench()
