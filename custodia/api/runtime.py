"""The composition root: the one place where settings become live collaborators.

The HTTP app and ``custodia worker`` both start from :class:`Runtime`, so that a consumer
or a periodic job registered here runs the same way in both. Nothing here imports Litestar.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import timedelta

from custodia.core.clock import Clock, SystemClock
from custodia.core.db import Database
from custodia.core.idempotency import IdempotencyStore
from custodia.core.ids import IdGenerator
from custodia.core.keys import KeyFile, load_keys
from custodia.core.metrics import Metrics, OutboxBacklog
from custodia.core.outbox import ConsumerRegistry, OutboxProcessor, backlog, purge_delivered
from custodia.core.settings import Settings
from custodia.core.worker import PeriodicJob, Worker


@dataclass
class Runtime:
    """Everything a request or a job needs, built once per process."""

    settings: Settings
    db: Database
    keys: KeyFile
    clock: Clock = field(default_factory=SystemClock)
    metrics: Metrics = field(default_factory=Metrics)
    consumers: ConsumerRegistry = field(default_factory=ConsumerRegistry)
    ids: IdGenerator = field(init=False)
    idempotency: IdempotencyStore = field(init=False)

    def __post_init__(self) -> None:
        self.ids = IdGenerator(self.clock)
        self.idempotency = IdempotencyStore(
            ttl=timedelta(hours=self.settings.idempotency_ttl_hours),
            lock_wait_ms=self.settings.idempotency_lock_wait_ms,
        )
        self.db.observer = self.metrics
        self.metrics.watch_outbox(self.outbox_backlog)

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock | None = None) -> Runtime:
        """Open the database and load the keys of ``settings`` (ConfigError if unusable)."""
        keys = load_keys(settings)
        db = Database.from_settings(settings)
        return cls(settings=settings, db=db, keys=keys, clock=clock or SystemClock())

    def outbox_backlog(self) -> OutboxBacklog:
        """Return the outbox backlog now (for /metrics)."""
        return self.db.run(lambda s: backlog(s, self.clock.now()), read_only=True)

    def outbox_processor(self) -> OutboxProcessor:
        """Return an outbox processor over this runtime's consumers."""
        s = self.settings
        return OutboxProcessor(
            self.db,
            self.consumers,
            clock=self.clock,
            metrics=self.metrics,
            batch_size=s.outbox_batch_size,
            max_attempts=s.outbox_max_attempts,
            retry_base=timedelta(seconds=s.outbox_retry_base_s),
            retry_max=timedelta(seconds=s.outbox_retry_max_s),
        )

    def maintenance(self) -> int:
        """Forget expired idempotency records and long-delivered outbox events."""
        now = self.clock.now()
        retention = timedelta(days=self.settings.outbox_retention_days)
        purged = self.db.run(lambda s: self.idempotency.purge_expired(s, now))
        return purged + self.db.run(lambda s: purge_delivered(s, now - retention))

    def worker(self, stop: threading.Event) -> Worker:
        """Return the background worker of this process."""
        return Worker(
            outbox=self.outbox_processor(),
            periodic=[
                PeriodicJob("maintenance", self.settings.maintenance_interval_s, self.maintenance)
            ],
            poll_interval_s=self.settings.outbox_poll_interval_s,
            stop=stop,
        )

    def close(self) -> None:
        """Release the database connections."""
        self.db.dispose()
