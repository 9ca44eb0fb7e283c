"""schemathesis against /openapi.json: generated requests, valid and invalid, never get a 5xx,
and every answer matches the document (status, content type, headers, body schema)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import SECRET, FakeClock

from eventstore.service import create_app, serve_in_thread
from eventstore.service.auth import make_token

SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent))


@pytest.fixture
def fresh_service(tmp_path: Path) -> Iterator[str]:
    app = create_app(f"sqlite:///{tmp_path / 'trail.db'}", secret=SECRET, clock=FakeClock())
    with serve_in_thread(app) as url:
        yield url


@pytest.mark.slow
@pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is not installed")
@pytest.mark.parametrize("role", ["admin", "auditor"])
def test_schemathesis_finds_no_5xx_and_no_schema_violations(
    fresh_service: str, tmp_path: Path, role: str
) -> None:
    assert SCHEMATHESIS is not None
    token = make_token(SECRET, role)  # type: ignore[arg-type]
    done = subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            f"{fresh_service}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            "20" if role == "admin" else "5",
            "--mode",
            "all",
            "--checks",
            "all",
            "--seed",
            "1",
            "--no-color",
            "--generation-database",
            "none",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "passed" in done.stdout
    assert "failures" not in done.stdout
