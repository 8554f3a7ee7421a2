"""The ``custodia`` command line (API.md "Command line").

Every command reads the same settings as the server. Bad configuration ends the command
with exit code 2 and one line on stderr, never a traceback; commands that create
something accept ``--json`` and then print exactly one JSON object on stdout.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
import msgspec
from sqlalchemy.exc import OperationalError

from custodia import __version__
from custodia.core import migrate
from custodia.core.clock import SystemClock
from custodia.core.db import Database, describe_url
from custodia.core.errors import ConfigError
from custodia.core.keys import generate_key_file, load_keys, write_key_file
from custodia.core.logging import configure_logging
from custodia.core.settings import Settings, load_settings

P = ParamSpec("P")
R = TypeVar("R")

EXIT_CONFIG = 2


def _fail(message: str) -> NoReturn:
    click.echo(f"custodia: error: {message}", err=True)
    sys.exit(EXIT_CONFIG)


def _config_errors_exit_2(command: Callable[P, R]) -> Callable[P, R]:
    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            _fail(str(exc))
        except OperationalError as exc:
            first_line = str(exc.orig or exc).strip().splitlines()[0]
            _fail(f"cannot use the database: {first_line}")

    return wrapper


def _settings() -> Settings:
    settings = load_settings()
    configure_logging(settings, stream=sys.stderr)
    return settings


def _print_json(obj: Any) -> None:
    click.echo(msgspec.json.encode(obj).decode())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Custodia: compliant payment accounts and customer identity."""


@cli.command()
def version() -> None:
    """Print the version."""
    click.echo(__version__)


# --------------------------------------------------------------------------- serve / worker


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes."
)
@_config_errors_exit_2
def serve(host: str, port: int, workers: int) -> None:
    """Serve the API and the console (in development, with the workers in-process)."""
    import uvicorn  # noqa: PLC0415 - only this command needs the server

    settings = _settings()
    load_keys(settings)
    Database.from_settings(settings).dispose()  # validates the URL before forking workers
    uvicorn.run(
        "custodia.api.asgi:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
    )


@cli.command()
@_config_errors_exit_2
def worker() -> None:
    """Run the background consumers and scheduled jobs until SIGINT or SIGTERM."""
    from custodia.api.runtime import Runtime  # noqa: PLC0415

    settings = _settings()
    runtime = Runtime.build(settings)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        runtime.worker(stop).run_forever()
    finally:
        runtime.close()


# --------------------------------------------------------------------------- db


@cli.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@_config_errors_exit_2
def db_upgrade() -> None:
    """Apply every migration up to the head."""
    settings = _settings()
    database = Database.from_settings(settings)
    try:
        migrate.upgrade(database.engine)
        with database.engine.connect() as connection:
            current = ", ".join(sorted(migrate.current_revisions(connection)))
    finally:
        database.dispose()
    click.echo(f"database {describe_url(settings.resolved_database_url)} is at {current}")


@db.command("current")
@_config_errors_exit_2
def db_current() -> None:
    """Print the database's revision and whether it is at the head (exit 1 if not)."""
    settings = _settings()
    database = Database.from_settings(settings)
    try:
        with database.engine.connect() as connection:
            current = migrate.current_revisions(connection)
    finally:
        database.dispose()
    heads = migrate.head_revisions()
    shown = ", ".join(sorted(current)) or "empty (no migrations applied)"
    state = "at head" if current == heads else f"not at head ({', '.join(sorted(heads))})"
    click.echo(f"{shown} — {state}")
    if current != heads:
        sys.exit(1)


# --------------------------------------------------------------------------- keys


@cli.group()
def keys() -> None:
    """Key management."""


@keys.command("init")
@click.option("--if-missing", is_flag=True, help="Do nothing if the key file exists.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_config_errors_exit_2
def keys_init(if_missing: bool, as_json: bool) -> None:
    """Create a key file with fresh keys for every purpose (mode 0600)."""
    settings = _settings()
    if settings.keys_json:
        raise ConfigError("CUSTODIA_KEYS_JSON is set: keys come from the environment, not a file")
    path = settings.resolved_keys_file
    created = not path.exists()
    if not created and not if_missing:
        raise ConfigError(f"{path} already exists; refusing to overwrite keys")
    if created:
        write_key_file(path, generate_key_file(settings.env, SystemClock().now()))
    if as_json:
        _print_json({"path": str(path), "environment": settings.env.value, "created": created})
    elif created:
        click.echo(f"created {settings.env.value} keys in {path}")
    else:
        click.echo(f"keys already present in {path}")


# --------------------------------------------------------------------------- outbox


@cli.group()
def outbox() -> None:
    """Inspect and requeue outbox events."""


@outbox.command("status")
@_config_errors_exit_2
def outbox_status() -> None:
    """Print how many events wait, how many are dead, and the oldest waiting event's age."""
    from custodia.core.outbox import backlog  # noqa: PLC0415

    settings = _settings()
    database = Database.from_settings(settings)
    try:
        state = database.run(lambda s: backlog(s, SystemClock().now()), read_only=True)
    finally:
        database.dispose()
    _print_json(state)


@outbox.command("list")
@click.option(
    "--status", type=click.Choice(["dead", "pending", "done"]), default="dead", show_default=True
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@_config_errors_exit_2
def outbox_list(status: str, limit: int) -> None:
    """Print events in STATUS as JSON lines, oldest first, with their last error."""
    from custodia.core.outbox import list_events  # noqa: PLC0415

    settings = _settings()
    database = Database.from_settings(settings)
    try:
        events = database.run(lambda s: list_events(s, status, limit=limit), read_only=True)
    finally:
        database.dispose()
    for event in events:
        _print_json(event)


@outbox.command("retry")
@click.argument("event_id", required=False)
@click.option("--all-dead", is_flag=True, help="Requeue every dead event.")
@_config_errors_exit_2
def outbox_retry(event_id: str | None, all_dead: bool) -> None:
    """Give a dead event (or, with --all-dead, every dead event) a fresh set of attempts."""
    from custodia.core.outbox import requeue_dead  # noqa: PLC0415

    if (event_id is not None) == all_dead:
        raise ConfigError("name one EVENT_ID or pass --all-dead")
    settings = _settings()
    database = Database.from_settings(settings)
    try:
        count = database.run(lambda s: requeue_dead(s, SystemClock().now(), event_id))
    finally:
        database.dispose()
    click.echo(f"requeued {count} event(s)")


def main() -> None:
    """Run the ``custodia`` console script."""
    try:
        cli.main(standalone_mode=True)
    except ConfigError as exc:  # raised while click parses, before a command runs
        _fail(str(exc))
