"""Monitoring's movements: one covering index per customer and instant, no second one.

Every window aggregate of the rules is one range scan of a customer's movements by
``(customer_id, at)`` (``custodia.aml.windows``). On PostgreSQL that index now carries the
columns the aggregates read (``INCLUDE``), so a scan of an all-visible history reads the
index alone, not a heap page per movement; ``ix_aml_movements_window`` (customer,
direction, at) goes: nothing plans on it any more (the direction is one more condition on
the same range, now answered from the index), and it cost every insert. Measured with
``bench/aml_rules.py``'s data, the monitoring worker draining 7,900 events (two pairs):
PostgreSQL's CPU per event 0.478 / 0.487 → 0.377 / 0.351 ms (docs/aml.md). SQLite keeps a
plain ``(customer_id, at)`` index (it has no INCLUDE).

Revision ID: 0014_aml_movements_covering
Revises: 0013_transfer_claim_completed
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0014_aml_movements_covering"
down_revision = "0013_transfer_claim_completed"
branch_labels = None
depends_on = None

#: What the rules' aggregates read of a movement besides the key (custodia.aml.windows._READ).
_READ = ["transaction_id", "direction", "amount", "counterparty", "cross_border", "channel"]


def upgrade() -> None:
    op.drop_index("ix_aml_movements_window", table_name="aml_movements")
    op.drop_index("ix_aml_movements_customer_at", table_name="aml_movements")
    op.create_index(
        "ix_aml_movements_customer_at",
        "aml_movements",
        ["customer_id", "at"],
        postgresql_include=_READ,
    )


def downgrade() -> None:
    op.drop_index("ix_aml_movements_customer_at", table_name="aml_movements")
    op.create_index("ix_aml_movements_customer_at", "aml_movements", ["customer_id", "at"])
    op.create_index("ix_aml_movements_window", "aml_movements", ["customer_id", "direction", "at"])
