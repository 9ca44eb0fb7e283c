"""The benchmark's workload through the `eventsourcing` library (the `bench` extra only)."""

from __future__ import annotations

import time
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class Checkpoint(Aggregate):
    """One task instance's checkpoints, as an eventsourcing aggregate."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: dict[str, Any] = {}

    @event("ValueSet")
    def set_value(self, key: str, value: Any) -> None:
        self.values[key] = value


def run(path: str, writes: int, tasks: int) -> float:
    """Set one key `writes` times spread over `tasks` aggregates; return the seconds taken.

    Each write is one `save`, which is one SQLite transaction: the library has no group commit.
    """
    app: Application[Any] = Application(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": "10",
        }
    )
    aggregates = [Checkpoint(f"task_{i}") for i in range(tasks)]
    app.save(*aggregates)
    started = time.perf_counter()
    for i in range(writes):
        aggregate = aggregates[i % tasks]
        aggregate.set_value("progress", {"rows": i, "page": i // 10})
        app.save(aggregate)
    elapsed = time.perf_counter() - started
    app.close()
    return elapsed
