"""What the HTTP benchmarks share: a throw-away PostgreSQL database, the server, wrk, pgbench.

Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
CUSTODIA = str(BIN / "custodia")
#: Where loaded books are kept between runs (unset: every run loads its own and drops it).
BOOKS = Path(os.environ["BENCH_BOOKS"]) if os.environ.get("BENCH_BOOKS") else None


def run(*args: str, env: dict[str, str]) -> str:
    """Run a command and return its stdout (raise on failure)."""
    return subprocess.run(
        args, env=env, check=True, capture_output=True, text=True, timeout=900
    ).stdout


def onboarding_app(env: dict[str, str]) -> dict[str, str]:
    """Create an onboarding app's API client with the CLI; return its ``id`` and ``key``."""
    made: dict[str, str] = json.loads(
        run(CUSTODIA, "clients", "create", "--kind", "onboarding_app", "--name", "bench",
            "--json", env=env)
    )  # fmt: skip
    return made


@dataclass(frozen=True, slots=True)
class Book:
    """A loaded database kept as a template, with the keys that encrypted it and its data."""

    name: str
    database: str
    var: Path
    data: dict[str, Any]


def _book_database(name: str) -> str:
    return "custodia_book_" + re.sub(r"[^a-z0-9]+", "_", name.lower())


def kept_book(name: str) -> Book | None:
    """Return the book kept under ``name`` in ``$BENCH_BOOKS``, if there is one.

    Loading 100,000 accounts through the service layer takes most of an hour; with the
    variable set, a bench loads its book once and later runs start from a copy of it.
    """
    if BOOKS is None or not (BOOKS / name / "book.json").exists():
        return None
    database = _book_database(name)
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        if (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
            is None
        ):
            return None
    data = json.loads((BOOKS / name / "book.json").read_text())
    return Book(name, database, BOOKS / name / "var", data)


def keep_book(name: str, url: str, var: Path, data: dict[str, Any]) -> None:
    """Keep the database at ``url`` (no one connected), its keys and ``data`` as book ``name``.

    Does nothing unless ``$BENCH_BOOKS`` is set.
    """
    if BOOKS is None:
        return
    database = _book_database(name)
    source = url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{database}" TEMPLATE "{source}"')
    shutil.rmtree(BOOKS / name, ignore_errors=True)
    shutil.copytree(var, BOOKS / name / "var", ignore=shutil.ignore_patterns("*.log", "*.tsv"))
    (BOOKS / name / "book.json").write_text(json.dumps(data))


