#!/usr/bin/env bash
# Set up a virtual environment with everything the tests need, then run them.
# Usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check eventstore projections tests scripts docs
.venv/bin/ruff format --check eventstore projections tests scripts docs
.venv/bin/mypy
node --test tests/js/
.venv/bin/pytest "$@"
# The Airflow suite (tests/airflow) runs against a real Airflow 3.3.2 in its own environment,
# made once at a cache path: see scripts/airflow_env.sh. A targeted run (pytest arguments) skips
# it, and says so.
if [[ $# -eq 0 ]]; then
    bash scripts/airflow_env.sh
else
    echo "test.sh: pytest arguments given, so the Airflow suite did not run;" \
        "run it with: bash scripts/airflow_env.sh" >&2
fi
