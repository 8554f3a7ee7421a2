"""The one-call transfer path answers exactly as the general path does, on both backends.

Every transfer test of the suite already runs through whichever path applies (a
signature-only transfer takes the one-call path: PostgreSQL's function, or its steps on
the SQLite driver); this module plays one script of successes and refusals through *both*
paths and compares what the caller gets and what the database holds afterwards.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, text, update

from custodia.accounts import fastpath
from custodia.api.runtime import Runtime
from custodia.core.clock import ManualClock
from custodia.core.models import IdempotencyRecord
from tests.accounts.conftest import Client, onboard

#: Fields of a problem that name no id (ids differ between the two runs).
_PROBLEM_FIELDS = ("code", "available", "requested", "rule", "limit", "used", "period", "status")
_TXN_FIELDS = ("type", "status", "amount", "currency", "channel", "terminal_type", "purpose")


def _shape(response: Any) -> tuple[Any, ...]:
    body = response.json()
    if response.status_code >= 400:
        return (response.status_code, *(body.get(f) for f in _PROBLEM_FIELDS))
    return (
        response.status_code,
        response.headers.get("idempotent-replayed"),
        *(body[f] for f in _TXN_FIELDS),
        body["payer"]["name"],
        body["payee"]["name"],
        body["authentication"]["factors"],
        body["authentication"]["kinds"],
    )


def _sql(runtime: Runtime, statement: str, **params: Any) -> list[Any]:
    """Run ``statement``; a list parameter is expanded (``IN :a``) on either backend."""
    query = text(statement).bindparams(
        *(bindparam(name, expanding=True) for name, v in params.items() if isinstance(v, list))
    )

    def run(session: Any) -> list[Any]:
        result = session.execute(query, params)
        return [tuple(row) for row in result] if result.returns_rows else []

    return runtime.db.run(run)


def _json(value: Any) -> Any:
    """A JSON column's value as Python data (PostgreSQL's driver decodes it, SQLite's not)."""
    return json.loads(value) if isinstance(value, str) else value


def _year(value: Any) -> int:
    """An instant's year (a datetime on PostgreSQL, naive UTC text on SQLite)."""
    return value.year if hasattr(value, "year") else int(value[:4])


def _delayed_settlement(
    client: Client, runtime: Runtime, clock: ManualClock, *, apps: dict[str, dict[str, str]],
    seen: list[Any],
) -> tuple[str, str]:  # fmt: skip
    """A payee whose settlement compliance delayed (K2): paid, but the credit is held."""
    app, officer = apps["app"], apps["officer"]
    delayed = onboard(client, app, clock, funds=300)
    sender = onboard(client, app, clock, funds=1_000)
    measure = client.post(
        "/v1/aml/actions",
        json={"account_id": delayed.account, "action": "delay_settlement", "reason": "case"},
        headers=officer,
    )
    assert measure.status_code == 201, measure.text
    seen.append(_shape(sender.transfer(delayed.account, 400)))
    seen.append(_shape(delayed.transfer(sender.account, 301)))  # only its own 300 is free
    seen.append(_shape(delayed.transfer(sender.account, 300)))
    found = _sql(
        runtime,
        "SELECT h.amount, h.status, h.reference, h.expires_at, h.id, t.id FROM ledger_holds h "
        "JOIN payment_transactions t ON t.credit_account = h.account_id "
        "AND t.type = 'transfer' WHERE h.account_id = :a ORDER BY h.amount",
        a=delayed.account,
    )
    holds = [
        (amount, status, reference == f"aml:{measure.json()['id']}", _year(expires) == 9999,
         hold == f"hld_{txn[4:]}")
        for amount, status, reference, expires, hold, txn in found
    ]  # fmt: skip
    assert holds and all(h[2] and h[3] and h[4] for h in holds)  # its measure, its credit
    seen.append(holds)
    return delayed.account, sender.account


