"""Measures compliance takes on accounts and customers (K2: investigate, stop service).

Each measure is one unit of work with the change that enforces it, so it holds from the
commit on, on both payment paths (Python and the PostgreSQL transfer function):

- ``freeze``: the account (or every open account of the customer) becomes ``frozen``;
  the accounts module refuses its debits (403 ``account_frozen``).
- ``delay_settlement``: the account (or every open account of the customer) keeps
  receiving transfers and refunds, but each credit is held at once (a ledger hold under
  the measure's id): it shows in the balance, not in the available balance, and cannot be
  spent or withdrawn until released. Released by ``lift``, or when the alert the measure
  cites is closed as ``false_positive`` or ``no_action`` (a ``reported`` alert keeps the
  funds held until an officer lifts the measure).
- ``terminate_service``: the customer becomes ``restricted`` (reason ``aml_terminated``):
  no payment, transfer or new account any more; the customer may still withdraw their
  own balance to their own bank card (the funds are theirs: B1, R7).
- ``lift``: frozen accounts are active again, delayed settlements end and their holds are
  released, and an AML termination is withdrawn.

Every measure names an officer, carries a reason (stored only encrypted), may cite the
alert it follows from, is audited against the customer (so it shows in the customer's
timeline), and is kept in ``aml_actions``. The accounts' own ``status_reason`` and audit
events get the action's id, never the free-text reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from custodia.accounts import service as accounts
from custodia.accounts.models import PaymentAccount
from custodia.aml.errors import ActionNotApplicable
from custodia.aml.models import AmlAction, AmlAlert
from custodia.core import audit
from custodia.core.actors import Context
from custodia.core.errors import NotFound
from custodia.core.ids import IdGenerator, IdPrefix
from custodia.core.vault import Vault
from custodia.kyc.models import Customer

TERMINATED = "aml_terminated"
_FREEZABLE = ("active", "restricted", "closing")


@dataclass(frozen=True, slots=True)
class TakeAction:
    """``POST /v1/aml/actions``: one of account or customer, the action, the reason."""

    action: str
    reason: str
    account_id: str | None = None
    customer_id: str | None = None
    alert_id: str | None = None


@dataclass(frozen=True, slots=True)
class ActionTaken:
    """What a measure changed."""

    id: str
    action: str
    customer_id: str
    account_id: str | None
    accounts_changed: list[str]
    customer_status: str
    alert_id: str | None
    actor: str
    created_at: datetime


def _target(session: Session, cmd: TakeAction) -> tuple[Customer, list[PaymentAccount]]:
    """Return the customer (locked) and the accounts the command names (locked)."""
    if cmd.account_id is not None:
        account = accounts.load(session, cmd.account_id, for_update=True)
        customer_id = account.customer_id
        chosen = [account]
    else:
        assert cmd.customer_id is not None  # noqa: S101 - the API requires one of the two
        customer_id = cmd.customer_id
        chosen = list(
            session.execute(
                select(PaymentAccount)
                .where(PaymentAccount.customer_id == customer_id)
                .order_by(PaymentAccount.id)
                .with_for_update()
            ).scalars()
        )
    customer = session.get(Customer, customer_id, with_for_update=True)
    if customer is None:
        raise NotFound("customer", customer_id)
    return customer, chosen


def take_action(
    session: Session, cmd: TakeAction, *, ctx: Context, ids: IdGenerator, vault: Vault
) -> ActionTaken:
    """Apply a compliance measure at once and record it (K2); 409 if it changes nothing."""
    if cmd.alert_id is not None and session.get(AmlAlert, cmd.alert_id) is None:
        raise NotFound("alert", cmd.alert_id)
    customer, chosen = _target(session, cmd)
    action_id = ids.new(IdPrefix.AML_ACTION)
    marker = f"aml:{action_id}"
    changed: list[str] = []
    if cmd.action == "freeze":
        for account in chosen:
            if account.status in _FREEZABLE:
                accounts.freeze(session, account.id, reason=marker, ctx=ctx)
                changed.append(account.id)
    elif cmd.action == "delay_settlement":
        changed += [
            account.id
            for account in chosen
            if accounts.delay_settlement(session, account.id, action_id=action_id, ctx=ctx)
        ]
    elif cmd.action == "lift":
        for account in chosen:
            unfrozen = account.status == "frozen"
            if unfrozen:
                accounts.unfreeze(session, account.id, reason=marker, ctx=ctx)
            released = accounts.release_settlement(session, account.id, reason=marker, ctx=ctx)
            if unfrozen or released is not None:
                changed.append(account.id)
    customer_changed = _customer_status(session, customer, cmd.action, marker, ctx=ctx)
    if not changed and not customer_changed:
        raise ActionNotApplicable(cmd.action, customer.id, cmd.account_id)
    session.add(
        AmlAction(
            id=action_id,
            action=cmd.action,
            customer_id=customer.id,
            account_ids={"changed": changed},
            alert_id=cmd.alert_id,
            reason_enc=vault.encrypt(
                cmd.reason, table="aml_actions", column="reason_enc", row_id=action_id
            ),
            actor=str(ctx.actor),
            created_at=ctx.now,
        )
    )
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.AML_ACTION_TAKEN,
        target=action_id,
        customer_id=customer.id,
        details={
            "action": cmd.action,
            "accounts": changed,
            "customer_status": customer.status,
            "alert_id": cmd.alert_id,
        },
    )
    return ActionTaken(
        id=action_id,
        action=cmd.action,
        customer_id=customer.id,
        account_id=cmd.account_id,
        accounts_changed=changed,
        customer_status=customer.status,
        alert_id=cmd.alert_id,
        actor=str(ctx.actor),
        created_at=ctx.now,
    )


def _customer_status(
    session: Session, customer: Customer, action: str, marker: str, *, ctx: Context
) -> bool:
    """Restrict (terminate) or release (lift) the customer; return whether it changed."""
    if action == "terminate_service" and customer.status in {"active", "pending_verification"}:
        before, customer.status, customer.restriction_reason = (
            customer.status,
            "restricted",
            TERMINATED,
        )
    elif (
        action == "lift"
        and customer.status == "restricted"
        and customer.restriction_reason == TERMINATED
    ):
        before, customer.status, customer.restriction_reason = customer.status, "active", None
    else:
        return False
    customer.updated_at = ctx.now
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.CUSTOMER_RESTRICTED
        if customer.status == "restricted"
        else audit.AuditAction.CUSTOMER_ACTIVATED,
        target=customer.id,
        customer_id=customer.id,
        details={"from": before, "to": customer.status, "reason": marker},
    )
    return True


#: The decisions that release the settlements delayed on an alert's account (K2).
RELEASING_DECISIONS = ("false_positive", "no_action")


def release_on_decision(session: Session, alert: AmlAlert, *, ctx: Context) -> list[str]:
    """Release the settlements delayed by measures citing ``alert``, now closed (K2).

    Called when an officer closes the alert as ``false_positive`` or ``no_action``: the
    suspicion is cleared, so the held funds are the customer's to use again. Returns the
    accounts released. A measure that no longer holds an account (lifted, or replaced)
    is left alone.
    """
    measures = session.scalars(
        select(AmlAction.id).where(
            AmlAction.alert_id == alert.id, AmlAction.action == "delay_settlement"
        )
    ).all()
    if not measures:
        return []
    held = session.scalars(
        select(PaymentAccount.id)
        .where(PaymentAccount.settlement_delayed_by.in_(measures))
        .order_by(PaymentAccount.id)
    ).all()
    reason = f"aml:{alert.id}:{alert.decision}"
    for account_id in held:
        accounts.release_settlement(session, account_id, reason=reason, ctx=ctx)
    return list(held)
