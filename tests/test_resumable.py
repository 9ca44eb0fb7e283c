"""resumable_job: one external job across tries, against a job service written for the test."""

from __future__ import annotations

from typing import Any

import pytest

from eventstore import Store, TaskStore
from eventstore.log.backends.rows import EventFilter
from eventstore.resumable import resumable_job
from eventstore.testing import TaskTries


class JobFailed(Exception):
    pass


class WorkerDied(BaseException):
    """What a try sees when its worker is killed: nothing after it runs."""


class JobService:
    """A small external system: numbered jobs (the first is job 0) that run until waited for.

    `outcomes` says how each submitted job ends, in order of submission ("SUCCEEDED" or "FAILED").
    """

    def __init__(self, *outcomes: str) -> None:
        self.outcomes = list(outcomes)
        self.jobs: dict[int, str] = {}
        self.submitted: list[int] = []
        self.waited: list[int] = []
        # The worker is killed while it waits; the job itself runs on.
        self.worker_dies_while_waiting = False

    async def submit(self) -> int:
        job_id = len(self.jobs)
        self.jobs[job_id] = "RUNNING"
        self.submitted.append(job_id)
        return job_id

    async def status(self, job_id: Any) -> str:
        return self.jobs[job_id]

    def is_active(self, status: str) -> bool:
        return status in ("PENDING", "RUNNING")

    def is_succeeded(self, status: str) -> bool:
        return status == "SUCCEEDED"

    async def wait(self, job_id: Any) -> None:
        if self.worker_dies_while_waiting:
            raise WorkerDied
        self.waited.append(job_id)
        self.jobs[job_id] = self.outcomes[job_id]
        if self.jobs[job_id] != "SUCCEEDED":
            raise JobFailed(f"job {job_id} failed")

    async def result(self, job_id: Any) -> Any:
        assert self.jobs[job_id] == "SUCCEEDED"
        return {"job": job_id, "rows": 100 + job_id}


class DiesBeforeKeeping:
    """A store whose worker is killed after the job was submitted, before its id was kept."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    async def get(self, key: str, default: Any = None) -> Any:
        return await self.store.get(key, default)

    async def set(self, key: str, value: object, *, retention: Any = None) -> Any:
        raise WorkerDied


def try_of(store: Store, try_number: int) -> TaskStore:
    return store.task_store("etl", "run_1", "spark_job", try_number=try_number)


async def test_fresh_submit_keeps_the_id_for_good_before_waiting(store: Store) -> None:
    service = JobService("SUCCEEDED")
    result = await resumable_job(try_of(store, 1), service)
    assert result == {"job": 0, "rows": 100}
    assert service.submitted == [0]
    scope_id = await store.scope_id(try_of(store, 1).scope)
    assert scope_id is not None
    [event] = await store.backend.select_events(scope_id, EventFilter())
    assert (event.key, event.expires_at, event.try_number) == ("remote_job_id", None, 1)


async def test_a_new_try_reconnects_to_the_running_job_and_returns_its_result(
    store: Store,
) -> None:
    service = JobService("SUCCEEDED")
    service.worker_dies_while_waiting = True
    tries = TaskTries(store, "etl", "run_1", "spark_job")
    with pytest.raises(WorkerDied):
        await resumable_job(tries.next(), service)
    assert service.jobs == {0: "RUNNING"}

    service.worker_dies_while_waiting = False
    result = await resumable_job(tries.next(), service)
    assert result == {"job": 0, "rows": 100}  # job 0, a falsy id, is reconnected to
    assert service.submitted == [0]
    assert service.waited == [0]


async def test_an_already_succeeded_job_returns_its_result_without_waiting(
    store: Store,
) -> None:
    service = JobService("SUCCEEDED")
    await try_of(store, 1).set("remote_job_id", 0)
    service.jobs[0] = "SUCCEEDED"
    result = await resumable_job(try_of(store, 2), service)
    assert result == {"job": 0, "rows": 100}
    assert service.submitted == []
    assert service.waited == []


async def test_a_failed_job_is_submitted_again_and_the_new_id_kept(
    store: Store,
) -> None:
    service = JobService("FAILED", "SUCCEEDED")
    tries = TaskTries(store, "etl", "run_1", "spark_job")
    with pytest.raises(JobFailed):
        await resumable_job(tries.next(), service)
    second = tries.next()
    result = await resumable_job(second, service)
    assert result == {"job": 1, "rows": 101}
    assert service.submitted == [0, 1]
    assert await second.get("remote_job_id") == 1


async def test_a_crash_between_submit_and_keep_submits_again_on_the_next_try(
    store: Store,
) -> None:
    service = JobService("SUCCEEDED", "SUCCEEDED")
    with pytest.raises(WorkerDied):
        await resumable_job(DiesBeforeKeeping(try_of(store, 1)), service)
    assert await try_of(store, 1).get("remote_job_id") is None
    result = await resumable_job(try_of(store, 2), service)
    # Job 0 runs on untracked: the gap no helper can close across a system boundary.
    assert result == {"job": 1, "rows": 101}
    assert service.submitted == [0, 1]
    assert await try_of(store, 2).get("remote_job_id") == 1


async def test_the_key_can_be_named(store: Store) -> None:
    service = JobService("SUCCEEDED")
    await resumable_job(try_of(store, 1), service, key="spark/driver_id")
    assert await try_of(store, 1).items() == {"spark/driver_id": 0}


async def test_a_submit_without_an_id_is_refused_before_waiting(store: Store) -> None:

    class NoId(JobService):
        async def submit(self) -> Any:
            return None

    service = NoId("SUCCEEDED")
    with pytest.raises(ValueError, match=r"NoId.submit\(\) returned None"):
        await resumable_job(try_of(store, 1), service)
    assert service.waited == []
