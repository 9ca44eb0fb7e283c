"""`tasktrail token` and `tasktrail serve`: secrets, tokens, and a graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from eventstore import open_store
from eventstore.cli import cli
from eventstore.client import ServiceError, connect
from eventstore.service.auth import TokenVerifier, load_secret


def test_token_makes_the_secret_beside_the_database_with_owner_only_mode(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'trail.db'}"
    runner = CliRunner(env={"TASKTRAIL_SECRET": ""})
    done = runner.invoke(
        cli,
        [
            "token",
            "--db",
            db,
            "--role",
            "task",
            "--dag",
            "d",
            "--run",
            "r",
            "--task",
            "t",
            "--map-index",
            "3",
            "--try",
            "2",
            "--ttl",
            "1h",
        ],
    )
    assert done.exit_code == 0, done.output
    secret_file = tmp_path / "trail.db.secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    claims = TokenVerifier(load_secret(db)).verify(done.output.strip(), time.time())
    assert (claims.role, claims.dag, claims.run, claims.task) == ("task", "d", "r", "t")
    assert (claims.map_index, claims.try_number) == (3, 2)
    assert time.time() + 3500 < claims.exp <= time.time() + 3600


def test_token_reuses_the_kept_secret(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'trail.db'}"
    runner = CliRunner(env={"TASKTRAIL_SECRET": ""})
    first = runner.invoke(cli, ["token", "--db", db, "--role", "admin"]).output.strip()
    runner.invoke(cli, ["token", "--db", db, "--role", "auditor"])
    assert TokenVerifier(load_secret(db)).verify(first, time.time()).role == "admin"


def test_secret_from_environment_and_from_file(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'trail.db'}"
    env_token = CliRunner(env={"TASKTRAIL_SECRET": "from-the-environment-123"}).invoke(
        cli, ["token", "--db", db, "--role", "admin"]
    )
    assert TokenVerifier(b"from-the-environment-123").verify(env_token.output.strip(), time.time())
    assert not (tmp_path / "trail.db.secret").exists()
    secret_file = tmp_path / "kept.secret"
    secret_file.write_text("from-a-file-of-my-own-456\n")
    # The file given on the command line wins over the environment.
    file_token = CliRunner(env={"TASKTRAIL_SECRET": "from-the-environment-123"}).invoke(
        cli, ["token", "--db", db, "--role", "admin", "--secret-file", str(secret_file)]
    )
    assert TokenVerifier(b"from-a-file-of-my-own-456").verify(
        file_token.output.strip(), time.time()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "task", "--dag", "d"], "needs --dag, --run and --task"),
        (["--role", "admin", "--dag", "d"], "names no task instance"),
        (["--role", "admin", "--ttl", "soon"], "cannot read 'soon' as a duration"),
        (["--role", "root"], "Invalid value for '--role'"),
    ],
)
def test_token_rejects_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    done = CliRunner(env={"TASKTRAIL_SECRET": "x" * 20}).invoke(
        cli, ["token", "--db", f"sqlite:///{tmp_path / 't.db'}", *args]
    )
    assert done.exit_code == 2
    assert message in done.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
async def test_serve_finishes_in_flight_writes_on_sigterm(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'trail.db'}"
    port = _free_port()
    env = {**os.environ, "TASKTRAIL_SECRET": "serve-test-secret-0123"}
    server = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "eventstore", "serve", "--db", db, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        token = CliRunner(env=env).invoke(cli, ["token", "--db", db, "--role", "admin"]).output
        url = f"http://127.0.0.1:{port}"
        acknowledged: list[str] = []
        some_acknowledged = asyncio.Event()
        async with connect(url, token=token.strip(), retries=0) as remote:
            for _ in range(300):
                try:
                    await remote.health()
                    break
                except ServiceError:
                    await asyncio.sleep(0.05)
            ts = remote.task_store("d", "r", "t")

            async def write(n: int) -> None:
                try:
                    await ts.set(f"k{n}", n)
                except ServiceError:
                    return
                acknowledged.append(f"k{n}")
                if len(acknowledged) == 20:
                    some_acknowledged.set()

            writes = [asyncio.create_task(write(n)) for n in range(400)]
            await some_acknowledged.wait()
            server.send_signal(signal.SIGTERM)
            stopped_at = len(acknowledged)
            await asyncio.gather(*writes)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert await asyncio.wait_for(server.wait(), 30) in (0, -signal.SIGTERM)
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    assert len(acknowledged) > stopped_at  # writes in flight at the signal were finished
    async with open_store(db) as store:
        kept = await store.task_store("d", "r", "t").items()
        assert set(acknowledged) <= set(kept)
        assert (await store.verify()).ok
