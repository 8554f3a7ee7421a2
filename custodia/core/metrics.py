"""Prometheus metrics of one process: HTTP traffic, database retries, the outbox.

Each :class:`Metrics` owns its own registry (no global state), so tests and several apps in
one process never share counters. With ``custodia serve --workers N`` every worker process
serves its own figures on ``/metrics``; scrape each or run one worker per port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 15.0, 60.0, 300.0)


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """What is waiting in the outbox at one instant."""

    pending: int
    dead: int
    oldest_pending_age_s: float


class _BacklogCollector(Collector):
    def __init__(self, probe: Callable[[], OutboxBacklog]) -> None:
        self._probe = probe

    def collect(self) -> Iterator[Metric]:
        backlog = self._probe()
        yield GaugeMetricFamily(
            "custodia_outbox_pending_events",
            "Outbox events due and not yet delivered, of the types this release consumes.",
            backlog.pending,
        )
        yield GaugeMetricFamily(
            "custodia_outbox_dead_events",
            "Outbox events given up after their last attempt (need an operator).",
            backlog.dead,
        )
        yield GaugeMetricFamily(
            "custodia_outbox_oldest_pending_age_seconds",
            "How long the oldest due outbox event has waited (the backlog's lag).",
            backlog.oldest_pending_age_s,
        )


class _AuditCollector(Collector):
    def __init__(self, probe: Callable[[], Any]) -> None:
        self._probe = probe

    def collect(self) -> Iterator[Metric]:
        state = self._probe()
        yield GaugeMetricFamily(
            "custodia_audit_pending_events",
            "Audit events committed but not yet sealed into the chain.",
            state.pending,
        )
        yield GaugeMetricFamily(
            "custodia_audit_oldest_pending_age_seconds",
            "Age of the oldest unsealed audit event (how far sealing lags).",
            state.oldest_pending_age_s,
        )


@dataclass(frozen=True, slots=True)
class MonitoringBacklog:
    """Posted transactions the AML rules have not evaluated yet, at one instant."""

    pending: int
    oldest_pending_age_s: float


class _MonitoringCollector(Collector):
    def __init__(self, probe: Callable[[], MonitoringBacklog]) -> None:
        self._probe = probe

    def collect(self) -> Iterator[Metric]:
        backlog = self._probe()
        yield GaugeMetricFamily(
            "custodia_aml_monitoring_pending_transactions",
            "Posted transactions not yet evaluated by the AML rules.",
            backlog.pending,
        )
        yield GaugeMetricFamily(
            "custodia_aml_monitoring_lag_seconds",
            "Age of the oldest posted transaction not yet evaluated by the AML rules "
            "(0 when monitoring is up to date).",
            backlog.oldest_pending_age_s,
        )


class Metrics:
    """The counters and histograms of one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "custodia_http_requests",
            "HTTP requests served, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "custodia_http_request_duration_seconds",
            "Time from request start to the last byte of the response.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.db_retries = Counter(
            "custodia_db_retries",
            "Units of work re-run after a serialization failure, deadlock or busy database.",
            ["reason"],
            registry=self.registry,
        )
        self.db_retries_exhausted_total = Counter(
            "custodia_db_retries_exhausted",
            "Units of work abandoned after their last retry.",
            ["reason"],
            registry=self.registry,
        )
        self.outbox_handled = Counter(
            "custodia_outbox_events",
            "Outbox events handled, by type and outcome (done, retry, dead).",
            ["event_type", "outcome"],
            registry=self.registry,
        )
        self.outbox_lag = Histogram(
            "custodia_outbox_lag_seconds",
            "Time from an event's commit to its consumers having handled it.",
            ["event_type"],
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )

        self.security_events = Counter(
            "custodia_security_events",
            "Security events: logins, failures, lockouts, denied and unauthenticated requests.",
            ["event"],
            registry=self.registry,
        )

    # RetryObserver (custodia.core.db)
    def db_retry(self, reason: str) -> None:
        """Count one retried unit of work."""
        self.db_retries.labels(reason).inc()

    def db_retries_exhausted(self, reason: str) -> None:
        """Count one unit of work abandoned after its last retry."""
        self.db_retries_exhausted_total.labels(reason).inc()

    def watch_outbox(self, probe: Callable[[], OutboxBacklog]) -> None:
        """Report the outbox backlog from ``probe`` at every scrape."""
        self.registry.register(_BacklogCollector(probe))

    def watch_audit(self, probe: Callable[[], Any]) -> None:
        """Report the audit sealing backlog from ``probe`` at every scrape."""
        self.registry.register(_AuditCollector(probe))

    def watch_monitoring(self, probe: Callable[[], MonitoringBacklog]) -> None:
        """Report how far AML monitoring lags behind posting from ``probe`` at every scrape."""
        self.registry.register(_MonitoringCollector(probe))

    def render(self) -> bytes:
        """Return every metric in the Prometheus text format."""
        return generate_latest(self.registry)
