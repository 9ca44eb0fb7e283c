"""The `tasktrail` command line: one click group, commands in one module per concern."""

from eventstore.cli.app import cli, main

# Importing a command module registers its commands with the group.
from eventstore.cli import maintenance  # noqa: E402,F401,I001

__all__ = ["cli", "main"]
