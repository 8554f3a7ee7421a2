"""Onboarding throughput over HTTP on PostgreSQL, and screening latency (issue 4).

1. A 50,000-entry synthetic watchlist is loaded (half Chinese, half Western names).
2. ``custodia serve --workers 2`` runs on PostgreSQL; wrk (one thread, a Lua script that
   makes every body a new person with a valid resident id and phone) drives
   ``POST /v1/customers`` at 8 and 32 connections: validation, vault encryption, blind
   indexes, screening of the name against the list, rating, audit event and outbox event,
   one transaction each. Every 2xx is a registered customer.
3. The anchor, in the same run: pgbench on the same server inserting what one onboarding
   writes (customer row with blobs, audit inbox row, outbox row) in one transaction.
4. Screening latency: 2,000 names (variants of listed names and near misses) against the
   same 50,000 entries, in process; p50 / p95 / max.

    .venv/bin/python bench/onboarding.py [--entries 50000] [--duration 15] [--rounds 2]

Goals (issue 4): ≥ 300 customers/s; screening p95 ≤ 10 ms. Traffic goes only to
127.0.0.1. Writes ``bench/results/onboarding.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (
    CUSTODIA,
    RESULTS,
    onboarding_app,
    pgbench,
    refusals,
    rss_mib,
    run,
    scratch_database,
    serving,
    wrk,
)
from custodia.kyc.screening import ScreeningIndex
from tests.kyc.corpus import make_corpus

LUA = r"""
local counter = 0
local names = {"张伟", "王芳", "李娜", "刘洋", "陈静", "杨勇", "赵敏", "黄磊", "周杰", "吴霞",
               "Zhang Min", "Li Qiang", "Wang Lei", "Liu Fang", "Chen Jie"}
local weights = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
local codes = "10X98765432"
local base = os.time({year=1960, month=1, day=1, hour=12})
local offset = tonumber(os.getenv("CUSTODIA_BENCH_OFFSET") or "0")

local function resident_id(n)
  local day = base + math.floor(n / 500) * 86400
  local seq = (n % 500) * 2 + 1
  local body = "110105" .. os.date("!%Y%m%d", day) .. string.format("%03d", seq)
  local sum = 0
  for i = 1, 17 do sum = sum + tonumber(body:sub(i, i)) * weights[i] end
  local check = codes:sub((sum % 11) + 1, (sum % 11) + 1)
  return body .. check, os.date("!%Y-%m-%d", day)
end

