"""Transfers on PostgreSQL in one call of ``custodia_transfer`` (migrations 0008, 0010).

The general path (:func:`custodia.accounts.movements.transfer`) sends ten statements per
transfer through the ORM; a transfer authorised by device signatures alone — the common
case for an app, and the one the benchmark drives — does its checks and writes in one
server-side function instead, in the same transaction and order, with the same refusals:

1. here: the amount and the two accounts (as the general path), the device signature over
   the API.md signing string, verified with the key's public half (cached per process: a
   key's public half never changes; whether it is still live and the payer's is decided by
   the function, in the transaction);
2. the function: idempotency claim or replay, the payer's account and customer (visible to
   the caller), the payee's account, statuses (K2, K7, A3), a corporate transfer's purpose
   (B2), the payment lock and the key (K3), the limits (R5, R6, K4), the conditional debit
   and the journal (B1), the hold on a payee whose settlement is delayed (K2), the audit
   events and the outbox event;
3. here again: the transaction record with both names sealed for it (B2, K5) and the stored
   response, in one statement; then the COMMIT.

Anything else — other factors (a password or a one-time code need the credentials row
first), a rolling limit year, SQLite — takes the general path. The test suite runs every
transfer scenario through whichever path applies, and ``tests/accounts/test_fastpath.py``
compares the two paths' outcomes directly.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from threading import Lock
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg.types.json import Jsonb

from custodia import kyc
from custodia.accounts import limits
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
from custodia.core.db import Backend, Database, FetchOne, Sql
from custodia.core.errors import (
    DomainError,
    FieldProblem,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    NotFound,
)
from custodia.core.idempotency import IdempotencyStore, IdempotentRequest, StoredResponse
from custodia.core.ids import IdPrefix
from custodia.kyc.customers import decrypt_field
from custodia.ledger.errors import InsufficientFunds, LedgerAccountNotFound

_CALL = "SELECT * FROM custodia_transfer(%s::jsonb)"
_RECORD_COLUMNS = (
    "id", "type", "status", "amount", "currency", "debit_account", "credit_account",
    "payer_customer_id", "payee_customer_id", "payer_name_enc", "payee_name_enc",
    "merchant_id", "merchant_name", "merchant_code", "mcc", "bank_card_id",
    "bank_card_masked", "bank_name", "channel", "terminal_type", "authentication", "purpose",
    "order_id", "description", "original_transaction_id", "trace_id", "bank_reference",
    "created_at", "completed_at",
)  # fmt: skip
#: The record and the stored response, in one statement.
_FINISH = (
    f"WITH record AS (INSERT INTO payment_transactions ({', '.join(_RECORD_COLUMNS)}) "  # noqa: S608 - constants
    f"VALUES ({', '.join(f'%({c})s' for c in _RECORD_COLUMNS)})) "
    "UPDATE idempotency_keys SET state = 'completed', response_status = %(r_status)s, "
    "response_body = %(r_body)s, response_content_type = %(r_content_type)s "
    "WHERE scope = %(r_scope)s AND key = %(r_key)s"
)
_KEY = Sql("SELECT public_key FROM customer_signing_keys WHERE id = :id")
_PURPOSE = "a corporate transfer over 50,000 CNY states its purpose"


class DeviceKeys:
    """The public halves of customers' device keys, by key id, cached per process.

    A key's public half never changes; whose key it is and whether it is still live are
    checked by the transfer function on every use. Bounded: the oldest entries go first.
    """

    def __init__(self, fetch_one: FetchOne, *, size: int = 200_000) -> None:
        self._fetch_one = fetch_one
        self._size = size
        self._keys: OrderedDict[str, Ed25519PublicKey] = OrderedDict()
        self._lock = Lock()

    def get(self, key_id: str) -> Ed25519PublicKey | None:
        """Return the key's public half (None for an unknown key)."""
        found = self._keys.get(key_id)
        if found is not None:
            return found
        row = self._fetch_one(_KEY, {"id": key_id})
        if row is None:
            return None
        try:
            found = Ed25519PublicKey.from_public_bytes(base64.b64decode(row[0]))
        except (binascii.Error, ValueError):
            return None
        with self._lock:
            self._keys[key_id] = found
            while len(self._keys) > self._size:
                self._keys.popitem(last=False)
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


