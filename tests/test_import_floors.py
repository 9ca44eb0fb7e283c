"""The import-linter contract in pyproject.toml: it holds on the code as it is, and it fails when a
change makes a floor import one above it or a face import a storage backend.

Each case lints a copy of the packages with one import added, so the contract is shown to catch
exactly the commits it exists to stop.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.slow


def copy_packages(tmp_path: Path) -> Path:
    skip = shutil.ignore_patterns("__pycache__", "*.js", "*.css", "*.html", "*.json")
    for package in ("eventstore", "projections"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the copy, ahead of the installed packages
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_code_keeps_the_contract(tmp_path: Path) -> None:
    done = lint(copy_packages(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 broken." in done.stdout


@pytest.mark.parametrize(
    ("module", "added", "contract"),
    [
        # The log importing what is computed from it.
        ("eventstore/log/events.py", "projections.history", "Floors"),
        # projections importing a face.
        ("projections/points.py", "eventstore.store", "Floors"),
        # The log importing a face.
        ("eventstore/log/values.py", "eventstore.cli", "Floors"),
        # A face opening a storage backend itself instead of going through the store.
        ("eventstore/cli/app.py", "eventstore.log.backends.sqlite", "Only the log opens"),
        # A face using the backend's interface: the store's types are the faces' types.
        ("eventstore/service/app.py", "eventstore.log.backends.base", "Faces speak store types"),
    ],
)
def test_an_import_against_the_floors_breaks_the_contract(
    tmp_path: Path, module: str, added: str, contract: str
) -> None:
    tree = copy_packages(tmp_path)
    path = tree / module
    path.write_text(path.read_text() + f"\nimport {added}  # noqa: E402, F401\n")
    done = lint(tree)
    assert done.returncode != 0, done.stdout
    dotted = module.removesuffix(".py").replace("/", ".")
    assert f"{dotted} -> {added}" in done.stdout
    assert re.search(rf"^{re.escape(contract)}.* BROKEN", done.stdout, re.MULTILINE)


def test_every_face_is_on_the_faces_floor() -> None:
    """A module added beside the others in eventstore/ is a face: the contracts must name it, or
    nothing would stop the log from importing it, or it from opening a backend."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    by_name = {contract["name"]: contract for contract in contracts["contracts"]}
    faces = {
        f"eventstore.{path.stem}"
        for path in (ROOT / "eventstore").iterdir()
        if path.name not in ("log", "__init__.py", "__pycache__")
        and (path.suffix == ".py" or (path / "__init__.py").is_file())
    }
    top_floor = {
        module.strip()
        for module in by_name["Floors: the faces, then projections, then the log"]["layers"][
            0
        ].split(":")
    }
    assert faces - top_floor == set()
    opening = set(by_name["Only the log opens a storage backend"]["source_modules"])
    assert faces - opening == set()
    holding = set(
        by_name["Faces speak store types: only the store holds the backend"]["source_modules"]
    )
    assert faces - holding == {"eventstore.store"}
