"""tasktrail as Apache Airflow's task state store backend.

    AIRFLOW__STATE_STORE__BACKEND=eventstore.airflow.TasktrailBackend
    TASKTRAIL_DB=sqlite:////path/to/trail.db     # default: $AIRFLOW_HOME/tasktrail.db
    # or, through a tasktrail service (`tasktrail serve`), with an admin token:
    TASKTRAIL_URL=http://tasktrail.internal:8750
    TASKTRAIL_TOKEN=eyJhbGci...                 # tasktrail token --role admin --name airflow

Airflow (3.3) keeps calling `context["task_state_store"]` in tasks; its execution API hands each
call to this class, which appends it to tasktrail's log. What Airflow gives the backend, and what
this class makes of it:

- Scopes: Airflow's `TaskScope(dag_id, run_id, task_id, map_index)` becomes tasktrail's
  `TaskScope`; an `AssetScope` with an integer `asset_id` (on the server) is looked up in
  Airflow's database through `session` and becomes `AssetScope(name, uri)`. The core and SDK
  copies of Airflow's scope classes are different classes, so they are recognised by their fields.
- The try: not passed by Airflow; looked up through `session` as the task instance's current
  `try_number`, and stamped on every write of a task scope (attempt fencing applies). A clear of
  every map index comes from the UI or CLI, not a try, and is not stamped.
- Values arrive as JSON text made by `json.dumps`; they are stored as JSON values (so tasktrail's
  history, diff and value rules see real values), and `get` gives back `json.dumps` of the value,
  which is the same text Airflow sent.
- Expiry arrives as an absolute UTC datetime (kept exactly) or None (never expires).
- Airflow retries a failed call up to 5 times, so every call is safe to repeat: a delete of an
  absent key and a clear of an empty scope append nothing, and a set identical to the scope's newest
  event (same key, value, expiry and try) is taken as a repeat and appends nothing.
- Through a service, one admin token serves every task instance: each write names its try
  (`Tasktrail-Try`), which the service stamps on an admin's write and fences as it would a task's.
  Writes are recorded with the actor `api:<the token's name>`. The client retries a lost answer
  with the same idempotency id; the repeat rule above covers Airflow's own retries.

The sync methods (the only ones Airflow 3.3 calls) run on one event loop per process, the bridge
(`eventstore.bridge`, anyio's blocking portal) started at the first call and stopped at exit.
The async methods are native: each opens the store (or connects to the service) on the caller's
event loop for the call.

Airflow's own tables (`task_state_store`, `asset_state_store`) are kept as one more projection
of the log (the mirror): every write through this backend also writes them, through the
process's mirror writer (`writer`), behind the log and in log order, so Airflow's UI and REST API
show what tasks wrote. What the
mirror holds for sensitive keys (by name, as Airflow masks Variables) and for sealed values (an
encrypted store) is the `[tasktrail] mirror` setting: `masked` (the default: the row says
"<masked>"), `values` or `off` (no row). `cleanup()` (`airflow state-store clean`) runs
tasktrail's compaction, then removes the mirror rows whose expiry passed.
`python -m eventstore.airflow mirror [--repair]` checks the mirror against the projection and
puts it right. Edits made through Airflow's REST API and UI reach the log through the plugin in
`eventstore.airflow.plugin`.

Importing `eventstore` never imports this package, nor Airflow.

The package: `backend` (the class), `operations` (its calls against a store or a service),
`place` and `statements` (the mirror's writes into Airflow's tables), `writer` (the mirror
writer), `catchup` (its watermark and catch-up), `mirror` (the mirror checked and repaired),
`assets` (asset ids as asset scopes),
`scopes` (Airflow's scopes and values as tasktrail's), `settings`, `loop` (the sync methods'
bridge), `plugin` and `history` (what the API server loads: edits reaching the log, the History
tab).
"""

from __future__ import annotations

# First: without Airflow it raises the ImportError that names the extra.
from eventstore.airflow.backend import Edit, TasktrailBackend
from eventstore.airflow.mirror import MirrorReport
from eventstore.airflow.settings import ACTOR, MASK, store_config

__all__ = [
    "ACTOR",
    "MASK",
    "Edit",
    "MirrorReport",
    "TasktrailBackend",
    "store_config",
]
