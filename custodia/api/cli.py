"""The ``custodia`` command line (API.md "Command line").

Every command reads the same settings as the server. Bad configuration ends the command
with exit code 2 and one line on stderr, never a traceback; commands that create
something accept ``--json`` and then print exactly one JSON object on stdout.
"""

from __future__ import annotations

import dataclasses
import getpass
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click
import msgspec
from sqlalchemy.exc import OperationalError

from custodia import __version__
from custodia.core import migrate
from custodia.core.clock import SystemClock
from custodia.core.db import Database, describe_url
from custodia.core.errors import ConfigError, DomainError
from custodia.core.ids import IdPrefix
from custodia.core.keys import (
    KeyPurpose,
    generate_key_file,
    load_keys,
    replace_key_file,
    rotate,
    write_key_file,
)
from custodia.core.logging import configure_logging, get_logger
from custodia.core.settings import Settings, load_settings

if TYPE_CHECKING:
    from custodia.api.runtime import Runtime
    from custodia.core.actors import Context

P = ParamSpec("P")
R = TypeVar("R")

_log = get_logger("custodia.security")

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
        except DomainError as exc:
            _fail(f"{exc.detail} ({exc.code})")
        except OperationalError as exc:
            first_line = str(exc.orig or exc).strip().splitlines()[0]
            _fail(f"cannot use the database: {first_line}")

    return wrapper


def _settings(*, service: bool = False) -> Settings:
    """Load the settings and route logs to stderr.

    One-shot commands log warnings and errors only, so that stderr holds just the one line
    of a failure; ``serve`` and ``worker`` (``service``) log at the configured level.
    """
    settings = load_settings()
    shown = settings
    if not service and settings.log_level.upper() in {"DEBUG", "INFO"}:
        shown = msgspec.structs.replace(settings, log_level="WARNING")
    configure_logging(shown, stream=sys.stderr)
    return settings


def _print_json(obj: Any) -> None:
    click.echo(msgspec.json.encode(obj).decode())


@contextmanager
def _runtime() -> Iterator[Runtime]:
    """Yield the runtime of the configured settings (database and keys), closed after."""
    from custodia.api.runtime import Runtime  # noqa: PLC0415 - heavy, not every command needs it

    runtime = Runtime.build(_settings())
    try:
        yield runtime
    finally:
        runtime.close()


def _cli_context(runtime: Runtime) -> Context:
    """Return the context of an operator's command: the OS user is the actor."""
    from custodia.core.actors import Actor, ActorKind, Context  # noqa: PLC0415

    return Context(
        actor=Actor(ActorKind.CLI, getpass.getuser()),
        now=runtime.clock.now(),
        request_id=runtime.ids.new(IdPrefix.REQUEST),
    )


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

    settings = _settings(service=True)
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

    settings = _settings(service=True)
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


@keys.command("rotate")
@click.option(
    "--purpose",
    "purposes",
    type=click.Choice([p.value for p in KeyPurpose]),
    multiple=True,
    default=[KeyPurpose.PII.value],
    show_default=True,
    help="Which ring gets a new primary key (repeat for several).",
)
@_config_errors_exit_2
def keys_rotate(purposes: tuple[str, ...]) -> None:
    """Add a new primary key to a ring; older keys stay so that old data still opens.

    Restart the servers and workers afterwards, then run `keys reencrypt` (pii) or
    `keys reindex` (index) to move the stored data to the new key.
    """
    settings = _settings()
    if settings.keys_json:
        raise ConfigError(
            "CUSTODIA_KEYS_JSON is set: rotate the key file it is made from "
            "(CUSTODIA_KEYS_FILE=… custodia keys rotate) and update the variable"
        )
    path = settings.resolved_keys_file
    key_file = load_keys(settings)
    for purpose in purposes:
        key_file = rotate(key_file, KeyPurpose(purpose))
    replace_key_file(path, key_file)
    rotated = {purpose: key_file.primary_id(KeyPurpose(purpose)) for purpose in purposes}
    for purpose, new_id in rotated.items():
        _log.info("key_rotated", purpose=purpose, key_id=new_id)
        click.echo(f"{purpose}: new primary key {new_id} in {path}")
    from custodia.core import audit  # noqa: PLC0415

    with _runtime() as runtime:
        ctx = _cli_context(runtime)
        runtime.db.run(
            lambda s: audit.record(
                s, ctx, audit.AuditAction.KEYS_ROTATED, details={"new_primary": rotated}
            )
        )


