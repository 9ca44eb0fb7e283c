"""The `tasktrail` command line: one click group, commands in one module per concern."""

# Importing a command module registers its commands with the group.
from eventstore.cli import (  # noqa: F401
    bench,
    history,
    live,
    maintenance,
    secrets,
    service,
)
from eventstore.cli.app import cli, main

__all__ = ["cli", "main"]
