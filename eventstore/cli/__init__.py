"""The `tasktrail` command line: one click group, commands in one module per concern."""

# Importing a command module registers its commands with the group.
from eventstore.cli import bench, compaction, history, maintenance, secrets, service  # noqa: F401
from eventstore.cli.app import cli, main

__all__ = ["cli", "main"]
