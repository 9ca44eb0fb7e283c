"""The Airflow backend is an extra: tasktrail works without Airflow, and says how to get it."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_airflow_backend_without_airflow_names_the_extra() -> None:
    code = "import sys; sys.modules['airflow'] = None; import eventstore.airflow"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert "pip install 'tasktrail[airflow]'" in done.stderr
