"""The benchmark runs end to end (its figures are not checked here: timing belongs in scripts/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_cli import BenchSizes, memory_check, print_memory, print_report, run_bench
from click.testing import CliRunner
from rich.console import Console

from eventstore.cli import cli


@pytest.mark.slow
def test_bench_measures_every_workload(tmp_path: Path) -> None:
    sizes = BenchSizes(batched=400, serial=20, gets=50, tasks=10)
    result = run_bench(sizes, str(tmp_path), rounds=2)
    expected = {"raw_1", "raw_100", "kv_100", "tt_1", "tt_10", "tt_100"}
    assert expected <= set(result.throughput)
    assert all(m.writes > 0 and m.seconds > 0 for m in result.throughput.values())
    assert len(result.latency["tt_get"].samples_ns) == 50
    assert len(result.latency["raw_get"].samples_ns) == 50
    console = Console(record=True, width=120)
    print_report(result, console)
    text = console.export_text()
    assert "tasktrail set, 100 writers" in text
    assert "get p50 / raw point select p50" in text
    assert list(tmp_path.iterdir()) == []  # its files are removed


def test_memory_check_reports_peak_growth(tmp_path: Path) -> None:
    result = memory_check(writes=300, writers=10, directory=str(tmp_path))
    assert result.writes == 300
    assert result.peak_kib >= result.baseline_kib > 0
    console = Console(record=True, width=120)
    assert print_memory(result, console) is (result.growth_mib < 100)
    assert "growth MiB" in console.export_text()


def test_bench_command_runs_the_memory_check(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(cli, ["bench", "--memory", "200", "--dir", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    assert "peak MiB" in outcome.output


def test_bench_command_profiles_the_writers(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(
        cli, ["bench", "--profile", "--scale", "0.02", "--dir", str(tmp_path)]
    )
    assert outcome.exit_code == 0, outcome.output
    assert "where the time goes" in outcome.output
    assert "planning: checks, versions, event rows" in outcome.output
