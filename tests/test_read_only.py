"""Read-only stores, read-only media and full disks: reading goes on, nothing is written, and every
failure is an EventStoreError naming the cause and the fix.

The media are real: a small tmpfs mounted for the test (as root; skipped where mounting is not
allowed), remounted read-only or filled up.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from eventstore import (
    NEVER_EXPIRE,
    ReadOnlyStoreError,
    StorageError,
    StoreConfig,
    TaskScope,
    generate_master_key,
    open_store,
)
from eventstore.cli import cli
from projections import At
from tests.conftest import FakeClock, postgres_schema_url

SCOPE = TaskScope("etl", "run_1", "ingest")
READ_ONLY = StoreConfig(read_only=True)


def digest(folder: Path) -> dict[str, str]:
    """Each file of the folder and the hash of its bytes."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()
    }


async def fill(url: str, config: StoreConfig, clock: FakeClock) -> None:
    async with open_store(url, config=config, clock=clock) as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=1)
        await ts.set("offset", 10, retention=NEVER_EXPIRE)
        await ts.set("job", "spark-1", retention=NEVER_EXPIRE)
        clock.advance()
        ts2 = store.task_store("etl", "run_1", "ingest", try_number=2)
        await ts2.set("offset", 20, retention=NEVER_EXPIRE)


async def check_reads(url: str, config: StoreConfig, clock: FakeClock) -> None:
    """Everything a reader does works on the store opened with `config`."""
    async with open_store(url, config=config, clock=clock) as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=3)
        assert await ts.items() == {"offset": 20, "job": "spark-1"}
        history = store.history(SCOPE)
        assert [e.value for e in await history.events()] == [10, "spark-1", 20]
        assert await history.state(At.end_of_try(1)) == {"offset": 10, "job": "spark-1"}
        assert [t.try_number for t in await history.tries()] == [1, 2]
        assert (await store.verify()).ok
        assert (await store.compact(dry_run=True)).keys_expired == 0


def encrypted() -> StoreConfig:
    return StoreConfig(master_keys=(generate_master_key(),))


@pytest.mark.parametrize("keys", ["plain", "encrypted"])
async def test_a_read_only_store_reads_everything_and_writes_nothing(
    tmp_path: Path, clock: FakeClock, keys: str
) -> None:
    config = encrypted() if keys == "encrypted" else StoreConfig()
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    await fill(url, config, clock)
    before = digest(tmp_path)
    read_only = StoreConfig(master_keys=config.master_keys, read_only=True)
    await check_reads(url, read_only, clock)
    after = digest(tmp_path)
    # The database and its key store are byte for byte as they were. SQLite makes the empty
    # -wal and the -shm index beside the file, as every reader of a WAL database does.
    assert {k: v for k, v in after.items() if not k.endswith(("-wal", "-shm"))} == before
    assert (tmp_path / "trail.db-wal").stat().st_size == 0


@pytest.mark.parametrize("keys", ["plain", "encrypted"])
async def test_every_write_to_a_read_only_store_names_read_only_mode_and_the_fix(
    tmp_path: Path, clock: FakeClock, keys: str
) -> None:
    config = encrypted() if keys == "encrypted" else StoreConfig()
    url = f"sqlite:///{tmp_path / 'trail.db'}"
    await fill(url, config, clock)
    read_only = StoreConfig(master_keys=config.master_keys, read_only=True)
    async with open_store(url, config=read_only, clock=clock) as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=3)
        fix = "open(ed)? .*read-only.*without read_only"
        with pytest.raises(ReadOnlyStoreError, match=fix):
            await ts.set("offset", 30)
        with pytest.raises(ReadOnlyStoreError, match=fix):
            await ts.delete("job")
        with pytest.raises(ReadOnlyStoreError, match=fix):
            await store.erase(SCOPE)
        with pytest.raises(ReadOnlyStoreError, match=fix):
            await store.compact()
        with pytest.raises(ReadOnlyStoreError, match=fix):
            await store.rebuild()
        # Below the store too: the backend has no way to write.
        with pytest.raises(ReadOnlyStoreError, match="read-only: nothing was written"):
            async with store.backend.write():
                pass
        assert await ts.items() == {"offset": 20, "job": "spark-1"}