def _walk_tables(
    runtime: Runtime,
    jobs: list[tuple[str, Callable[[Any, str | None], Any]]],
    *,
    action: Any,
    as_json: bool,
) -> None:
    from custodia.core import audit, vault  # noqa: PLC0415

    totals: dict[str, dict[str, int]] = {}
    for name, batch in jobs:

        def progress(result: vault.BatchResult, name: str = name) -> None:
            if not as_json and result.changed:
                click.echo(f"{name}: {result.changed} of {result.scanned} rows updated")

        scanned, changed = vault.run_batches(runtime.db, batch, progress=progress)
        totals[name] = {"scanned": scanned, "changed": changed}
    ctx = _cli_context(runtime)
    runtime.db.run(lambda s: audit.record(s, ctx, action, details={"columns": totals}))
    if as_json:
        _print_json(totals)
    else:
        for name, counts in totals.items():
            click.echo(f"{name}: {counts['changed']} changed, {counts['scanned']} scanned")


@keys.command("reencrypt")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=500, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_config_errors_exit_2
def keys_reencrypt(batch_size: int, as_json: bool) -> None:
    """Re-encrypt every personal field still under an older pii key (online, resumable)."""
    from custodia.api.runtime import pii_schema  # noqa: PLC0415
    from custodia.core.audit import AuditAction  # noqa: PLC0415
    from custodia.core.vault import reencrypt_batch  # noqa: PLC0415

    with _runtime() as runtime:
        jobs = [
            (
                f"{spec.table}.{spec.column}",
                partial_batch(reencrypt_batch, runtime.vault, spec, limit=batch_size),
            )
            for spec in pii_schema().encrypted
        ]
        _walk_tables(runtime, jobs, action=AuditAction.KEYS_REENCRYPTED, as_json=as_json)


@keys.command("reindex")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=500, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_config_errors_exit_2
def keys_reindex(batch_size: int, as_json: bool) -> None:
    """Recompute every blind index under the primary index key (online, resumable)."""
    from custodia.api.runtime import pii_schema  # noqa: PLC0415
    from custodia.core.audit import AuditAction  # noqa: PLC0415
    from custodia.core.vault import reindex_batch  # noqa: PLC0415

    with _runtime() as runtime:
        jobs = [
            (
                f"{spec.table}.{spec.column}",
                partial_batch(
                    reindex_batch, runtime.vault, runtime.blind_index, spec, limit=batch_size
                ),
            )
            for spec in pii_schema().indexes
        ]
        _walk_tables(runtime, jobs, action=AuditAction.KEYS_REINDEXED, as_json=as_json)


def partial_batch(
    function: Callable[..., Any], *args: Any, limit: int
) -> Callable[[Any, str | None], Any]:
    """Bind a maintenance batch function to its collaborators; the loop supplies the rest."""

    def batch(session: Any, after: str | None) -> Any:
        return function(session, *args, after=after, limit=limit)

    return batch


# --------------------------------------------------------------------------- clients


@cli.group()
def clients() -> None:
    """Manage the API keys of onboarding apps and merchants."""


