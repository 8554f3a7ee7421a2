"""The outbox's pending events indexed by type first: a claim reads only its own types.

Events no consumer handles yet (``kyc.customer_registered``, ``accounts.account_opened``, …;
docs/operations.md, The outbox) stay ``pending`` until a later release connects one. The
claim used to walk ``(available_at, id) WHERE status = 'pending'`` from the oldest entry and
drop every event of a type it does not consume, so its cost grew with them: with 300,000
such events (three per customer at 100,000 customers) one claim took 56 ms and the
monitoring backlog's count 35 ms on an idle server, against well under a millisecond
(docs/aml.md, "2026-12-06, later"). Led by ``event_type``, each claim and each backlog count
is a range of the index for one type.

On PostgreSQL the index also carries ``created_at``, so the monitoring lag (the oldest
posted transaction's age, read for every ``/metrics``) is an index-only scan; and the
planner gets the joint distribution of ``status`` and ``event_type`` (extended statistics):
taking them as independent it expected twelve times the pending transactions there were
and chose a parallel sequential scan of the whole outbox.

Revision ID: 0015_outbox_pending_by_type
Revises: 0014_aml_movements_covering
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_outbox_pending_by_type"
down_revision = "0014_aml_movements_covering"
branch_labels = None
depends_on = None

_PENDING = sa.text("status = 'pending'")
_STATISTICS = "st_outbox_events_status_type"


def upgrade() -> None:
    op.drop_index("ix_outbox_events_pending", table_name="outbox_events")
    op.create_index(
        "ix_outbox_events_pending",
        "outbox_events",
        ["event_type", "available_at", "id"],
        postgresql_where=_PENDING,
        postgresql_include=["created_at"],
        sqlite_where=_PENDING,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE STATISTICS {_STATISTICS} (mcv) ON status, event_type FROM outbox_events"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP STATISTICS {_STATISTICS}")
    op.drop_index("ix_outbox_events_pending", table_name="outbox_events")
    op.create_index(
        "ix_outbox_events_pending",
        "outbox_events",
        ["available_at", "id"],
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    )
