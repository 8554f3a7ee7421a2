"""DDL that Alembic's operations do not cover: append-only triggers on both backends.

Kept in one place so that migrations and the test suite's clean-up build exactly the
same triggers.
"""

from __future__ import annotations

#: Every append-only table of the current schema (a migration that adds one adds it here).
APPEND_ONLY_TABLES = ("audit_events", "audit_seals")

REFUSE_FUNCTION_PG = """
CREATE OR REPLACE FUNCTION custodia_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'custodia: % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END
$$
"""
DROP_REFUSE_FUNCTION_PG = "DROP FUNCTION IF EXISTS custodia_refuse_change()"


def append_only(table: str, dialect: str) -> list[str]:
    """Return the statements that make ``table`` refuse UPDATE and DELETE (and TRUNCATE)."""
    if dialect == "postgresql":
        return [
            (
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION custodia_refuse_change()"
            ),
            (
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION custodia_refuse_change()"
            ),
        ]
    return [
        f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'custodia: {table} is append-only: {op} refused'); END"
        for op in ("UPDATE", "DELETE")
    ]


def drop_append_only(table: str, dialect: str) -> list[str]:
    """Return the statements that remove :func:`append_only`'s triggers."""
    if dialect == "postgresql":
        return [
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        ]
    return [f"DROP TRIGGER IF EXISTS {table}_no_{op}" for op in ("update", "delete")]
