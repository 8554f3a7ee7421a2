"""What the audit trail costs: verification rate, sealing rate, and the write on the hot path.

1. Verification (PostgreSQL and SQLite): load N events (default 1,000,000), seal them with
   the real sealer, then time ``custodia.core.audit.verify`` over the whole chain. The
   anchor, in the same run, streams the very same rows through the same query without
   hashing: the ratio says how much of verification is the HMAC work and how much is
   reading. Goal (issue 3): 1,000,000 events verified in under 10 s.
2. Write cost (PostgreSQL, pgbench, 32 clients, synchronous commit on): a transfer-shaped
   transaction (two balance updates and a journal insert) without an audit event (the
   anchor), with our audit insert (one inbox row, no lock, no key), and with the
   design we did not choose — a per-stream hash chain that locks one of 16 stream heads in
   the business transaction. Rounds are interleaved; medians are reported.

    .venv/bin/python bench/audit_trail.py [--events 1000000] [--rounds 3] [--duration 15]

Traffic goes only to 127.0.0.1. Writes ``bench/results/audit_trail.md``.
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from custodia.core import audit, migrate
from custodia.core.db import Database, create_db_engine
from custodia.core.keys import generate_key_file
from custodia.core.models import AuditEvent, AuditInbox
from custodia.core.settings import Environment, load_settings

RESULTS = ROOT / "bench" / "results"
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
START = datetime(2026, 11, 22, tzinfo=UTC)


def _database(url: str, var: Path) -> Database:
    settings = load_settings({}, database_url=url, var_dir=str(var))
    engine = create_db_engine(url, settings)
    migrate.upgrade(engine)
    return Database(engine)


def _rows(count: int) -> list[tuple[object, ...]]:
    return [
        (
            START + timedelta(milliseconds=i),
            "client",
            f"cli_01m80pjbg0pw3spwzyxzkt{i % 10000:04d}",
            "accounts:transfer:posted",
            f"txn_01m80pjbg0pw3spwz{i:07d}",
            f"req_01m80pjbg0pw3spwzyx{i:07d}",
            f'{{"amount":{i % 100000},"currency":"CNY","from":"acc_01m80pjbg0","to":"acc_01m80pjbg1"}}',
        )
        for i in range(count)
    ]


def _load_postgres(url: str, count: int) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY audit_inbox (at, actor_kind, actor_id, action, target, request_id, details) "
            "FROM STDIN"
        ) as copy:
            for row in _rows(count):
                copy.write_row(row)
        conn.commit()


def _load_sqlite(db: Database, count: int) -> None:
    batch = 50_000
    rows = _rows(count)
    for start in range(0, count, batch):
        chunk = [
            {
                "at": r[0],
                "actor_kind": r[1],
                "actor_id": r[2],
                "action": r[3],
                "target": r[4],
                "request_id": r[5],
                "details": r[6],
            }
            for r in rows[start : start + batch]
        ]
        db.run(lambda s, c=chunk: s.execute(AuditInbox.__table__.insert(), c))


def _stream_only(db: Database) -> int:
    """The anchor: read every sealed event through verify's reader, hash nothing."""

    def work(session: object) -> int:
        count = 0
        for _row in audit._seal_rows(session, 10_000):  # type: ignore[arg-type]
            count += 1
        return count

    return db.run(work, read_only=True)


def bench_verify(label: str, db: Database, count: int, rounds: int, lines: list[str]) -> None:
    keys = generate_key_file(Environment.DEVELOPMENT, START)
    started = time.perf_counter()
    sealed = 0
    while True:
        n = db.run(lambda s: audit.seal_pending(s, keys, START, limit=10_000))
        sealed += n
        if n == 0:
            break
    seal_s = time.perf_counter() - started
    assert sealed == count, (sealed, count)
    verify_s, stream_s = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        assert _stream_only(db) == count
        stream_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        report = db.run(lambda s: audit.verify(s, keys), read_only=True)
        verify_s.append(time.perf_counter() - t)
        assert report.ok and report.events_checked == count, report
    v, a = statistics.median(verify_s), statistics.median(stream_s)
    line = (
        f"| {label} | {count:,} | {seal_s:.1f} s ({count / seal_s:,.0f}/s) | {v:.2f} s "
        f"({count / v:,.0f}/s) | {a:.2f} s | {v / a:.2f} |"
    )
    print(line, flush=True)
    lines.append(line)


PGBENCH_SETUP = """
CREATE TABLE bench_balances (id int PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));
INSERT INTO bench_balances SELECT g, 1000000000 FROM generate_series(1, 100000) g;
CREATE TABLE bench_journal (id bigserial PRIMARY KEY, debit int, credit int, amount bigint,
                            at timestamptz DEFAULT now());
CREATE TABLE bench_streams (id int PRIMARY KEY, seq bigint NOT NULL, hash bytea NOT NULL);
INSERT INTO bench_streams SELECT g, 0, '\\x00' FROM generate_series(0, 15) g;
"""

