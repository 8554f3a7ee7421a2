"""Transfers in one call: PostgreSQL's ``custodia_transfer`` (0008–0013), its steps on SQLite.

The general path (:func:`custodia.accounts.movements.transfer`) sends ten statements per
transfer through the ORM; a transfer authorised by device signatures alone — the common
case for an app, and the one the benchmark drives — does its checks and writes in one
server-side function instead, as one autocommit statement (one round trip, one
transaction), in the same order and with the same refusals. SQLite has no server-side
functions: there the same steps run as plain statements on the ``sqlite3`` connection in
one write transaction (:mod:`custodia.accounts.fastpath_sqlite`), without the ORM.

1. here: the amount and the two accounts (as the general path), the device signature over
   the API.md signing string, verified with the key's public half (cached per process: a
   key's public half never changes; whether it is still live and the payer's is decided by
   the function, in the transaction); the transaction record with both names sealed for it
   (B2, K5) and the response, rendered and sealed for the idempotency key — from the
   customers' name blobs as :class:`Parties` last read them;
2. the function: idempotency claim or replay, the payer's account and customer (visible to
   the caller), the payee's account, that both customers and their name blobs are still
   the ones the record was sealed from (else ``parties_changed``: read again, seal again,
   call again), statuses (K2, K7, A3), a corporate transfer's purpose (B2), the payment
   lock and the key (K3), the limits (R5, R6, K4), the conditional debit and the journal
   (B1), the hold on a payee whose settlement is delayed (K2), the audit events, the
   outbox event and the record; the idempotency key was claimed with the sealed response
   in it (migration 0013).

Anything else — other factors (a password or a one-time code need the credentials row
first), a rolling limit year — takes the general path. The test suite runs every
transfer scenario through whichever path applies, and ``tests/accounts/test_fastpath.py``
compares the two paths' outcomes directly.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custodia import kyc
from custodia.accounts import fastpath_sqlite, limits
from custodia.accounts.errors import (
    AccountFrozen,
    AccountNotActive,
    CustomerNotEligible,
    InvalidPaymentRequest,
    LimitExceeded,
)
from custodia.accounts.movements import (
    HELD_UNTIL_RELEASED,
    TRANSACTION_POSTED,
    Authorisation,
    Collaborators,
    Party,
    TransactionView,
    Transfer,
    _check_amount,
    audit_details,
    posted_event,
    record_of,
    signing_string,
)
from custodia.core import audit
from custodia.core.actors import ActorKind, Context
from custodia.core.bounded import Bounded
from custodia.core.db import Database, FetchOne, Sql
from custodia.core.errors import (
    DomainError,
    FieldProblem,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    NotFound,
    Unauthenticated,
)
from custodia.core.idempotency import IdempotencyStore, IdempotentRequest, StoredResponse
from custodia.core.ids import IdPrefix
from custodia.kyc.customers import decrypt_field
from custodia.ledger.errors import InsufficientFunds, LedgerAccountNotFound

_CALL = "SELECT * FROM custodia_transfer(%s::jsonb)"
_KEY = Sql("SELECT public_key FROM customer_signing_keys WHERE id = :id")
#: What a transfer needs that the caches may lack, in one read (not one per item): the key's
#: public half and each account's customer and name blob (NULL for what does not exist).
_PRIME = Sql(
    "SELECT (SELECT public_key FROM customer_signing_keys WHERE id = :key_id), "
    "pa.customer_id, pc.name_enc, qa.customer_id, qc.name_enc FROM (SELECT 1) AS one "
    "LEFT JOIN payment_accounts pa ON pa.id = :payer "
    "LEFT JOIN customers pc ON pc.id = pa.customer_id "
    "LEFT JOIN payment_accounts qa ON qa.id = :payee "
    "LEFT JOIN customers qc ON qc.id = qa.customer_id"
)
_PURPOSE = "a corporate transfer over 50,000 CNY states its purpose"
#: Reads and seals again after ``parties_changed`` at most this often (a rename mid-call).
_PARTY_ATTEMPTS = 3
#: How many accounts' parties and how many device keys a process keeps (~380 and ~240
#: bytes an entry): together ~35 MiB at most, whatever the number of customers, so that a
#: server worker stays within issue 6's 250 MB (~130 MiB without them, plus 32 MiB per
#: concurrent scrypt hash). A transfer whose parties or key were forgotten reads them again
#: in one statement (:func:`prime`).
PARTIES_CACHED = 50_000
KEYS_CACHED = 65_536


class Parties:
    """Each payment account's customer and that customer's name blob, cached per process.

    Filled by :func:`prime`, which reads what a transfer needs and the caches lack. The
    blob is the vault's ciphertext (``customers.name_enc``), never the name in clear. An
    account's customer never changes; a name can (a correction, a key rotation), so the
    transfer function compares the blobs the record was sealed from with the rows it reads
    and refuses ``parties_changed`` if they differ; :func:`transfer` then forgets both
    entries and reads again. An entry missing (an unknown account, or one evicted meanwhile)
    is sealed as nobody's: the function refuses the unknown account, and an evicted one
    comes back as ``parties_changed``.
    """

    def __init__(self, *, size: int = PARTIES_CACHED) -> None:
        self._known = Bounded[tuple[str, bytes | None]](size)

    def get(self, account_id: str) -> tuple[str, bytes | None] | None:
        """Return (customer id, name blob) of an account if cached (no read)."""
        return self._known.get(account_id)

    def put(self, account_id: str, customer_id: Any, name_enc: Any) -> tuple[str, bytes | None]:
        """Remember an account's customer and name blob as just read; return the entry."""
        party = (str(customer_id), None if name_enc is None else bytes(name_enc))
        self._known.put(account_id, party)
        return party

    def forget(self, *account_ids: str) -> None:
        """Drop the accounts' entries (read again on next use)."""
        for account_id in account_ids:
            self._known.forget(account_id)


