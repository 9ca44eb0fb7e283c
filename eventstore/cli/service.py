"""serve and token: running the HTTP service and making the tokens it checks."""

from __future__ import annotations

import os
from typing import Any

import click

from eventstore.cli.app import archive_option, cli, db_option, err_console, run
from eventstore.log.config import StoreConfig
from eventstore.log.errors import ConfigError
from eventstore.store import open_store

_secret_option = click.option(
    "--secret-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="File holding the token-signing secret. Without it: $TASKTRAIL_SECRET, else a secret "
    "made and kept beside the database (PATH.secret, mode 0600).",
)


@cli.command()
@db_option
@archive_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8750, show_default=True, type=int, help="Port to listen on.")
@_secret_option
@click.option(
    "--compact-every",
    type=click.FloatRange(min=0),
    default=3600,
    show_default=True,
    envvar="TASKTRAIL_COMPACT_EVERY",
    show_envvar=True,
    metavar="SECONDS",
    help="Compact the store every SECONDS (expired keys leave the log); 0: never by itself.",
)
@click.option(
    "--read-only",
    "read_only",
    is_flag=True,
    help="Serve the store without writing anything: reads, history and the web page work, "
    "writes answer 503 (reason read_only), no compaction runs and no secret file is made.",
)
def serve(
    db: str,
    archive: str | None,
    host: str,
    port: int,
    secret_file: str | None,
    compact_every: float,
    read_only: bool,
) -> None:
    """Run the HTTP service until SIGINT/SIGTERM, then finish in-flight writes and stop."""
    try:
        from eventstore.service.app import create_app
        from eventstore.service.app import serve as run_server
        from eventstore.service.auth import SECRET_ENV, secret_path_for
    except ImportError as error:
        raise click.ClickException(
            f"the service needs its extra: pip install 'tasktrail[service]' ({error})"
        ) from None
    try:
        config = StoreConfig(read_only=read_only, archive_url=archive)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None

    async def can_open() -> None:
        # Opened once here, so a store that cannot be opened (read-only, full disk, wrong URL)
        # is an error message and an exit code from the one table, not a startup traceback.
        async with open_store(db, config=config):
            pass

    # First: before a secret is made beside a database that cannot be written.
    run(can_open)
    if read_only and secret_file is None and not os.environ.get(SECRET_ENV):
        kept = secret_path_for(db)
        if not kept.is_file():
            raise click.ClickException(
                f"serve --read-only makes no file, and there is no kept secret at {kept}: set "
                f"{SECRET_ENV} or pass --secret-file"
            )
    secret = _secret(db, secret_file)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(
            f"[yellow]warning:[/] listening on {host}: anyone who can reach it and holds a "
            "token can use the store; put TLS in front of it"
        )
    app = create_app(
        db, secret=secret, config=config, compact_every=0 if read_only else compact_every
    )
    run_server(app, host, port)


@cli.command()
@db_option
@click.option(
    "--role",
    type=click.Choice(["task", "auditor", "admin"]),
    required=True,
    help="task: one task instance; auditor: read everything; admin: everything.",
)
@click.option("--dag", default=None, help="The task token's DAG id.")
@click.option("--run", default=None, help="The task token's run id.")
@click.option("--task", default=None, help="The task token's task id.")
@click.option("--map-index", default=-1, show_default=True, type=int, help="Its map index.")
@click.option("--try", "try_number", default=None, type=int, help="The try its writes carry.")
@click.option("--ttl", default="24h", show_default=True, help="Lifetime: 3600, 30m, 12h, 7d.")
@click.option("--name", default="", help="Who the token is for; admin writes record api:NAME.")
@_secret_option
def token(db: str, ttl: str, secret_file: str | None, **claims: Any) -> None:
    """Print a bearer token signed with the service's secret."""
    from eventstore.service.auth import make_token, parse_ttl

    secret = _secret(db, secret_file)
    try:
        # The options --role, --dag, --run, --task, --map-index, --try and --name are named
        # as make_token's claims.
        made = make_token(secret, ttl=parse_ttl(ttl), **claims)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    click.echo(made)


def _secret(db: str, secret_file: str | None) -> bytes:
    from eventstore.log.errors import ConfigError
    from eventstore.service.auth import load_secret

    try:
        return load_secret(db, secret_file)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