async def test_read_only_open_of_a_missing_file_makes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none' / 'trail.db'}"
    with pytest.raises(StorageError, match=r"no SQLite file .* to open read-only"):
        async with open_store(url, config=READ_ONLY):
            pass
    assert not (tmp_path / "none").exists()


async def test_a_postgres_store_opened_read_only_is_refused_writes_by_the_server(
    clock: FakeClock,
) -> None:
    with postgres_schema_url() as url:
        await fill(url, StoreConfig(), clock)
        await check_reads(url, READ_ONLY, clock)
        async with open_store(url, config=READ_ONLY, clock=clock) as store:
            with pytest.raises(ReadOnlyStoreError, match="read-only"):
                await store.task_store("etl", "run_1", "ingest").set("offset", 30)
            # The session itself is read-only: the server refuses what the store lets through.
            with pytest.raises(ReadOnlyStoreError, match="cannot be written"):
                async with store.backend.write() as tx:
                    await tx.delete_current([(1, "offset")])
            assert await store.task_store("etl", "run_1", "ingest").get("offset") == 20


# -- real media -----------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of its own, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    folder = tmp_path / "disk"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2M,mode=0777", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def remount_read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


def fill_disk(filler: Path) -> Path:
    """Fill the file system with the file `filler` to the last byte; returns it."""
    folder = filler.parent
    with filler.open("wb", buffering=0) as file:
        try:
            while True:
                file.write(b"\0" * 4096)
        except OSError:
            pass
    with filler.open("ab", buffering=0) as file:
        try:
            while True:
                file.write(b"\0")
        except OSError:
            pass
    assert os.statvfs(folder).f_bavail == 0
    return filler


@pytest.mark.parametrize("keys", ["plain", "encrypted"])
async def test_a_store_on_a_read_only_mount_opens_read_only_and_names_the_fix_otherwise(
    small_disk: Path, clock: FakeClock, keys: str
) -> None:
    config = encrypted() if keys == "encrypted" else StoreConfig()
    url = f"sqlite:///{small_disk / 'trail.db'}"
    await fill(url, config, clock)
    remount_read_only(small_disk)
    with pytest.raises(ReadOnlyStoreError, match=r"read-only file system.*read_only=True"):
        async with open_store(url, config=config, clock=clock):
            pass
    await check_reads(url, StoreConfig(master_keys=config.master_keys, read_only=True), clock)


async def test_on_a_full_disk_reads_work_and_a_write_fails_with_nothing_lost(
    small_disk: Path, clock: FakeClock
) -> None:
    url = f"sqlite:///{small_disk / 'trail.db'}"
    await fill(url, StoreConfig(), clock)
    async with open_store(url, clock=clock) as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=2)
        filler = fill_disk(small_disk / "filler")
        with pytest.raises(StorageError, match=r"disk holding it is full.*nothing was written"):
            await ts.set_many({f"big{n}": "x" * 60_000 for n in range(8)})
        assert await ts.items() == {"offset": 20, "job": "spark-1"}
    # Closing removed the WAL and gave its space back: fill that too. Opened again on the full
    # disk: for writing it cannot be (SQLite cannot make its -shm index), read-only it can.
    more = fill_disk(small_disk / "more")
    with pytest.raises(StorageError, match="disk holding it is full") as raised:
        async with open_store(url, clock=clock):
            pass
    assert raised.value.cause == "full"
    await check_reads(url, READ_ONLY, clock)
    filler.unlink()
    more.unlink()
    async with open_store(url, clock=clock) as store:
        ts = store.task_store("etl", "run_1", "ingest", try_number=2)
        await ts.set("after", 1)
        assert await ts.items() == {"offset": 20, "job": "spark-1", "after": 1}
        assert (await store.verify()).ok


