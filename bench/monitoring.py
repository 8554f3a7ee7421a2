"""Monitoring lag while transfers run, and how fast the rules drain a backlog (issue 7).

1. A fresh PostgreSQL database gets N funded accounts, loaded as ``bench/transfers.py``
   loads them (through the service layer).
2. ``custodia serve --workers 2`` and one ``custodia worker`` (``--monitor-workers N``: N;
   the outbox consumers, AML monitoring among them, every rule enabled at its defaults)
   run on it; wrk drives
   pre-signed ``POST /v1/transfers`` at 8 connections for the duration. ``/metrics`` is
   read every half second: ``custodia_aml_monitoring_lag_seconds`` (age of the oldest
   posted transaction the rules have not evaluated) and the pending count.
3. Then the load stops and the worker drains what is left: transactions evaluated per
   second, against the transfer rate.

    .venv/bin/python bench/monitoring.py [--accounts 100000] [--duration 30]
        [--monitor-workers 1] [--batch-size 100]

100,000 accounts is issue 7's book (loading it takes ~27 minutes here). With 2,000, every
account trades every few seconds and nearly every side extends an alert: a stress case
for the worker, not the goal's workload.

Goal (issue 7): rules throughput ≥ 2 × the transfer rate, so that the lag's p99 stays under
2 s while transfers run at full speed. Writes ``bench/results/monitoring.md``.

With ``BENCH_BOOKS=<dir>`` the loaded book (its database as a template, its keys,
its accounts), once the worker has evaluated the loading's top-ups, is kept there, and
later runs with the same ``--accounts`` start from a copy: 100,000 accounts load in most of
an hour. Drop it with ``DROP DATABASE custodia_book_monitoring_<N>`` and the directory.
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.common import (
    CUSTODIA,
    RESULTS,
    keep_book,
    kept_book,
    onboarding_app,
    scratch_database,
    serving,
    wrk,
)
from bench.transfers import LUA, _load, _requests

_LAG = re.compile(r"^custodia_aml_monitoring_lag_seconds (\S+)$", re.MULTILINE)
_PENDING = re.compile(r"^custodia_aml_monitoring_pending_transactions (\S+)$", re.MULTILINE)
#: What a worker that had run all along would have done: every posted transaction
#: evaluated and every audit event sealed (0 when the book is settled).
_UNSETTLED = (
    "SELECT (SELECT count(*) FROM outbox_events"
    " WHERE status = 'pending' AND event_type = 'accounts.transaction_posted')"
    " + (SELECT count(*) FROM audit_inbox)"
)


def _sample(base: str) -> tuple[float, float]:
    """Return the monitoring lag (s) and the pending transactions from ``/metrics``."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    lag, pending = _LAG.search(text), _PENDING.search(text)
    assert lag and pending, "the monitoring metrics are missing from /metrics"
    return float(lag[1]), float(pending[1])


class _Autoanalyze:
    """ANALYZE the tables monitoring reads every few seconds, standing in for autovacuum.

    The shared test server runs with ``autovacuum = off``; without fresh statistics the
    planner keeps the plans of the nearly empty tables the run starts with (sequential
    scans of ``aml_movements``), which production, with autovacuum on, never sees.
    """

    TABLES = "aml_movements, aml_alerts, aml_alert_transactions, aml_cases, outbox_events"

    def __init__(self, url: str, every_s: float = 5.0) -> None:
        self.url = url
        self.every_s = every_s
        self.last = 0.0

    def run(self) -> None:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"ANALYZE {self.TABLES}")
        self.last = time.monotonic()

    def maybe_run(self) -> None:
        if time.monotonic() - self.last >= self.every_s:
            self.run()


def _workers(
    env: dict[str, str], count: int, batch_size: int, log: object
) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [CUSTODIA, "worker"],
            env={**env, "CUSTODIA_OUTBOX_BATCH_SIZE": str(batch_size)},
            stdout=log,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
        )
        for _ in range(count)
    ]


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(timeout=30)


def _load_book(
    url: str, var: Path, env: dict[str, str], count: int
) -> tuple[dict[str, str], list[tuple[int, str, str, str]]]:
    """Load ``count`` funded accounts, let a worker evaluate their top-ups, keep the book."""
    import psycopg  # noqa: PLC0415

    key = onboarding_app(env)
    half = count // 2
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        parts = pool.map(_load, [(env, 0, half), (env, half, count)])
    accounts = [row for part in parts for row in part]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE customers SET created_by = %s", (key["id"],))
        conn.execute("VACUUM ANALYZE")
    _settle(url, var, env)
    keep_book(f"monitoring-{count}", url, var, {"key": key, "accounts": accounts})
    return key, accounts