def eligible(backend: Backend, auth: Authorisation, policy: limits.LimitPolicy) -> bool:
    """Return whether a transfer can take the one-call path (see the module docstring)."""
    return (
        backend == "postgresql"
        and bool(auth.factors)
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
    store: IdempotencyStore,
    render: Callable[[TransactionView], bytes],
) -> tuple[StoredResponse, bool]:
    """Claim the key and move the value in one transaction; return (response, replayed).

    ``render`` gives the body of a new transfer's 201 response. Raises the general path's
    refusals; the transaction rolls back on any of them.
    """
    _check_amount(cmd.amount)
    if cmd.from_account_id == cmd.to_account_id:
        raise InvalidPaymentRequest([FieldProblem("to_account_id", "a different account")])
    factor = auth.factors[0]  # each kind counts once: the first signature is the one checked
    message = signing_string(
        "transfer",
        idempotency_key=auth.idempotency_key,
        payer=cmd.from_account_id,
        payee=cmd.to_account_id,
        amount=cmd.amount,
        currency="CNY",
    )
    verified = kyc.VerifiedFactors(("signature",), f"signature:{factor.key_id}")
    transaction_id = c.ids.new(IdPrefix.TRANSACTION)
    purpose = (cmd.purpose or "").strip() or None
    fields: dict[str, Any] = {
        "transaction_id": transaction_id, "type_": "transfer", "status": "succeeded",
        "amount": cmd.amount, "ctx": ctx, "auth": auth, "verified": verified, "c": c,
        "purpose": purpose,
    }  # fmt: skip
    # The events' contents name no customer: known before the call.
    view, _ = record_of(
        payer=Party(None, None, cmd.from_account_id),
        payee=Party(None, None, cmd.to_account_id),
        **fields,
    )
    payload = json.dumps(
        _payload(cmd, request, view, ctx=ctx, c=c, store=store)
        | {
            "purpose": purpose,
            "key_id": factor.key_id,
            "signature_verified": keys.verify(factor.key_id, factor.signature, message),
        }
    )

    def work(conn: Any) -> tuple[StoredResponse, bool]:
        found = _call(conn, payload, now=ctx.now)
        replay_status, replay_body, replay_type, payer_id, payee_id, payer_blob, payee_blob = found
        if replay_status is not None:
            return store.stored(request, replay_status, replay_body, replay_type), True

        def name(customer_id: str, blob: bytes) -> str:
            return decrypt_field(c.vault, "customers", customer_id, blob, "name_enc") or ""

        done, row = record_of(
            payer=Party(payer_id, name(payer_id, payer_blob), cmd.from_account_id),
            payee=Party(payee_id, name(payee_id, payee_blob), cmd.to_account_id),
            **fields,
        )
        response = StoredResponse(201, render(done), "application/json")
        conn.execute(
            _FINISH,
            row
            | {
                "authentication": Jsonb(row["authentication"]),
                "r_status": response.status,
                "r_body": store.sealed(request, response.body),
                "r_content_type": response.content_type,
                "r_scope": request.scope,
                "r_key": request.key,
            },
            prepare=True,
        )
        return response, False

    return db.run_driver(work)


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
        "event_id": c.ids.new(IdPrefix.EVENT),
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
        raise refusal(message.removeprefix("custodia:"), detail, now=now) from None
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
}


def refusal(code: str, detail: dict[str, Any], *, now: datetime) -> DomainError:
    """Return the DomainError the transfer function's refusal ``code`` stands for."""
    return _REFUSALS[code](detail, now)
