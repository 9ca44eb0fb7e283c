"""A DAG for the API server tests: a task that keeps a secret and fails.

`connect` writes a key Airflow's names mark sensitive (`api_token`) and a plain one, then fails
(no retries): the tests mark it successful by hand, which clears its store with
`[state_store] clear_on_success`.
"""

from __future__ import annotations

from airflow.sdk import DAG, get_current_context, task

# Put together at run time: the DAG's source is kept in Airflow's database (dag_code).
SECRET = "-".join(["s3cr3t", "token", "0f", "the", "test"])


@task(retries=0)
def connect() -> None:
    store = get_current_context()["task_state_store"]
    store.set("api_token", SECRET)
    store.set("step", 1)
    raise RuntimeError("fails on purpose: the test marks it successful by hand")


with DAG(dag_id="tasktrail_secrets", schedule=None, catchup=False):
    connect()
