"""Liveness, readiness and metrics for operators and orchestrators (API.md "Health")."""

from __future__ import annotations

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from sqlalchemy.exc import SQLAlchemyError

from custodia.api.runtime import Runtime
from custodia.core import migrate


class Health(msgspec.Struct, kw_only=True):
    """The process is alive."""

    status: str


class Readiness(msgspec.Struct, kw_only=True):
    """Whether the service can take traffic, and why not."""

    status: str
    database: str
    migrations: str


class HealthController(Controller):
    """``/health``, ``/ready`` and ``/metrics``: no credentials, no personal data."""

    path = "/"
    tags = ["operations"]
    include_in_schema = True

    @get("/health", operation_id="health", sync_to_thread=False, summary="Process is alive")
    def health(self) -> Health:
        """Answer 200 while the process runs."""
        return Health(status="ok")

    @get("/ready", operation_id="ready", sync_to_thread=True, summary="Ready for traffic")
    def ready(self, runtime: NamedDependency[Runtime]) -> Response[Readiness]:
        """Answer 200 when the database answers and its schema is at the code's head, else 503."""
        try:
            current = runtime.db.run(
                lambda session: migrate.is_at_head(session.connection()), read_only=True
            )
        except SQLAlchemyError:
            body = Readiness(status="unavailable", database="unreachable", migrations="unknown")
            return Response(body, status_code=503)
        if not current:
            body = Readiness(status="unavailable", database="ok", migrations="behind_or_ahead")
            return Response(body, status_code=503)
        return Response(Readiness(status="ok", database="ok", migrations="current"))

    @get(
        "/metrics",
        operation_id="metrics",
        sync_to_thread=True,
        summary="Prometheus metrics",
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )
    def metrics(self, runtime: NamedDependency[Runtime]) -> bytes:
        """Return the process's metrics in the Prometheus text format."""
        return runtime.metrics.render()
