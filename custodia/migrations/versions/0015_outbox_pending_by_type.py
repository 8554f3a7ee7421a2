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
posted transaction's age, read for every ``/metrics``) is an index-only scan rather than a
sequential scan of the whole outbox. (Extended statistics on ``status, event_type`` were
tried and left out: they made the row estimate exact but not the index's, so a claim on a
small outbox planned a sequential scan and a sort instead of the index.)

The dead events get a partial index of their own: ``/metrics`` counts them at every scrape,
and that count read the whole outbox, delivered events included (kept for
``CUSTODIA_OUTBOX_RETENTION_DAYS``), for what is normally none.

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
_DEAD = sa.text("status = 'dead'")


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
    op.create_index(
        "ix_outbox_events_dead",
        "outbox_events",
        ["created_at", "id"],
        postgresql_where=_DEAD,
        sqlite_where=_DEAD,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_events_dead", table_name="outbox_events")
    op.drop_index("ix_outbox_events_pending", table_name="outbox_events")
    op.create_index(
        "ix_outbox_events_pending",
        "outbox_events",
        ["available_at", "id"],
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    )