def _expired_key(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str], *, payee: str,
    seen: list[Any],
) -> str:  # fmt: skip
    """A key whose stored response expired is taken again: a new transfer, not a replay."""
    again = onboard(client, app, clock, funds=1_000)
    key = again.key()
    seen.append(_shape(again.transfer(payee, 10, key=key)))
    runtime.db.run(
        lambda s: s.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == key)
            .values(expires_at=clock.now() - timedelta(seconds=1))
        )
    )  # its day passed (the clock stays: the officer's session must not expire)
    retaken = again.transfer(payee, 20, key=key)
    assert retaken.status_code == 201, retaken.text
    assert (retaken.json()["amount"], retaken.headers.get("idempotent-replayed")) == (20, None)
    seen.append(_shape(retaken))
    return again.account


def _script(
    client: Client, runtime: Runtime, clock: ManualClock, apps: dict[str, dict[str, str]]
) -> list[Any]:
    app, officer, other_app = apps["app"], apps["officer"], apps["other_app"]
    seen: list[Any] = []
    payer = onboard(client, app, clock, funds=50_000)
    payee = onboard(client, app, clock, name="李娜")
    # A transfer, its replay, and the key reused for another amount.
    key = payer.key()
    first = payer.transfer(payee.account, 2_500, key=key, channel="app", terminal_type="ios")
    replay = payer.transfer(payee.account, 2_500, key=key, channel="app", terminal_type="ios")
    assert replay.json() == first.json()
    seen += [_shape(first), _shape(replay), _shape(payer.transfer(payee.account, 1, key=key))]
    # An overdraft; Class I's lifetime limit, then the daily limit of one factor kind.
    seen.append(_shape(payer.transfer(payee.account, 47_501)))
    big = onboard(client, app, clock, account_class="I", funds=150_000)
    seen.append(_shape(big.transfer(payee.account, 100_001)))
    seen.append(_shape(big.transfer(payee.account, 60_000)))
    seen.append(_shape(big.transfer(payee.account, 40_001)))
    # Bad signatures: forged, by the payee's key, by a revoked key; each one counted.
    forged = payer.signature("transfer", "other", payee.account, 10)
    seen.append(_shape(payer.transfer(payee.account, 10, factors=[forged])))
    key = payer.key()
    by_payee = payee.signature("transfer", key, payee.account, 10, payer=payer.account)
    seen.append(_shape(payer.transfer(payee.account, 10, key=key, factors=[by_payee])))
    seen.append(
        _sql(runtime, "SELECT failed_attempts FROM customer_credentials WHERE customer_id = :c",
             c=payer.id)
    )  # fmt: skip
    # Who may pay and be paid: unknown payee, another app's customer, frozen, closed.
    seen.append(_shape(payer.transfer("acc_unknown", 10)))
    stranger = onboard(client, other_app, clock, funds=1_000)
    seen.append(_shape(payer.transfer(stranger.account, 10)))  # paying them is fine
    seen.append(_shape(stranger.transfer(payee.account, 10)))
    stranger.app = app  # their account, through an app that did not register them
    seen.append(_shape(stranger.transfer(payee.account, 10)))
    empty = onboard(client, app, clock)
    closed = client.post(f"/v1/accounts/{empty.account}/close", headers=app)
    assert closed.status_code == 200, closed.text
    seen.append(_shape(payer.transfer(empty.account, 10)))
    frozen = client.post(
        f"/v1/accounts/{payer.account}/freeze", json={"reason": "case"}, headers=officer
    )
    assert frozen.status_code == 200, frozen.text
    seen.append(_shape(payer.transfer(payee.account, 10)))
    # A restricted customer; a corporate transfer over 50,000 CNY without its purpose.
    _sql(runtime, "UPDATE customers SET status = 'restricted' WHERE id = :c", c=payee.id)
    seen.append(_shape(payee.transfer(payer.account, 10)))
    company = onboard(client, app, clock, account_class="corporate", corporate=True,
                      funds=5_000_100)  # fmt: skip
    seen.append(_shape(company.transfer(big.account, 5_000_001)))
    seen.append(_shape(company.transfer(big.account, 5_000_001, purpose="货款")))
    # Locked after repeated failures, even with the right signature.
    for _ in range(5):
        big.transfer(payee.account, 10, factors=[forged])
    seen.append(_shape(big.transfer(payee.account, 10)))
    revoked = onboard(client, app, clock, funds=1_000)
    _sql(runtime, "UPDATE customer_signing_keys SET revoked_at = :t WHERE id = :k",
         t=clock.now(), k=revoked.key_id)  # fmt: skip
    seen.append(_shape(revoked.transfer(payee.account, 10)))
    again = _expired_key(client, runtime, clock, app, payee=payee.account, seen=seen)
    # What the books hold: balances, limits used, audit and outbox events, the records.
    accounts = [
        payer.account, payee.account, big.account, company.account, stranger.account,
        again,
        *_delayed_settlement(client, runtime, clock, apps=apps, seen=seen),
    ]  # fmt: skip
    return seen + _books(runtime, accounts, payer.account)


