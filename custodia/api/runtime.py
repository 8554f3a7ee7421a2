"""The composition root: the one place where settings become live collaborators.

The HTTP app and ``custodia worker`` both start from :class:`Runtime`, so that a consumer
or a periodic job registered here runs the same way in both. Nothing here imports Litestar.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import timedelta

from custodia.access import AccessPolicy
from custodia.access.models import PII_COLUMNS as ACCESS_PII_COLUMNS
from custodia.core import audit
from custodia.core.clock import Clock, SystemClock
from custodia.core.db import Database
from custodia.core.idempotency import IdempotencyStore
from custodia.core.ids import IdGenerator
from custodia.core.keys import KeyFile, load_keys
from custodia.core.logging import get_logger
from custodia.core.metrics import Metrics, OutboxBacklog
from custodia.core.outbox import ConsumerRegistry, OutboxProcessor, backlog, purge_delivered
from custodia.core.passwords import ScryptParams, SecretHasher
from custodia.core.settings import Settings
from custodia.core.vault import BlindIndexer, PiiSchema, Vault
from custodia.core.worker import PeriodicJob, Worker

_log = get_logger("custodia.security")


def pii_schema() -> PiiSchema:
    """Every encrypted and blind-indexed column of the service, from every package."""
    return PiiSchema(encrypted=(*ACCESS_PII_COLUMNS,), indexes=())


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
    vault: Vault = field(init=False)
    blind_index: BlindIndexer = field(init=False)
    hasher: SecretHasher = field(init=False)
    access_policy: AccessPolicy = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.ids = IdGenerator(self.clock)
        self.vault = Vault(self.keys)
        self.blind_index = BlindIndexer(self.keys)
        self.hasher = SecretHasher(
            self.keys,
            ScryptParams(s.scrypt_log2_n, s.scrypt_r, s.scrypt_p),
            concurrency=s.kdf_concurrency,
        )
        self.access_policy = AccessPolicy.from_settings(s)
        self.idempotency = IdempotencyStore(
            ttl=timedelta(hours=self.settings.idempotency_ttl_hours),
            lock_wait_ms=self.settings.idempotency_lock_wait_ms,
        )
        self.db.observer = self.metrics
        self.metrics.watch_outbox(self.outbox_backlog)
        self.metrics.watch_audit(self.audit_pending)

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock | None = None) -> Runtime:
        """Open the database and load the keys of ``settings`` (ConfigError if unusable)."""
        keys = load_keys(settings)
        _log.info(
            "keys_loaded",
            primary={purpose.value: ring.primary for purpose, ring in keys.rings.items()},
            ring_sizes={purpose.value: len(ring.keys) for purpose, ring in keys.rings.items()},
        )
        db = Database.from_settings(settings)
        return cls(settings=settings, db=db, keys=keys, clock=clock or SystemClock())

    def outbox_backlog(self) -> OutboxBacklog:
        """Return the outbox backlog now (for /metrics)."""
        return self.db.run(lambda s: backlog(s, self.clock.now()), read_only=True)

    def audit_pending(self) -> audit.PendingState:
        """Return how far audit sealing lags (for /metrics)."""
        return self.db.run(lambda s: audit.pending_state(s, self.clock.now()), read_only=True)

    def seal_audit(self) -> int:
        """Seal every committed audit event waiting for its place in the chain."""
        total = 0
        batch = self.settings.audit_seal_batch
        while True:
            sealed = self.db.run(
                lambda s: audit.seal_pending(s, self.keys, self.clock.now(), limit=batch)
            )
            total += sealed
            if sealed < batch:
                return total

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
                PeriodicJob("audit_seal", self.settings.audit_seal_interval_s, self.seal_audit),
                PeriodicJob("maintenance", self.settings.maintenance_interval_s, self.maintenance),
            ],
            poll_interval_s=self.settings.outbox_poll_interval_s,
            stop=stop,
        )

    def close(self) -> None:
        """Release the database connections."""
        self.db.dispose()
