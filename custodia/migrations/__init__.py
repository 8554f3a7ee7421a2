"""Alembic migrations: the only way Custodia's schema is made (tests included)."""
