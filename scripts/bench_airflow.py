"""tasktrail against Airflow's own MetastoreBackend, called as Airflow's execution API calls them.

Run it in the Airflow environment the tests use:

    bash scripts/airflow_env.sh --setup-only
    PYTHONPATH=. ~/.cache/tasktrail/airflow-3.3.2/bin/python scripts/bench_airflow.py

Each request is what the execution API does for a task's store call: one session of Airflow's
database, the task instance loaded by its id (`session.get`, which joins its DagRun) to name the
scope, the backend called, the session committed. Both backends
write the same SQLite metadata database (their own DagRun each, so their rows never collide);
tasktrail also writes its log, in its own SQLite file, and mirrors into Airflow's table: each
timed phase ends once tasktrail's mirror writer has written every row (the mirror is inside the
measurement), and the rows are then checked to be all there (after the sets) or all gone (after
the clears). Rounds alternate which backend goes first; the medians are
printed as tasktrail / MetastoreBackend, one request at a time and with --threads concurrent
requests (threads, as the API server's thread pool runs them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

HOME = tempfile.mkdtemp(prefix="tasktrail-bench-airflow-")
os.environ["AIRFLOW_HOME"] = HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow.models import import_all_models  # noqa: E402
from airflow.models.base import Base  # noqa: E402
from airflow.models.dagrun import DagRun, DagRunType  # noqa: E402
from airflow.models.task_state_store import TaskStateStoreModel  # noqa: E402
from airflow.models.taskinstance import TaskInstance  # noqa: E402
from airflow.settings import engine  # noqa: E402
from airflow.state import TaskScope  # noqa: E402
from airflow.state.metastore import MetastoreBackend  # noqa: E402
from airflow.utils.session import create_session  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from eventstore.airflow import TasktrailBackend  # noqa: E402

DAG = "bench"


def prepare(run_id: str, tis: int) -> list[UUID]:
    """A DagRun and its task instances; their ids, as the execution API's URLs carry them."""
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    with create_session() as session:
        session.add(
            DagRun(
                dag_id=DAG,
                run_id=run_id,
                run_type=DagRunType.MANUAL,
                logical_date=moment if run_id == "metastore" else moment + timedelta(days=1),
                run_after=moment,
            )
        )
        session.flush()
        for n in range(tis):
            session.execute(
                insert(TaskInstance.__table__).values(
                    dag_id=DAG,
                    run_id=run_id,
                    task_id=f"t{n}",
                    map_index=-1,
                    try_number=1,
                    pool="default_pool",
                )
            )
        t = TaskInstance
        found = session.execute(select(t.task_id, t.id).where(t.dag_id == DAG, t.run_id == run_id))
        ids = dict(found.tuples().all())
    return [ids[f"t{n}"] for n in range(tis)]


def request(call: Callable[[Any, TaskScope], object], ti_id: UUID) -> None:
    """One execution API request, as its task state store routes make it: a session, the task
    instance loaded by its id to name the scope, the call, commit."""
    with create_session() as session:
        ti = session.get(TaskInstance, ti_id)
        assert ti is not None
        call(session, TaskScope(ti.dag_id, ti.run_id, ti.task_id, ti.map_index))


def phases(backend: Any, tis: list[UUID], keys: int) -> dict[str, list[Callable[[], None]]]:
    expires = datetime.now(UTC) + timedelta(days=30)

    def set_(ti: UUID, key: str, value: int) -> Callable[[], None]:
        text = json.dumps({"offset": value, "rows": [value] * 4})
        return lambda: request(
            lambda s, scope: backend.set(scope, key, text, expires_at=expires, session=s), ti
        )

    def get(ti: UUID, key: str) -> Callable[[], None]:
        return lambda: request(lambda s, scope: backend.get(scope, key, session=s), ti)

    def clear(ti: UUID) -> Callable[[], None]:
        return lambda: request(lambda s, scope: backend.clear(scope, session=s), ti)

    pairs = [(ti, f"k{k}") for ti in tis for k in range(keys)]
    return {
        "set": [set_(ti, key, n) for n, (ti, key) in enumerate(pairs)],
        "get": [get(ti, key) for ti, key in pairs],
        "clear": [clear(ti) for ti in tis],
    }


def rate(calls: list[Callable[[], None]], threads: int, finish: Callable[[], None]) -> float:
    """Requests per second, from the first call until `finish()` (the mirror written) returns."""
    start = time.perf_counter()
    if threads <= 1:
        for call in calls:
            call()
    else:
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(call) for call in calls]:
                future.result()
    finish()
    return len(calls) / (time.perf_counter() - start)


