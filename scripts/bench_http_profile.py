"""bench_http's profile of the server: cProfile on its thread's CPU clock, turned on and off by
the benchmark with signals around the profiled workload's runs, and its top functions."""

from __future__ import annotations

import cProfile
import pstats
import signal
import time
from pathlib import Path
from typing import Any


def profile_on_signals(stats_file: str) -> None:
    """In the server: SIGUSR1 starts the profiler, SIGUSR2 stops it and writes its stats (every
    run of the workload adds to them). Thread CPU, so time the thread waits is not counted."""
    profiler = cProfile.Profile(time.thread_time)

    def stop(*_: object) -> None:
        profiler.disable()
        profiler.dump_stats(stats_file)

    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, stop)


def print_profile(stats_file: Path, name: str, requests: int, top: int = 25) -> None:
    """The server's functions that took the most of its thread's CPU during `name`."""
    stats: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(str(stats_file)).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in stats.values())
    print(
        f"server profile during {name} (cProfile on the server's thread CPU clock, which "
        f"profiling slows 2-3x: read the shares), {total / requests * 1e6:.0f} us per request:"
    )
    print(f"{'self':>7}{'incl':>7}  function")
    by_self = sorted(stats.items(), key=lambda item: -item[1][2])
    for (file, line, function), entry in by_self[:top]:
        where = f"{Path(file).name}:{line}" if line else "~"
        print(f"{entry[2] / total:>7.1%}{entry[3] / total:>7.1%}  {function} ({where})")