@contextmanager
def scratch_database(
    prefix: str, *, book: Book | None = None
) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """Yield a new PostgreSQL database's URL, a var dir and the environment using both.

    With ``book``, the database starts as a copy of the book's (migrated to the current
    head) and the var dir holds its keys.
    """
    name = f"custodia_{prefix}_{secrets.token_hex(3)}"
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    var = Path(tempfile.mkdtemp(prefix=f"custodia-{prefix}-"))
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        template = f' TEMPLATE "{book.database}"' if book else ""
        conn.execute(f'CREATE DATABASE "{name}"{template}')
    if book:
        shutil.copytree(book.var, var, dirs_exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODIA_")}
    env.update(
        CUSTODIA_VAR_DIR=str(var),
        CUSTODIA_DATABASE_URL=url,
        CUSTODIA_LOG_LEVEL="INFO",  # as in production: one JSON line per request
        CUSTODIA_LOG_FORMAT="json",
        CUSTODIA_INPROCESS_WORKERS="false",
        CUSTODIA_DB_POOL_SIZE="16",
    )
    try:
        if book is None:
            run(CUSTODIA, "keys", "init", env=env)
        run(CUSTODIA, "db", "upgrade", env=env)
        yield url, var, env
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(var, ignore_errors=True)


def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    """Wait until the server answers ``/ready``."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit("server died")
        time.sleep(0.3)
    raise SystemExit("server not ready")


def wait_started(log: Path, workers: int) -> None:
    """Wait until every worker has started: one answering ``/ready`` says nothing of the others.

    The workers accept from one socket, and a load generator that connects while only the
    first serves puts all its connections on it: seen as 8 connections on one worker of two
    and a third fewer transfers/s on SQLite.
    """
    deadline = time.monotonic() + 60
    while log.read_text(errors="replace").count('"event":"app_started"') < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"not every one of the {workers} workers started")
        time.sleep(0.2)
    time.sleep(0.5)  # from its lifespan to its accept loop


@contextmanager
def serving(
    env: dict[str, str], log: Path, *, workers: int = 2, bench_app: bool = False
) -> Iterator[tuple[str, int]]:
    """Run ``custodia serve`` on a free loopback port; yield its base URL and pid.

    With ``bench_app``, uvicorn serves ``bench/bench_app.py`` instead (the production app
    plus the benchmark routes), with the options ``custodia serve`` passes.
    """
    port = 18000 + secrets.randbelow(1000)
    command = [CUSTODIA, "serve", "--port", str(port), "--workers", str(workers)]
    if bench_app:
        command = [str(BIN / "python"), "-m", "uvicorn", "bench.bench_app:app_factory",
                   "--factory", "--host", "127.0.0.1", "--port", str(port), "--workers",
                   str(workers), "--no-access-log", "--no-server-header", "--lifespan", "on"]  # fmt: skip
        env = {**env, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        wait_started(log, workers)
        yield base, server.pid
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _ms(out: str, label: str) -> float:
    value = re.search(rf"\s{label}\s+([\d.]+)(us|ms|s)", out)
    assert value, out
    return float(value[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[value[2]]


def wrk(
    base: str, script: Path, connections: int, duration: int, *, headers: dict[str, str],
    env: dict[str, str] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Drive ``base`` with wrk (one thread) and return rate, successes, errors, p50, p99."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script)]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*args, base], capture_output=True, text=True, check=True,
        env={**os.environ, **(env or {})}, timeout=duration + 120,
    ).stdout  # fmt: skip
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(non2xx[1]) if non2xx else 0
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
        "ok_per_s": (requests - errors) / duration,
        "requests": requests,
        "errors": errors,
        "p50": _ms(out, "50%"),
        "p99": _ms(out, "99%"),
    }


def pgbench(
    url: str, script: Path, clients: int, duration: int, *, variables: dict[str, str] | None = None
) -> dict[str, float]:
    """Run a pgbench script (prepared statements) and return tps and average latency."""
    args = ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(2, clients))]
    args += ["-T", str(duration)]
    for name, value in (variables or {}).items():
        args += ["-D", f"{name}={value}"]
    done = subprocess.run(
        [*args, "-f", str(script), url], capture_output=True, text=True, check=False,
        timeout=duration + 120,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"pgbench failed: {done.stderr.strip()[-2000:]}")
    out = done.stdout
    return {
        "tps": float(re.search(r"tps = ([\d.]+)", out)[1]),  # type: ignore[index]
        "latency": float(re.search(r"latency average = ([\d.]+) ms", out)[1]),  # type: ignore[index]
    }


def rss_mib(pid: int) -> float:
    """Return the peak resident memory of the busiest child of ``pid`` (MiB)."""
    peak = 0
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        status = Path(f"/proc/{child}/status").read_text()
        peak = max(peak, int(re.search(r"VmHWM:\s+(\d+)", status)[1]))  # type: ignore[index]
    return peak / 1024


def refusals(log: Path) -> str:
    """Count the server's non-2xx answers by status and code, and logged errors."""
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "request" and not 200 <= int(event.get("status", 0)) < 300:
            counts[f"{event['status']} {event.get('code') or ''}".strip()] += 1
        elif event.get("level") in {"error", "critical"}:
            lines = str(event.get("exception", "")).strip().splitlines()
            cause = next((line for line in reversed(lines) if "Error" in line), "")
            counts[f"logged {event.get('event')} ({cause.strip()[:200]})"] += 1
    return ", ".join(f"{k} × {v}" for k, v in sorted(counts.items())) or "none"


def worker_pids(pid: int) -> list[int]:
    """Return the server's worker processes (its spawned children, not the resource tracker)."""
    return [
        int(child)
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


@contextmanager
def sampled(pid: int, seconds: int, out: Path) -> Iterator[None]:
    """Sample where ``pid``'s Python CPU goes with py-spy while the block runs (``--profile``)."""
    spy = subprocess.Popen(
        # --gil: only the thread holding the GIL, i.e. where the Python CPU goes (idle
        # detection alone counts threads waiting on the database as busy in this VM).
        [str(Path(sys.executable).with_name("py-spy")), "record", "--gil", "--format", "raw",
         "--rate", "250", "--duration", str(seconds),
         "--nonblocking", "--pid", str(pid), "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        spy.wait(timeout=seconds + 60)


def profile_summary(raw: Path, *, top: int = 30) -> list[str]:
    """Return the share of samples per function, inclusive and as the leaf, from py-spy raw."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r" \(([^)]*/)?([^/)]+)\)$", r" (\2)", f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        leaf[frames[-1]] += n
    lines = [f"{total} samples", "", "| inclusive % | function |", "|---|---|"]
    lines += [f"| {n / total:.1%} | `{f}` |" for f, n in inclusive.most_common(top)]
    lines += ["", "| own % | function |", "|---|---|"]
    lines += [f"| {n / total:.1%} | `{f}` |" for f, n in leaf.most_common(top)]
    return lines