def test_cli_reads_a_store_on_a_read_only_mount_and_refuses_writes_with_their_exit_code(
    small_disk: Path, clock: FakeClock
) -> None:
    import anyio

    url = f"sqlite:///{small_disk / 'trail.db'}"
    anyio.run(fill, url, StoreConfig(), clock)
    remount_read_only(small_disk)
    runner = CliRunner()
    scope = ["--dag", "etl", "--run", "run_1", "--task", "ingest"]
    verified = runner.invoke(cli, ["verify", "--db", url, "--json"])
    assert verified.exit_code == 0, verified.output
    assert "reading it read-only" in verified.stderr
    assert '"ok": true' in verified.stdout
    shown = runner.invoke(cli, ["history", "--db", url, "--read-only", *scope, "--json"])
    assert shown.exit_code == 0, shown.output
    assert "spark-1" in shown.stdout
    assert shown.stderr == ""
    state = runner.invoke(cli, ["as-of", "--db", url, *scope, "--end-of-try", "1", "--json"])
    assert state.exit_code == 0, state.output
    compacted = runner.invoke(cli, ["compact", "--db", url])
    assert compacted.exit_code == 10, compacted.output
    assert "read-only file system" in compacted.stderr
    assert "--read-only" in compacted.stderr


def test_cli_verify_works_on_a_full_disk(small_disk: Path, clock: FakeClock) -> None:
    import anyio

    url = f"sqlite:///{small_disk / 'trail.db'}"
    anyio.run(fill, url, StoreConfig(), clock)
    fill_disk(small_disk / "filler")
    verified = CliRunner().invoke(cli, ["verify", "--db", url, "--json"])
    assert verified.exit_code == 0, verified.output
    assert "full" in verified.stderr
    assert '"ok": true' in verified.stdout


