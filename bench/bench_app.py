"""The real app plus one route that does what most handlers do: one short transaction.

``GET /bench/db`` runs ``SELECT 1`` through ``Database.run`` in Litestar's thread pool, so
the server comparison covers request parsing, the middleware, the thread hop, the pool and
a database round trip — not only the framework (``/health``).
"""

from __future__ import annotations

from litestar import Litestar, get
from litestar.di import NamedDependency
from sqlalchemy import text

from custodia.api.asgi import app_factory as production_factory
from custodia.api.runtime import Runtime


@get("/bench/db", sync_to_thread=True)
def one_transaction(runtime: NamedDependency[Runtime]) -> dict[str, int]:
    """Answer after one committed transaction."""
    value = runtime.db.run(lambda session: session.execute(text("SELECT 1")).scalar_one())
    return {"value": int(value)}


def app_factory() -> Litestar:
    """The production app with the benchmark route."""
    app = production_factory()
    app.register(one_transaction)
    return app
