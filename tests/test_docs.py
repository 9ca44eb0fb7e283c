"""Every ```python block in the README and docs/ runs, in order, in a scratch directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md")])
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text())


@pytest.mark.parametrize(
    "doc", [d for d in DOCS if python_blocks(d)], ids=lambda d: str(d.relative_to(ROOT))
)
def test_python_blocks_in_docs_run(doc: Path, tmp_path: Path) -> None:
    for number, block in enumerate(python_blocks(doc), start=1):
        script = tmp_path / f"block_{number}.py"
        script.write_text(block)
        done = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{doc.name} block {number} failed:\n{done.stderr}"


def test_docs_have_python_blocks_to_run() -> None:
    assert python_blocks(ROOT / "docs" / "tutorial.md")
