"""Compliant transfers over HTTP on PostgreSQL, against the same transfer in raw SQL (issue 6).

1. A fresh database gets N funded Class I accounts, loaded in bulk through the service
   layer (registration with validation, encryption, screening and rating; a passed
   verification; consent to the agreement in force; the account; a device key; a top-up),
   a batch of customers per transaction, in two processes.
2. ``custodia serve --workers 2`` runs on that database; wrk (one thread, so the load
   generator does not take the server's second core) replays pre-signed ``POST
   /v1/transfers`` requests of 1 fen between random accounts, each with a fresh
   ``Idempotency-Key`` and a device ``signature`` factor over the API.md signing string — so
   idempotency, factor verification, both limits, the conditional debit, the journal, the
   transaction record, the audit event and the outbox event all run — at 1, 8 and 32
   connections.
3. The anchor, in the same run and interleaved: pgbench on the same server doing the
   transfer in raw SQL (idempotency row, daily-limit upsert, conditional debit, credit,
   two journal rows), one transaction each, synchronous commit on. Beside it, what bounds
   the service: pgbench calling the compliant function ``custodia_transfer`` alone (no HTTP,
   no Python) with payloads the service sent it, and at 32 connections the HTTP stack
   answering after one database call (``GET /bench/call``, ``bench/bench_app.py``); the
   report combines the two into the rate a transfer costing nothing more would reach.

    .venv/bin/python bench/transfers.py [--accounts 100000] [--duration 15] [--rounds 2]

With ``BENCH_BOOKS=<dir>`` the loaded book is kept (``bench/common.py::kept_book``) and
later runs with the same ``--accounts`` start from a copy of it.

4. The same transfers paid with the payment password (the general path; the KDF bounds the
   rate), and transfers on the embedded SQLite default served the same way.

Goals (issue 6): ≥ 2,400 transfers/s at 32 connections, ≥ 0.5 of the anchor, p99 ≤ 25 ms,
≥ 1,000/s on SQLite, ≤ 250 MB per worker. ``--profile`` samples one worker with py-spy
at 32 connections. Writes ``bench/results/transfers.md``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import multiprocessing
import random
import statistics
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    RESULTS,
    keep_book,
    kept_book,
    onboarding_app,
    pgbench,
    profile_summary,
    refusals,
    rss_mib,
    sampled,
    scratch_database,
    serving,
    worker_pids,
    wrk,
)

LUA = r"""
local reqs = {}
local i = 0
local auth = os.getenv("CUSTODIA_BENCH_AUTH")
init = function(args)
  for line in io.lines(os.getenv("CUSTODIA_BENCH_REQUESTS")) do
    local tab = line:find("\t")
    reqs[#reqs + 1] = {line:sub(1, tab - 1), line:sub(tab + 1)}
  end
end
request = function()
  i = i + 1
  local r = reqs[((i - 1) % #reqs) + 1]
  return wrk.format("POST", "/v1/transfers", {
    ["Authorization"] = auth, ["Content-Type"] = "application/json", ["Idempotency-Key"] = r[1]
  }, r[2])
end
"""

ANCHOR = r"""\set a random(1, :accounts)
\set b 1 + ((:a - 1 + random(1, :accounts - 1)) % :accounts)
BEGIN;
INSERT INTO idempotency_keys (scope, key, fingerprint, state, response_status, response_body,
  response_content_type, created_at, expires_at)
  VALUES ('bench', md5(random()::text), 'f', 'completed', 201, '\x7b7d', 'application/json',
  now(), now() + interval '1 day');
INSERT INTO limit_usage (customer_id, rule, period, used)
  SELECT customer_id, 'daily', 'anchor', 1 FROM bench_accounts WHERE n = :a
  ON CONFLICT (customer_id, rule, period) DO UPDATE SET used = limit_usage.used + 1
  WHERE limit_usage.used + 1 <= 100000000;
UPDATE ledger_accounts SET balance = balance - 1
  WHERE id = (SELECT account_id FROM bench_accounts WHERE n = :a) AND balance - held >= 1;
UPDATE ledger_accounts SET balance = balance + 1
  WHERE id = (SELECT account_id FROM bench_accounts WHERE n = :b);
WITH t AS (INSERT INTO ledger_transactions (id, kind, currency, created_at)
  VALUES ('txn_' || md5(random()::text), 'transfer', 'CNY', now()) RETURNING id)
INSERT INTO ledger_entries (transaction_id, debit_account, credit_account, currency, amount, created_at)
  SELECT t.id, (SELECT account_id FROM bench_accounts WHERE n = :a),
    (SELECT account_id FROM bench_accounts WHERE n = :b), 'CNY', 1, now() FROM t;
COMMIT;
"""

#: The compliant function alone, without HTTP or Python: pgbench calls ``custodia_transfer``
#: with a payload the service sent it (captured by bench/bench_app.py), fresh key and ids.
FUNCTION = r"""\set n random(1, :count)
SELECT * FROM custodia_transfer((
  SELECT jsonb_set(jsonb_set(jsonb_set(jsonb_set(p, '{key}', to_jsonb(r)),
    '{transaction_id}', to_jsonb('txn_' || r)), '{event_id}', to_jsonb('evt_' || r)),
    '{record,id}', to_jsonb('txn_' || r))
  FROM bench_payloads, (SELECT md5(random()::text) AS r) fresh WHERE n = :n));
"""

#: One device key for every bench customer (each registers its public half).
DEVICE_SEED = bytes(range(32))


def _resident_id(n: int) -> tuple[str, date]:
    from stdnum.cn import ric  # noqa: PLC0415

    born = date(1960, 1, 1) + timedelta(days=n // 400)
    body = f"110105{born:%Y%m%d}{(n % 400) * 2 + 1:03d}"
    return body + ric.calc_check_digit(body + "0"), born


def _load(args: tuple[dict[str, str], int, int]) -> list[tuple[int, str, str, str]]:
    """Load customers ``start`` … ``stop - 1`` through the service layer; return their ids."""
    env, start, stop = args
    import os  # noqa: PLC0415

    os.environ.update(env)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    from custodia import agreements, kyc, ledger  # noqa: PLC0415
    from custodia.accounts import service as accounts  # noqa: PLC0415
    from custodia.api.runtime import Runtime  # noqa: PLC0415
    from custodia.core.actors import Actor, ActorKind, Context, Role  # noqa: PLC0415
    from custodia.core.db import flush_deferred  # noqa: PLC0415
    from custodia.core.ids import IdPrefix  # noqa: PLC0415
    from custodia.core.settings import load_settings  # noqa: PLC0415
    from custodia.kyc.verification import AdapterAnswer, PreparedVerification  # noqa: PLC0415

    runtime = Runtime.build(load_settings())
    public = base64.b64encode(
        Ed25519PrivateKey.from_private_bytes(DEVICE_SEED).public_key().public_bytes_raw()
    ).decode()
    actor = Actor(ActorKind.CLIENT, "cli_bench", Role.ONBOARDING_APP)
    loaded: list[tuple[int, str, str, str]] = []
    reserve = ledger.system_account_id("reserve", "CNY")
    for first in range(start, stop, 250):

        def batch(session: object, first: int = first) -> list[tuple[int, str, str, str]]:
            now = datetime.now(UTC)
            ctx = Context(actor, now, f"bench-load-{first}")
            services = runtime.kyc_services(ctx)
            agreement = agreements.in_force(session, "payment_service", "zh-CN", now)  # type: ignore[arg-type]
            assert agreement is not None
            out = []
            for n in range(first, min(first + 250, stop)):
                number, born = _resident_id(n)
                person = kyc.PersonData(
                    name="王芳" if n % 2 else "Li Qiang", id_type="prc_resident_id",
                    id_number=number, id_valid_from=date(2020, 1, 1),
                    id_valid_until=date(2040, 1, 1), nationality="CN", date_of_birth=born,
                    gender="male", phone=f"139{n:08d}", address="北京市朝阳区建国路88号",
                    occupation="engineer",
                )  # fmt: skip
                customer = kyc.register_individual(
                    session,
                    kyc.RegisterIndividual(person),
                    ctx=ctx,
                    services=services,  # type: ignore[arg-type]
                )
                flush_deferred(session)  # type: ignore[arg-type] # the new rows, read back below
                kyc.record_verification(
                    session,  # type: ignore[arg-type]
                    PreparedVerification(
                        id=runtime.ids.new(IdPrefix.VERIFICATION),
                        customer_id=customer.id,
                        channel="public_security_id",
                        adapter="sandbox",
                        document_version=1,
                        answer=AdapterAnswer("passed", None, "bench"),
                        failure=None,
                        evidence_ref="bench",
                    ),
                    ctx=ctx,
                    services=services,
                )
                agreements.record(
                    session,  # type: ignore[arg-type]
                    customer.id,
                    agreements.ConsentRequest(
                        agreement_id=agreement.id,
                        accepted=True,
                        channel="app",
                        ip="203.0.113.7",
                        user_agent="bench",
                        shown_at=now,
                    ),
                    ctx=ctx,
                    ids=runtime.ids,
                    vault=runtime.vault,
                    signer=runtime.signer,
                    confirm=runtime.confirm_consent,
                )
                account = accounts.open_account(
                    session,
                    customer.id,
                    "I",
                    currency="CNY",
                    ctx=ctx,
                    ids=runtime.ids,  # type: ignore[arg-type]
                )
                key_id = kyc.add_signing_key(session, customer.id, public, ctx=ctx, ids=runtime.ids)  # type: ignore[arg-type]
                ledger.post(
                    session,  # type: ignore[arg-type]
                    transaction_id=runtime.ids.new(IdPrefix.TRANSACTION), kind="top_up",
                    currency="CNY", legs=[ledger.Leg(reserve, account.id, 50_000)], now=now,
                )  # fmt: skip
                out.append((n + 1, customer.id, account.id, key_id))
            return out

        loaded += runtime.db.run(batch)
        if runtime.db.backend == "postgresql" and (first - start) % 1_000 == 750:
            _analyze(runtime.db)
    runtime.close()
    return loaded


def _analyze(db: Any) -> None:
    """Refresh the planner's statistics (every 1,000 accounts), as autovacuum would.

    The shared test server runs with autovacuum off. Without this, a loader's connections
    keep the generic plans they cached while the tables were nearly empty (psycopg prepares
    repeated statements): on 2026-12-06 the verification lookup of every registration
    became a sequential scan, 249,000 of them reading 10 billion rows while 83,000
    customers loaded, and the load slowed from ~60 to ~23 accounts/s. ``ANALYZE``
    invalidates those plans.
    """
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


#: The payment password of the customers that pay with one (the password cell).
PIN = "274951"


def _set_pins(args: tuple[dict[str, str], list[str]]) -> int:
    """Give ``customer_ids`` the payment password PIN, at the configured KDF cost."""
    env, customer_ids = args
    import os  # noqa: PLC0415

    os.environ.update(env)
    from custodia import kyc  # noqa: PLC0415
    from custodia.api.runtime import Runtime  # noqa: PLC0415
    from custodia.core.actors import Actor, ActorKind, Context, Role  # noqa: PLC0415
    from custodia.core.settings import load_settings  # noqa: PLC0415

    runtime = Runtime.build(load_settings())
    actor = Actor(ActorKind.CLIENT, "cli_bench", Role.ONBOARDING_APP)
    for customer_id in customer_ids:
        ctx = Context(actor, datetime.now(UTC), "bench-pin")
        runtime.db.run(
            lambda s, c=customer_id, ctx=ctx: kyc.set_password(
                s, c, PIN, current_password=None, ctx=ctx, hasher=runtime.hasher
            )
        )
    runtime.close()
    return len(customer_ids)


def _requests(
    path: Path,
    accounts: list[tuple[int, str, str, str]],
    count: int,
    tag: str,
    seed: int,
    *,
    password: bool = False,
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    from custodia.accounts.movements import signing_string  # noqa: PLC0415

    device = Ed25519PrivateKey.from_private_bytes(DEVICE_SEED)
    rng = random.Random(seed)
    with path.open("w") as out:
        for i in range(count):
            (_, _, payer, key_id), (_, _, payee, _) = rng.sample(accounts, 2)
            key = f"{tag}-{i}"
            message = signing_string(
                "transfer", idempotency_key=key, payer=payer, payee=payee, amount=1, currency="CNY"
            )
            body = {
                "from_account_id": payer,
                "to_account_id": payee,
                "amount": 1,
                "authentication": {
                    "factors": [
                        {"type": "password", "value": PIN}
                        if password
                        else {
                            "type": "signature",
                            "key_id": key_id,
                            "signature": base64.b64encode(device.sign(message)).decode(),
                        }
                    ]
                },
            }
            out.write(f"{key}\t{json.dumps(body, separators=(',', ':'))}\n")


#: Customers whose transfers are paid with the payment password (the KDF bounds the rate).
PIN_CUSTOMERS = 16
#: Accounts of the SQLite run.
SQLITE_ACCOUNTS = 400


def _sqlite_cells(
    env: dict[str, str], var: Path, script: Path, duration: int
) -> dict[tuple[int, int], dict[str, float]]:
    """Serve an embedded SQLite database with 1 and 2 workers; drive transfers at 1 and 8."""
    import sqlite3  # noqa: PLC0415

    from bench.common import CUSTODIA, run  # noqa: PLC0415

    db = var / "sqlite" / "custodia.db"
    db.parent.mkdir()
    lite = {**env, "CUSTODIA_DATABASE_URL": f"sqlite:///{db}"}
    run(CUSTODIA, "db", "upgrade", env=lite)
    key = onboarding_app(lite)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        accounts = pool.map(_load, [(lite, 0, SQLITE_ACCOUNTS)])[0]
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE customers SET created_by = ?", (key["id"],))
    cells: dict[tuple[int, int], dict[str, float]] = {}
    for workers in (1, 2):
        with serving(lite, var / "sqlite" / "server.log", workers=workers) as (base, _):
            for conns in (1, 8):
                batch = var / "sqlite" / f"w{workers}c{conns}.tsv"
                _requests(batch, accounts, 30_000, f"lite{workers}{conns}", workers * 10 + conns)
                cell = wrk(base, script, conns, duration, headers={}, env={
                    "CUSTODIA_BENCH_REQUESTS": str(batch),
                    "CUSTODIA_BENCH_AUTH": f"Bearer {key['key']}",
                })  # fmt: skip
                cells[workers, conns] = cell
                print(
                    f"sqlite {workers} worker(s) c={conns}: {cell['ok_per_s']:.0f} transfers/s",
                    flush=True,
                )
    return cells


def _capture(
    url: str,
    bench_base: str,
    script: Path,
    var: Path,
    *,
    accounts: list[tuple[int, str, str, str]],
    key: dict[str, str],
) -> int:
    """Transfer through the bench app, keep what it sent the function; return how many.

    The payloads go to ``bench_payloads`` for the function-alone cell (``FUNCTION``).
    """
    import psycopg  # noqa: PLC0415

    batch = var / "capture.tsv"
    _requests(batch, accounts, 4_000, "capture", 3)
    wrk(bench_base, script, 8, 4, headers={}, env={
        "CUSTODIA_BENCH_REQUESTS": str(batch), "CUSTODIA_BENCH_AUTH": f"Bearer {key['key']}",
    })  # fmt: skip
    payloads = (var / "payloads.jsonl").read_text().splitlines()
    if not payloads:
        raise SystemExit("the bench app captured no payload of custodia_transfer")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_payloads (n int PRIMARY KEY, p jsonb NOT NULL)")
        with conn.cursor().copy("COPY bench_payloads FROM STDIN") as copy:
            for n, payload in enumerate(payloads, 1):
                copy.write_row((n, payload))
        conn.execute("ANALYZE bench_payloads")
    return len(payloads)


def _ceiling(results: dict[tuple[str, int], list[dict[str, float]]]) -> list[str]:
    """Say what a transfer that did no work besides the function and the HTTP stack would do.

    Both run on the same two cores for every transfer, so their rates combine like
    resistances in series. An estimate: each cell also counts a client and a round trip.
    """
    floor = statistics.median(c["ok_per_s"] for c in results[("floor", 32)])
    alone = statistics.median(f["tps"] for f in results[("function", 32)])
    anchor = statistics.median(a["tps"] for a in results[("anchor", 32)])
    http = statistics.median(c["ok_per_s"] for c in results[("http", 32)])
    bound = 1 / (1 / alone + 1 / floor)
    return [
        (
            f"At 32 connections the HTTP stack answering after one database call (`GET "
            f"/bench/call`, bench/bench_app.py: parsing, middleware, guard, thread hop, pool, "
            f"one round trip) serves {floor:,.0f} requests/s, and PostgreSQL runs the "
            f"compliant function alone at {alone:,.0f} calls/s. The two cores do both for "
            f"every transfer, so a transfer costing nothing more would run at about "
            f"1 / (1/{alone:,.0f} + 1/{floor:,.0f}) = **{bound:,.0f}/s**, **{bound / anchor:.2f}** "
            f"of the anchor (an estimate: each cell also counts a client and a round trip). "
            f"The service's {http:,.0f}/s is {http / bound:.2f} of that."
        )
    ]


def _load_book(
    url: str, var: Path, env: dict[str, str], count: int
) -> tuple[dict[str, str], list[tuple[int, str, str, str]], float]:
    """Load ``count`` funded accounts (and the PIN payers), keep the book if asked.

    Returns the onboarding app's key, the accounts and how long loading took (s).
    """
    import psycopg  # noqa: PLC0415

    key = onboarding_app(env)
    started = datetime.now(UTC)
    half = count // 2
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        parts = pool.map(_load, [(env, 0, half), (env, half, count)])
        accounts = [row for part in parts for row in part]
        load_s = (datetime.now(UTC) - started).total_seconds()
        payers = [customer for _, customer, _, _ in accounts[:PIN_CUSTOMERS]]
        pool.map(_set_pins, [(env, payers[::2]), (env, payers[1::2])])
    with psycopg.connect(url, autocommit=True) as conn:
        # The bench customers were registered by "cli_bench": hand them to the bench key.
        conn.execute("UPDATE customers SET created_by = %s", (key["id"],))
        conn.execute(
            "CREATE TABLE bench_accounts (n int PRIMARY KEY, customer_id text, account_id text)"
        )
        with conn.cursor().copy("COPY bench_accounts FROM STDIN") as copy:
            for n, customer, account, _ in accounts:
                copy.write_row((n, customer, account))
        conn.execute("DELETE FROM outbox_events")
        conn.execute("VACUUM ANALYZE")
    print(f"loaded {len(accounts):,} funded accounts in {load_s:.0f} s", flush=True)
    data = {"key": key, "accounts": accounts, "load_s": load_s}
    keep_book(f"transfers-{count}", url, var, data)
    return key, accounts, load_s


def main() -> None:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--profile", action="store_true", help="sample one worker with py-spy at 32 connections"
    )
    args = parser.parse_args()
    lines: list[str] = []
    saved = kept_book(f"transfers-{args.accounts}")
    with scratch_database("transfers", book=saved) as (url, var, env):
        import psycopg  # noqa: PLC0415

        if saved is None:
            key, accounts, load_s = _load_book(url, var, env, args.accounts)
            kept = ""
        else:
            key, load_s = saved.data["key"], saved.data["load_s"]
            accounts = [tuple(row) for row in saved.data["accounts"]]
            kept = ", a copy of the kept book"
            print(f"{len(accounts):,} funded accounts from the kept book", flush=True)
        script = var / "transfer.lua"
        script.write_text(LUA)
        anchor = var / "anchor.sql"
        anchor.write_text(ANCHOR)
        function = var / "function.sql"
        function.write_text(FUNCTION)
        get = var / "get.lua"
        get.write_text('wrk.method = "GET"\n')
        log = var / "server.log"
        captured = var / "payloads.jsonl"
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        with (
            serving(env, log) as (base, pid),
            serving(
                {**env, "BENCH_CAPTURE": str(captured)}, var / "bench-app.log", bench_app=True
            ) as (bench_base, _),
        ):
            warm = var / "warm.tsv"
            _requests(warm, accounts, 2_000, "warm", 0)
            wrk(base, script, 8, 5, headers={}, env={
                "CUSTODIA_BENCH_REQUESTS": str(warm), "CUSTODIA_BENCH_AUTH": f"Bearer {key['key']}",
            })  # fmt: skip
            payloads = _capture(url, bench_base, script, var, accounts=accounts, key=key)
            for rnd in range(args.rounds):
                for conns in (1, 8, 32):
                    batch = var / f"r{rnd}c{conns}.tsv"
                    _requests(batch, accounts, 60_000, f"r{rnd}c{conns}", rnd * 100 + conns)
                    sampling = args.profile and rnd == 0 and conns == 32
                    with (
                        sampled(worker_pids(pid)[0], args.duration, var / "profile.raw")
                        if sampling
                        else contextlib.nullcontext()
                    ):
                        cell = wrk(base, script, conns, args.duration, headers={}, env={
                            "CUSTODIA_BENCH_REQUESTS": str(batch),
                            "CUSTODIA_BENCH_AUTH": f"Bearer {key['key']}",
                        })  # fmt: skip
                    if sampling:
                        RESULTS.mkdir(parents=True, exist_ok=True)
                        (RESULTS / "transfers-profile.md").write_text(
                            "# One worker at 32 connections (py-spy)\n\n"
                            + "\n".join(profile_summary(var / "profile.raw"))
                            + "\n"
                        )
                    results.setdefault(("http", conns), []).append(cell)
                    raw = pgbench(
                        url,
                        anchor,
                        conns,
                        args.duration,
                        variables={"accounts": str(len(accounts))},
                    )
                    results.setdefault(("anchor", conns), []).append(raw)
                    alone = pgbench(
                        url, function, conns, args.duration, variables={"count": str(payloads)}
                    )
                    results.setdefault(("function", conns), []).append(alone)
                    if conns == 32:
                        floor = wrk(
                            f"{bench_base}/bench/call", get, conns, args.duration, headers={}
                        )
                        results.setdefault(("floor", conns), []).append(floor)
                    print(
                        f"round {rnd + 1} c={conns}: {cell['ok_per_s']:.0f} transfers/s "
                        f"(p50 {cell['p50']:.1f} ms, p99 {cell['p99']:.1f} ms, non-2xx "
                        f"{cell['errors']:.0f}); anchor {raw['tps']:.0f} tps; "
                        f"function alone {alone['tps']:.0f} tps",
                        flush=True,
                    )
            peak_transfers = rss_mib(pid)
            # Paid with the payment password: the general path, bounded by the KDF.
            pins = var / "pins.tsv"
            _requests(pins, accounts[:PIN_CUSTOMERS], 5_000, "pin", 7, password=True)
            password_cell = wrk(base, script, 4, args.duration, headers={}, env={
                "CUSTODIA_BENCH_REQUESTS": str(pins), "CUSTODIA_BENCH_AUTH": f"Bearer {key['key']}",
            })  # fmt: skip
            print(f"password: {password_cell['ok_per_s']:.1f} transfers/s", flush=True)
            peak = rss_mib(pid)
        sqlite = _sqlite_cells(env, var, script, args.duration)
        with psycopg.connect(url) as conn:
            replay_ok = conn.execute(
                "SELECT count(*) FROM ledger_accounts WHERE NOT allow_overdraft AND balance < 0"
            ).fetchone()
        lines += [
            "# Transfers",
            "",
            (
                f"PostgreSQL 15, `custodia serve --workers 2`, wrk -t1 replaying pre-signed "
                f"`POST /v1/transfers` of 1 fen between random accounts ({len(accounts):,} funded "
                f"Class I accounts, loaded through the service layer in {load_s:.0f} s{kept}), "
                f"{args.duration} s runs, {args.rounds} rounds interleaved with the anchor (medians)."
            ),
            "",
            (
                "| connections | transfers/s | p50 ms | p99 ms | non-2xx | anchor (raw SQL) tps "
                "| anchor ms | ratio | function alone tps | its ratio |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for conns in (1, 8, 32):
            http = results[("http", conns)]
            raw = results[("anchor", conns)]
            ok = statistics.median(c["ok_per_s"] for c in http)
            tps = statistics.median(a["tps"] for a in raw)
            alone_tps = statistics.median(f["tps"] for f in results[("function", conns)])
            lines.append(
                f"| {conns} | {ok:,.0f} | {statistics.median(c['p50'] for c in http):.1f} | "
                f"{statistics.median(c['p99'] for c in http):.1f} | {sum(int(c['errors']) for c in http)} | "
                f"{tps:,.0f} | {statistics.median(a['latency'] for a in raw):.2f} | {ok / tps:.2f} | "
                f"{alone_tps:,.0f} | {alone_tps / tps:.2f} |"
            )
        lines += ["", *_ceiling(results)]
        from custodia.core.passwords import ScryptParams  # noqa: PLC0415
        from custodia.core.settings import load_settings  # noqa: PLC0415

        served = load_settings(env)  # what the server ran with
        params = ScryptParams(served.scrypt_log2_n, served.scrypt_r, served.scrypt_p)
        kdf = f"scrypt N=2^{params.log2_n}, r={params.r}, p={params.p}"
        lines += [
            "",
            (
                f"Paid with the payment password instead ({kdf}; general path), 4 connections: "
                f"**{password_cell['ok_per_s']:.1f} transfers/s** (p50 {password_cell['p50']:.0f} "
                f"ms, p99 {password_cell['p99']:.0f} ms, non-2xx {password_cell['errors']:.0f})."
            ),
            "",
            (
                "Embedded SQLite (`sqlite:///…`, the one-call path's steps on the driver, "
                f"{SQLITE_ACCOUNTS} accounts; writers take turns on a lock file): "
                + "; ".join(
                    f"{w} worker{'s' if w > 1 else ''}, {c} connection{'s' if c > 1 else ''} "
                    f"**{cell['ok_per_s']:,.0f} transfers/s** (p50 {cell['p50']:.1f} ms, "
                    f"p99 {cell['p99']:.1f} ms, non-2xx {cell['errors']:.0f})"
                    for (w, c), cell in sqlite.items()
                )
                + "."
            ),
            "",
            (
                f"Peak resident memory of a server worker: {peak_transfers:.0f} MiB during the "
                f"signature transfers; {peak:.0f} MiB after the password cell (scrypt takes "
                f"{params.memory_bytes >> 20} MiB per hash, up to "
                f"{served.kdf_concurrency} at a time per worker)."
            ),
            "",
            f"Responses other than 201 and logged errors: {refusals(log)}.",
            "",
            f"Negative customer balances afterwards: {replay_ok[0] if replay_ok else '?'}.",
        ]
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "transfers.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
