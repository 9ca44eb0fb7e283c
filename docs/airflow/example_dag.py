"""An Airflow 3.3 DAG whose task state store is kept by tasktrail.

Nothing here knows about tasktrail: the tasks use Airflow's own `context["task_state_store"]`
and `context["asset_state_store"]`. Run Airflow with

    AIRFLOW__STATE_STORE__BACKEND=eventstore.airflow.TasktrailBackend

and every checkpoint below is kept in tasktrail's log, try by try. tests/airflow runs this DAG with
`airflow dags test` and checks what tasktrail recorded.

- `ingest` checkpoints its progress, fails part-way through its first try, and its second try
  resumes from the checkpoint the first try left (retries=1, no delay).
- `load_part` is mapped over three parts; each map index has its own store, and clears it.
- `publish` keeps a watermark on the asset it produces, across all runs.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, NEVER_EXPIRE, Asset, get_current_context, task

ORDERS = Asset(name="warehouse.orders", uri="file:///data/warehouse/orders")
BATCHES = 4


@task(retries=1, retry_delay=timedelta(0))
def ingest() -> int:
    context = get_current_context()
    store = context["task_state_store"]
    # An external job id is kept for good: a later try reconnects to the job instead of
    # submitting another one.
    if store.get("job_id") is None:
        store.set("job_id", "spark-20260101-0001", retention=NEVER_EXPIRE)
    start = store.get("offset", 0)
    store.set("resumed_from", start)
    store.set("scratch", {"try": context["ti"].try_number})
    for batch in range(start, BATCHES):
        store.set("offset", batch + 1)
        if context["ti"].try_number == 1 and batch == 1:
            raise RuntimeError("the worker died after batch 2 (on purpose: try 2 resumes)")
    store.delete("scratch")
    store.set("done", True)
    return int(store.get("offset"))


@task
def load_part(part: int) -> int:
    store = get_current_context()["task_state_store"]
    store.set("rows", part * 100)
    store.set("temp", [part])
    store.clear()  # this map index only
    store.set("rows", part * 100)
    return part


@task(outlets=[ORDERS])
def publish(total: int) -> None:
    assets = get_current_context()["asset_state_store"]
    assets.set("watermark", {"offset": total, "source": "ingest"})


with DAG(
    dag_id="tasktrail_example",
    schedule=None,
    catchup=False,
    tags=["tasktrail"],
):
    loaded = load_part.expand(part=[1, 2, 3])
    total = ingest()
    loaded >> total
    publish(total)
