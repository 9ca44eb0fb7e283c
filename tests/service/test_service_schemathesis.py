"""schemathesis against /openapi.json: generated requests, valid and invalid, never get a 5xx,
and every answer matches the document (status, content type, headers, body schema)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore.service import create_app, serve_in_thread
from eventstore.service.auth import make_token
from service.service_helpers import SECRET, FakeClock

SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent))


@pytest.fixture
def fresh_service(tmp_path: Path) -> Iterator[str]:
    """A service of its own: schemathesis writes a lot of odd keys."""
    app = create_app(f"sqlite:///{tmp_path / 'trail.db'}", secret=SECRET, clock=FakeClock())
    with serve_in_thread(app) as url:
        yield url


# OpenAPI cannot say "exactly one of these query parameters", which is what a point of history
# is (`?seq=4` or `?end_of_try=1`, ...; in a rewind's body, one of its point fields):
# schemathesis sends several at once, or none, gets the documented 422, and would call it a
# valid request rejected. The state, diff and rewind routes run without that one check; every
# other check, and every other route, runs in full.
POINT_ROUTES = "/(state|diff|store:rewind)$"
# A compaction removes tombstones (deletes and clears with nothing left to hide) and leaves
# markers, after which older history answers the documented 410 `history_compacted`, which
# schemathesis would also call a valid request rejected. So the compaction route runs last, on
# its own, once every history route has been tried.
COMPACT_ROUTE = "^/api/v1/compact$"
# The live feed is an endless Server-Sent Events stream: a valid request never ends, so
# schemathesis would wait on it for ever. tests/service/test_service_feed.py checks its
# answers (events, resumption, auth, 422s).
FEED_ROUTE = "^/api/v1/events$"


def _schemathesis(url: str, workdir: Path, role: str, examples: int, *selection: str) -> None:
    assert SCHEMATHESIS is not None
    token = make_token(SECRET, role)  # type: ignore[arg-type]
    done = subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            f"{url}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-examples",
            str(examples),
            "--mode",
            "all",
            "--checks",
            "all",
            "--seed",
            "1",
            "--no-color",
            "--generation-database",
            "none",
            *selection,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=workdir,  # schemathesis keeps a cache in its working directory
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    counts = [line.strip() for line in done.stdout.splitlines() if " generated, " in line]
    print(f"schemathesis {role} {' '.join(selection)}: {counts}")  # shown with -s
    assert "passed" in done.stdout
    assert "failures" not in done.stdout


@pytest.mark.slow
@pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is not installed")
@pytest.mark.parametrize(("role", "examples"), [("admin", 35), ("auditor", 9)])
def test_schemathesis_finds_no_5xx_and_no_schema_violations(
    fresh_service: str, tmp_path: Path, role: str, examples: int
) -> None:
    _schemathesis(
        fresh_service,
        tmp_path,
        role,
        examples,
        "--exclude-path-regex",
        f"{POINT_ROUTES}|{COMPACT_ROUTE}|{FEED_ROUTE}",
    )
    _schemathesis(
        fresh_service,
        tmp_path,
        role,
        examples,
        "--include-path-regex",
        POINT_ROUTES,
        "--exclude-checks",
        "positive_data_acceptance",
    )
    _schemathesis(fresh_service, tmp_path, role, examples, "--include-path-regex", COMPACT_ROUTE)
