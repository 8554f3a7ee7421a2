"""DDL that Alembic's operations do not cover: append-only triggers on both backends.

Kept in one place so that migrations and the test suite's clean-up build exactly the
same triggers.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Every consent column but the IP's vault blob, which ``keys reencrypt`` may move to a new
#: key (its plaintext, and so the signed receipt, stays the same).
CONSENT_FROZEN_COLUMNS = (
    "id", "customer_id", "agreement_id", "agreement_kind", "agreement_version",
    "agreement_locale", "content_sha256", "accepted", "channel", "user_agent", "shown_at",
    "decided_at", "verification", "verification_ref", "prominent_clauses", "receipt_key_id",
    "receipt_signature", "actor_kind", "actor_id", "request_id",
)  # fmt: skip
#: Published agreements are frozen; drafts stay editable.
PUBLISHED_ONLY = "OLD.status = 'published'"


#: A payment transaction's record never changes, but for the outcome of a pending one (and
#: the re-encryption of the payer's and payee's names).
PAYMENT_TRANSACTION_FROZEN_COLUMNS = (
    "id", "type", "amount", "currency", "debit_account", "credit_account",
    "payer_customer_id", "payee_customer_id", "merchant_id", "merchant_name", "merchant_code",
    "mcc", "bank_card_id", "bank_card_masked", "bank_name", "channel", "terminal_type",
    "authentication", "purpose", "order_id", "description", "original_transaction_id",
    "trace_id", "created_at",
)  # fmt: skip
PAYMENT_OUTCOME_COLUMNS = ("status", "bank_reference", "completed_at")
#: An alert note never changes, but for its vault blob (``keys reencrypt``).
AML_NOTE_FROZEN_COLUMNS = ("id", "alert_id", "kind", "author", "created_at")
#: An action never changes, but for its vault blob (``keys reencrypt``).
AML_ACTION_FROZEN_COLUMNS = (
    "id", "action", "customer_id", "account_ids", "alert_id", "actor", "created_at",
)  # fmt: skip
#: A filed regulatory report never changes, but for its vault blob (``keys reencrypt``: the
#: plaintext, and so the digest kept in clear, stays the same).
REPORT_FROZEN_COLUMNS = (
    "id", "kind", "period_from", "period_to", "timezone", "counts", "content_sha256",
    "filed_by", "filed_at", "request_id",
)  # fmt: skip
#: A closed alert is read-only (issue 7: "closed alerts read-only").
CLOSED_ONLY = "OLD.status = 'closed'"


@dataclass(frozen=True, slots=True)
class Guard:
    """An append-only guard: which table, and optionally which columns or rows it freezes."""

    table: str
    columns: tuple[str, ...] | None = None  # None: every column
    when: str | None = None  # None: every row
    name: str | None = None  # the triggers' name stem when a table has two guards


#: Every guarded table of the current schema (a migration that adds one adds it here).
GUARDS = (
    Guard("audit_events"),
    Guard("verifications"),
    Guard("agreements", when=PUBLISHED_ONLY),
    Guard("consents", columns=CONSENT_FROZEN_COLUMNS),
    Guard("risk_warnings"),
    Guard("ledger_transactions"),
    Guard("ledger_entries"),
    Guard("payment_transactions", columns=PAYMENT_TRANSACTION_FROZEN_COLUMNS),
    Guard(
        "payment_transactions",
        columns=PAYMENT_OUTCOME_COLUMNS,
        when="OLD.status <> 'pending'",
        name="payment_transactions_outcome",
    ),
    Guard("aml_rule_versions"),
    Guard("aml_alerts", when=CLOSED_ONLY),
    Guard("aml_alert_transactions"),
    Guard("aml_alert_notes", columns=AML_NOTE_FROZEN_COLUMNS),
    Guard("aml_actions", columns=AML_ACTION_FROZEN_COLUMNS),
    Guard("regulatory_reports", columns=REPORT_FROZEN_COLUMNS),
)

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


def append_only(
    table: str,
    dialect: str,
    *,
    columns: tuple[str, ...] | None = None,
    when: str | None = None,
    name: str | None = None,
) -> list[str]:
    """Return the statements that make ``table`` refuse UPDATE and DELETE (and TRUNCATE).

    ``columns`` limits the refused UPDATEs to those that set one of them; ``when`` (a
    condition on ``OLD``) limits both refusals to the rows it holds for; ``name`` is the
    triggers' name stem (default: the table's).
    """
    stem = name or table
    update = f"UPDATE OF {', '.join(columns)}" if columns else "UPDATE"
    if dialect == "postgresql":
        condition = f"WHEN ({when}) " if when else ""
        return [
            (
                f"CREATE TRIGGER {stem}_append_only BEFORE {update} OR DELETE ON {table} "
                f"FOR EACH ROW {condition}EXECUTE FUNCTION custodia_refuse_change()"
            ),
            (
                f"CREATE TRIGGER {stem}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION custodia_refuse_change()"
            ),
        ]
    condition = f"WHEN {when} " if when else ""
    return [
        f"CREATE TRIGGER {stem}_no_{op.lower()} BEFORE {clause} ON {table} {condition}"
        f"BEGIN SELECT RAISE(ABORT, 'custodia: {table} is append-only: {op} refused'); END"
        for op, clause in (("UPDATE", update), ("DELETE", "DELETE"))
    ]


def drop_append_only(table: str, dialect: str, *, name: str | None = None) -> list[str]:
    """Return the statements that remove :func:`append_only`'s triggers."""
    stem = name or table
    if dialect == "postgresql":
        return [
            f"DROP TRIGGER IF EXISTS {stem}_append_only ON {table}",
            f"DROP TRIGGER IF EXISTS {stem}_no_truncate ON {table}",
        ]
    return [f"DROP TRIGGER IF EXISTS {stem}_no_{op}" for op in ("update", "delete")]


