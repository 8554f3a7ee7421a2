"""Rules throughput on a large history: the monitoring worker draining posted transactions.

Every AML rule is enabled at its defaults. What is **bulk-seeded with SQL** (``INSERT …
SELECT generate_series``, not the service layer: loading 20,000 accounts through it took
11 minutes) into a fresh PostgreSQL database built by the migrations:

- ``customers``: ``--accounts`` rows (2 % corporate, 5 % foreign, 3 % rated high risk,
  0.5 % potential watchlist matches); encrypted fields hold a placeholder byte, never read;
- the history: ``--lines`` / 2 past transfers between them over the last 90 days, as
  ``payment_transactions`` records and as monitoring's ``aml_movements`` (one row per
  customer side, ``--lines`` rows: what the rules read). Activity is skewed: the payer and
  payee are drawn as ``accounts × u²`` (u uniform), so low-numbered customers are busy;
- ``--events`` fresh transfer records (``payment_transactions``) over the same customers,
  4.5 ms apart (about 220 transfers/s) in posting order ending now, each with its pending outbox event
  ``accounts.transaction_posted``, as the posting path writes them.

Not seeded: payment accounts, the ledger's accounts and journal lines (the rules never read
them; account ids in the records follow the ``acc_`` convention that tells a customer side).

Then ``--workers`` processes (each the outbox processor of ``custodia worker``; one by
default) drain the backlog: transactions evaluated per second, and the time per claimed
batch (``--batch-size`` events in one transaction, 100 by default), against a transfer rate given with ``--transfer-rate`` or read from
``bench/results/monitoring.md`` (the transfers/s measured while monitored).

    .venv/bin/python bench/aml_rules.py [--accounts 100000] [--lines 1000000]
        [--events 20000] [--transfer-rate 220] [--workers 1] [--batch-size 100] [--profile]

Writes ``bench/results/aml_rules.md`` (and the py-spy summary with ``--profile``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench.common import RESULTS, profile_summary, scratch_database

_SEED_CUSTOMERS = """
INSERT INTO customers (id, type, status, name_enc, id_type, id_number_enc, document_index,
    document_version, nationality, financial_institution, screening_status, risk_level,
    risk_score, risk_factors, rated_at, created_by, created_at, updated_at)
SELECT 'cus_b' || lpad(g::text, 7, '0'),
       CASE WHEN g %% 50 = 0 THEN 'corporate' ELSE 'individual' END,
       'active', '\\x00'::bytea,
       CASE WHEN g %% 50 = 0 THEN 'uscc' ELSE 'prc_resident_id' END,
       '\\x00'::bytea, md5(g::text), 1,
       CASE WHEN g %% 20 = 7 THEN 'US' ELSE 'CN' END, false,
       CASE WHEN g %% 200 = 3 THEN 'potential_match' ELSE 'clear' END,
       CASE WHEN g %% 33 = 5 THEN 'high' WHEN g %% 10 = 1 THEN 'medium' ELSE 'low' END,
       0, '{}'::jsonb, now(), 'bench', now() - interval '400 days', now()
FROM generate_series(1, %(accounts)s) AS g
"""

# Transfers between two distinct customers drawn as accounts × u² (busy low numbers);
# amounts mostly small, a few large, some round. %(prefix)s names the records.
_SEED_TRANSFERS = """
INSERT INTO payment_transactions (id, type, status, amount, currency, debit_account,
    credit_account, payer_customer_id, payee_customer_id, channel, terminal_type,
    authentication, created_at, completed_at)
SELECT %(prefix)s || lpad(g::text, 9, '0'), 'transfer', 'succeeded', amount, 'CNY',
       'acc_b' || lpad(payer::text, 7, '0'), 'acc_b' || lpad(payee::text, 7, '0'),
       'cus_b' || lpad(payer::text, 7, '0'), 'cus_b' || lpad(payee::text, 7, '0'),
       'api', 'api', '{}'::jsonb, at, at
FROM (
    SELECT g, payer,
           CASE WHEN payee = payer THEN payer %% %(accounts)s + 1 ELSE payee END AS payee,
           CASE WHEN r < 0.02 THEN (10 + floor(random() * 50))::bigint * 100000
                ELSE 100 + floor(random() * random() * random() * 6000000)::bigint
           END AS amount,
           CASE WHEN %(fresh)s THEN now() - (%(count)s - g) * interval '4500 microseconds'
                ELSE now() - interval '1 hour' - random() * interval '90 days'
           END AS at
    FROM (
        SELECT g, random() AS r,
               1 + floor(%(accounts)s * random() ^ 2)::int AS payer,
               1 + floor(%(accounts)s * random() ^ 2)::int AS payee
        FROM generate_series(1, %(count)s) AS g
    ) AS drawn
) AS t
"""

# Monitoring's copy of the history, one row per customer side, as the consumer writes it.
_SEED_MOVEMENTS = """
INSERT INTO aml_movements (transaction_id, customer_id, direction, type, amount, currency,
    counterparty, cross_border, channel, at)
