"""Delayed settlement (K2): an account's incoming value is held until compliance releases it.

- ``payment_accounts.settlement_delayed_by``: the AML measure (``act_…``) delaying the
  account's settlement, or NULL;
- ``ledger_holds.reference``: what placed a hold (``aml:act_…`` for delayed settlement), so
  that a release finds exactly its holds;
- ``aml_actions.action`` also admits ``delay_settlement``;
- ``custodia_transfer(jsonb)`` (migration 0008) holds the credited amount on a payee whose
  settlement is delayed, as ``custodia.accounts.movements`` does on the Python path; the
  hold is named after the transaction it holds (``hld_`` + the transaction id's ULID).

Revision ID: 0010_settlement_delay
Revises: 0009_aml
Create Date: 2026-11-30
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

from custodia.migrations.ddl import GUARDS, drop_append_only, guard_statements

revision = "0010_settlement_delay"
down_revision = "0009_aml"
branch_labels = None
depends_on = None

_ACTIONS_BEFORE = "action IN ('freeze', 'terminate_service', 'lift')"
_ACTIONS_AFTER = "action IN ('freeze', 'delay_settlement', 'terminate_service', 'lift')"

# The 0008 function with two changes: the payee's delay is read with the payee, and a
# delayed payee's credit is held right after the posting. Each piece must occur once.
_PAYEE_BEFORE = """    SELECT a.customer_id, a.status, c.name_enc
      INTO v_payee"""
_PAYEE_AFTER = """    SELECT a.customer_id, a.status, c.name_enc, a.settlement_delayed_by
      INTO v_payee"""
_HOLD_ANCHOR = """    -- 7. The audit event, once per customer concerned, and the outbox event."""
_HOLD = """    -- 6b. Delayed settlement (K2): the credit is held until compliance releases it.
    IF v_payee.settlement_delayed_by IS NOT NULL THEN
        UPDATE ledger_accounts SET held = held + v_amount
         WHERE id = v_to AND currency = 'CNY';
        INSERT INTO ledger_holds (id, account_id, currency, amount, status, expires_at,
                                  created_at, resolved_at, capture_transaction_id, reference)
        VALUES ('hld_' || substr(p->>'transaction_id', 5), v_to, 'CNY', v_amount, 'active',
                (p->>'hold_until')::timestamptz, v_now, NULL, NULL,
                'aml:' || v_payee.settlement_delayed_by);
    END IF;

"""


def _transfer_0008() -> str:
    module = importlib.import_module("custodia.migrations.versions.0008_transfer_function")
    return str(module.TRANSFER)


def transfer_function() -> str:
    """Return this revision's ``custodia_transfer`` (0008's, patched as the docstring says)."""
    text = _transfer_0008()
    for piece in (_PAYEE_BEFORE, _HOLD_ANCHOR):
        if text.count(piece) != 1:
            raise RuntimeError(f"migration 0010: 0008's function changed near {piece!r}")
    return text.replace(_PAYEE_BEFORE, _PAYEE_AFTER).replace(_HOLD_ANCHOR, _HOLD + _HOLD_ANCHOR)


def _actions_check(condition: str) -> None:
    dialect = op.get_bind().dialect.name
    name = op.f("ck_aml_actions_action")
    if dialect == "postgresql":
        op.drop_constraint(name, "aml_actions", type_="check")
        op.create_check_constraint(name, "aml_actions", condition)
        return
    # SQLite rewrites the table to change a CHECK; its triggers go with the old table.
    (guard,) = [g for g in GUARDS if g.table == "aml_actions"]
    with op.batch_alter_table("aml_actions", recreate="always") as batch:
        batch.drop_constraint(name, type_="check")
        batch.create_check_constraint(name, condition)
    for statement in drop_append_only(guard.table, dialect, name=guard.name):
        op.execute(statement)
    for statement in guard_statements(guard, dialect):
        op.execute(statement)


def upgrade() -> None:
    with op.batch_alter_table("payment_accounts") as batch:
        batch.add_column(sa.Column("settlement_delayed_by", sa.String(length=40), nullable=True))
    with op.batch_alter_table("ledger_holds") as batch:
        batch.add_column(sa.Column("reference", sa.String(length=64), nullable=True))
    op.create_index("ix_ledger_holds_reference", "ledger_holds", ["reference"], unique=False)
    _actions_check(_ACTIONS_AFTER)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(transfer_function())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_transfer_0008())
    _actions_check(_ACTIONS_BEFORE)
    op.drop_index("ix_ledger_holds_reference", table_name="ledger_holds")
    with op.batch_alter_table("ledger_holds") as batch:
        batch.drop_column("reference")
    with op.batch_alter_table("payment_accounts") as batch:
        batch.drop_column("settlement_delayed_by")
