"""A transfer in one statement: ``custodia_transfer(jsonb)`` also writes the record and response.

Until now the function (migrations 0008, 0010) returned the two customers' sealed names and
Python wrote the transaction record and the stored response in a second statement, inside
an explicit transaction: four round trips (``BEGIN``, the call, the record, ``COMMIT``).
The caller now seals the record and the response *before* the call, from the customers'
name blobs it read earlier (``custodia.accounts.fastpath.Parties``), and tells the
function which blobs it used; the function

- refuses with ``parties_changed`` when an account's customer or that customer's name blob
  is no longer the one the caller sealed (a renamed customer: the caller reads again and
  retries), before any check that could refuse otherwise is skipped;
- inserts the record and completes the idempotency key as its last writes;
- refuses ``unauthenticated`` first if the calling API client (``p->>'client_id'``) was
  revoked: the HTTP guard may take a key it authenticated before from a per-process cache
  for this route (``custodia.api.security.Access.key_rechecked``), and this is where a
  revocation still takes effect at once.

The call then runs as one autocommit statement: one round trip, one transaction. The
signature and every other step are unchanged.

Revision ID: 0012_transfer_one_statement
Revises: 0011_aml_reports
Create Date: 2026-11-30
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0012_transfer_one_statement"
down_revision = "0011_aml_reports"
branch_labels = None
depends_on = None

#: The record's columns, as the caller sends them in ``p->'record'`` (bytea as ``\\x…``).
RECORD_COLUMNS = (
    "id", "type", "status", "amount", "currency", "debit_account", "credit_account",
    "payer_customer_id", "payee_customer_id", "payer_name_enc", "payee_name_enc",
    "merchant_id", "merchant_name", "merchant_code", "mcc", "bank_card_id",
    "bank_card_masked", "bank_name", "channel", "terminal_type", "authentication", "purpose",
    "order_id", "description", "original_transaction_id", "trace_id", "bank_reference",
    "created_at", "completed_at",
)  # fmt: skip

_CLAIM = "    -- 1. The idempotency key, claimed as the first write (custodia.core.idempotency)."
_CLIENT = """    -- 0. The caller's API key: not revoked since the guard took it from its cache.
    IF p->>'client_id' IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM api_clients WHERE id = p->>'client_id' AND revoked_at IS NULL
    ) THEN
        PERFORM custodia_refuse('unauthenticated', '{}');
    END IF;

"""
_STATUSES = """    -- 3. Statuses (K2, K7, A3), then a large corporate transfer's purpose (B2)."""
_PARTIES = """    -- 2b. The parties the caller sealed into the record: still these customers, still
    --     these names (else the caller reads them again and retries).
    IF v_payer.customer_id IS DISTINCT FROM p->>'payer_customer_id'
       OR v_payee.customer_id IS DISTINCT FROM p->>'payee_customer_id'
       OR v_payer.name_enc IS DISTINCT FROM decode(p->>'payer_name_enc', 'base64')
       OR v_payee.name_enc IS DISTINCT FROM decode(p->>'payee_name_enc', 'base64') THEN
        PERFORM custodia_refuse('parties_changed', '{}');
    END IF;

"""
_END = """    payer_customer_id := v_payer.customer_id;"""
_COLUMNS = ", ".join(RECORD_COLUMNS)
# Qualified: the function's OUT parameters share some of these names.
_VALUES = ", ".join(f"r.{c}" for c in RECORD_COLUMNS)
_RECORD = f"""    -- 8. The transaction record (B2) and the stored response, sealed by the caller.
    INSERT INTO payment_transactions ({_COLUMNS})
    SELECT {_VALUES}
      FROM jsonb_populate_record(NULL::payment_transactions, p->'record') AS r;
    UPDATE idempotency_keys
       SET state = 'completed', response_status = (p->>'response_status')::integer,
           response_body = decode(p->>'response_body', 'base64'),
           response_content_type = p->>'response_content_type'
     WHERE scope = v_scope AND key = v_key;

"""


def _transfer_0010() -> str:
    module = importlib.import_module("custodia.migrations.versions.0010_settlement_delay")
    return str(module.transfer_function())


def transfer_function() -> str:
    """Return this revision's ``custodia_transfer`` (0010's, patched as the docstring says)."""
    text = _transfer_0010()
    for piece in (_CLAIM, _STATUSES, _END):
        if text.count(piece) != 1:
            raise RuntimeError(f"migration 0012: 0010's function changed near {piece!r}")
    return (
        text.replace(_CLAIM, _CLIENT + _CLAIM)
        .replace(_STATUSES, _PARTIES + _STATUSES)
        .replace(_END, _RECORD + _END)
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(transfer_function())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_transfer_0010())
