"""Re-screening every customer when a list changes (REGULATION.md L3: "whenever a list changes").

An upload publishes ``kyc.watchlist_uploaded``; its consumer starts a chain of
``kyc.rescreen_batch`` events, each screening the next ``batch`` customers (by id) and
publishing the one after. Each batch is one outbox delivery, committed on its own, so the
work survives restarts, spreads over several workers, and never holds one long transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from custodia.core.actors import SYSTEM, Context
from custodia.core.outbox import OutboxMessage, publish
from custodia.kyc.customers import decrypt_field, rerate
from custodia.kyc.models import Customer, CustomerParty
from custodia.kyc.onboarding import ScreeningSubject, Services, screen_customer

RESCREEN_BATCH = "kyc.rescreen_batch"


def subjects_of(session: Session, customer: Customer, services: Services) -> list[ScreeningSubject]:
    """Return the names screened for a customer: itself and its parties."""
    vault = services.vault
    born = decrypt_field(
        vault, "customers", customer.id, customer.date_of_birth_enc, "date_of_birth_enc"
    )
    subjects = [
        ScreeningSubject(
            "",
            "customer",
            decrypt_field(vault, "customers", customer.id, customer.name_enc, "name_enc") or "",
            date.fromisoformat(born) if born else None,
            customer.nationality,
        )
    ]
    parties = session.execute(
        select(CustomerParty)
        .where(CustomerParty.customer_id == customer.id)
        .order_by(CustomerParty.id)
    ).scalars()
    for party in parties:
        party_born = decrypt_field(
            vault, "customer_parties", party.id, party.date_of_birth_enc, "date_of_birth_enc"
        )
        subjects.append(
            ScreeningSubject(
                party.id,
                party.role,
                decrypt_field(vault, "customer_parties", party.id, party.name_enc, "name_enc")
                or "",
                date.fromisoformat(party_born) if party_born else None,
                party.nationality,
            )
        )
    return subjects


def consumers(
    services_for: Callable[[Context], Services], *, batch: int = 200
) -> dict[str, Callable[[Session, OutboxMessage], None]]:
    """Return the outbox consumers of re-screening, keyed by event type."""

    def on_upload(session: Session, message: OutboxMessage) -> None:
        ctx = Context(SYSTEM, message.created_at, None)
        publish(session, RESCREEN_BATCH, {"after": ""}, ids=services_for(ctx).ids, now=ctx.now)

    def on_batch(session: Session, message: OutboxMessage) -> None:
        ctx = Context(SYSTEM, message.created_at, f"rescreen:{message.id}")
        services = services_for(ctx)
        after = str(message.payload.get("after", ""))
        customers = (
            session.execute(
                select(Customer)
                .where(Customer.id > after, Customer.status != "closed")
                .order_by(Customer.id)
                .limit(batch)
                .with_for_update()
            )
            .scalars()
            .all()
        )
        for customer in customers:
            before = customer.screening_status
            screen_customer(
                session,
                customer,
                subjects_of(session, customer, services),
                screener=services.screener,
                ctx=ctx,
                ids=services.ids,
            )
            if customer.screening_status != before:
                rerate(
                    session,
                    customer,
                    vault=services.vault,
                    model=services.risk_model,
                    ctx=ctx,
                    today=services.today,
                    policy=services.policy,
                    reason="rescreened",
                )
        if len(customers) == batch:
            publish(
                session, RESCREEN_BATCH, {"after": customers[-1].id}, ids=services.ids, now=ctx.now
            )

    from custodia.kyc.watchlists import WATCHLIST_UPLOADED  # noqa: PLC0415

    return {WATCHLIST_UPLOADED: on_upload, RESCREEN_BATCH: on_batch}