def test_serve_on_a_read_only_mount_without_read_only_exits_with_the_fix(
    small_disk: Path, clock: FakeClock
) -> None:
    import anyio

    url = f"sqlite:///{small_disk / 'trail.db'}"
    anyio.run(fill, url, StoreConfig(), clock)
    remount_read_only(small_disk)
    done = subprocess.run(
        [sys.executable, "-m", "eventstore", "serve", "--db", url, "--port", "1"],
        # No secret given: none may be made on the read-only mount before the store is checked.
        env={k: v for k, v in os.environ.items() if k != "TASKTRAIL_SECRET"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 10, done.stderr
    assert "--read-only" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_read_only_needs_a_secret_it_does_not_have_to_make(
    tmp_path: Path, clock: FakeClock
) -> None:
    import anyio

    url = f"sqlite:///{tmp_path / 'trail.db'}"
    anyio.run(fill, url, StoreConfig(), clock)
    before = digest(tmp_path)
    done = CliRunner(env={"TASKTRAIL_SECRET": None}).invoke(
        cli, ["serve", "--db", url, "--read-only"]
    )
    assert done.exit_code == 1
    assert "makes no file" in done.output
    assert not (tmp_path / "trail.db.secret").exists()
    assert digest(tmp_path)["trail.db"] == before["trail.db"]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_read_only_answers_reads_and_refuses_writes_with_503(
    small_disk: Path, clock: FakeClock
) -> None:
    import http.client
    import json
    import time

    import anyio

    url = f"sqlite:///{small_disk / 'trail.db'}"
    anyio.run(fill, url, StoreConfig(), clock)
    remount_read_only(small_disk)
    secret = "serve-test-secret-0123"
    made = CliRunner(env={"TASKTRAIL_SECRET": secret}).invoke(
        cli, ["token", "--db", url, "--role", "admin"]
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    port = _free_port()
    log = (small_disk.parent / "serve.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eventstore",
            "serve",
            "--db",
            url,
            "--port",
            str(port),
            "--read-only",
        ],
        env={**os.environ, "TASKTRAIL_SECRET": secret},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )

    def call(method: str, path: str, body: object = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            conn.request(method, path, body=data, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.read()
        finally:
            conn.close()

    try:
        for _ in range(600):  # until it listens (or has stopped)
            try:
                if call("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                assert server.poll() is None, (small_disk.parent / "serve.log").read_text()
                time.sleep(0.05)
        base = "/api/v1/tasks/etl/run_1/ingest/-1/store"
        status, body = call("GET", f"{base}/offset")
        assert status == 200, body
        assert json.loads(body)["value"] == 20
        status, body = call("GET", "/api/v1/tasks/etl/run_1/ingest/-1/history")
        assert status == 200, body
        assert call("GET", "/ui/")[0] == 200
        status, body = call("PUT", f"{base}/offset", {"value": 30})
        assert status == 503, body
        answer = json.loads(body)
        assert answer["reason"] == "read_only"
        assert "read-only" in answer["message"]
        status, body = call("DELETE", f"{base}/offset")
        assert (status, json.loads(body)["reason"]) == (503, "read_only")
        status, body = call("GET", f"{base}/offset")
        assert json.loads(body)["value"] == 20
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.mark.parametrize("read_only", [False, True])
async def test_a_file_that_is_not_a_database_is_a_storage_error_naming_it(
    tmp_path: Path, read_only: bool
) -> None:
    path = tmp_path / "trail.db"
    path.write_bytes(b"not a database, " * 512)
    with pytest.raises(StorageError, match=r"trail\.db is damaged or not a database") as raised:
        async with open_store(f"sqlite:///{path}", config=StoreConfig(read_only=read_only)):
            pass
    assert raised.value.cause == "damaged"
    assert path.read_bytes() == b"not a database, " * 512


_PROBE = """
import asyncio, sys
from eventstore import EventStoreError, StoreConfig, open_store

async def main(url):
    for config in (StoreConfig(), StoreConfig(read_only=True)):
        try:
            async with open_store(url, config=config) as store:
                items = await store.task_store("etl", "run_1", "ingest").items()
                print("read", sorted(items.items()))
        except EventStoreError as error:
            print(type(error).__name__, error)

asyncio.run(main(sys.argv[1]))
"""


@pytest.fixture
def as_nobody(tmp_path: Path) -> Iterator[tuple[list[str], Path]]:
    """A command prefix that runs Python as the unprivileged user `nobody` (root bypasses file
    modes), with this tasktrail importable, and a folder that user can reach.

    The probe keeps one capability, CAP_DAC_READ_SEARCH: it reads this checkout and its venv
    wherever they are (a CI clone may sit in a folder only root may enter), while writes still
    obey file modes, which is what the tests are about."""
    import shutil
    import sysconfig
    import tempfile

    system_python = Path("/usr/bin/python3")
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None or not system_python.exists():
        pytest.skip("needs root, setpriv and /usr/bin/python3 to run a probe as nobody")
    version = subprocess.run(
        [str(system_python), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if version != str(sys.version_info[:2]):
        pytest.skip(f"/usr/bin/python3 is {version}, not this interpreter's version")
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join([sysconfig.get_paths()["purelib"], str(root)])
    folder = Path(tempfile.mkdtemp(prefix="tasktrail-nobody-"))
    folder.chmod(0o755)
    try:
        yield (
            [
                setpriv,
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=+dac_read_search",
                "--ambient-caps=+dac_read_search",
                "env",
                f"PYTHONPATH={path}",
                str(system_python),
                "-c",
                _PROBE,
            ],
            folder,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_0444_file_names_the_cause_and_the_fix_and_opens_read_only(
    as_nobody: tuple[list[str], Path], clock: FakeClock
) -> None:
    import anyio

    probe, folder = as_nobody
    db = folder / "trail.db"
    anyio.run(fill, f"sqlite:///{db}", StoreConfig(), clock)
    db.chmod(0o444)
    before = db.read_bytes()
    done = subprocess.run(
        [*probe, f"sqlite:///{db}"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    refused, read = done.stdout.splitlines()
    assert refused.startswith("ReadOnlyStoreError")
    assert "the file is read-only (mode 444)" in refused
    assert "StoreConfig(read_only=True)" in refused
    assert read == "read [('job', 'spark-1'), ('offset', 20)]"
    assert db.read_bytes() == before