SELECT t.id, side.customer_id, side.direction, t.type, t.amount, t.currency,
       side.counterparty, t.channel = 'cross_border' OR other.nationality <> 'CN',
       t.channel, t.created_at
FROM payment_transactions AS t
CROSS JOIN LATERAL (VALUES ('out', t.payer_customer_id, t.payee_customer_id),
                           ('in', t.payee_customer_id, t.payer_customer_id))
    AS side (direction, customer_id, counterparty)
JOIN customers AS other ON other.id = side.counterparty
WHERE t.id LIKE 'txn_h%%'
ORDER BY t.created_at
"""

_SEED_EVENTS = """
INSERT INTO outbox_events (id, event_type, payload, status, attempts, created_at, available_at)
SELECT 'evt_f' || substr(id, 6), 'accounts.transaction_posted',
       jsonb_build_object('transaction_id', id), 'pending', 0, created_at, created_at
FROM payment_transactions WHERE id LIKE 'txn_f%%'
"""


def _seed(url: str, accounts: int, lines: int, events: int) -> dict[str, float]:
    """Bulk-load the history and the fresh backlog; return seconds per step."""
    took: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        steps: list[tuple[str, str, dict[str, Any]]] = [
            ("customers", _SEED_CUSTOMERS, {"accounts": accounts}),
            ("history records", _SEED_TRANSFERS,
             {"prefix": "txn_h", "accounts": accounts, "count": lines // 2, "fresh": False}),
            ("history movements", _SEED_MOVEMENTS, {}),
            ("fresh records", _SEED_TRANSFERS,
             {"prefix": "txn_f", "accounts": accounts, "count": events, "fresh": True}),
            ("outbox events", _SEED_EVENTS, {}),
        ]  # fmt: skip
        for name, sql, params in steps:
            started = time.monotonic()
            conn.execute(sql, params)
            took[name] = time.monotonic() - started
            print(f"  seeded {name} in {took[name]:.1f} s", flush=True)
        started = time.monotonic()
        conn.execute("VACUUM ANALYZE")
        took["vacuum analyze"] = time.monotonic() - started
    return took


def _anchor(given: float | None) -> tuple[float, str]:
    """Return the transfer rate to compare with, and where it comes from."""
    if given is not None:
        return given, "given with --transfer-rate"
    report = RESULTS / "monitoring.md"
    found = re.search(r"Transfers while monitored: \*\*([\d,.]+)/s\*\*", report.read_text()) if (
        report.exists()
    ) else None  # fmt: skip
    if found is None:
        raise SystemExit("no transfer rate: run bench/monitoring.py or pass --transfer-rate")
    return float(found[1].replace(",", "")), "bench/results/monitoring.md (transfers/s)"


def _drain(
    args: tuple[dict[str, str], Path | None],
) -> tuple[list[tuple[int, float]], float, float]:
    """Drain the outbox with the worker's processor; return (events, seconds) per batch and
    the drain's start and end (``time.monotonic``, one clock for every process)."""
    env, profile = args
    os.environ.update(env)
    from custodia.api.runtime import Runtime  # noqa: PLC0415 - after the environment is set
    from custodia.core.logging import configure_logging  # noqa: PLC0415
    from custodia.core.settings import load_settings  # noqa: PLC0415

    settings = load_settings(env, log_level="WARNING")
    configure_logging(settings, stream=sys.stderr)
    runtime = Runtime.build(settings)
    processor = runtime.outbox_processor()
    batches: list[tuple[int, float]] = []
    spy = None
    if profile is not None:
        # --idle: wall-clock samples, waiting on PostgreSQL included (where the time goes).
        spy = subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "--idle", "--format",
             "raw", "--rate", "200", "--duration", "20", "--nonblocking",
             "--pid", str(os.getpid()), "--output", str(profile)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1)
    try:
        started = time.monotonic()
        while True:
            t0 = time.perf_counter()
            handled = processor.process_batch()
            if not handled:
                break
            batches.append((handled, time.perf_counter() - t0))
        ended = time.monotonic()
    finally:
        runtime.close()
        if spy is not None:
            spy.wait(timeout=120)
    return batches, started, ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--transfer-rate", type=float, default=None)
    parser.add_argument("--profile", action="store_true", help="sample the drain with py-spy")
    parser.add_argument(
        "--batch-size", type=int, default=100, help="events per claimed batch (the setting)"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes draining together")
    args = parser.parse_args()
    rate, source = _anchor(args.transfer_rate)
    with scratch_database("aml_rules") as (url, var, env):
        print(f"seeding {args.accounts:,} customers, {args.lines:,} movements, "
              f"{args.events:,} fresh transactions", flush=True)  # fmt: skip
        seeded = _seed(url, args.accounts, args.lines, args.events)
        raw = var / "profile.raw" if args.profile else None
        env["CUSTODIA_OUTBOX_BATCH_SIZE"] = str(args.batch_size)
        if args.workers == 1:
            drained = [_drain((env, raw))]
        else:  # each its own process, as `custodia worker` runs; the first one profiled
            with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
                drained = pool.map(
                    _drain, [(env, raw if n == 0 else None) for n in range(args.workers)]
                )
        batches = [batch for part in drained for batch in part[0]]
        total = max(end for _, _, end in drained) - min(start for _, start, _ in drained)
        with psycopg.connect(url) as conn:
            evaluated, sides = conn.execute(
                "SELECT count(DISTINCT transaction_id), count(*) FROM aml_movements "
                "WHERE transaction_id LIKE 'txn_f%'"
            ).fetchone() or (0, 0)
            alerts = conn.execute(
                "SELECT rule, count(*) FROM aml_alerts GROUP BY rule ORDER BY 2 DESC"
            ).fetchall()
            left = conn.execute(
                "SELECT count(*) FROM outbox_events WHERE status <> 'done'"
            ).fetchone()
        summary = profile_summary(raw, top=45) if raw and raw.exists() else []
    events = sum(n for n, _ in batches)
    per_event_ms = sorted(1000 * s / n for n, s in batches)
    per_batch_ms = sorted(1000 * s for _, s in batches)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(len(values) * q))]

    drain_rate = events / total
    lines = [
        "# AML rules throughput on a large history",
        "",
        (
            f"PostgreSQL 15, every rule enabled at its defaults, {args.workers} worker "
            f"process(es) (the outbox processor of `custodia worker`, batches of "
            f"{args.batch_size}), on {datetime.now(UTC):%Y-%m-%d}."
        ),
        (
            f"Bulk-seeded with SQL (not through the service layer): {args.accounts:,} "
            f"customers, {args.lines // 2:,} past transfers over 90 days as "
            f"`payment_transactions` and {args.lines:,} `aml_movements` (the customer sides "
            f"the rules read), then {args.events:,} fresh transfer records with their pending "
            f"`accounts.transaction_posted` events. Not seeded: payment and ledger accounts, "
            f"journal lines (the rules do not read them). Seeding took "
            f"{sum(seeded.values()):.0f} s."
        ),
        "",
        (
            f"- Drained {events:,} events ({evaluated:,} transactions, {sides:,} customer "
            f"sides) in {total:.1f} s: **{drain_rate:,.0f} transactions/s**."
        ),
        (
            f"- Per claimed batch ({len(batches)} batches): p50 {pct(per_batch_ms, 0.5):.0f} ms, "
            f"p99 {pct(per_batch_ms, 0.99):.0f} ms; per event (batch time / its events): "
            f"p50 {pct(per_event_ms, 0.5):.2f} ms, p99 {pct(per_event_ms, 0.99):.2f} ms, "
            f"mean {statistics.fmean(per_event_ms):.2f} ms."
        ),
        (
            f"- Against {rate:,.0f} transfers/s ({source}): **{drain_rate / rate:.1f} × the "
            f"transfer rate** (goal ≥ 2 ×)."
        ),
        (
            f"- Alerts raised: {sum(n for _, n in alerts)} ("
            + (", ".join(f"{rule} {n}" for rule, n in alerts) or "none")
            + f"); events not done: {left[0] if left else '?'}."
        ),
    ]
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "aml_rules.md").write_text(table + "\n")
    if summary:
        (RESULTS / "aml_rules_profile.md").write_text(
            "# Where the drain's time goes (py-spy --idle, wall clock)\n\n"
            + "\n".join(summary)
            + "\n"
        )
        print("\n".join(summary[:40]))


if __name__ == "__main__":
    main()
