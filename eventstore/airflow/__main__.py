"""`python -m eventstore.airflow mirror [--repair] [--json]`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import msgspec

from eventstore.airflow.backend import TasktrailBackend

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m eventstore.airflow mirror [--repair] [--json]`, with Airflow's configuration:
    check Airflow's tables against tasktrail's projection, and with --repair make them equal.
    Exit status 0 when they agree (or were repaired), 1 when they differ."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m eventstore.airflow")
    commands = parser.add_subparsers(dest="command", required=True)
    mirror = commands.add_parser("mirror", help="check (and repair) Airflow's tables")
    mirror.add_argument("--repair", action="store_true", help="make the mirror equal")
    mirror.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = TasktrailBackend().check_mirror(repair=args.repair)
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        print(f"{report.rows_checked} rows in Airflow's tables checked")
        for name in ("missing", "stale", "extra"):
            for place in getattr(report, name):
                print(f"  {name}: {place}")
        if report.ok:
            print("the mirror matches tasktrail's projection")
        elif report.repaired:
            print("repaired: the mirror now matches tasktrail's projection")
    return 0 if report.ok or report.repaired else 1


if __name__ == "__main__":
    sys.exit(main())