def _settle(url: str, var: Path, env: dict[str, str]) -> None:
    """Run a worker until the loading's audit events are sealed and its transactions evaluated.

    The load runs without a worker; in production one runs all along. Left for the
    measured run, 700,000 audit events of 100,000 accounts took the worker's first
    half-minute (sealed in slices since, but still competing with monitoring).
    """
    import psycopg  # noqa: PLC0415

    started = time.monotonic()
    with (var / "worker.log").open("ab") as log:
        workers = _workers(env, 1, 100, log)
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                while conn.execute(_UNSETTLED).fetchone()[0]:  # type: ignore[index]
                    time.sleep(2)
        finally:
            _stop(workers)
    print(f"the worker settled the book in {time.monotonic() - started:.0f} s", flush=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def main() -> None:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--accounts", type=int, default=100_000, help="the issue's book; 2000 is alert-heavy"
    )
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument(
        "--monitor-workers", type=int, default=1, help="`custodia worker` processes (SKIP LOCKED)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=100, help="events per claimed batch (the setting)"
    )
    args = parser.parse_args()
    saved = kept_book(f"monitoring-{args.accounts}")
    with scratch_database("monitoring", book=saved) as (url, var, env):
        import psycopg  # noqa: PLC0415

        if saved is None:
            key, accounts = _load_book(url, var, env, args.accounts)
        else:
            key = saved.data["key"]
            accounts = [tuple(row) for row in saved.data["accounts"]]
        script = var / "transfer.lua"
        script.write_text(LUA)
        batch = var / "load.tsv"
        _requests(batch, accounts, 60_000, "mon", 1)
        worker_log = (var / "worker.log").open("ab")
        workers = _workers(env, args.monitor_workers, args.batch_size, worker_log)
        try:
            with serving(env, var / "server.log") as (base, _):
                # The loading's own events (top-ups, registrations) are drained first.
                while _sample(base)[1] > 0:
                    time.sleep(1)
                samples: list[float] = []
                done = threading.Event()
                stats = _Autoanalyze(url)
                stats.run()  # the first movements are in: statistics as in production

                def watch() -> None:
                    while not done.is_set():
                        samples.append(_sample(base)[0])
                        stats.maybe_run()
                        time.sleep(0.5)

                watcher = threading.Thread(target=watch, daemon=True)
                watcher.start()
                cell = wrk(base, script, 8, args.duration, headers={}, env={
                    "CUSTODIA_BENCH_REQUESTS": str(batch),
                    "CUSTODIA_BENCH_AUTH": f"Bearer {key['key']}",
                })  # fmt: skip
                done.set()
                watcher.join()
                lag_end, pending_end = _sample(base)
                started = time.monotonic()
                while _sample(base)[1] > 0:
                    stats.maybe_run()
                    time.sleep(0.2)
                drain_s = time.monotonic() - started
        finally:
            _stop(workers)
        with psycopg.connect(url) as conn:
            evaluated = conn.execute(
                "SELECT count(DISTINCT transaction_id) FROM aml_movements"
            ).fetchone()
            alerts = conn.execute(
                "SELECT rule, count(*) FROM aml_alerts GROUP BY rule ORDER BY 2 DESC"
            ).fetchall()
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    drain_rate = pending_end / drain_s if drain_s > 0 else float("inf")
    rate = cell["ok_per_s"]
    lines = [
        "# Monitoring lag and rules throughput",
        "",
        (
            f"PostgreSQL 15, {len(accounts):,} funded accounts, `custodia serve --workers 2` "
            f"and {args.monitor_workers} `custodia worker` (batches of {args.batch_size}; every AML rule at "
            f"its defaults), wrk at 8 "
            f"connections for {args.duration} s, on {datetime.now(UTC):%Y-%m-%d}. The "
            f"server runs with autovacuum off: the bench runs ANALYZE on the monitoring "
            f"tables every 5 s in its place."
        ),
        "",
        f"- Transfers while monitored: **{rate:,.0f}/s** (p99 {cell['p99']:.0f} ms).",
        (
            f"- Monitoring lag, sampled every 0.5 s ({len(samples)} samples): median "
            f"{statistics.median(samples):.2f} s, **p99 {p99:.2f} s**, max {samples[-1]:.2f} s."
        ),
        (
            f"- Left when the load stopped: {pending_end:.0f} transactions (lag "
            f"{lag_end:.1f} s), drained in {drain_s:.1f} s: **{drain_rate:,.0f} "
            f"transactions/s** evaluated with the load off, "
            f"{drain_rate / rate:.1f} × the transfer rate."
        ),
        (
            f"- Transactions evaluated in all: {evaluated[0] if evaluated else '?'}; alerts "
            f"raised: {sum(n for _, n in alerts)} ("
            + ", ".join(f"{rule} {n}" for rule, n in alerts)
            + ")."
        ),
    ]
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "monitoring.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
