"""POST /api/v1/compact, scheduled compaction inside the service, and their metrics."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from conftest import postgres_schema_url

from eventstore import NEVER_EXPIRE, StoreConfig, open_store
from eventstore.log.backends.rows import EventFilter
from eventstore.service import create_app, serve_in_thread
from projections import compaction
from service.service_helpers import SECRET, FakeClock, Service, task_path

COMPACTOR = Path(__file__).parents[1] / "compactor.py"
COMPACT = "/api/v1/compact"


class Running:
    """A service and the URL of the database it serves."""

    def __init__(self, service: Service, url: str) -> None:
        self.service = service
        self.url = url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('compact') / 'trail.db'}"
        else:
            url = stack.enter_context(postgres_schema_url())
        clock = FakeClock()
        base_url = stack.enter_context(serve_in_thread(create_app(url, secret=SECRET, clock=clock)))
        yield Running(Service(base_url, clock), url)


@pytest.fixture
def service(running: Running) -> Service:
    return running.service


@pytest.fixture
def dag() -> str:
    return f"dag-{uuid.uuid4().hex[:12]}"


def history_path(dag: str) -> str:
    return task_path(dag).removesuffix("/store") + "/history"


def metric(service: Service, name: str) -> float:
    text = service.call("GET", "/metrics").body.decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} is not in /metrics"
    return float(found.group(1))


def expiring_key(service: Service, dag: str) -> None:
    """A key that expires in a minute beside one that never does; the clock moves past it."""
    token = service.task_token(dag)
    assert service.call("PUT", task_path(dag, "lease"), {"value": 1, "retention": 60}, token=token)
    service.call("PUT", task_path(dag, "job"), {"value": "j", "retention": "never"}, token=token)
    service.clock.advance(timedelta(minutes=2))


@pytest.mark.parametrize(
    ("role", "status", "reason"),
    [(None, 401, "unauthenticated"), ("task", 403, "forbidden"), ("auditor", 403, "forbidden")],
)
def test_only_an_admin_may_compact(
    service: Service, dag: str, role: str | None, status: int, reason: str
) -> None:
    token = None
    if role == "task":
        token = service.task_token(dag)
    elif role is not None:
        token = service.token(role)

    for dry_run in ("true", "false"):
        answer = service.call("POST", f"{COMPACT}?dry_run={dry_run}", token=token)
        assert (answer.status, answer.reason) == (status, reason), answer


def test_a_dry_run_reports_and_changes_nothing(service: Service, dag: str) -> None:
    expiring_key(service, dag)
    admin = service.token("admin")
    before = service.call("GET", history_path(dag), token=admin).json()

    dry = service.call("POST", f"{COMPACT}?dry_run=true", token=admin)

    assert dry.status == 200, dry
    report = dry.json()
    assert report["dry_run"] is True
    assert report["keys_expired"] >= 1
    assert report["bytes_after"] is None
    assert service.call("GET", history_path(dag), token=admin).json() == before
    again = service.call("POST", f"{COMPACT}?dry_run=true", token=admin).json()
    assert again["events_removed"] == report["events_removed"]


def test_compaction_removes_expired_keys_and_counts_in_metrics(service: Service, dag: str) -> None:
    expiring_key(service, dag)
    admin = service.token("admin")
    runs = metric(service, "tasktrail_compactions_total")
    removed = metric(service, "tasktrail_compaction_events_removed_total")
    planned = service.call("POST", f"{COMPACT}?dry_run=true", token=admin).json()

    answer = service.call("POST", COMPACT, token=admin)

    assert answer.status == 200, answer
    report = answer.json()
    assert report["dry_run"] is False
    assert report["events_removed"] == planned["events_removed"] >= 1
    assert report["keys_expired"] == planned["keys_expired"] >= 1
    # The events list what the log holds; a question needing the removed lease is a 410.
    history = service.call("GET", history_path(dag), token=admin)
    assert history.status == 200, history
    assert [e["key"] for e in history.json()["events"]] == ["job", None]
    timeline = service.call(
        "GET", history_path(dag).replace("/history", "/timeline/lease"), token=admin
    )
    assert (timeline.status, timeline.reason) == (410, "history_compacted")
    job = service.call("GET", history_path(dag).replace("/history", "/timeline/job"), token=admin)
    assert [e["value"] for e in job.json()["events"]] == ["j"]
    entry = service.call("GET", task_path(dag, "job"), token=admin)
    assert entry.json()["value"] == "j"
    after = service.call("POST", f"{COMPACT}?dry_run=true", token=admin).json()
    assert after["events_removed"] == 0
    assert metric(service, "tasktrail_compactions_total") == runs + 1
    assert (
        metric(service, "tasktrail_compaction_events_removed_total")
        == removed + report["events_removed"]
    )
    assert metric(service, "tasktrail_compaction_keys_expired_total") >= report["keys_expired"]
    assert metric(service, "tasktrail_compaction_last_run_timestamp_seconds") > time.time() - 60
    assert (
        metric(service, "tasktrail_compaction_last_duration_seconds") == report["duration_seconds"]
    )


def test_a_bad_dry_run_flag_is_a_422(service: Service) -> None:
    answer = service.call("POST", f"{COMPACT}?dry_run=maybe", token=service.token("admin"))
    assert (answer.status, answer.reason) == (422, "bad_query")


def test_compaction_is_a_409_while_another_process_compacts(running: Running, dag: str) -> None:
    service = running.service
    expiring_key(service, dag)
    admin = service.token("admin")
    skipped = metric(service, "tasktrail_compactions_skipped_total")
    other = subprocess.Popen(
        [sys.executable, str(COMPACTOR), "hold", running.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "held"

        refused = service.call("POST", COMPACT, token=admin)
        dry = service.call("POST", f"{COMPACT}?dry_run=true", token=admin)
    finally:
        _, err = other.communicate("\n", timeout=60)
    assert other.returncode == 0, err

    assert (refused.status, refused.reason) == (409, "compaction_running"), refused
    assert "another compaction" in refused.json()["message"]
    assert dry.status == 200  # a dry run changes nothing, so it needs no lock
    assert metric(service, "tasktrail_compactions_skipped_total") == skipped + 1
    assert service.call("GET", history_path(dag), token=admin).status == 200
    assert service.call("POST", COMPACT, token=admin).status == 200


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_service_compacts_expired_keys_on_its_schedule(tmp_path: Path, backend: str) -> None:
    with ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'trail.db'}"
        else:
            url = stack.enter_context(postgres_schema_url())
        # The real clock: a key kept for one second, a schedule of a fifth of one.
        app = create_app(url, secret=SECRET, compact_every=0.2)
        service = Service(stack.enter_context(serve_in_thread(app)), FakeClock())
        token = service.task_token("d")
        service.call("PUT", task_path("d", "lease"), {"value": 1, "retention": 1}, token=token)
        service.call("PUT", task_path("d", "job"), {"value": 2, "retention": "never"}, token=token)

        deadline = time.monotonic() + 30
        while metric(service, "tasktrail_compaction_keys_expired_total") < 1:
            assert time.monotonic() < deadline, "the schedule never compacted the expired key"
            time.sleep(0.1)

        assert metric(service, "tasktrail_compactions_total") >= 1
        assert metric(service, "tasktrail_compaction_events_removed_total") == 1
        assert metric(service, "tasktrail_compaction_failures_total") == 0
        assert metric(service, "tasktrail_compaction_last_run_timestamp_seconds") > 0
        admin = service.token("admin")
        assert service.call("GET", task_path("d", "job"), token=admin).json()["value"] == 2
        assert service.call("GET", task_path("d", "lease"), token=admin).status == 404

        async def check() -> None:
            async with open_store(url) as store:
                ts = store.task_store("d", "r", "t")
                scope_id = await store.scope_id(ts.scope)
                assert scope_id is not None
                rows = await store.backend.select_events(scope_id, EventFilter())
                assert [(r.kind, r.key) for r in rows] == [("set", "job"), ("compacted", None)]
                assert (await store.verify()).ok

        anyio.run(check)


@pytest.mark.slow
def test_shutdown_stops_a_scheduled_compaction_safely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compaction, "DELETE_BATCH", 10)  # many short transactions
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    clock = FakeClock()

    async def seed() -> None:
        async with open_store(url, clock=clock) as store:
            for task in range(100):
                ts = store.task_store("d", "r", f"t{task}")
                await ts.set_many({f"k{i}": i for i in range(50)}, retention=timedelta(hours=1))
                await ts.set("job", task, retention=NEVER_EXPIRE)

    anyio.run(seed)
    clock.advance(timedelta(hours=2))
    app = create_app(url, secret=SECRET, clock=clock, compact_every=0.01)
    with serve_in_thread(app):
        time.sleep(0.1)  # the first compaction starts and is likely still running

    async def check() -> None:
        async with open_store(url, clock=clock) as store:
            assert (await store.verify()).ok
            for task in range(100):
                items = await store.task_store("d", "r", f"t{task}").items()
                assert items == {"job": task}
            # What the stopped compaction left, the next one finishes.
            await store.compact()
            assert (await store.compact(dry_run=True)).events_removed == 0

    anyio.run(check)


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="compact_every must be >= 0"):
        create_app("memory://", secret=SECRET, compact_every=-1)


@pytest.fixture(params=["sqlite", "postgresql"])
def archived_service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """A service whose store keeps an audit archive."""
    clock = FakeClock()
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'trail.db'}"
        else:
            url = stack.enter_context(postgres_schema_url())
        config = StoreConfig(archive_url=str(tmp_path / "archive"))
        app = create_app(url, secret=SECRET, clock=clock, config=config)
        yield Service(stack.enter_context(serve_in_thread(app)), clock)


def test_with_an_archive_history_routes_answer_what_compaction_removed(
    archived_service: Service, dag: str, tmp_path: Path
) -> None:
    service = archived_service
    expiring_key(service, dag)
    admin = service.token("admin")
    answer = service.call("POST", COMPACT, token=admin)
    assert answer.status == 200, answer
    assert answer.json()["archive_file"].endswith(".jsonl.gz")
    assert (tmp_path / "archive" / answer.json()["archive_file"]).exists()

    base = history_path(dag).removesuffix("/history")
    timeline = service.call("GET", f"{base}/timeline/lease", token=admin)
    assert timeline.status == 200, timeline
    assert [e["value"] for e in timeline.json()["events"]] == [1]
    state = service.call("GET", f"{base}/state?seq=1", token=admin)
    assert state.json()["state"] == {"lease": 1}
    events = service.call("GET", history_path(dag), token=admin).json()["events"]
    assert [e["kind"] for e in events] == ["set", "set", "compacted"]
