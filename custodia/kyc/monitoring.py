"""Continuous identification: expiring documents, expired documents, periodic re-verification.

REGULATION.md R1 (Art. 6: keep identifying the customer for as long as the relationship
lasts) and K7 (supervisory practice; the periods are settings):

- a document expiring within ``CUSTODIA_KYC_EXPIRY_NOTICE_DAYS`` (30) gets one renewal
  notice (outbox event ``kyc.document_expiring``, audited);
- a document expired for more than ``CUSTODIA_KYC_EXPIRY_GRACE_DAYS`` (30) restricts the
  customer (``restricted``, reason ``document_expired``) until a renewed document passes a
  verification;
- a customer whose last passed verification is older than the re-verification period of
  its risk level (high 1 year, medium 2, low 3; settings) is marked due
  (``reverification_due_on``; event ``kyc.reverification_due``).

The job runs in ``custodia worker`` with the clock injected; every step is idempotent, so it
may run hourly, twice, or after a missed day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from custodia.core import audit
from custodia.core.actors import Context
from custodia.core.audit import AuditAction
from custodia.core.outbox import publish
from custodia.kyc.customers import rerate
from custodia.kyc.models import Customer, CustomerNotice, Verification
from custodia.kyc.onboarding import Services

DOCUMENT_EXPIRING = "kyc.document_expiring"
CUSTOMER_RESTRICTED = "kyc.customer_restricted"
REVERIFICATION_DUE = "kyc.reverification_due"
OPEN_STATUSES = ("pending_verification", "active")


@dataclass(frozen=True, slots=True)
class IdentificationPolicy:
    """The periods of continuous identification (settings)."""

    notice_days: int = 30
    grace_days: int = 30
    reverify_years: tuple[tuple[str, int], ...] = (("high", 1), ("medium", 2), ("low", 3))


@dataclass(frozen=True, slots=True)
class ReviewResult:
    """What one run did."""

    notices: int = 0
    restricted: int = 0
    reverification_due: int = 0

    def total(self) -> int:
        """Return how many customers were acted on."""
        return self.notices + self.restricted + self.reverification_due


def review(
    session: Session,
    *,
    ctx: Context,
    services: Services,
    policy: IdentificationPolicy,
    batch: int = 500,
) -> ReviewResult:
    """Run one pass of continuous identification as of ``services.today``."""
    today = services.today
    return ReviewResult(
        notices=_expiry_notices(
            session, ctx=ctx, services=services, today=today, policy=policy, batch=batch
        ),
        restricted=_restrict_expired(
            session, ctx=ctx, services=services, today=today, policy=policy, batch=batch
        ),
        reverification_due=_reverification(
            session, ctx=ctx, services=services, today=today, policy=policy, batch=batch
        ),
    )


def _expiry_notices(
    session: Session,
    *,
    ctx: Context,
    services: Services,
    today: date,
    policy: IdentificationPolicy,
    batch: int,
) -> int:
    horizon = today + timedelta(days=policy.notice_days)
    already = select(CustomerNotice.customer_id).where(
        CustomerNotice.customer_id == Customer.id,
        CustomerNotice.kind == "document_expiring",
        CustomerNotice.document_version == Customer.document_version,
    )
    rows = (
        session.execute(
            select(Customer)
            .where(
                Customer.id_valid_until.is_not(None),
                Customer.id_valid_until >= today,
                Customer.id_valid_until <= horizon,
                Customer.status != "closed",
                ~already.exists(),
            )
            .order_by(Customer.id)
            .limit(batch)
        )
        .scalars()
        .all()
    )
    for customer in rows:
        session.add(
            CustomerNotice(
                customer_id=customer.id,
                kind="document_expiring",
                document_version=customer.document_version,
                sent_at=ctx.now,
            )
        )
        assert customer.id_valid_until is not None  # noqa: S101 - filtered above
        publish(
            session,
            DOCUMENT_EXPIRING,
            {"customer_id": customer.id, "valid_until": customer.id_valid_until.isoformat()},
            ids=services.ids,
            now=ctx.now,
        )
        audit.record(
            session,
            ctx,
            AuditAction.CUSTOMER_DOCUMENT_EXPIRING,
            target=customer.id,
            customer_id=customer.id,
            details={"valid_until": customer.id_valid_until.isoformat()},
        )
    return len(rows)


def _restrict_expired(
    session: Session,
    *,
    ctx: Context,
    services: Services,
    today: date,
    policy: IdentificationPolicy,
    batch: int,
) -> int:
    deadline = today - timedelta(days=policy.grace_days)
    rows = (
        session.execute(
            select(Customer)
            .where(
                Customer.id_valid_until.is_not(None),
                Customer.id_valid_until < deadline,
                Customer.status.in_(OPEN_STATUSES),
            )
            .order_by(Customer.id)
            .limit(batch)
            .with_for_update()
        )
        .scalars()
        .all()
    )
    for customer in rows:
        previous = customer.status
        customer.status = "restricted"
        customer.restriction_reason = "document_expired"
        customer.updated_at = ctx.now
        assert customer.id_valid_until is not None  # noqa: S101 - filtered above
        audit.record(
            session,
            ctx,
            AuditAction.CUSTOMER_RESTRICTED,
            target=customer.id,
            customer_id=customer.id,
            details={
                "from": previous,
                "reason": "document_expired",
                "valid_until": customer.id_valid_until.isoformat(),
            },
        )
        publish(
            session,
            CUSTOMER_RESTRICTED,
            {"customer_id": customer.id, "reason": "document_expired"},
            ids=services.ids,
            now=ctx.now,
        )
        rerate(
            session,
            customer,
            vault=services.vault,
            model=services.risk_model,
            ctx=ctx,
            today=today,
            policy=services.policy,
            reason="document_expired",
        )
    return len(rows)


def _reverification(
    session: Session,
    *,
    ctx: Context,
    services: Services,
    today: date,
    policy: IdentificationPolicy,
    batch: int,
) -> int:
    last_passed = (
        select(Verification.customer_id, func.max(Verification.created_at).label("last_at"))
        .where(Verification.result == "passed")
        .group_by(Verification.customer_id)
        .subquery()
    )
    done = 0
    for level, years in policy.reverify_years:
        cutoff = ctx.now - timedelta(days=365 * years)
        rows = (
            session.execute(
                select(Customer)
                .join(last_passed, last_passed.c.customer_id == Customer.id)
                .where(
                    Customer.risk_level == level,
                    Customer.status == "active",
                    Customer.reverification_due_on.is_(None),
                    last_passed.c.last_at < cutoff,
                )
                .order_by(Customer.id)
                .limit(batch)
            )
            .scalars()
            .all()
        )
        for customer in rows:
            customer.reverification_due_on = today + timedelta(days=policy.grace_days)
            customer.updated_at = ctx.now
            audit.record(
                session,
                ctx,
                AuditAction.CUSTOMER_REVERIFICATION_DUE,
                target=customer.id,
                customer_id=customer.id,
                details={"risk_level": level, "period_years": years},
            )
            publish(
                session,
                REVERIFICATION_DUE,
                {"customer_id": customer.id, "due_on": customer.reverification_due_on.isoformat()},
                ids=services.ids,
                now=ctx.now,
            )
        done += len(rows)
    return done