class DeviceKeys:
    """The public halves of customers' device keys, by key id, cached per process.

    A key's public half never changes; whose key it is and whether it is still live are
    checked by the transfer function on every use. Bounded: the oldest entries go first.
    The cache holds the key's 32 bytes, not the key object (~240 bytes an entry instead of
    ~510): building the object again costs ~1 µs, its signature check ~60 µs.
    """

    def __init__(self, fetch_one: FetchOne, *, size: int = KEYS_CACHED) -> None:
        self._fetch_one = fetch_one
        self._keys = Bounded[bytes](size)

    def get(self, key_id: str) -> Ed25519PublicKey | None:
        """Return the key's public half (None for an unknown key)."""
        found = self._keys.get(key_id)
        if found is not None:
            return Ed25519PublicKey.from_public_bytes(found)
        row = self._fetch_one(_KEY, {"id": key_id})
        return None if row is None else self.put(key_id, row[0])

    def cached(self, key_id: str) -> bool:
        """Return whether the key's public half is known without a read."""
        return self._keys.get(key_id) is not None

    def put(self, key_id: str, public_key: str) -> Ed25519PublicKey | None:
        """Remember a key's public half (base64) as just read; None if it is not a key."""
        try:
            raw = base64.b64decode(public_key)
            found = Ed25519PublicKey.from_public_bytes(raw)
        except (binascii.Error, ValueError):
            return None
        self._keys.put(key_id, raw)
        return found

    def verify(self, key_id: str | None, signature: str | None, message: bytes) -> bool:
        """Return whether ``signature`` (base64) is the key's signature over ``message``."""
        key = self.get(key_id) if key_id else None
        if key is None or not signature:
            return False
        try:
            key.verify(base64.b64decode(signature, validate=True), message)
        except (binascii.Error, ValueError, InvalidSignature):
            return False
        return True


def eligible(auth: Authorisation, policy: limits.LimitPolicy) -> bool:
    """Return whether a transfer can take the one-call path (see the module docstring)."""
    return (
        bool(auth.factors)
        and all(f.type == "signature" for f in auth.factors)
        and policy.year_window == "calendar_year"
    )


