"""The migrations are the schema: up from empty, down to empty, up again; models agree."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from custodia.core import migrate
from custodia.core.db import create_db_engine
from custodia.core.settings import Settings
from tests.conftest import make_settings


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_migrations_go_up_down_and_up_again(fresh_database_url: str, settings: Settings) -> None:
    """Every migration can be applied to an empty database and fully reverted."""
    engine = create_db_engine(
        fresh_database_url, make_settings(Path(settings.var_dir), fresh_database_url)
    )
    try:
        with engine.connect() as conn:
            assert migrate.current_revisions(conn) == set()
            assert not migrate.is_at_head(conn)
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert migrate.is_at_head(conn)
        created = _tables(engine)
        assert {"idempotency_keys", "outbox_events"} <= created

        migrate.downgrade(engine, "base")
        assert _tables(engine) == set()
        with engine.connect() as conn:
            assert migrate.current_revisions(conn) == set()

        migrate.upgrade(engine)
        assert _tables(engine) == created
    finally:
        engine.dispose()


def test_models_match_the_migrated_schema(engine: Engine) -> None:
    """Autogenerate finds nothing to change: the models describe what migrations built."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), migrate.target_metadata())
    assert diff == []
