"""docs/reference/http.md is generated from the OpenAPI document; it must not go stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_http_reference_is_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_http_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_http_reference_documents_every_route_and_reason() -> None:
    text = (ROOT / "docs" / "reference" / "http.md").read_text()
    for route in ("/store/{key}`", "/store:batch`", "/history`", "/state`", "/diff`", "/tries`"):
        assert route in text
    for reason in ("unknown_scope", "unknown_key", "version_conflict", "stale_attempt"):
        assert f"`{reason}`" in text
