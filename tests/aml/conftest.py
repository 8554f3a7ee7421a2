"""Helpers of the AML tests: movements fed straight to the rules, alerts read back."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from custodia import aml
from custodia.aml import config, monitoring
from custodia.aml.alerts import Raised
from custodia.aml.models import AmlAlert, AmlAlertTransaction
from custodia.aml.windows import Movement, Subject
from custodia.api.runtime import Runtime
from custodia.core.actors import SYSTEM, Actor, ActorKind, Context, Role
from custodia.core.clock import ManualClock
from tests.factories import StaffLogin, bearer, make_client, make_staff

CNY = 100
_TXNS = itertools.count(1)
_CUSTOMERS = itertools.count(1)
LEAD = Actor(ActorKind.STAFF, "stf_lead", Role.COMPLIANCE_LEAD)
OFFICER = Actor(ActorKind.STAFF, "stf_officer", Role.COMPLIANCE_OFFICER)


@dataclass
class Feed:
    """Feeds synthetic movements through :func:`custodia.aml.monitoring.observe`."""

    runtime: Runtime
    clock: ManualClock
    people: dict[str, Subject] = field(default_factory=dict)
    #: Whether raised alerts re-rate the customer (K1); synthetic customers have no row.
    rate: bool = False

    def customer(
        self,
        *,
        kind: str = "individual",
        risk_level: str = "low",
        screening_status: str = "clear",
        nationality: str = "CN",
    ) -> str:
        """Return the id of a new monitored customer with these traits."""
        customer_id = f"cus_test{next(_CUSTOMERS):05d}"
        self.people[customer_id] = Subject(
            customer_id, kind, risk_level, screening_status, nationality
        )
        return customer_id

    def set_params(self, key: str, **params: Any) -> config.RuleState:
        """Change a rule's parameters as a compliance lead would."""
        ctx = Context(LEAD, self.clock.now())
        change = config.RuleChange(params=params)
        return self.runtime.db.run(lambda s: config.update_rule(s, key, change, ctx=ctx))

    def move(
        self,
        customer_id: str,
        amount: int,
        *,
        rule: str,
        direction: str = "out",
        counterparty: str = "cus_other",
        at: datetime | None = None,
        channel: str = "api",
        cross_border: bool = False,
    ) -> list[Raised]:
        """Record one movement and run ``rule`` on it; return the alerts it touched."""
        movement = Movement(
            transaction_id=f"txn_test{next(_TXNS):06d}",
            customer_id=customer_id,
            direction=direction,
            type="transfer",
            amount=amount,
            currency="CNY",
            counterparty=counterparty,
            cross_border=cross_border,
            channel=channel,
            at=at or self.clock.now(),
        )
        ctx = Context(SYSTEM, self.clock.now())
        policy = self.runtime.monitoring_policy
        if not self.rate:
            policy = dataclasses.replace(policy, rating=None)

        def work(session: Any) -> list[Raised]:
            states = [s for s in config.rule_states(session, ctx.now) if s.rule.key == rule]
            return monitoring.observe(
                session,
                movement,
                self.people,
                states,
                policy=policy,
                ctx=ctx,
                ids=self.runtime.ids,
            )

        return self.runtime.db.run(work)

    def alerts(self, customer_id: str | None = None, rule: str | None = None) -> list[AmlAlert]:
        """Return the alerts raised so far (of a customer, of a rule), oldest first."""
        filters = aml.AlertFilter(customer_id=customer_id, rule=rule)
        found = self.runtime.db.run(
            lambda s: aml.list_alerts(s, filters, before=None, limit=200), read_only=True
        )
        return list(reversed(found))

    def transactions(self, alert_id: str) -> list[str]:
        """Return the transactions linked to an alert."""
        return self.runtime.db.run(
            lambda s: list(
                s.execute(
                    select(AmlAlertTransaction.transaction_id)
                    .where(AmlAlertTransaction.alert_id == alert_id)
                    .order_by(AmlAlertTransaction.transaction_id)
                ).scalars()
            ),
            read_only=True,
        )


@pytest.fixture
def feed(runtime: Runtime, clock: ManualClock) -> Feed:
    """Synthetic movements into the rules, on the rolled-back database."""
    return Feed(runtime, clock)


@pytest.fixture
def app(runtime: Runtime) -> dict[str, str]:
    """An onboarding app's credential."""
    return bearer(make_client(runtime, Role.ONBOARDING_APP).key)


@pytest.fixture
def officer(runtime: Runtime) -> StaffLogin:
    """A compliance officer with a session."""
    return make_staff(runtime, Role.COMPLIANCE_OFFICER)


@pytest.fixture
def lead(runtime: Runtime) -> StaffLogin:
    """A compliance lead with a session."""
    return make_staff(runtime, Role.COMPLIANCE_LEAD)


@pytest.fixture
def auditor(runtime: Runtime) -> StaffLogin:
    """An auditor with a session."""
    return make_staff(runtime, Role.AUDITOR)


def deliver(runtime: Runtime) -> int:
    """Deliver every due outbox event (the worker's job); return how many."""
    processor = runtime.outbox_processor()
    total = 0
    while handled := processor.process_batch():
        total += handled
    return total
