#!/usr/bin/env bash
# Set up a virtual environment and run the demo on the embedded SQLite default (./tasktrail.db).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
.venv/bin/python scripts/demo.py "$@"
