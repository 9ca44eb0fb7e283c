"""`tasktrail verify` and `tasktrail rebuild` on a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from eventstore import open_blocking_store
from eventstore.cli import cli


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A SQLite store with a few keys in two scopes, one of them deleted."""
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    with open_blocking_store(url) as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=1)
        ts.set_many({"a": 1, "b": {"rows": 5}, "c": "x"})
        ts.delete("c")
        store.asset_store(name="orders").set("watermark", 1042)
    return url


def tamper(url: str) -> None:
    """Change the projection behind the log's back."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        changed = conn.execute("UPDATE current SET value = ? WHERE key = 'a'", (b"2",)).rowcount
    assert changed == 1


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_verify_prints_a_table_and_exits_zero(db: str) -> None:
    code, output = invoke("verify", "--db", db)
    assert code == 0, output
    assert "events" in output
    assert "mismatches" in output
    (row,) = [line for line in output.splitlines() if "yes" in line]
    cells = [cell.strip() for cell in row.strip("│┃ ").split("│")]
    assert cells == ["5", "2", "3", "0", "yes"]  # events, scopes, keys, mismatches, ok


def test_verify_json(db: str) -> None:
    code, output = invoke("verify", "--db", db, "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report == {
        "ok": True,
        "events": 5,
        "scopes": 2,
        "keys": 3,
        "mismatches": [],
        "archive_problems": [],
    }


def test_verify_reads_the_db_from_the_environment(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKTRAIL_DB", db)
    code, output = invoke("verify", "--json")
    assert code == 0, output
    assert json.loads(output)["events"] == 5


def test_verify_exits_one_when_the_projection_was_tampered_with(db: str) -> None:
    tamper(db)
    code, output = invoke("verify", "--db", db, "--json")
    assert code == 1
    report = json.loads(output)
    assert report["ok"] is False
    assert [m["key"] for m in report["mismatches"]] == ["a"]

    code, output = invoke("verify", "--db", db)
    assert code == 1
    assert "no" in output
    assert "key 'a'" in output


def test_rebuild_repairs_a_tampered_projection(db: str) -> None:
    tamper(db)
    code, output = invoke("rebuild", "--db", db)
    assert code == 0, output
    assert "rebuilt the projection: 3 keys" in output
    assert invoke("verify", "--db", db)[0] == 0
    with open_blocking_store(db) as store:
        assert store.task_store("etl", "run_1", "ingest").items() == {"a": 1, "b": {"rows": 5}}


def test_rebuild_json(db: str) -> None:
    code, output = invoke("rebuild", "--db", db, "--json")
    assert code == 0, output
    assert json.loads(output) == {"keys": 3}


def test_rebuild_restores_a_deleted_projection_row(db: str) -> None:
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        conn.execute("DELETE FROM current WHERE key = 'watermark'")
    assert invoke("verify", "--db", db)[0] == 1
    assert invoke("rebuild", "--db", db)[0] == 0
    assert invoke("verify", "--db", db)[0] == 0


def test_bad_url_is_a_config_error_exit_code(tmp_path: Path) -> None:
    code, output = invoke("verify", "--db", "nosuch://x")
    assert code == 3
    assert "unknown store URL" in output
