#!/usr/bin/env bash
# Set up a virtual environment with everything the tests need, then run them.
# Usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# The web page's browser tests drive Debian's Chromium (never a downloaded browser).
if ! command -v chromium >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -q && apt-get install -y -q chromium chromium-driver
    else
        echo "test.sh: the browser tests need Chromium: sudo apt-get install chromium" >&2
        exit 1
    fi
fi
.venv/bin/ruff check eventstore projections tests scripts docs
.venv/bin/ruff format --check eventstore projections tests scripts docs
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/node --test tests/js/*.test.mjs
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
