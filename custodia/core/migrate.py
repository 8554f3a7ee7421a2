"""Apply and inspect the Alembic migrations programmatically (``custodia db …``, tests, /ready)."""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

#: Modules whose tables the migrations create; imported so the metadata is complete.
MODEL_MODULES = (
    "custodia.core.models",
    "custodia.access.models",
    "custodia.kyc.models",
    "custodia.agreements.models",
    "custodia.ledger.models",
    "custodia.accounts.models",
    "custodia.aml.models",
)


def target_metadata() -> MetaData:
    """Return the metadata of every model module (for autogenerate and drift checks)."""
    from custodia.core.models import Base  # noqa: PLC0415 - avoids an import cycle with env.py

    for name in MODEL_MODULES:
        importlib.import_module(name)
    return Base.metadata


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database of ``engine`` up to ``revision`` in one transaction."""
    with engine.begin() as connection:
        command.upgrade(_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database of ``engine`` down to ``revision`` in one transaction."""
    with engine.begin() as connection:
        command.downgrade(_config(connection), revision)


@cache
def head_revisions() -> frozenset[str]:
    """Return the revisions the code expects the database to be at (read once per process)."""
    return frozenset(ScriptDirectory.from_config(_config()).get_heads())


def current_revisions(connection: Connection) -> set[str]:
    """Return the revisions the database says it is at (empty before the first upgrade)."""
    return set(MigrationContext.configure(connection).get_current_heads())


def is_at_head(connection: Connection) -> bool:
    """Return whether the database schema is exactly what this code expects."""
    return current_revisions(connection) == head_revisions()