def check_mirror(run_id: str, op: str, expected: int) -> None:
    """The rows Airflow's table holds for the run: every key after the sets, none after clears."""
    t = TaskStateStoreModel
    with create_session() as session:
        found = session.scalar(select(func.count()).where(t.dag_id == DAG, t.run_id == run_id))
    wanted = expected if op == "set" else 0 if op == "clear" else found
    if found != wanted:
        raise SystemExit(f"{run_id}: {found} rows in task_state_store after {op}, not {wanted}")


def _nothing() -> None:
    pass


def profile(backends: dict[str, Any], tis: dict[str, list[UUID]], keys: int, top: int) -> None:
    """cProfile of each backend's requests, one at a time: on the calling thread, on the bridge's
    event loop (the log's writes and reads) and in the mirror writer's batches (worker threads)."""
    import cProfile
    import pstats

    from eventstore.airflow.loop import PROCESS_LOOP
    from eventstore.airflow.writer import MirrorWriter

    write_batch = MirrorWriter._write
    mirror = cProfile.Profile()

    def profiled(writer: MirrorWriter, batch: list[Any], through: int) -> None:
        mirror.enable()
        try:
            write_batch(writer, batch, through)
        finally:
            mirror.disable()

    MirrorWriter._write = profiled  # type: ignore[method-assign]
    for name, backend in backends.items():
        finish = TasktrailBackend.wait_for_mirror if name == "tasktrail" else _nothing
        for calls in phases(backend, tis[name], keys).values():
            rate(calls, 1, finish)  # unmeasured: connections opened, statements cached
        for op, calls in phases(backend, tis[name], keys).items():
            caller, loop, mirror = cProfile.Profile(), cProfile.Profile(), cProfile.Profile()
            bridge = PROCESS_LOOP._bridge if name == "tasktrail" else None
            if bridge is not None:
                bridge.portal.call(loop.enable)
            caller.enable()
            rate(calls, 1, finish)
            caller.disable()
            if bridge is not None:
                bridge.portal.call(loop.disable)
            parts = {"caller": caller, "loop": loop, "mirror": mirror}
            per = {k: sum(e.callcount for e in p.getstats()) / len(calls) for k, p in parts.items()}
            counts = " ".join(f"{k} {v:.0f}" for k, v in per.items())
            print(f"{name} {op}: function calls per request: {counts}, all {sum(per.values()):.0f}")
            for part, stats in parts.items():
                if top and stats.getstats():
                    print(f"-- {name} {op}, {part}")
                    pstats.Stats(stats).sort_stats("cumulative").print_stats(top)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tis", type=int, default=50, help="task instances (default 50)")
    parser.add_argument("--keys", type=int, default=10, help="keys per task instance")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--threads", type=int, default=32, help="concurrent requests")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="TOP",
        help="instead: profile one round of requests one at a time (after one unmeasured) and "
        "print function calls per request, and the TOP functions by cumulative time",
    )
    args = parser.parse_args()
    import_all_models()
    Base.metadata.create_all(engine)
    backends = {
        "metastore": MetastoreBackend(),
        "tasktrail": TasktrailBackend(f"sqlite:///{Path(HOME) / 'trail.db'}"),
    }
    scopes = {name: prepare(name, args.tis) for name in backends}
    if args.profile is not None:
        profile(backends, scopes, args.keys, args.profile)
        return 0
    results: dict[tuple[str, str, int], list[float]] = {}
    for concurrency in (1, args.threads):
        for number in range(args.rounds):
            order = list(backends) if number % 2 == 0 else list(reversed(backends))
            for name in order:
                backend = backends[name]
                finish = TasktrailBackend.wait_for_mirror if name == "tasktrail" else _nothing
                for op, calls in phases(backend, scopes[name], args.keys).items():
                    speed = rate(calls, concurrency, finish)
                    results.setdefault((name, op, concurrency), []).append(speed)
                    check_mirror(name, op, args.tis * args.keys)
    print(
        f"{args.tis} task instances x {args.keys} keys, {args.rounds} alternating rounds, "
        f"medians (requests/s); Airflow's SQLite metadata database, tasktrail's SQLite file"
    )
    print(f"{'op':6} {'requests':>10} {'Metastore':>10} {'tasktrail':>10} {'ratio':>7}")
    for concurrency in (1, args.threads):
        for op in ("set", "get", "clear"):
            base = statistics.median(results[("metastore", op, concurrency)])
            ours = statistics.median(results[("tasktrail", op, concurrency)])
            where = "1 at a time" if concurrency == 1 else f"{concurrency} threads"
            print(f"{op:6} {where:>10} {base:10.0f} {ours:10.0f} {ours / base:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
