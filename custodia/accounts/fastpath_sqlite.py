"""``custodia_transfer`` for the embedded SQLite database: the function's steps, on the driver.

On PostgreSQL a device-signed transfer is one call of the server-side function
``custodia_transfer`` (migrations 0008–0013, :mod:`custodia.accounts.fastpath`). SQLite has
no such functions, and the general path costs it ~14 ms of CPU per transfer, nearly all of
it the ORM building and running its statements. Here the function's steps run as plain
statements on the ``sqlite3`` connection, inside the write transaction
:meth:`custodia.core.db.Database.run_driver` opens (``BEGIN IMMEDIATE``, this process's
writers queued): the same checks in the same order, the same refusals (raised as
:class:`Refused` with the function's code and data), the same rows.

Instants and JSON go through SQLAlchemy's own bind processors for SQLite (of the model's
column types), so the rows hold what the ORM writes and reads back unchanged.
``tests/accounts/test_fastpath.py`` plays one script through this path and the general
path and compares what the caller gets and what the database holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeEngine

from custodia.accounts.models import PaymentTransaction
from custodia.core.models import OutboxEvent, UTCDateTime, table_of


class Refused(Exception):
    """The transfer is refused with the function's ``code`` and its data."""

    def __init__(self, code: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail or {}


_CLIENT = "SELECT 1 FROM api_clients WHERE id = ? AND revoked_at IS NULL"
_CLAIM = (
    'INSERT INTO idempotency_keys (scope, "key", fingerprint, state, response_status, '
    "response_body, response_content_type, created_at, expires_at) "
    "VALUES (?, ?, ?, 'completed', ?, ?, ?, ?, ?) ON CONFLICT (scope, \"key\") DO NOTHING"
)
_CLAIMED = (
    "SELECT fingerprint, state, response_status, response_body, response_content_type, "
    'expires_at FROM idempotency_keys WHERE scope = ? AND "key" = ?'
)
_RECLAIM = (
    "UPDATE idempotency_keys SET fingerprint = ?, state = 'completed', response_status = ?, "
    "response_body = ?, response_content_type = ?, created_at = ?, expires_at = ? "
    'WHERE scope = ? AND "key" = ? AND expires_at <= ?'
)
#: Both parties' accounts and customers in one statement (the two ids differ).
_PARTIES = (
    "SELECT a.id, a.customer_id, a.account_class, a.status, c.type, c.status, c.created_by, "
    "c.name_enc, a.settlement_delayed_by "
    "FROM payment_accounts a JOIN customers c ON c.id = a.customer_id WHERE a.id IN (?, ?)"
)
#: The payer's lockout and whether the signing key is a live one of theirs, at once.
_FACTOR = (
    "SELECT (SELECT failed_attempts FROM customer_credentials WHERE customer_id = ?1), "
    "(SELECT locked_until FROM customer_credentials WHERE customer_id = ?1), "
    "EXISTS (SELECT 1 FROM customer_signing_keys "
    "WHERE id = ?2 AND customer_id = ?1 AND revoked_at IS NULL)"
)
_RESET_FAILURES = (
    "UPDATE customer_credentials SET failed_attempts = 0, updated_at = ? WHERE customer_id = ?"
)
#: R5, R6, K4: used + amount <= cap, as one conditional upsert.
_CONSUME = (
    "INSERT INTO limit_usage (customer_id, rule, period, used) SELECT ?, ?, ?, ? WHERE ? <= ? "
    "ON CONFLICT (customer_id, rule, period) DO UPDATE SET used = limit_usage.used + "
    "excluded.used WHERE limit_usage.used + excluded.used <= ?"
)
_USED = (
    "SELECT coalesce(sum(used), 0) FROM limit_usage "
    "WHERE customer_id = ? AND rule = ? AND period = ?"
)
#: B1: both balances in one statement, the debit only if the available balance covers it.
_POST = (
    "UPDATE ledger_accounts SET balance = balance + CASE WHEN id = ?1 THEN -?3 ELSE ?3 END "
    "WHERE id IN (?1, ?2) AND currency = 'CNY' "
    "AND (allow_overdraft OR id <> ?1 OR balance - held >= ?3) RETURNING id"
)
_BALANCE = "SELECT balance, held FROM ledger_accounts WHERE id = ? AND currency = 'CNY'"
_JOURNAL = (
    "INSERT INTO ledger_transactions (id, kind, currency, reversal_of, created_at) "
    "VALUES (?, 'transfer', 'CNY', NULL, ?)"
)
_ENTRY = (
    "INSERT INTO ledger_entries (transaction_id, debit_account, credit_account, currency, "
    "amount, created_at) VALUES (?, ?, ?, 'CNY', ?, ?)"
)
_HOLD_BALANCE = "UPDATE ledger_accounts SET held = held + ? WHERE id = ? AND currency = 'CNY'"
_HOLD = (
    "INSERT INTO ledger_holds (id, account_id, currency, amount, status, expires_at, "
    "created_at, resolved_at, capture_transaction_id, reference) "
    "VALUES (?, ?, 'CNY', ?, 'active', ?, ?, NULL, NULL, ?)"
)
_AUDIT = (
    "INSERT INTO audit_inbox (at, actor_kind, actor_id, action, target, customer_id, "
    "request_id, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_OUTBOX = (
    "INSERT INTO outbox_events (id, event_type, payload, status, attempts, created_at, "
    "available_at) VALUES (?, ?, ?, 'pending', 0, ?, ?)"
)
#: The record's columns, in the table's order.
RECORD_COLUMNS = tuple(column.name for column in table_of(PaymentTransaction).columns)
_RECORD = (
    f"INSERT INTO payment_transactions ({', '.join(RECORD_COLUMNS)}) "  # noqa: S608 - the model's column names
    f"VALUES ({', '.join('?' for _ in RECORD_COLUMNS)})"
)


def _written(type_: TypeEngine[Any]) -> Callable[[Any], Any]:
    """Return how SQLAlchemy turns a value of ``type_`` into what it stores on SQLite."""
    processor = type_.dialect_impl(_SQLITE).bind_processor(_SQLITE)
    return processor if processor is not None else _as_is


def _as_is(value: Any) -> Any:
    return value


_SQLITE = sqlite.dialect()
_INSTANT = _written(UTCDateTime())
_PAYLOAD = _written(table_of(OutboxEvent).c.payload.type)
_RECORD_VALUES = tuple(
    (name, _written(table_of(PaymentTransaction).c[name].type)) for name in RECORD_COLUMNS
)


def instant(value: datetime | str) -> str:
    """Return an instant as SQLAlchemy stores it on SQLite (``UTCDateTime``'s processor)."""
    stored: str = _INSTANT(datetime.fromisoformat(value) if isinstance(value, str) else value)
    return stored


def transfer(conn: sqlite3.Connection, p: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Run the transfer function's steps; return the replayed response, or three Nones.

    ``p`` is what :mod:`custodia.accounts.fastpath` tells the PostgreSQL function, with the
    blobs as bytes and the record as its row. Raises :class:`Refused`; the caller's
    transaction then rolls back whole.
    """
    now = instant(p["now"])
    amount: int = p["amount"]
    source: str = p["from_account_id"]
    target: str = p["to_account_id"]

    # 0. The caller's API key: not revoked since the guard took it from its cache.
    if p["client_id"] is not None and conn.execute(_CLIENT, (p["client_id"],)).fetchone() is None:
        raise Refused("unauthenticated")

    # 1. The idempotency key, claimed with the sealed response (one writer: no waiting).
    replay = _claim(conn, p, now)
    if replay is not None:
        return replay

    # 2. The payer's account and customer, visible to the caller (else 404); the payee's.
    parties = {row[0]: row[1:] for row in conn.execute(_PARTIES, (source, target))}
    payer = parties.get(source)
    if payer is None:
        raise Refused("not_found", {"resource": "account", "id": source})
    payer_customer, account_class, payer_status, kind, customer_status, created_by = payer[:6]
    if p["visible_to"] is not None and created_by != p["visible_to"]:
        raise Refused("not_found", {"resource": "customer", "id": payer_customer})
    payee = parties.get(target)
    if payee is None:
        raise Refused("not_found", {"resource": "account", "id": target})
    payee_customer, payee_status, delayed_by = payee[0], payee[2], payee[7]

    # 2b. The parties the caller sealed into the record: still these customers and names.
    if (payer_customer, payee_customer, payer[6], payee[6]) != (
        p["payer_customer_id"], p["payee_customer_id"], p["payer_name_enc"], p["payee_name_enc"]
    ):  # fmt: skip
        raise Refused("parties_changed")

    # 3. Statuses (K2, K7, A3), then a large corporate transfer's purpose (B2).
    _statuses(source=source, target=target, customer=payer_customer, payer_status=payer_status,
              customer_status=customer_status, payee_status=payee_status)  # fmt: skip
    if kind == "corporate" and amount > p["purpose_threshold"] and p["purpose"] is None:
        raise Refused("purpose_required")

    # 4. The customer's factor (K3): not locked, a live key of the payer's that verified.
    _factor(conn, p, payer_customer, now)

    # 5. Limits (R5, R6, K4), in the order custodia.accounts.limits.charges lists them.
    if account_class == "I":
        _consume(conn, customer=payer_customer, rule="class_i_lifetime", period="lifetime",
                 label="since opening", regulation="R5", cap=p["class_i_lifetime"],
                 amount=amount)  # fmt: skip
    elif account_class in ("II", "III"):
        rule = f"class_{account_class.lower()}_yearly"
        _consume(conn, customer=payer_customer, rule=rule, period=p["year"], label=p["year"],
                 regulation="R5", cap=p[rule], amount=amount)  # fmt: skip
    if kind == "individual":
        _consume(conn, customer=payer_customer, rule="daily", period=p["day"], label=p["day"],
                 regulation="K4", cap=p["daily"], amount=amount)  # fmt: skip

    # 6. The posting (B1), the journal, and a hold on a payee whose settlement is delayed.
    _post(conn, source, target, amount)
    transaction_id: str = p["transaction_id"]
    conn.execute(_JOURNAL, (transaction_id, now))
    conn.execute(_ENTRY, (transaction_id, source, target, amount, now))
    if delayed_by is not None:
        conn.execute(_HOLD_BALANCE, (amount, target))
        conn.execute(
            _HOLD,
            (f"hld_{transaction_id[4:]}", target, amount, instant(p["hold_until"]), now,
             f"aml:{delayed_by}"),
        )  # fmt: skip

    # 7. The audit event, once per customer concerned, and the outbox event.
    conn.executemany(
        _AUDIT,
        [
            (now, p["actor_kind"], p["actor_id"], p["audit_action"], transaction_id, customer,
             p["request_id"], p["audit_details"])
            for customer in dict.fromkeys((payer_customer, payee_customer))
        ],
    )  # fmt: skip
    conn.execute(_OUTBOX, (p["event_id"], p["event_type"], _PAYLOAD(p["event_payload"]), now, now))

    # 8. The transaction record (B2), sealed by the caller.
    record = p["record"]
    conn.execute(_RECORD, [write(record[column]) for column, write in _RECORD_VALUES])
    return None, None, None


def _claim(conn: sqlite3.Connection, p: dict[str, Any], now: str) -> tuple[Any, Any, Any] | None:
    """Claim the key with the response in it; return a completed request's response instead."""
    scope, key = p["scope"], p["key"]
    response = (p["response_status"], p["response_body"], p["response_content_type"])
    expires = instant(p["expires_at"])
    if conn.execute(_CLAIM, (scope, key, p["fingerprint"], *response, now, expires)).rowcount:
        return None
    fingerprint, state, status, body, content_type, expires_at = conn.execute(
        _CLAIMED, (scope, key)
    ).fetchone()
    if expires_at <= now:  # an expired key is reused
        conn.execute(_RECLAIM, (p["fingerprint"], *response, now, expires, scope, key, now))
        return None
    if fingerprint != p["fingerprint"]:
        raise Refused("idempotency_key_reused")
    if state != "completed":
        raise Refused("idempotency_key_in_flight")
    return status, body, content_type


def _factor(conn: sqlite3.Connection, p: dict[str, Any], customer: str, now: str) -> None:
    """Refuse a locked customer or a signature that is not by a live key of theirs (K3)."""
    failures, locked, live = conn.execute(_FACTOR, (customer, p["key_id"])).fetchone()
    if locked is not None and locked > now:
        locked_until = datetime.fromisoformat(locked).replace(tzinfo=UTC)
        raise Refused("authentication_locked", {"locked_until": locked_until.isoformat()})
    if not p["signature_verified"] or not live:
        raise Refused("authentication_failed", {"factor": "signature", "customer_id": customer})
    if failures:  # None: the customer has no credentials row
        conn.execute(_RESET_FAILURES, (now, customer))


def _statuses(
    *,
    source: str,
    target: str,
    customer: str,
    payer_status: str,
    customer_status: str,
    payee_status: str,
) -> None:
    """Refuse a payer or payee that may not move value now (K2, K7, A3)."""
    if payer_status == "frozen":
        raise Refused("account_frozen", {"account_id": source})
    if payer_status == "closed":
        raise Refused("account_not_active", {"account_id": source, "status": "closed"})
    if customer_status == "closed":
        raise Refused(
            "customer_not_eligible",
            {"customer_id": customer, "reason": "the customer relationship has ended"},
        )
    if payer_status in ("closing", "restricted"):
        raise Refused("account_not_active", {"account_id": source, "status": payer_status})
    if customer_status == "restricted":
        raise Refused(
            "customer_not_eligible",
            {
                "customer_id": customer,
                "regulation": "K7",
                "reason": "a restricted customer may only withdraw to their own bank card",
            },
        )
    if payee_status in ("closed", "closing"):
        raise Refused("account_not_active", {"account_id": target, "status": payee_status})


def _consume(
    conn: sqlite3.Connection,
    *,
    customer: str,
    rule: str,
    period: str,
    label: str,
    regulation: str,
    cap: int,
    amount: int,
) -> None:
    """Add ``amount`` to a limit's use if it stays within ``cap`` (R5, R6, K4); else refuse."""
    if conn.execute(_CONSUME, (customer, rule, period, amount, amount, cap, cap)).rowcount:
        return
    (used,) = conn.execute(_USED, (customer, rule, period)).fetchone()
    raise Refused(
        "limit_exceeded",
        {"rule": rule, "regulation": regulation, "period": label, "limit": cap, "used": used,
         "requested": amount},
    )  # fmt: skip


def _post(conn: sqlite3.Connection, source: str, target: str, amount: int) -> None:
    """Debit ``source`` and credit ``target`` if the debit is covered (B1); else refuse."""
    updated = {row[0] for row in conn.execute(_POST, (source, target, amount)).fetchall()}
    if updated == {source, target}:
        return
    for account in sorted((source, target)):
        if account in updated:
            continue
        found = conn.execute(_BALANCE, (account,)).fetchone()
        if found is None:
            raise Refused("ledger_account_not_found", {"account_id": account, "currency": "CNY"})
        raise Refused(
            "insufficient_funds",
            {"account_id": account, "available": found[0] - found[1],
             "requested": amount if account == source else -amount, "currency": "CNY"},
        )  # fmt: skip
