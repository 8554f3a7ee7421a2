"""Which ASGI server serves Custodia: uvicorn or granian, measured side by side.

Each server runs the real app (``custodia.api.asgi:app_factory``) in one worker process on
PostgreSQL; ``wrk`` (one thread, so the server keeps most of the other core) drives
``GET /health`` (framework + middleware, no database) and ``GET /bench/db`` (a sync handler in
the thread pool running one committed transaction, ``bench/bench_app.py``) at 1, 8 and 32
connections. The servers are
interleaved round by round (A B, B A, A B …) because the machine is shared and noisy; the
table reports medians over the rounds and the ratio granian/uvicorn per cell, plus each
server's peak resident memory.

    .venv/bin/python bench/asgi_servers.py [--rounds 3] [--duration 6]

Traffic goes only to 127.0.0.1. Needs wrk (``apt-get install wrk``) and PostgreSQL on
127.0.0.1:5432 (``--pg-admin-url`` to change); writes ``bench/results/asgi_servers.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"
ENDPOINTS = ("/health", "/bench/db")
CONNECTIONS = (1, 8, 32)


@dataclass(frozen=True)
class Cell:
    """One wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def server_command(server: str, port: int) -> list[str]:
    """Return the command that serves the app with ``server`` on ``port``, one worker."""
    if server == "uvicorn":
        return [
            str(BIN / "python"), "-m", "uvicorn", "bench.bench_app:app_factory", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning", "--lifespan", "on",
        ]  # fmt: skip
    return [
        str(BIN / "granian"), "--interface", "asgi", "--factory", "bench.bench_app:app_factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--loop", "uvloop",
        "--no-ws", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


def free_port() -> int:
    """Return a TCP port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def peak_rss_kib(pid: int) -> int:
    """Return the peak resident memory of ``pid`` and its children (VmHWM, KiB)."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total


@contextlib.contextmanager
def serving(server: str, env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start ``server``, wait for /ready, yield its base URL; kill its process group after."""
    port = free_port()
    proc = subprocess.Popen(
        server_command(server, port), env=env, cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise SystemExit(f"{server} did not become ready:\n{err}")
            time.sleep(0.2)
        yield base, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def run_wrk(url: str, connections: int, duration: int) -> Cell:
    """Drive ``url`` with wrk and read requests/s, p50, p99 and non-2xx responses."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True, text=True, check=True, timeout=duration + 30,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out)[1])  # type: ignore[index]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*", out)
    errors = int(non2xx[1]) if non2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors[0]))
    return Cell(rps, p50, p99, errors)


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds per wrk run")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk")

    db = f"custodia_bench_{secrets.token_hex(3)}"
    with psycopg.connect(args.pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    var = Path(tempfile.mkdtemp(prefix="custodia-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODIA_")}
    env.update(
        CUSTODIA_VAR_DIR=str(var),
        CUSTODIA_DATABASE_URL=args.pg_admin_url.rsplit("/", 1)[0] + f"/{db}",
        CUSTODIA_LOG_LEVEL="WARNING",
        CUSTODIA_INPROCESS_WORKERS="false",
        PYTHONPATH=str(ROOT),
    )
    results: dict[tuple[str, str, int], list[Cell]] = defaultdict(list)
    rss: dict[str, list[int]] = defaultdict(list)
    try:
        for step in (["keys", "init"], ["db", "upgrade"]):
            subprocess.run([str(BIN / "custodia"), *step], env=env, check=True,
                           capture_output=True)  # fmt: skip
        servers = ["uvicorn", "granian"]
        for rnd in range(args.rounds):
            for server in servers if rnd % 2 == 0 else list(reversed(servers)):
                with serving(server, env) as (base, proc):
                    for endpoint in ENDPOINTS:
                        run_wrk(f"{base}{endpoint}", 8, 2)  # warm-up
                        for conns in CONNECTIONS:
                            cell = run_wrk(f"{base}{endpoint}", conns, args.duration)
                            results[(server, endpoint, conns)].append(cell)
                            print(f"round {rnd + 1} {server:8} {endpoint:8} c={conns:<3} "
                                  f"{cell.rps:9.0f} req/s  p50 {cell.p50_ms:6.2f} ms  "
                                  f"p99 {cell.p99_ms:6.2f} ms  errors {cell.errors}",
                                  flush=True)  # fmt: skip
                    rss[server].append(peak_rss_kib(proc.pid))
    finally:
        with psycopg.connect(args.pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        shutil.rmtree(var, ignore_errors=True)

    def med(server: str, endpoint: str, conns: int, attr: str) -> float:
        return statistics.median(getattr(c, attr) for c in results[(server, endpoint, conns)])

    lines = [
        f"# ASGI servers: uvicorn vs granian ({args.rounds} interleaved rounds, medians)",
        "",
        (
            "One worker process each, PostgreSQL, wrk -t1, "
            f"{args.duration} s per run. Ratio = granian / uvicorn requests/s."
        ),
        "",
        (
            "| endpoint | conns | uvicorn req/s | p50 ms | p99 ms "
            "| granian req/s | p50 ms | p99 ms | ratio | errors u/g |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for endpoint in ENDPOINTS:
        for conns in CONNECTIONS:
            u = [med("uvicorn", endpoint, conns, a) for a in ("rps", "p50_ms", "p99_ms")]
            g = [med("granian", endpoint, conns, a) for a in ("rps", "p50_ms", "p99_ms")]
            errs = [sum(c.errors for c in results[(s, endpoint, conns)])
                    for s in ("uvicorn", "granian")]  # fmt: skip
            lines.append(
                f"| {endpoint} | {conns} | {u[0]:.0f} | {u[1]:.2f} | {u[2]:.2f} | {g[0]:.0f} "
                f"| {g[1]:.2f} | {g[2]:.2f} | {g[0] / u[0]:.2f} | {errs[0]}/{errs[1]} |"
            )
    lines += [
        "",
        "Peak RSS of the server process (VmHWM, median over rounds): "
        + ", ".join(f"{s} {statistics.median(v) / 1024:.0f} MiB" for s, v in rss.items()),
    ]
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "asgi_servers.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
