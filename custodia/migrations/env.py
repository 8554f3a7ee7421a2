"""Alembic environment: runs on the connection that ``custodia.core.migrate`` hands over."""

from __future__ import annotations

from alembic import context

from custodia.core.migrate import target_metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations with `custodia db upgrade` (custodia.core.migrate), not the alembic CLI"
    )

context.configure(
    connection=connection,
    target_metadata=target_metadata(),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