def transfer(
    db: Database,
    cmd: Transfer,
    auth: Authorisation,
    request: IdempotentRequest,
    *,
    ctx: Context,
    c: Collaborators,
    keys: DeviceKeys,
    parties: Parties,
    store: IdempotencyStore,
    render: Callable[[TransactionView], bytes],
) -> tuple[StoredResponse, bool]:
    """Claim the key and move the value in one statement; return (response, replayed).

    ``render`` gives the body of a new transfer's 201 response. Raises the general path's
    refusals; the transaction rolls back on any of them.
    """
    _check_amount(cmd.amount)
    if cmd.from_account_id == cmd.to_account_id:
        raise InvalidPaymentRequest([FieldProblem("to_account_id", "a different account")])
    factor = auth.factors[0]  # each kind counts once: the first signature is the one checked
    prime(db, cmd, factor.key_id, keys=keys, parties=parties)
    message = signing_string(
        "transfer",
        idempotency_key=auth.idempotency_key,
        payer=cmd.from_account_id,
        payee=cmd.to_account_id,
        amount=cmd.amount,
        currency="CNY",
    )
    purpose = (cmd.purpose or "").strip() or None
    fields: dict[str, Any] = {
        "transaction_id": c.ids.new(IdPrefix.TRANSACTION), "type_": "transfer",
        "status": "succeeded", "amount": cmd.amount, "ctx": ctx, "auth": auth,
        "verified": kyc.VerifiedFactors(("signature",), f"signature:{factor.key_id}"), "c": c,
        "purpose": purpose,
    }  # fmt: skip
    fixed = {
        "purpose": purpose,
        "key_id": factor.key_id,
        "signature_verified": keys.verify(factor.key_id, factor.signature, message),
        "event_id": c.ids.new(IdPrefix.EVENT),
    }
    for _ in range(_PARTY_ATTEMPTS):
        payer = _party(parties, cmd.from_account_id, c)
        payee = _party(parties, cmd.to_account_id, c)
        view, row = record_of(payer=payer[0], payee=payee[0], **fields)
        body = render(view)
        payload = (
            _payload(cmd, request, view, ctx=ctx, c=c, store=store)
            | fixed
            | {
                "payer_customer_id": payer[0].customer_id,
                "payer_name_enc": payer[1],
                "payee_customer_id": payee[0].customer_id,
                "payee_name_enc": payee[1],
                "record": row,
                "response_status": 201,
                "response_body": store.sealed(request, body),
                "response_content_type": "application/json",
            }
        )
        try:
            found = _run(db, payload, now=ctx.now)
        except _PartiesChanged:
            parties.forget(cmd.from_account_id, cmd.to_account_id)
            prime(db, cmd, factor.key_id, keys=keys, parties=parties)
            continue
        replay_status, replay_body, replay_type = found[:3]
        if replay_status is not None:
            return store.stored(request, replay_status, replay_body, replay_type), True
        return StoredResponse(201, body, "application/json"), False
    raise IdempotencyKeyInFlight  # renamed on every attempt: transient, the client retries


def prime(
    db: Database, cmd: Transfer, key_id: str | None, *, keys: DeviceKeys, parties: Parties
) -> None:
    """Read what the caches lack for this transfer in one statement, and cache it.

    A transfer between accounts this process has not seen yet (the common case right after
    a start, or with many more accounts than the caches hold) then costs one read before
    the call, not one per key and per account. What does not exist stays uncached: the
    function refuses an unknown account, and an unknown key fails the signature check
    (:meth:`DeviceKeys.get` reads a missing key once more itself, so that a key evicted
    between this read and the check is never taken for a wrong signature).
    """
    if (
        (key_id is None or keys.cached(key_id))
        and parties.get(cmd.from_account_id) is not None
        and parties.get(cmd.to_account_id) is not None
    ):
        return
    row = db.fetch_one(
        _PRIME, {"key_id": key_id or "", "payer": cmd.from_account_id, "payee": cmd.to_account_id}
    )
    if row is None:
        return
    public_key, payer, payer_name, payee, payee_name = row
    if key_id and public_key is not None:
        keys.put(key_id, public_key)
    if payer is not None:
        parties.put(cmd.from_account_id, payer, payer_name)
    if payee is not None:
        parties.put(cmd.to_account_id, payee, payee_name)


def _party(parties: Parties, account_id: str, c: Collaborators) -> tuple[Party, bytes | None]:
    """Return an account's party (name in clear, in memory) and its name blob."""
    known = parties.get(account_id)
    if known is None:  # the function refuses the unknown account
        return Party(None, None, account_id), None
    customer_id, blob = known
    name = decrypt_field(c.vault, "customers", customer_id, blob, "name_enc") or ""
    return Party(customer_id, name, account_id), blob


def _run(db: Database, payload: dict[str, Any], *, now: datetime) -> tuple[Any, ...]:
    """Run the transfer function on the database's backend; raise its refusals as errors."""
    if db.backend == "sqlite":

        def steps(conn: Any) -> tuple[Any, ...]:
            try:
                return fastpath_sqlite.transfer(conn, payload)
            except fastpath_sqlite.Refused as refused:
                raise _refused(refused.code, refused.detail, now=now) from None

        return db.run_driver(steps)
    blobs = ("payer_name_enc", "payee_name_enc", "response_body")
    encoded = msgspec.json.encode(
        payload
        | {k: None if payload[k] is None else _b64(payload[k]) for k in blobs}
        | {"record": {k: _json_value(v) for k, v in payload["record"].items()}}
    ).decode()
    return db.run_driver(lambda conn: _call(conn, encoded, now=now), one_statement=True)


def _refused(code: str, detail: dict[str, Any], *, now: datetime) -> Exception:
    """Return what the function's refusal ``code`` raises here (``parties_changed``: retry)."""
    return _PartiesChanged() if code == "parties_changed" else refusal(code, detail, now=now)


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode("ascii")


def _json_value(value: Any) -> Any:
    """Return a record value as ``jsonb_populate_record`` reads it (bytea as hex)."""
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class _PartiesChanged(Exception):
    """The function found other customers or names than the record was sealed from."""


