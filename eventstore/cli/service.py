"""serve and token: running the HTTP service and making the tokens it checks."""

from __future__ import annotations

import click

from eventstore.cli.app import archive_option, cli, db_option, err_console

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
def serve(
    db: str,
    archive: str | None,
    host: str,
    port: int,
    secret_file: str | None,
    compact_every: float,
) -> None:
    """Run the HTTP service until SIGINT/SIGTERM, then finish in-flight writes and stop."""
    try:
        from eventstore.service.app import create_app
        from eventstore.service.app import serve as run_server
    except ImportError as error:
        raise click.ClickException(
            f"the service needs its extra: pip install 'tasktrail[service]' ({error})"
        ) from None
    secret = _secret(db, secret_file)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(
            f"[yellow]warning:[/] listening on {host}: anyone who can reach it and holds a "
            "token can use the store; put TLS in front of it"
        )
    from eventstore.config import StoreConfig
    from eventstore.errors import ConfigError

    try:
        config = StoreConfig(archive_url=archive)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    run_server(
        create_app(db, secret=secret, config=config, compact_every=compact_every), host, port
    )


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
def token(
    db: str,
    role: str,
    dag: str | None,
    run: str | None,
    task: str | None,
    map_index: int,
    try_number: int | None,
    ttl: str,
    name: str,
    secret_file: str | None,
) -> None:
    """Print a bearer token signed with the service's secret."""
    from eventstore.service.auth import make_token, parse_ttl

    secret = _secret(db, secret_file)
    try:
        made = make_token(
            secret,
            role,  # type: ignore[arg-type]
            ttl=parse_ttl(ttl),
            name=name,
            dag=dag,
            run=run,
            task=task,
            map_index=map_index,
            try_number=try_number,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    click.echo(made)


def _secret(db: str, secret_file: str | None) -> bytes:
    from eventstore.errors import ConfigError
    from eventstore.service.auth import load_secret

    try:
        return load_secret(db, secret_file)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