def _books(runtime: Runtime, accounts: list[str], payer: str) -> list[Any]:
    """What the database holds for ``accounts`` (ids left out: they differ between runs)."""
    seen: list[Any] = []
    balances = _sql(
        runtime, "SELECT id, balance, held FROM ledger_accounts WHERE id IN :a", a=accounts
    )
    seen.append(sorted((accounts.index(i), balance, held) for i, balance, held in balances))
    seen.append(
        _sql(
            runtime,
            "SELECT rule, used FROM limit_usage u JOIN payment_accounts a "
            "ON a.customer_id = u.customer_id WHERE a.id IN :a "
            "ORDER BY a.id = :p DESC, rule, used",
            a=accounts,
            p=payer,
        )
    )
    mine = "SELECT id FROM payment_transactions WHERE debit_account IN :a"
    seen.append(
        _sql(
            runtime,
            "SELECT count(*), count(DISTINCT target) FROM audit_inbox "
            f"WHERE action = 'accounts:transaction:transfer' AND target IN ({mine})",
            a=accounts,
        )
    )
    ids = {row[0] for row in _sql(runtime, mine, a=accounts)}
    events = [
        {k: v for k, v in _json(payload).items() if k != "transaction_id"}
        for (payload,) in _sql(
            runtime,
            "SELECT payload FROM outbox_events WHERE event_type = 'accounts.transaction_posted'",
        )
        if _json(payload)["transaction_id"] in ids
    ]
    seen.append(sorted(events, key=lambda e: json.dumps(e, sort_keys=True)))
    records = _sql(
        runtime,
        "SELECT t.type, t.amount, t.channel, t.terminal_type, t.authentication, "
        "t.purpose, t.payer_name_enc IS NOT NULL, t.payee_name_enc IS NOT NULL, "
        "e.amount, e.debit_account = t.debit_account "
        "FROM payment_transactions t JOIN ledger_entries e ON e.transaction_id = t.id "
        "WHERE t.type = 'transfer' AND t.debit_account IN :a ORDER BY t.amount",
        a=accounts,
    )
    seen.append([(*r[:4], _json(r[4])["factors"], r[5], *map(bool, r[6:])) for r in records])
    return seen


@pytest.fixture
def other_app(runtime: Runtime) -> dict[str, str]:
    """A second onboarding app."""
    from custodia.core.actors import Role  # noqa: PLC0415
    from tests.factories import bearer, make_client  # noqa: PLC0415

    return bearer(make_client(runtime, Role.ONBOARDING_APP).key)


@pytest.fixture
def apps(
    app: dict[str, str], officer: dict[str, str], other_app: dict[str, str]
) -> dict[str, dict[str, str]]:
    """The credentials the script acts with."""
    return {"app": app, "officer": officer, "other_app": other_app}


def test_both_transfer_paths_answer_and_write_the_same(
    client: Client,
    runtime: Runtime,
    clock: ManualClock,
    apps: dict[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    real = fastpath.transfer

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append("fast")
        return real(*args, **kwargs)

    monkeypatch.setattr(fastpath, "transfer", counted)
    fast = _script(client, runtime, clock, apps)
    taken = len(calls)
    assert taken >= 15  # every signature-only transfer of the script
    monkeypatch.setattr(fastpath, "eligible", lambda *_: False)
    general = _script(client, runtime, clock, apps)
    assert len(calls) == taken  # the second run never took the one-call path
    assert fast == general
