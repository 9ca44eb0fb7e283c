"""Resume an external job across tries instead of submitting it twice: `resumable_job`.

The contract of Airflow's `ResumableJobMixin`, for async task code on a tasktrail store:

1. If the store holds the id of an earlier try's job, ask the job service for its status:
   still active -> wait for it and return its result; succeeded -> return its result at once;
   failed (any other terminal status) -> submit a new job.
2. Otherwise submit a job, and keep its id in the store (NEVER_EXPIRE) before waiting on it,
   so a try that dies while waiting leaves the next try something to reconnect to.

Unlike the mixin in Airflow 3.3.2, the reconnect path returns the job's result (the mixin returns
None there), the id is kept with NEVER_EXPIRE (the mixin uses the default retention, so a long
job can outlive its own id), and a falsy id such as 0 or "" is an id like any other.

What no helper can close: a try that dies after the service accepted the job and before the store
kept its id leaves a job nobody tracks; the next try submits another. Services that take a client
request token can make that resubmission return the first job.
"""

from __future__ import annotations

import logging
from typing import Any, Final, Protocol

from eventstore.log.config import NEVER_EXPIRE

__all__ = ["DEFAULT_KEY", "JobService", "JobStore", "resumable_job"]

DEFAULT_KEY: Final = "remote_job_id"

log = logging.getLogger(__name__)

_ABSENT: Final = object()


class JobService(Protocol):
    """The external system's side: how to submit, inspect, wait for and collect one job."""

    async def submit(self) -> Any:
        """Start a job and return its id, a JSON value other than None."""
        ...

    async def status(self, job_id: Any) -> str:
        """The job's status as the external system names it."""
        ...

    def is_active(self, status: str) -> bool:
        """Whether the job is still running (or queued) and can be waited for."""
        ...

    def is_succeeded(self, status: str) -> bool:
        """Whether the job finished successfully."""
        ...

    async def wait(self, job_id: Any) -> None:
        """Return when the job has finished; raise if it failed."""
        ...

    async def result(self, job_id: Any) -> Any:
        """What the finished job produced (None if nothing)."""
        ...


class JobStore(Protocol):
    """The part of a task's store the helper needs: a TaskStore, or the HTTP client's accessor."""

    async def get(self, key: str, default: Any = None) -> Any: ...

    async def set(self, key: str, value: object, *, retention: Any = None) -> Any: ...


async def resumable_job(store: JobStore, job: JobService, *, key: str = DEFAULT_KEY) -> Any:
    """Run the job to completion once across tries, and return its result."""
    job_id = await store.get(key, _ABSENT)
    if job_id is not _ABSENT:
        status = await job.status(job_id)
        if job.is_active(status):
            log.info("reconnecting to job %r (status %s) kept under %r", job_id, status, key)
            await job.wait(job_id)
            return await job.result(job_id)
        if job.is_succeeded(status):
            log.info("job %r already succeeded; returning its result", job_id)
            return await job.result(job_id)
        log.warning("job %r ended with status %s; submitting a new job", job_id, status)
    job_id = await job.submit()
    if job_id is None:
        raise ValueError(
            f"{type(job).__name__}.submit() returned None; it must return the job's id "
            "so a later try can reconnect to it"
        )
    await store.set(key, job_id, retention=NEVER_EXPIRE)
    await job.wait(job_id)
    return await job.result(job_id)
