#!/usr/bin/env bash
# Run the Airflow test suite (tests/airflow) against a real Apache Airflow 3.3.2.
#
# Airflow lives in its own virtual environment, kept at a cache path and made only once:
#   ${TASKTRAIL_AIRFLOW_VENV:-$HOME/.cache/tasktrail/airflow-3.3.2}
# It holds apache-airflow==3.3.2 and the test tools, installed once, and this project (editable,
# with the `airflow` and `service` extras), brought up to date with this checkout's dependencies on every run.
# The code under test is always this checkout's: it runs with PYTHONPATH set to the checkout,
# which comes before the editable install on sys.path, so checkouts can share the environment.
#
# Usage: bash scripts/airflow_env.sh [pytest arguments]   (default path: tests/airflow)
#        bash scripts/airflow_env.sh --setup-only
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
venv="${TASKTRAIL_AIRFLOW_VENV:-$HOME/.cache/tasktrail/airflow-3.3.2}"
stamp="$venv/.tasktrail-ready"
# Rebuild the environment when what it must hold changes: bump env= when the steps below change.
want="airflow=3.3.2 env=2"

mkdir -p "$(dirname "$venv")"
# Runs from several checkouts may share the environment: one pip at a time.
exec 9>"$venv.lock"
flock 9
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "airflow_env: preparing $venv (once; about a minute)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -qq --upgrade pip
    "$venv/bin/python" -m pip install -qq "apache-airflow==3.3.2" \
        "pytest>=8.3" "pytest-asyncio>=0.24" "hypothesis>=6.100" hatchling editables
    echo "$want" >"$stamp"
fi
# This checkout's dependencies (they change as the project grows); a few seconds when they are
# installed already. The editable install may point at another checkout: PYTHONPATH below wins.
# The service extra: the remote-mode tests run `tasktrail serve` in this environment.
# Playwright: the History tab's browser tests drive the system Chromium from here.
"$venv/bin/python" -m pip install -qq --no-build-isolation -e "$repo[airflow,service]" "playwright>=1.45"
exec 9>&-

if [[ "${1:-}" == "--setup-only" ]]; then
    exit 0
fi

export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export TASKTRAIL_AIRFLOW_VENV="$venv"
# Without a test path among the arguments, the whole Airflow suite runs.
paths=0
for arg in "$@"; do
    [[ "$arg" == tests* ]] && paths=1
done
if [[ $paths -eq 0 ]]; then
    set -- "$@" tests/airflow
fi
# The project's pytest settings leave tests/airflow out; this run is the one that takes them.
exec "$venv/bin/python" -m pytest -o addopts="--strict-markers --strict-config -ra" -p no:cacheprovider "$@"