TRANSFER = """\\set a random(1, 100000)
\\set b random(1, 100000)
BEGIN;
UPDATE bench_balances SET balance = balance - 1 WHERE id = :a AND balance >= 1;
UPDATE bench_balances SET balance = balance + 1 WHERE id = :b;
INSERT INTO bench_journal (debit, credit, amount) VALUES (:a, :b, 1);
{extra}END;
"""
AUDIT_INSERT = (
    "INSERT INTO audit_inbox (at, actor_kind, actor_id, action, target, request_id, details) "
    "VALUES (now(), 'client', 'cli_01m80pjbg0pw3spwzyxzkt0001', concat_ws(chr(58), 'accounts', 'transfer', 'posted'), "
    "'txn_01m80pjbg0pw3spwz' || CAST(:a AS text), 'req_01m80pjbg0pw3spwzyx' || CAST(:b AS text), "
    "jsonb_build_object('amount', 1, 'currency', 'CNY')::text);\n"
)
# The rejected design: each transaction locks its stream's head, chains, and writes the link.
STREAM_CHAIN = (
    "UPDATE bench_streams SET seq = seq + 1, hash = sha256(hash || convert_to(CAST(:a AS text), 'UTF8')) "
    "WHERE id = CAST(:a AS int) % 16;\n" + AUDIT_INSERT
)
VARIANTS = {
    "anchor (no audit)": "",
    "audit event, sealed later (ours)": AUDIT_INSERT,
    "per-stream chain, 16 locked heads": STREAM_CHAIN,
}


def _pgbench(url: str, script: Path, clients: int, duration: int) -> tuple[float, float]:
    out = subprocess.run(
        ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(duration),
         "-f", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    tps = float(re.search(r"tps = ([\d.]+)", out)[1])  # type: ignore[index]
    latency = float(re.search(r"latency average = ([\d.]+) ms", out)[1])  # type: ignore[index]
    return tps, latency


def bench_writes(url: str, rounds: int, duration: int, lines: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PGBENCH_SETUP)
    folder = Path(tempfile.mkdtemp(prefix="custodia-pgbench-"))
    scripts = {}
    for name, extra in VARIANTS.items():
        path = folder / f"{len(scripts)}.sql"
        path.write_text(TRANSFER.format(extra=extra))
        scripts[name] = path
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    order = list(VARIANTS)
    for rnd in range(rounds):
        for name in order if rnd % 2 == 0 else list(reversed(order)):
            tps, latency = _pgbench(url, scripts[name], 32, duration)
            results[name].append((tps, latency))
            print(f"round {rnd + 1} {name:36} {tps:8.0f} tps  {latency:6.2f} ms", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    anchor = statistics.median(t for t, _ in results["anchor (no audit)"])
    anchor_latency = statistics.median(lat for _, lat in results["anchor (no audit)"])
    for name, runs in results.items():
        tps = statistics.median(t for t, _ in runs)
        latency = statistics.median(lat for _, lat in runs)
        line = (
            f"| {name} | {tps:,.0f} | {tps / anchor:.2f} | {latency:.2f} | "
            f"{latency - anchor_latency:+.2f} |"
        )
        lines.append(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=15, help="seconds per pgbench run")
    args = parser.parse_args()

    lines = [
        "# Audit trail",
        "",
        f"## Verification ({args.rounds} runs, medians)",
        "",
        "| backend | events | sealing (once) | verify | anchor: stream the rows | verify / anchor |",
        "|---|---|---|---|---|---|",
    ]
    name = f"custodia_bench_{secrets.token_hex(3)}"
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    var = Path(tempfile.mkdtemp(prefix="custodia-bench-"))
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        db = _database(url, var)
        print(f"loading {args.events:,} events into PostgreSQL …", flush=True)
        _load_postgres(url, args.events)
        bench_verify("PostgreSQL 15", db, args.events, args.rounds, lines)
        count = db.run(
            lambda s: s.execute(
                select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).limit(1)
            ).scalar()
        )
        assert count == args.events
        db.dispose()

        sqlite_db = _database(f"sqlite:///{var / 'bench.db'}", var)
        print(f"loading {args.events:,} events into SQLite …", flush=True)
        _load_sqlite(sqlite_db, args.events)
        bench_verify("SQLite (WAL)", sqlite_db, args.events, args.rounds, lines)
        sqlite_db.dispose()

        lines += [
            "",
            (
                f"## Write cost per transaction (pgbench, 32 clients, {args.duration} s runs, "
                f"{args.rounds} interleaved rounds, medians)"
            ),
            "",
            "| transaction | tps | ratio to anchor | avg latency ms | added latency ms |",
            "|---|---|---|---|---|",
        ]
        bench_writes(url, args.rounds, args.duration, lines)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(var, ignore_errors=True)
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "audit_trail.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
