"""The transfer function claims its idempotency key with the response already in the row.

Since migration 0012 the caller seals the response before the call, and the call is one
transaction: the key was inserted ``in_flight`` as the first write and updated to
``completed`` with the response as the last. No other transaction can ever see the
``in_flight`` row (it commits completed or not at all; a concurrent request with the same
key waits on the uncommitted insert, as before), so the function now inserts — or, for an
expired key, updates — the row completed with the response at once, and the last UPDATE
goes: one write of the row instead of two (and one dead row version less per transfer).
Measured with pgbench calling the function alone, 32 clients: 1.03 → 0.95 ms of CPU per
transfer (docs/architecture.md). Everything else is unchanged.

Revision ID: 0013_transfer_claim_completed
Revises: 0012_transfer_one_statement
Create Date: 2026-11-30
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0013_transfer_claim_completed"
down_revision = "0012_transfer_one_statement"
branch_labels = None
depends_on = None

_RESPONSE = """(p->>'response_status')::integer,
                decode(p->>'response_body', 'base64'), p->>'response_content_type'"""
_PATCHES = (
    (
        (
            "        INSERT INTO idempotency_keys (scope, key, fingerprint, state, created_at, "
            """expires_at)
        VALUES (v_scope, v_key, p->>'fingerprint', 'in_flight', v_now,
                (p->>'expires_at')::timestamptz)"""
        ),
        f"""        INSERT INTO idempotency_keys (scope, key, fingerprint, state, response_status,
                                      response_body, response_content_type, created_at,
                                      expires_at)
        VALUES (v_scope, v_key, p->>'fingerprint', 'completed', {_RESPONSE},
                v_now, (p->>'expires_at')::timestamptz)""",
    ),
    (
        (
            "               SET fingerprint = p->>'fingerprint', state = 'in_flight', "
            """response_status = NULL,
                   response_body = NULL, response_content_type = NULL, created_at = v_now,"""
        ),
        """               SET fingerprint = p->>'fingerprint', state = 'completed',
                   response_status = (p->>'response_status')::integer,
                   response_body = decode(p->>'response_body', 'base64'),
                   response_content_type = p->>'response_content_type', created_at = v_now,""",
    ),
    (
        """    -- 8. The transaction record (B2) and the stored response, sealed by the caller.""",
        """    -- 8. The transaction record (B2), sealed by the caller (the response is stored
    --    with the claim, step 1: the call commits whole or not at all).""",
    ),
    (
        """    UPDATE idempotency_keys
       SET state = 'completed', response_status = (p->>'response_status')::integer,
           response_body = decode(p->>'response_body', 'base64'),
           response_content_type = p->>'response_content_type'
     WHERE scope = v_scope AND key = v_key;
""",
        "",
    ),
)


def _transfer_0012() -> str:
    module = importlib.import_module("custodia.migrations.versions.0012_transfer_one_statement")
    return str(module.transfer_function())


def transfer_function() -> str:
    """Return this revision's ``custodia_transfer`` (0012's, patched as the docstring says)."""
    text = _transfer_0012()
    for old, new in _PATCHES:
        if text.count(old) != 1:
            raise RuntimeError(f"migration 0013: 0012's function changed near {old[:60]!r}")
        text = text.replace(old, new)
    return text


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(transfer_function())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_transfer_0012())
