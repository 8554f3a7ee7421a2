"""The composition root: the one place where settings become live collaborators.

The HTTP app and ``custodia worker`` both start from :class:`Runtime`, so that a consumer
or a periodic job registered here runs the same way in both. Nothing here imports Litestar.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy.orm import Session

from custodia import agreements, aml, kyc, ledger
from custodia.access import AccessPolicy, KnownKeys
from custodia.access.models import PII_COLUMNS as ACCESS_PII_COLUMNS
from custodia.accounts import fastpath, movements
from custodia.accounts import limits as account_limits
from custodia.accounts import service as account_service
from custodia.accounts.bank import BankAdapter, bank_from_config
from custodia.accounts.models import INDEX_COLUMNS as ACCOUNT_INDEX_COLUMNS
from custodia.accounts.models import PII_COLUMNS as ACCOUNT_PII_COLUMNS
from custodia.agreements.consents import consumers as agreement_consumers
from custodia.agreements.models import PII_COLUMNS as AGREEMENT_PII_COLUMNS
from custodia.aml.models import PII_COLUMNS as AML_PII_COLUMNS
from custodia.core import audit
from custodia.core.actors import SYSTEM, Context
from custodia.core.clock import Clock, SystemClock
from custodia.core.db import Database
from custodia.core.factors import Factor
from custodia.core.idempotency import IdempotencyStore
from custodia.core.ids import IdGenerator
from custodia.core.keys import KeyFile, load_keys
from custodia.core.logging import get_logger
from custodia.core.metrics import Metrics, MonitoringBacklog, OutboxBacklog
from custodia.core.outbox import ConsumerRegistry, OutboxProcessor, backlog, purge_delivered
from custodia.core.passwords import ScryptParams, SecretHasher
from custodia.core.settings import Settings
from custodia.core.signing import Signer
from custodia.core.vault import BlindIndexer, PiiSchema, Vault
from custodia.core.worker import PeriodicJob, Slice, Worker, in_slices, to_the_end
from custodia.kyc import rescreening
from custodia.kyc.models import INDEX_COLUMNS as KYC_INDEX_COLUMNS
from custodia.kyc.models import PII_COLUMNS as KYC_PII_COLUMNS

_log = get_logger("custodia.security")


def pii_schema() -> PiiSchema:
    """Every encrypted and blind-indexed column of the service, from every package."""
    return PiiSchema(
        encrypted=(
            *ACCESS_PII_COLUMNS,
            *KYC_PII_COLUMNS,
            *AGREEMENT_PII_COLUMNS,
            *ACCOUNT_PII_COLUMNS,
            *AML_PII_COLUMNS,
        ),
        indexes=(*KYC_INDEX_COLUMNS, *ACCOUNT_INDEX_COLUMNS),
    )


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
    screener: kyc.Screener = field(init=False)
    risk_model: kyc.RiskModel = field(init=False)
    channels: kyc.ChannelRouter = field(init=False)
    signer: Signer = field(init=False)
    agreement_policy: agreements.AgreementPolicy = field(init=False)
    warning_policy: agreements.RiskWarningPolicy = field(init=False)
    credential_policy: kyc.CredentialPolicy = field(init=False)
    limit_policy: account_limits.LimitPolicy = field(init=False)
    bank: BankAdapter = field(init=False)
    money: movements.Collaborators = field(init=False)
    device_keys: fastpath.DeviceKeys = field(init=False)
    parties: fastpath.Parties = field(init=False)
    known_keys: KnownKeys = field(init=False)
    monitoring_policy: aml.MonitoringPolicy = field(init=False)

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
        self.screener = kyc.Screener(
            s.screening_threshold, check_interval_s=s.screening_list_check_s
        )
        self.risk_model = kyc.load_model(s.risk_model)
        self.channels = kyc.ChannelRouter.from_config(
            s.verification_channels, production=s.is_production
        )
        self.signer = Signer(self.keys)
        self.agreement_policy = agreements.AgreementPolicy.from_config(
            s.agreement_clauses, notice_days=s.agreement_notice_days
        )
        self.warning_policy = agreements.RiskWarningPolicy.from_config(s.risk_warnings)
        self.credential_policy = kyc.CredentialPolicy(
            max_failures=s.customer_auth_max_failures,
            lockout=timedelta(minutes=s.customer_auth_lockout_minutes),
        )
        for event_type, consumer in rescreening.consumers(
            self.kyc_services, batch=s.rescreen_batch
        ).items():
            self.consumers.register(event_type, f"kyc.{event_type}", consumer)
        for event_type, consumer in agreement_consumers(self.ids, batch=s.notice_batch).items():
            self.consumers.register(event_type, f"agreements.{event_type}", consumer)
        uplift = {"none": 5_000, "B": 7_500, "A": 10_000}[s.institution_rating]
        self.limit_policy = account_limits.LimitPolicy(
            timezone=s.timezone,
            year_window=s.limit_year,
            daily_two_kinds=uplift * account_limits.CNY,
            signature_daily_default=s.signature_daily_limit,
        )
        self.bank = bank_from_config(s.bank_adapter, production=s.is_production)
        self.money = movements.Collaborators(
            vault=self.vault,
            hasher=self.hasher,
            ids=self.ids,
            limits=self.limit_policy,
            warnings=self.warning_policy,
        )
        for event_type, consumer in {
            **account_service.consumers(),
            **movements.payout_consumer(self.bank, self.money),
        }.items():
            self.consumers.register(event_type, f"accounts.{event_type}", consumer)
        self.device_keys = fastpath.DeviceKeys(self.db.fetch_one)
        self.parties = fastpath.Parties()
        self.known_keys = KnownKeys()
        self.rating_feedback = aml.RatingFeedback(
            vault=self.vault,
            model=self.risk_model,
            policy=kyc.RatingPolicy(
                notice_days=s.kyc_expiry_notice_days, grace_days=s.kyc_expiry_grace_days
            ),
            tz=s.tz,
        )
        self.monitoring_policy = aml.MonitoringPolicy(
            tz=s.tz,
            home_country=s.aml_home_country,
            due=aml.DuePolicy(
                high=timedelta(hours=s.aml_due_hours_high),
                medium=timedelta(hours=s.aml_due_hours_medium),
                low=timedelta(hours=s.aml_due_hours_low),
            ),
            rating=self.rating_feedback,
        )
        batches = aml.batch_consumers(self.monitoring_policy, clock=self.clock, ids=self.ids)
        for event_type, consumer in aml.consumers(
            self.monitoring_policy, clock=self.clock, ids=self.ids
        ).items():
            self.consumers.register(
                event_type, f"aml.{event_type}", consumer, batch=batches.get(event_type)
            )
        self.idempotency = IdempotencyStore(
            ttl=timedelta(hours=self.settings.idempotency_ttl_hours),
            lock_wait_ms=self.settings.idempotency_lock_wait_ms,
            vault=self.vault,
        )
        self.db.observer = self.metrics
        self.metrics.watch_outbox(self.outbox_backlog)
        self.metrics.watch_audit(self.audit_pending)
        self.metrics.watch_monitoring(self.monitoring_backlog)

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
        """Return the outbox backlog of the consumed event types now (for /metrics)."""
        consumed = self.consumers.event_types()
        return self.db.run(lambda s: backlog(s, self.clock.now(), consumed), read_only=True)

    def monitoring_backlog(self) -> MonitoringBacklog:
        """Return how far AML monitoring lags behind posting now (for /metrics)."""
        return self.db.run(lambda s: aml.monitoring_backlog(s, self.clock.now()), read_only=True)

    def today(self, now: datetime) -> date:
        """Return the institution's calendar day at ``now`` (limits and periods use it)."""
        return now.astimezone(self.settings.tz).date()

    def kyc_services(self, ctx: Context) -> kyc.Services:
        """Return the collaborators of a KYC command run at ``ctx.now``."""
        return kyc.Services(
            vault=self.vault,
            blind_index=self.blind_index,
            screener=self.screener,
            risk_model=self.risk_model,
            ids=self.ids,
            today=self.today(ctx.now),
            policy=self.rating_feedback.policy,
        )

    def confirm_consent(
        self,
        session: Session,
        customer_id: str,
        method: str,
        factors: Sequence[Factor],
        *,
        message: bytes,
        now: datetime,
    ) -> str:
        """Check the factor a consent needs against the customer's credentials (a Confirmer)."""
        verified = kyc.verify_factors(
            session,
            customer_id,
            [f for f in factors if f.type == method],
            message=message,
            now=now,
            hasher=self.hasher,
            vault=self.vault,
        )
        return verified.reference

    def identification_policy(self) -> kyc.IdentificationPolicy:
        """Return the periods of continuous identification (settings)."""
        s = self.settings
        return kyc.IdentificationPolicy(
            notice_days=s.kyc_expiry_notice_days,
            grace_days=s.kyc_expiry_grace_days,
            reverify_years=(
                ("high", s.kyc_reverify_years_high),
                ("medium", s.kyc_reverify_years_medium),
                ("low", s.kyc_reverify_years_low),
            ),
        )

    def kyc_review(self) -> int:
        """Run continuous identification until a pass finds nothing more to do (K7)."""
        return to_the_end(self.kyc_review_step)

    def kyc_review_step(self) -> tuple[int, bool]:
        """Run one pass of continuous identification (K7); more may remain if it did any."""
        policy = self.identification_policy()

        def one_pass(session: Session) -> kyc.ReviewResult:
            ctx = Context(SYSTEM, self.clock.now(), None)
            return kyc.review(session, ctx=ctx, services=self.kyc_services(ctx), policy=policy)

        done = self.db.run(one_pass).total()
        return done, done > 0

    def audit_pending(self) -> audit.PendingState:
        """Return how far audit sealing lags (for /metrics)."""
        return self.db.run(lambda s: audit.pending_state(s, self.clock.now()), read_only=True)

    def seal_audit(self) -> int:
        """Seal every committed audit event waiting for its place in the chain."""
        return to_the_end(self.seal_audit_step)

    def seal_audit_step(self) -> tuple[int, bool]:
        """Seal one batch of waiting audit events; more may remain if the batch was full."""
        batch = self.settings.audit_seal_batch
        sealed = self.db.run(
            lambda s: audit.seal_pending(s, self.keys, self.clock.now(), limit=batch)
        )
        return sealed, sealed >= batch

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

    def expire_holds(self) -> int:
        """Release every hold whose time is up (the available balance comes back)."""
        return to_the_end(self.expire_holds_step)

    def expire_holds_step(self) -> tuple[int, bool]:
        """Release one batch of holds whose time is up; more may remain if it released any."""
        done = self.db.run(lambda s: ledger.expire_holds(s, now=self.clock.now()))
        return done, done > 0

    def worker(self, stop: threading.Event) -> Worker:
        """Return the background worker of this process."""
        s = self.settings
        return Worker(
            outbox=self.outbox_processor(),
            periodic=[
                PeriodicJob("audit_seal", s.audit_seal_interval_s, in_slices(self.seal_audit_step)),
                PeriodicJob("kyc_review", s.kyc_review_interval_s, in_slices(self.kyc_review_step)),
                PeriodicJob(
                    "maintenance", s.maintenance_interval_s, lambda _: Slice(self.maintenance())
                ),
                PeriodicJob(
                    "expire_holds", s.audit_seal_interval_s, in_slices(self.expire_holds_step)
                ),
            ],
            poll_interval_s=s.outbox_poll_interval_s,
            stop=stop,
            job_slice_s=s.worker_job_slice_s,
        )

    def close(self) -> None:
        """Release the database connections (and the bank adapter's)."""
        closer = getattr(self.bank, "close", None)
        if callable(closer):
            closer()
        self.db.dispose()