request = function()
  counter = counter + 1
  local n = counter + offset
  local id, born = resident_id(n)
  local body = string.format(
    '{"type":"individual","name":"%s","id_type":"prc_resident_id","id_number":"%s",' ..
    '"id_valid_from":"2020-01-01","id_valid_until":"2040-01-01","nationality":"CN",' ..
    '"date_of_birth":"%s","gender":"male","phone":"139%08d","address":"北京市朝阳区建国路%d号",' ..
    '"occupation":"engineer"}',
    names[(n % #names) + 1], id, born, n % 100000000, n % 1000)
  return wrk.format("POST", "/v1/customers", nil, body)
end
"""

PGBENCH_ONBOARDING = r"""\set n random(1, 1000000000)
BEGIN;
INSERT INTO customers (id, type, status, name_enc, id_type, id_number_enc, document_index,
  document_version, id_valid_from, id_valid_until, nationality, date_of_birth_enc, gender_enc,
  phone_enc, phone_index, address_enc, occupation_enc, financial_institution, screening_status,
  risk_level, risk_score, risk_factors, rated_at, created_by, created_at, updated_at)
VALUES ('cus_' || md5(random()::text), 'individual', 'pending_verification',
  gen_random_bytes(60), 'prc_resident_id', gen_random_bytes(60), md5(random()::text) || md5(random()::text),
  1, '2020-01-01', '2040-01-01', 'CN', gen_random_bytes(50), gen_random_bytes(40),
  gen_random_bytes(55), md5(random()::text) || md5(random()::text), gen_random_bytes(80),
  gen_random_bytes(50), false, 'clear', 'low', 277, '{"factors": []}', now(), 'cli_bench', now(), now());
INSERT INTO audit_inbox (at, actor_kind, actor_id, action, target, customer_id, request_id, details)
VALUES (now(), 'client', 'cli_bench', 'kyc' || chr(58) || 'customer' || chr(58) || 'registered',
  'cus_x', 'cus_x', 'req_x', '{"type": "individual"}');
INSERT INTO outbox_events (id, event_type, payload, status, attempts, created_at, available_at)
VALUES ('evt_' || md5(random()::text), 'kyc.customer_registered', '{"customer_id": "cus_x"}',
  'done', 0, now(), now());
END;
"""


def main() -> None:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk")

    lines: list[str] = []
    with scratch_database("onboarding") as (url, var, env):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
        entries, queries = make_corpus(args.entries, 2000, seed=11)
        listing = var / "list.jsonl"
        with listing.open("w") as out:
            for e in entries:
                out.write(
                    json.dumps(
                        {
                            "list_id": "BENCH",
                            "name": e.name,
                            "date_of_birth": e.date_of_birth,
                            "nationality": e.nationality,
                            "reference": e.reference,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
        run(CUSTODIA, "watchlists", "load", str(listing), env=env)
        key = onboarding_app(env)["key"]
        # Only the one list version is screened against; drop the re-screen events it queued.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM outbox_events")

        # Screening latency, in process, against the same entries.
        index = ScreeningIndex(entries)
        latencies = []
        for q in queries:
            started = time.perf_counter()
            index.screen(
                q.name, date_of_birth=q.date_of_birth, nationality=q.nationality, threshold=85
            )
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        p50, p95 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.95)]

        server_log = var / "server.log"
        script = var / "onboard.lua"
        script.write_text(LUA)
        anchor_script = var / "anchor.sql"
        anchor_script.write_text(PGBENCH_ONBOARDING)
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        with serving(env, server_log) as (base, pid):
            # Warm-up: both workers build their screening index.
            wrk(base, script, 4, 5, headers=auth, env={"CUSTODIA_BENCH_OFFSET": "900000"})
            offset = 0
            for rnd in range(args.rounds):
                for conns in (8, 32):
                    cell = wrk(
                        base, script, conns, args.duration, headers=auth,
                        env={"CUSTODIA_BENCH_OFFSET": str(offset)},
                    )  # fmt: skip
                    offset += 200_000
                    results.setdefault(("http", conns), []).append(cell)
                    anchor = pgbench(url, anchor_script, conns, args.duration)
                    results.setdefault(("anchor", conns), []).append(anchor)
                    print(
                        f"round {rnd + 1} c={conns}: {cell['ok_per_s']:.0f} customers/s "
                        f"(p50 {cell['p50']:.1f} ms, p99 {cell['p99']:.1f} ms, non-2xx "
                        f"{cell['errors']:.0f}); anchor {anchor['tps']:.0f} tps",
                        flush=True,
                    )
            rss = rss_mib(pid)
        refused = refusals(server_log)
        with psycopg.connect(url) as conn:
            customers = conn.execute("SELECT count(*) FROM customers").fetchone()[0]  # type: ignore[index]

        lines += [
            "# Onboarding",
            "",
            (
                f"PostgreSQL 15, `custodia serve --workers 2`, wrk -t1, {args.duration} s runs, {args.rounds} rounds (medians); "
                f"watchlist of {args.entries:,} entries; {customers:,} customers registered in all."
            ),
            "",
            "| connections | customers/s | p50 ms | p99 ms | non-2xx | anchor (pgbench, same rows) tps | ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for conns in (8, 32):
            http = results[("http", conns)]
            anchor = results[("anchor", conns)]
            ok = statistics.median(c["ok_per_s"] for c in http)
            tps = statistics.median(a["tps"] for a in anchor)
            lines.append(
                f"| {conns} | {ok:,.0f} | {statistics.median(c['p50'] for c in http):.1f} | "
                f"{statistics.median(c['p99'] for c in http):.1f} | {sum(int(c['errors']) for c in http)} | {tps:,.0f} | {ok / tps:.2f} |"
            )
        lines += [
            "",
            f"Peak resident memory of a server worker: {rss:.0f} MiB.",
            "",
            f"Responses other than 201 (warm-up included), by status and code: {refused}.",
            "",
            (
                f"Screening latency ({len(queries):,} names against {args.entries:,} entries, in process): "
                f"p50 {p50:.2f} ms, p95 {p95:.2f} ms, max {latencies[-1]:.2f} ms."
            ),
        ]
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "onboarding.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
