"""Transfers in one round trip on PostgreSQL: ``custodia_transfer(jsonb)``.

The function does, inside the caller's transaction, what ``custodia.accounts.movements``
does for a transfer authorised by a device signature, in the same order and with the same
refusals: claim the idempotency key, load both accounts and customers, check visibility
and statuses, the purpose of a large corporate transfer, the payment lock and the signing
key, consume the limits, post the ledger (conditional debit), write the journal, the
audit events and the outbox event. Python verifies the signature itself (the function is
told whether it verified) and writes the transaction record and the stored response with
the COMMIT. ``custodia.accounts.fastpath`` documents the contract; SQLite has no such
function and runs the Python path.

A refusal is ``RAISE EXCEPTION`` with SQLSTATE P0001, the message ``custodia:<code>`` and
the refusal's data as JSON in DETAIL; it rolls the whole transaction back.

Revision ID: 0008_transfer_function
Revises: 0007_accounts
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0008_transfer_function"
down_revision = "0007_accounts"
branch_labels = None
depends_on = None

REFUSE = """
CREATE OR REPLACE FUNCTION custodia_refuse(code text, detail jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'custodia:' || code,
        DETAIL = detail::text;
END
$$
"""

CONSUME_LIMIT = """
CREATE OR REPLACE FUNCTION custodia_consume_limit(
    p_customer text, p_rule text, p_period text, p_label text, p_regulation text,
    p_cap bigint, p_amount bigint
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_used bigint;
BEGIN
    -- R5, R6, K4: used + amount <= cap, as one conditional upsert (concurrency-safe).
    INSERT INTO limit_usage AS u (customer_id, rule, period, used)
    SELECT p_customer, p_rule, p_period, p_amount WHERE p_amount <= p_cap
    ON CONFLICT (customer_id, rule, period)
        DO UPDATE SET used = u.used + excluded.used WHERE u.used + excluded.used <= p_cap;
    IF NOT FOUND THEN
        SELECT coalesce(sum(used), 0) INTO v_used FROM limit_usage
         WHERE customer_id = p_customer AND rule = p_rule AND period = p_period;
        PERFORM custodia_refuse('limit_exceeded', jsonb_build_object(
            'rule', p_rule, 'regulation', p_regulation, 'period', p_label, 'limit', p_cap,
            'used', v_used, 'requested', p_amount));
    END IF;
END
$$
"""

TRANSFER = """
CREATE OR REPLACE FUNCTION custodia_transfer(
    p jsonb,
    OUT replay_status integer, OUT replay_body bytea, OUT replay_content_type text,
    OUT payer_customer_id text, OUT payee_customer_id text,
    OUT payer_name_enc bytea, OUT payee_name_enc bytea
)
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := (p->>'now')::timestamptz;
    v_amount bigint := (p->>'amount')::bigint;
    v_from text := p->>'from_account_id';
    v_to text := p->>'to_account_id';
    v_scope text := p->>'scope';
    v_key text := p->>'key';
    v_lock_timeout text := current_setting('lock_timeout');
    v_claimed boolean;
    v_payer record;
    v_payee record;
    v_idem record;
    v_cred record;
    v_updated text[];
    v_account text;
    v_balance bigint;
    v_held bigint;
BEGIN
    -- 1. The idempotency key, claimed as the first write (custodia.core.idempotency).
    LOOP
        PERFORM set_config('lock_timeout', p->>'lock_wait', true);
        INSERT INTO idempotency_keys (scope, key, fingerprint, state, created_at, expires_at)
        VALUES (v_scope, v_key, p->>'fingerprint', 'in_flight', v_now,
                (p->>'expires_at')::timestamptz)
        ON CONFLICT (scope, key) DO NOTHING;
        v_claimed := FOUND;
        PERFORM set_config('lock_timeout', v_lock_timeout, true);
        EXIT WHEN v_claimed;
        SELECT fingerprint, state, response_status, response_body, response_content_type,
               expires_at
          INTO v_idem FROM idempotency_keys WHERE scope = v_scope AND key = v_key;
        CONTINUE WHEN NOT FOUND;  -- purged between the insert and the read
        IF v_idem.expires_at <= v_now THEN
            UPDATE idempotency_keys
               SET fingerprint = p->>'fingerprint', state = 'in_flight', response_status = NULL,
                   response_body = NULL, response_content_type = NULL, created_at = v_now,
                   expires_at = (p->>'expires_at')::timestamptz
             WHERE scope = v_scope AND key = v_key AND expires_at <= v_now;
            EXIT WHEN FOUND;
            CONTINUE;
        END IF;
        IF v_idem.fingerprint <> p->>'fingerprint' THEN
            PERFORM custodia_refuse('idempotency_key_reused', '{}');
        END IF;
        IF v_idem.state <> 'completed' THEN
            PERFORM custodia_refuse('idempotency_key_in_flight', '{}');
        END IF;
        replay_status := v_idem.response_status;
        replay_body := v_idem.response_body;
        replay_content_type := v_idem.response_content_type;
        RETURN;
    END LOOP;

    -- 2. The payer's account and customer: visible to the caller (else 404).
    SELECT a.customer_id, a.account_class, a.status, c.type, c.status AS customer_status,
           c.created_by, c.name_enc
      INTO v_payer
      FROM payment_accounts a JOIN customers c ON c.id = a.customer_id
     WHERE a.id = v_from;
    IF NOT FOUND THEN
        PERFORM custodia_refuse('not_found', jsonb_build_object(
            'resource', 'account', 'id', v_from));
    END IF;
    IF p->>'visible_to' IS NOT NULL AND v_payer.created_by <> p->>'visible_to' THEN
        PERFORM custodia_refuse('not_found', jsonb_build_object(
            'resource', 'customer', 'id', v_payer.customer_id));
    END IF;
    SELECT a.customer_id, a.status, c.name_enc
      INTO v_payee
      FROM payment_accounts a JOIN customers c ON c.id = a.customer_id
     WHERE a.id = v_to;
    IF NOT FOUND THEN
        PERFORM custodia_refuse('not_found', jsonb_build_object(
            'resource', 'account', 'id', v_to));
    END IF;

    -- 3. Statuses (K2, K7, A3), then a large corporate transfer's purpose (B2).
    IF v_payer.status = 'frozen' THEN
        PERFORM custodia_refuse('account_frozen', jsonb_build_object('account_id', v_from));
    END IF;
    IF v_payer.status = 'closed' THEN
        PERFORM custodia_refuse('account_not_active', jsonb_build_object(
            'account_id', v_from, 'status', 'closed'));
    END IF;
    IF v_payer.customer_status = 'closed' THEN
        PERFORM custodia_refuse('customer_not_eligible', jsonb_build_object(
            'customer_id', v_payer.customer_id,
            'reason', 'the customer relationship has ended'));
    END IF;
    IF v_payer.status IN ('closing', 'restricted') THEN
        PERFORM custodia_refuse('account_not_active', jsonb_build_object(
            'account_id', v_from, 'status', v_payer.status));
    END IF;
    IF v_payer.customer_status = 'restricted' THEN
        PERFORM custodia_refuse('customer_not_eligible', jsonb_build_object(
            'customer_id', v_payer.customer_id, 'regulation', 'K7',
            'reason', 'a restricted customer may only withdraw to their own bank card'));
    END IF;
    IF v_payee.status IN ('closed', 'closing') THEN
        PERFORM custodia_refuse('account_not_active', jsonb_build_object(
            'account_id', v_to, 'status', v_payee.status));
    END IF;
    IF v_payer.type = 'corporate' AND v_amount > (p->>'purpose_threshold')::bigint
       AND p->>'purpose' IS NULL THEN
        PERFORM custodia_refuse('purpose_required', '{}');
    END IF;

    -- 4. The customer's factor (K3): not locked, a live key of the payer's that verified.
    SELECT failed_attempts, locked_until INTO v_cred
      FROM customer_credentials WHERE customer_id = v_payer.customer_id;
    IF FOUND AND v_cred.locked_until IS NOT NULL AND v_cred.locked_until > v_now THEN
        PERFORM custodia_refuse('authentication_locked', jsonb_build_object(
            'locked_until', v_cred.locked_until));
    END IF;
    IF NOT (p->>'signature_verified')::boolean OR NOT EXISTS (
        SELECT 1 FROM customer_signing_keys
         WHERE id = p->>'key_id' AND customer_id = v_payer.customer_id AND revoked_at IS NULL
    ) THEN
        PERFORM custodia_refuse('authentication_failed', jsonb_build_object(
            'factor', 'signature', 'customer_id', v_payer.customer_id));
    END IF;
    IF v_cred.failed_attempts > 0 THEN
        UPDATE customer_credentials SET failed_attempts = 0, updated_at = v_now
         WHERE customer_id = v_payer.customer_id;
    END IF;

    -- 5. Limits (R5, R6, K4), in the order custodia.accounts.limits.charges lists them.
    IF v_payer.account_class = 'I' THEN
        PERFORM custodia_consume_limit(v_payer.customer_id, 'class_i_lifetime', 'lifetime',
            'since opening', 'R5', (p->>'class_i_lifetime')::bigint, v_amount);
    ELSIF v_payer.account_class IN ('II', 'III') THEN
        PERFORM custodia_consume_limit(v_payer.customer_id,
            'class_' || lower(v_payer.account_class) || '_yearly', p->>'year', p->>'year', 'R5',
            (p->>('class_' || lower(v_payer.account_class) || '_yearly'))::bigint, v_amount);
    END IF;
    IF v_payer.type = 'individual' THEN
        PERFORM custodia_consume_limit(v_payer.customer_id, 'daily', p->>'day', p->>'day',
            'K4', (p->>'daily')::bigint, v_amount);
    END IF;

    -- 6. The posting (B1): both balances in one statement, rows in id order, the debit
    --    only if the available balance covers it.
    WITH changed AS (
        UPDATE ledger_accounts
           SET balance = balance + CASE WHEN id = v_from THEN -v_amount ELSE v_amount END
         WHERE id IN (v_from, v_to) AND currency = 'CNY'
           AND (allow_overdraft OR id <> v_from OR balance - held >= v_amount)
        RETURNING id
    )
    SELECT array_agg(id) INTO v_updated FROM changed;
    IF coalesce(cardinality(v_updated), 0) <> 2 THEN
        FOREACH v_account IN ARRAY ARRAY[least(v_from, v_to), greatest(v_from, v_to)] LOOP
            CONTINUE WHEN v_account = ANY (coalesce(v_updated, '{}'));
            SELECT balance, held INTO v_balance, v_held
              FROM ledger_accounts WHERE id = v_account AND currency = 'CNY';
            IF NOT FOUND THEN
                PERFORM custodia_refuse('ledger_account_not_found', jsonb_build_object(
                    'account_id', v_account, 'currency', 'CNY'));
            END IF;
            PERFORM custodia_refuse('insufficient_funds', jsonb_build_object(
                'account_id', v_account, 'available', v_balance - v_held,
                'requested', CASE WHEN v_account = v_from THEN v_amount ELSE -v_amount END,
                'currency', 'CNY'));
        END LOOP;
    END IF;
    INSERT INTO ledger_transactions (id, kind, currency, reversal_of, created_at)
    VALUES (p->>'transaction_id', 'transfer', 'CNY', NULL, v_now);
    INSERT INTO ledger_entries (transaction_id, debit_account, credit_account, currency, amount,
                                created_at)
    VALUES (p->>'transaction_id', v_from, v_to, 'CNY', v_amount, v_now);

    -- 7. The audit event, once per customer concerned, and the outbox event.
    INSERT INTO audit_inbox (at, actor_kind, actor_id, action, target, customer_id, request_id,
                             details)
    SELECT v_now, p->>'actor_kind', p->>'actor_id', p->>'audit_action',
           p->>'transaction_id', c.id, p->>'request_id', p->>'audit_details'
      FROM (SELECT DISTINCT unnest(ARRAY[v_payer.customer_id, v_payee.customer_id]) AS id) c;
    INSERT INTO outbox_events (id, event_type, payload, status, attempts, created_at,
                               available_at)
    VALUES (p->>'event_id', p->>'event_type', p->'event_payload', 'pending', 0,
            v_now, v_now);

    payer_customer_id := v_payer.customer_id;
    payee_customer_id := v_payee.customer_id;
    payer_name_enc := v_payer.name_enc;
    payee_name_enc := v_payee.name_enc;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in (REFUSE, CONSUME_LIMIT, TRANSFER):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS custodia_transfer(jsonb)")
    op.execute(
        "DROP FUNCTION IF EXISTS "
        "custodia_consume_limit(text, text, text, text, text, bigint, bigint)"
    )
    op.execute("DROP FUNCTION IF EXISTS custodia_refuse(text, jsonb)")