@clients.command("create")
@click.option("--kind", type=click.Choice(["onboarding_app", "merchant"]), required=True)
@click.option("--name", required=True, help="Who the key is for.")
@click.option(
    "--merchant", "merchant_id", default=None, help="The merchant (mer_…) a key acts for."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: {id, key}.")
@_config_errors_exit_2
def clients_create(kind: str, name: str, merchant_id: str | None, as_json: bool) -> None:
    """Create an API client; its key is printed once and never stored in clear."""
    from custodia import access  # noqa: PLC0415
    from custodia.core.actors import Role  # noqa: PLC0415

    with _runtime() as runtime:
        ctx = _cli_context(runtime)
        created = runtime.db.run(
            lambda s: access.create_client(
                s,
                kind=Role(kind),
                name=name,
                merchant_id=merchant_id,
                environment=runtime.settings.env,
                ctx=ctx,
                ids=runtime.ids,
            )
        )
    if as_json:
        _print_json({"id": created.id, "key": created.key})
    else:
        click.echo(f"client {created.id}")
        click.echo(f"key    {created.key}")
        click.echo("The key is shown only now; store it in the client's secret store.")


@clients.command("list")
@_config_errors_exit_2
def clients_list() -> None:
    """Print every API client as JSON lines (never their keys)."""
    from custodia import access  # noqa: PLC0415

    with _runtime() as runtime:
        rows = runtime.db.run(access.list_clients, read_only=True)
    for row in rows:
        _print_json(row)


@clients.command("revoke")
@click.argument("client_id")
@_config_errors_exit_2
def clients_revoke(client_id: str) -> None:
    """Revoke CLIENT_ID's key; requests with it fail from now on."""
    from custodia import access  # noqa: PLC0415

    with _runtime() as runtime:
        ctx = _cli_context(runtime)
        view = runtime.db.run(lambda s: access.revoke_client(s, client_id, ctx=ctx))
    click.echo(f"revoked {view.id} at {view.revoked_at.isoformat() if view.revoked_at else '?'}")


# --------------------------------------------------------------------------- staff


@cli.group()
def staff() -> None:
    """Staff accounts."""


@staff.command("create")
@click.option("--username", required=True)
@click.option(
    "--role",
    type=click.Choice(["compliance_officer", "compliance_lead", "auditor", "admin"]),
    required=True,
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object: {username, password, otpauth_uri}.",
)
@_config_errors_exit_2
def staff_create(username: str, role: str, as_json: bool) -> None:
    """Create a member of staff: prints a one-time password and the TOTP provisioning URI."""
    from custodia import access  # noqa: PLC0415
    from custodia.core.actors import Role  # noqa: PLC0415

    with _runtime() as runtime:
        ctx = _cli_context(runtime)
        created = runtime.db.run(
            lambda s: access.create_staff(
                s,
                username=username,
                role=Role(role),
                ctx=ctx,
                ids=runtime.ids,
                vault=runtime.vault,
                hasher=runtime.hasher,
            )
        )
    if as_json:
        _print_json(
            {
                "id": created.id,
                "username": created.username,
                "password": created.password,
                "otpauth_uri": created.otpauth_uri,
            }
        )
    else:
        click.echo(f"staff       {created.id} ({created.username}, {created.role})")
        click.echo(f"password    {created.password}   (one-time: change it at first login)")
        click.echo(f"otpauth     {created.otpauth_uri}")
        click.echo("Both are shown only now.")


# --------------------------------------------------------------------------- watchlists


@cli.group()
def watchlists() -> None:
    """Load sanctions and terrorist lists for screening."""


@watchlists.command("load")
@click.argument(
    "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False
)
@click.option(
    "--sample", is_flag=True, help="Load the synthetic sample list that ships with Custodia."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_config_errors_exit_2
def watchlists_load(path: Path | None, sample: bool, as_json: bool) -> None:
    """Load a list (CSV or JSON lines, by extension); every customer is re-screened after."""
    from custodia import kyc  # noqa: PLC0415
    from custodia.kyc.screening import SAMPLE_LIST, parse_list  # noqa: PLC0415

    if (path is None) == (not sample):
        raise ConfigError("name one PATH or pass --sample")
    source = SAMPLE_LIST if sample else path
    assert source is not None  # noqa: S101 - checked above
    content_type = "text/csv" if source.suffix.lower() == ".csv" else "application/x-ndjson"
    entries = parse_list(source.read_bytes(), content_type)
    with _runtime() as runtime:
        ctx = _cli_context(runtime)
        loaded = runtime.db.run(lambda s: kyc.upload(s, entries, ctx=ctx, ids=runtime.ids))
    if as_json:
        _print_json(
            {
                "lists": [
                    {"list_id": r.list_id, "version": r.version, "entries": r.entries}
                    for r in loaded
                ]
            }
        )
    else:
        for r in loaded:
            click.echo(
                f"{r.list_id}: version {r.version}, {r.entries} entries (re-screening queued)"
            )


# --------------------------------------------------------------------------- audit


@cli.group("audit")
def audit_group() -> None:
    """Checkpoint and verify the tamper-evident audit trail."""


@audit_group.command("checkpoint")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write it (default: print it). Keep checkpoints outside the database.",
)
@_config_errors_exit_2
def audit_checkpoint(out_path: Path | None) -> None:
    """Seal what is pending, then write an Ed25519-signed checkpoint of the chain."""
    from custodia.core import audit  # noqa: PLC0415

    with _runtime() as runtime:
        runtime.seal_audit()
        checkpoint = runtime.db.run(
            lambda s: audit.make_checkpoint(s, runtime.keys, runtime.clock.now()), read_only=True
        )
    data = msgspec.json.format(msgspec.json.encode(checkpoint), indent=2)
    if out_path is None:
        click.echo(data.decode())
    else:
        out_path.write_bytes(data + b"\n")
        click.echo(f"checkpoint of {checkpoint.size} events written to {out_path}")


@audit_group.command("verify")
@click.option(
    "--checkpoint",
    "checkpoint_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Also check that the chain still extends this checkpoint.",
)
@_config_errors_exit_2
def audit_verify(checkpoint_path: Path | None) -> None:
    """Recompute the whole chain; exit 1 and name the first bad event on failure."""
    from custodia.core import audit  # noqa: PLC0415

    checkpoint = None
    if checkpoint_path is not None:
        try:
            checkpoint = msgspec.json.decode(checkpoint_path.read_bytes(), type=audit.Checkpoint)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConfigError(f"{checkpoint_path} is not an audit checkpoint: {exc}") from None
    with _runtime() as runtime:
        report = runtime.db.run(
            lambda s: audit.verify(s, runtime.keys, checkpoint=checkpoint), read_only=True
        )
    _print_json(report)
    if not report.ok:
        sys.exit(1)


# --------------------------------------------------------------------------- consents


@cli.group()
def consents() -> None:
    """Consent receipts."""


def _public_keys(source: str | None) -> dict[str, bytes]:
    """Return key id → public key from ``--public-key`` or, without it, this service's keys."""
    import base64  # noqa: PLC0415
    import binascii  # noqa: PLC0415
    import json  # noqa: PLC0415

    from custodia.core.signing import Signer  # noqa: PLC0415

    if source is None:
        return Signer(load_keys(_settings())).public_keys()
    path = Path(source)
    if path.is_file():
        try:
            published = json.loads(path.read_text("utf-8"))
            return {
                str(k["key_id"]): base64.b64decode(k["public_key"], validate=True)
                for k in published["keys"]
            }
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ConfigError(f"{path} is not the JSON of GET /v1/agreements/signing-key") from None
    try:
        raw = base64.b64decode(source, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("--public-key: give base64 of an Ed25519 key or a file") from None
    return {"*": raw}


@consents.command("verify")
@click.argument("receipt_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--public-key",
    "public_key",
    default=None,
    help=(
        "Base64 Ed25519 public key, or a file with the JSON of GET /v1/agreements/signing-key "
        "(default: this service's own key file)."
    ),
)
@_config_errors_exit_2
def consents_verify(receipt_path: Path, public_key: str | None) -> None:
    """Check a consent receipt's signature offline; exit 1 if it does not verify."""
    import json  # noqa: PLC0415

    from custodia.agreements.receipts import verify  # noqa: PLC0415

    try:
        document = json.loads(receipt_path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {receipt_path} as JSON: {exc}") from None
    if isinstance(document, dict) and "payload" not in document and "receipt" in document:
        document = document["receipt"]  # a whole consent, as the API returns it
    keys = _public_keys(public_key)
    if "*" in keys and isinstance(document, dict):
        keys = {str(document.get("key_id")): keys["*"]}
    check = verify(document, keys)
    if not check.valid:
        click.echo(f"invalid: {check.reason}")
        sys.exit(1)
    payload = document["payload"]
    decision = "accepted" if payload.get("accepted") else "declined"
    click.echo(
        f"valid: consent {payload.get('consent_id')} of {payload.get('customer_id')}: "
        f"{decision} {payload.get('agreement_kind')} {payload.get('agreement_version')} "
        f"({payload.get('agreement_locale')}, sha256 {payload.get('content_sha256')}) "
        f"at {payload.get('decided_at')}"
    )


# --------------------------------------------------------------------------- ledger


@cli.group("ledger")
def ledger_group() -> None:
    """Check the double-entry ledger."""


@ledger_group.command("reconcile")
@_config_errors_exit_2
def ledger_reconcile() -> None:
    """Compare customers' and merchants' funds with the reserve account; exit 1 if off."""
    from custodia import ledger  # noqa: PLC0415

    with _runtime() as runtime:
        found = runtime.db.run(ledger.reconcile, read_only=True, isolation="REPEATABLE READ")
    for r in found:
        _print_json(
            {
                "currency": r.currency,
                "customer_funds": r.customer_funds,
                "merchant_funds": r.merchant_funds,
                "fees": r.fees,
                "suspense": r.suspense,
                "reserve": r.reserve,
                "difference": r.difference,
                "total": r.total,
                "ok": r.ok,
            }
        )
    if not all(r.ok for r in found):
        sys.exit(1)


@ledger_group.command("replay")
@_config_errors_exit_2
def ledger_replay() -> None:
    """Recompute every balance from the journal; print mismatches and exit 1 if any."""
    from custodia import ledger  # noqa: PLC0415

    with _runtime() as runtime:
        mismatches = runtime.db.run(ledger.replay, read_only=True, isolation="REPEATABLE READ")
    for m in mismatches:
        _print_json(
            {
                "account_id": m.account_id,
                "field": m.field,
                "stored": m.stored,
                "journal": m.recomputed,
            }
        )
    click.echo(f"{len(mismatches)} mismatches", err=True)
    if mismatches:
        sys.exit(1)


# --------------------------------------------------------------------------- outbox


@cli.group()
def outbox() -> None:
    """Inspect and requeue outbox events."""


@outbox.command("status")
@_config_errors_exit_2
def outbox_status() -> None:
    """Print what waits for the consumers, what is dead, and what waits for no consumer.

    ``pending`` and ``oldest_pending_age_s`` are the figures of /metrics (due events of the
    types this release consumes); ``without_consumer`` counts, by type, the events a later
    release's consumer will receive.
    """
    from custodia.core.outbox import backlog, without_consumer  # noqa: PLC0415

    with _runtime() as runtime:
        consumed = runtime.consumers.event_types()
        state, waiting = runtime.db.run(
            lambda s: (backlog(s, runtime.clock.now(), consumed), without_consumer(s, consumed)),
            read_only=True,
        )
    _print_json({**dataclasses.asdict(state), "without_consumer": waiting})


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
