"""Erasures through one running service leave no erased value in the SQLite file or its WAL."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore import StoreConfig, generate_master_key
from eventstore.service import create_app, serve_in_thread
from service.service_helpers import SECRET, FakeClock, Service, task_path

MARKER = "quokka-ledger-5521"


def files_holding(folder: Path, needle: str) -> list[str]:
    return sorted(
        p.name for p in folder.iterdir() if p.is_file() and needle.encode() in p.read_bytes()
    )


@pytest.mark.parametrize("keys", ["plain", "encrypted"])
def test_three_erasures_through_one_service_each_leave_no_value_in_the_files(
    tmp_path: Path, keys: str
) -> None:
    config = StoreConfig(master_keys=(generate_master_key(),) if keys == "encrypted" else ())
    app = create_app(f"sqlite:///{tmp_path / 'trail.db'}", secret=SECRET, config=config)
    with serve_in_thread(app) as base_url:
        service = Service(base_url, FakeClock())
        admin = service.token("admin")
        dags = [f"dag{n}" for n in range(3)]
        for n, dag in enumerate(dags):
            token = service.task_token(dag)
            for i in range(10):
                put = service.call(
                    "PUT", task_path(dag, f"k{i}"), {"value": f"{MARKER}-s{n}-v{i}"}, token=token
                )
                assert put.status in (200, 201), put
        for n, dag in enumerate(dags):
            erased = service.call(
                "POST", task_path(dag).replace("/store", "/store:erase"), token=admin
            )
            assert erased.status == 200, erased
            for i in range(10):
                assert files_holding(tmp_path, f"{MARKER}-s{n}-v{i}") == [], (n, i)
            if keys == "plain" and n < 2:
                assert files_holding(tmp_path, f"{MARKER}-s{n + 1}-v0") == ["trail.db"]