INBOX_GUARD_FUNCTION_PG = """
CREATE OR REPLACE FUNCTION custodia_audit_inbox_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'custodia: audit_inbox is append-only: UPDATE refused'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM audit_events WHERE event_id = OLD.id) THEN
        RAISE EXCEPTION 'custodia: audit_inbox is append-only: an unsealed event cannot be deleted'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN OLD;
END
$$
"""
DROP_INBOX_GUARD_FUNCTION_PG = "DROP FUNCTION IF EXISTS custodia_audit_inbox_guard()"


def audit_inbox_guard(dialect: str) -> list[str]:
    """Return the statements that keep inbox rows unchanged until their sealed copy exists."""
    if dialect == "postgresql":
        return [
            (
                "CREATE TRIGGER audit_inbox_guard BEFORE UPDATE OR DELETE ON audit_inbox "
                "FOR EACH ROW EXECUTE FUNCTION custodia_audit_inbox_guard()"
            ),
            (
                "CREATE TRIGGER audit_inbox_no_truncate BEFORE TRUNCATE ON audit_inbox "
                "FOR EACH STATEMENT EXECUTE FUNCTION custodia_refuse_change()"
            ),
        ]
    return [
        (
            "CREATE TRIGGER audit_inbox_no_update BEFORE UPDATE ON audit_inbox BEGIN "
            "SELECT RAISE(ABORT, 'custodia: audit_inbox is append-only: UPDATE refused'); END"
        ),
        (
            "CREATE TRIGGER audit_inbox_sealed_only BEFORE DELETE ON audit_inbox "
            "WHEN NOT EXISTS (SELECT 1 FROM audit_events WHERE event_id = OLD.id) BEGIN "
            "SELECT RAISE(ABORT, 'custodia: audit_inbox is append-only: an unsealed event "
            "cannot be deleted'); END"
        ),
    ]


def drop_audit_inbox_guard(dialect: str) -> list[str]:
    """Return the statements that remove :func:`audit_inbox_guard`'s triggers."""
    if dialect == "postgresql":
        return [
            "DROP TRIGGER IF EXISTS audit_inbox_guard ON audit_inbox",
            "DROP TRIGGER IF EXISTS audit_inbox_no_truncate ON audit_inbox",
        ]
    return [
        "DROP TRIGGER IF EXISTS audit_inbox_no_update",
        "DROP TRIGGER IF EXISTS audit_inbox_sealed_only",
    ]


def guard_statements(guard: Guard, dialect: str) -> list[str]:
    """Return the statements that create ``guard``'s triggers."""
    return append_only(
        guard.table, dialect, columns=guard.columns, when=guard.when, name=guard.name
    )


def guard_triggers(dialect: str) -> list[str]:
    """Return every guard trigger of the current schema (for the test suite's clean-up)."""
    tables = [s for guard in GUARDS for s in guard_statements(guard, dialect)]
    return [*tables, *audit_inbox_guard(dialect)]


def drop_guard_triggers(dialect: str) -> list[str]:
    """Return the statements that remove :func:`guard_triggers`."""
    tables = [
        s for guard in GUARDS for s in drop_append_only(guard.table, dialect, name=guard.name)
    ]
    return [*tables, *drop_audit_inbox_guard(dialect)]
