#!/usr/bin/env bash
# Set up a virtual environment with everything the tests need, then run them.
# Usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check eventstore projections tests scripts
.venv/bin/ruff format --check eventstore projections tests scripts
.venv/bin/mypy
.venv/bin/pytest "$@"
