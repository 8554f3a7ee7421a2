"""The real app plus two routes that do what most handlers do, for the benchmarks only.

- ``GET /bench/db`` runs ``SELECT 1`` through ``Database.run`` (an ORM session, one committed
  transaction) in Litestar's thread pool, so the server comparison covers request parsing,
  the middleware, the thread hop, the pool and a database round trip — not only the
  framework (``/health``).
- ``GET /bench/call`` runs ``SELECT 1`` as one statement on a pooled driver connection
  (``Database.run_driver(one_statement=True)``), the way a device-signed transfer calls
  ``custodia_transfer``: what the HTTP stack costs a transfer before the transfer's own work.

Both are public in this app only (``ROUTE_ACCESS`` is the guard's table; without an entry
the guard answers 403, which is what ``/bench/db`` measured until 2026-12-06).

With ``BENCH_CAPTURE=<file>`` every payload the transfer route sends ``custodia_transfer``
is appended to ``<file>`` as well (one JSON document per line), so that ``bench/transfers.py``
can call the function alone with pgbench.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime
from typing import Any

from litestar import Litestar, get
from litestar.di import NamedDependency
from sqlalchemy import text

from custodia.accounts import fastpath
from custodia.api.asgi import app_factory as production_factory
from custodia.api.runtime import Runtime
from custodia.api.security import PUBLIC, ROUTE_ACCESS


@get("/bench/db", operation_id="bench_db", sync_to_thread=True)
def one_transaction(runtime: NamedDependency[Runtime]) -> dict[str, int]:
    """Answer after one committed transaction."""
    value = runtime.db.run(lambda session: session.execute(text("SELECT 1")).scalar_one())
    return {"value": int(value)}


@get("/bench/call", operation_id="bench_call", sync_to_thread=True)
def one_call(runtime: NamedDependency[Runtime]) -> dict[str, int]:
    """Answer after one statement on a pooled driver connection, as a transfer makes."""
    value = runtime.db.run_driver(
        lambda conn: conn.execute("SELECT 1").fetchone()[0], one_statement=True
    )
    return {"value": int(value)}


def _capture(path: str) -> None:
    """Append each payload the transfer function is called with to ``path``."""
    call = fastpath._call  # the bench wraps the one call it measures alone
    lock = threading.Lock()

    def capturing(conn: Any, payload: str, *, now: datetime) -> tuple[Any, ...]:
        with lock, open(path, "a") as out:  # noqa: PTH123
            out.write(payload + "\n")
        return call(conn, payload, now=now)

    fastpath._call = capturing


def app_factory() -> Litestar:
    """The production app with the benchmark routes."""
    ROUTE_ACCESS.setdefault("bench_db", PUBLIC)
    ROUTE_ACCESS.setdefault("bench_call", PUBLIC)
    if os.environ.get("BENCH_CAPTURE"):
        _capture(os.environ["BENCH_CAPTURE"])
    app = production_factory()
    app.register(one_transaction)
    app.register(one_call)
    return app
