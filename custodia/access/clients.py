"""API clients: onboarding apps and merchants authenticate with a key shown once.

The key is ``ck_<env>_<key id>_<secret>``: ``env`` is ``dev`` or ``live`` (a development key
never works in production), the key id is the client id without its prefix, and the secret
is 256 random bits. Only the SHA-256 of the secret is stored; every request looks the
client up again, so revocation takes effect at once.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from custodia.access.errors import InvalidClient
from custodia.access.models import ApiClient
from custodia.core import audit
from custodia.core.actors import Actor, ActorKind, Context, Role
from custodia.core.audit import AuditAction
from custodia.core.bounded import Bounded
from custodia.core.db import FetchOne, Sql
from custodia.core.errors import NotFound, Unauthenticated
from custodia.core.ids import IdGenerator, IdPrefix, is_valid_id
from custodia.core.passwords import digests_equal, token_digest
from custodia.core.settings import Environment

_KEY = re.compile(
    r"^ck_(?P<env>dev|live)_(?P<kid>[0-9a-hjkmnp-tv-z]{26})_(?P<secret>[A-Za-z0-9_-]{43})$"
)
CLIENT_ROLES = (Role.ONBOARDING_APP, Role.MERCHANT)


def env_label(environment: Environment) -> str:
    """Return the label API keys of ``environment`` carry."""
    return "live" if environment is Environment.PRODUCTION else "dev"


@dataclass(frozen=True, slots=True)
class NewClient:
    """What ``custodia clients create`` prints once."""

    id: str
    key: str


@dataclass(frozen=True, slots=True)
class ClientView:
    """An API client as ``custodia clients list`` shows it (never its secret)."""

    id: str
    kind: str
    name: str
    merchant_id: str | None
    created_at: datetime
    revoked_at: datetime | None


def _view(client: ApiClient) -> ClientView:
    return ClientView(
        client.id,
        client.kind,
        client.name,
        client.merchant_id,
        client.created_at,
        client.revoked_at,
    )


def create_client(
    session: Session,
    *,
    kind: Role,
    name: str,
    merchant_id: str | None,
    environment: Environment,
    ctx: Context,
    ids: IdGenerator,
) -> NewClient:
    """Create an API client and return its key (the only time the key exists in clear)."""
    if kind not in CLIENT_ROLES:
        raise InvalidClient(f"An API client is an onboarding_app or a merchant, not {kind}.")
    if kind is Role.MERCHANT and (
        merchant_id is None or not is_valid_id(merchant_id, IdPrefix.MERCHANT)
    ):
        raise InvalidClient("A merchant key needs --merchant with the merchant's id (mer_…).")
    if kind is not Role.MERCHANT and merchant_id is not None:
        raise InvalidClient("Only merchant keys are bound to a merchant.")
    clean_name = name.strip()
    if not 1 <= len(clean_name) <= 200:
        raise InvalidClient("A client's name is 1 to 200 characters.")
    client_id = ids.new(IdPrefix.CLIENT)
    secret = secrets.token_urlsafe(32)
    session.add(
        ApiClient(
            id=client_id,
            kind=kind.value,
            name=clean_name,
            merchant_id=merchant_id,
            secret_hash=token_digest(secret),
            created_at=ctx.now,
        )
    )
    audit.record(
        session,
        ctx,
        AuditAction.CLIENT_CREATED,
        target=client_id,
        details={"kind": kind.value, "name": clean_name, "merchant_id": merchant_id},
    )
    key_id = client_id.removeprefix(f"{IdPrefix.CLIENT.value}_")
    return NewClient(client_id, f"ck_{env_label(environment)}_{key_id}_{secret}")


def list_clients(session: Session) -> list[ClientView]:
    """Return every API client, oldest first."""
    rows = session.execute(select(ApiClient).order_by(ApiClient.created_at, ApiClient.id))
    return [_view(client) for client in rows.scalars()]


def revoke_client(session: Session, client_id: str, *, ctx: Context) -> ClientView:
    """Revoke a client's key at once; revoking twice keeps the first revocation time."""
    client = session.get(ApiClient, client_id)
    if client is None:
        raise NotFound("API client", client_id)
    if client.revoked_at is None:
        session.execute(
            update(ApiClient)
            .where(ApiClient.id == client_id, ApiClient.revoked_at.is_(None))
            .values(revoked_at=ctx.now)
            .execution_options(synchronize_session=False)
        )
        audit.record(session, ctx, AuditAction.CLIENT_REVOKED, target=client_id)
        session.refresh(client)
    return _view(client)


def looks_like_api_key(credential: str) -> bool:
    """Return whether ``credential`` has the shape of an API key (not a session token)."""
    return credential.startswith("ck_")


class _ClientRow(NamedTuple):
    kind: str
    merchant_id: str | None
    secret_hash: str
    revoked: bool


_CLIENT_BY_ID = Sql(
    "SELECT kind, merchant_id, secret_hash, revoked_at IS NOT NULL FROM api_clients WHERE id = :id"
)


def authenticate_key(fetch_one: FetchOne, key: str, *, environment: Environment) -> Actor:
    """Return the actor an API key stands for; Unauthenticated if unknown or revoked.

    Looked up on every request (one indexed read, ``Database.fetch_one``), so a revocation
    takes effect at once.
    """
    match = _KEY.match(key)
    if match is None or match["env"] != env_label(environment):
        raise Unauthenticated("The API key is not valid here.")
    client_id = f"{IdPrefix.CLIENT.value}_{match['kid']}"
    found = fetch_one(_CLIENT_BY_ID, {"id": client_id})
    row = None if found is None else _ClientRow(*found)
    presented = token_digest(match["secret"])
    stored = row.secret_hash if row is not None else token_digest("")
    if row is None or not digests_equal(presented, stored):
        raise Unauthenticated("The API key is not valid here.")
    if row.revoked:
        raise Unauthenticated("The API key was revoked.")
    return Actor(ActorKind.CLIENT, client_id, Role(row.kind), row.merchant_id)


class KnownKeys:
    """API keys this process authenticated, by the SHA-256 of the whole key (never the key).

    For routes whose own transaction checks again that the key's client is not revoked
    (the transfer function, migration 0012): there the guard may take a key it
    authenticated before from here, saving a lookup and a thread hop per request, and a
    revoked key is still refused at once — by that transaction. A client's kind and
    merchant never change, so the cached actor stays right. Bounded.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._actors = Bounded[Actor](size)

    def get(self, key: str) -> Actor | None:
        """Return the actor of a key authenticated before (None if not known here)."""
        return self._actors.get(token_digest(key))

    def put(self, key: str, actor: Actor) -> None:
        """Remember that ``key`` authenticated as ``actor``."""
        self._actors.put(token_digest(key), actor)