def _payload(
    cmd: Transfer,
    request: IdempotentRequest,
    view: TransactionView,
    *,
    ctx: Context,
    c: Collaborators,
    store: IdempotencyStore,
) -> dict[str, Any]:
    """Return what the transfer function is told besides the factor (migrations 0008, 0010)."""
    policy = c.limits
    local = ctx.now.astimezone(policy.tz)
    tier = limits.daily_tier(["signature"])
    return {
        "now": ctx.now.isoformat(),
        "scope": request.scope,
        "key": request.key,
        "fingerprint": request.fingerprint,
        "expires_at": (ctx.now + store.ttl).isoformat(),
        "lock_wait": f"{int(store.lock_wait_ms)}ms",
        "from_account_id": cmd.from_account_id,
        "to_account_id": cmd.to_account_id,
        "amount": cmd.amount,
        "purpose_threshold": c.purpose_threshold,
        "visible_to": ctx.actor.id if ctx.actor.kind is ActorKind.CLIENT else None,
        # The caller's API key is checked again here (security.Access.key_rechecked).
        "client_id": ctx.actor.id if ctx.actor.kind is ActorKind.CLIENT else None,
        "class_i_lifetime": policy.class_i_lifetime,
        "class_ii_yearly": policy.class_ii_yearly,
        "class_iii_yearly": policy.class_iii_yearly,
        "year": f"{local.year:04d}",
        "day": local.date().isoformat(),
        "daily": {"one_kind": policy.daily_one_kind, "two_kinds": policy.daily_two_kinds}[tier],
        "transaction_id": view.id,
        "actor_kind": ctx.actor.kind.value,
        "actor_id": ctx.actor.id,
        "request_id": ctx.request_id,
        "audit_action": audit.AuditAction.TRANSFER.value,
        "audit_details": audit.canonical_details(audit_details(view)),
        "hold_until": HELD_UNTIL_RELEASED.isoformat(),  # if the payee's settlement is delayed
        "event_type": TRANSACTION_POSTED,
        "event_payload": posted_event(view),
    }


def _call(conn: Any, payload: str, *, now: datetime) -> tuple[Any, ...]:
    """Call the function; raise its refusal as a DomainError (driver errors propagate)."""
    import psycopg  # noqa: PLC0415 - PostgreSQL only

    try:
        row = conn.execute(_CALL, (payload,), prepare=True).fetchone()
    except psycopg.errors.RaiseException as exc:
        message = exc.diag.message_primary or ""
        if not message.startswith("custodia:"):
            raise
        detail = json.loads(exc.diag.message_detail or "{}")
        raise _refused(message.removeprefix("custodia:"), detail, now=now) from None
    except psycopg.errors.LockNotAvailable:
        raise IdempotencyKeyInFlight from None
    assert row is not None  # noqa: S101 - the function returns one row
    return tuple(row)


#: The function's refusal codes → the general path's errors, from the refusal's data.
_REFUSALS: dict[str, Callable[[dict[str, Any], datetime], DomainError]] = {
    "not_found": lambda d, _: NotFound(d["resource"], d["id"]),
    "account_frozen": lambda d, _: AccountFrozen(d["account_id"]),
    "account_not_active": lambda d, _: AccountNotActive(d["account_id"], d["status"]),
    "customer_not_eligible": lambda d, _: CustomerNotEligible(
        d["customer_id"], d["reason"], regulation=d.get("regulation")
    ),
    "purpose_required": lambda _d, _: InvalidPaymentRequest([FieldProblem("purpose", _PURPOSE)]),
    "authentication_locked": lambda d, now: kyc.AuthenticationLocked(
        datetime.fromisoformat(d["locked_until"]), now
    ),
    "authentication_failed": lambda d, _: kyc.AuthenticationFailed(
        d["factor"], customer_id=d["customer_id"]
    ),
    "limit_exceeded": lambda d, _: LimitExceeded(
        rule=d["rule"],
        regulation=d["regulation"],
        period=d["period"],
        limit=d["limit"],
        used=d["used"],
        requested=d["requested"],
    ),
    "insufficient_funds": lambda d, _: InsufficientFunds(
        d["account_id"], d["available"], d["requested"], d["currency"]
    ),
    "ledger_account_not_found": lambda d, _: LedgerAccountNotFound(d["account_id"], d["currency"]),
    "idempotency_key_reused": lambda _d, _: IdempotencyKeyReused(),
    "idempotency_key_in_flight": lambda _d, _: IdempotencyKeyInFlight(),
    "unauthenticated": lambda _d, _: Unauthenticated("The API key was revoked."),
}


def refusal(code: str, detail: dict[str, Any], *, now: datetime) -> DomainError:
    """Return the DomainError the transfer function's refusal ``code`` stands for."""
    return _REFUSALS[code](detail, now)
