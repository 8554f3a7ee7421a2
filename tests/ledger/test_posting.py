"""The ledger: balanced postings, no overdraft, holds, reversals, reconciliation, replay."""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from itertools import count

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from custodia import ledger
from custodia.core.clock import ManualClock
from custodia.core.db import Database, RetryPolicy
from custodia.ledger import Leg
from custodia.ledger.models import LedgerAccount

RESERVE = ledger.system_account_id("reserve", "CNY")
FEES = ledger.system_account_id("fees", "CNY")
_IDS = count(1)


def _txn() -> str:
    return f"txn_test{next(_IDS):08d}"


def _open(db: Database, clock: ManualClock, *ids: str, kind: str = "customer_wallet") -> None:
    db.run(
        lambda s: [
            ledger.open_account(s, account_id, kind=kind, currency="CNY", now=clock.now())
            for account_id in ids
        ]
    )


def _post(db: Database, clock: ManualClock, *legs: Leg, kind: str = "transfer") -> str:
    transaction_id = _txn()
    db.run(
        lambda s: ledger.post(
            s, transaction_id=transaction_id, kind=kind, currency="CNY", legs=legs, now=clock.now()
        )
    )
    return transaction_id


def _top_up(db: Database, clock: ManualClock, account_id: str, amount: int) -> str:
    return _post(db, clock, Leg(RESERVE, account_id, amount), kind="top_up")


def _balances(db: Database, *ids: str) -> list[tuple[int, int]]:
    return [db.run(lambda s, i=i: ledger.balance_of(s, i), read_only=True) for i in ids]


def test_a_transfer_moves_value_and_the_books_stay_balanced(
    db: Database, clock: ManualClock
) -> None:
    _open(db, clock, "acc_a", "acc_b")
    _top_up(db, clock, "acc_a", 10_000)
    _post(db, clock, Leg("acc_a", "acc_b", 2_500))
    assert _balances(db, "acc_a", "acc_b") == [(7_500, 7_500), (2_500, 2_500)]
    (cny,) = db.run(ledger.reconcile, read_only=True)
    assert (cny.customer_funds, cny.reserve, cny.total, cny.difference) == (10_000, 10_000, 0, 0)
    assert cny.ok
    assert db.run(ledger.replay, read_only=True) == []


def test_an_overdraft_is_refused_with_the_figures_and_nothing_is_posted(
    db: Database, clock: ManualClock
) -> None:
    _open(db, clock, "acc_a", "acc_b")
    _top_up(db, clock, "acc_a", 100)
    with pytest.raises(ledger.InsufficientFunds) as refused:
        _post(db, clock, Leg("acc_a", "acc_b", 101))
    assert {"available": 100, "requested": 101, "rule": "no_overdraft"}.items() <= (
        refused.value.data.items()
    )
    assert _balances(db, "acc_a", "acc_b") == [(100, 100), (0, 0)]
    entries = db.run(lambda s: s.scalar(text("SELECT count(*) FROM ledger_entries")))
    assert entries == 1  # the top-up only


def test_the_same_account_twice_in_one_transaction_nets_out(
    db: Database, clock: ManualClock
) -> None:
    """A payment with a fee: the wallet pays the merchant, the merchant pays the fee."""
    _open(db, clock, "acc_a")
    _open(db, clock, "acc_m", kind="merchant_settlement")
    _top_up(db, clock, "acc_a", 1_000)
    _post(db, clock, Leg("acc_a", "acc_m", 1_000), Leg("acc_m", FEES, 6), kind="payment")
    assert _balances(db, "acc_a", "acc_m", FEES) == [(0, 0), (994, 994), (6, 6)]
    assert db.run(ledger.replay, read_only=True) == []


def test_a_leg_is_a_positive_integer_between_two_accounts() -> None:
    for amount in (0, -1, 1.0, True):
        with pytest.raises(ValueError, match="positive integer"):
            Leg("acc_a", "acc_b", amount)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two different accounts"):
        Leg("acc_a", "acc_a", 1)


def test_an_unknown_account_or_currency_is_refused(db: Database, clock: ManualClock) -> None:
    _open(db, clock, "acc_a")
    _top_up(db, clock, "acc_a", 100)
    with pytest.raises(ledger.LedgerAccountNotFound):
        _post(db, clock, Leg("acc_a", "acc_nobody", 1))
    usd = _txn()
    with pytest.raises(ledger.LedgerAccountNotFound):
        db.run(
            lambda s: ledger.post(
                s,
                transaction_id=usd,
                kind="transfer",
                currency="USD",
                legs=[Leg("acc_a", RESERVE, 1)],
                now=clock.now(),
            )
        )


# ---------------------------------------------------------------------------------- holds


def test_a_hold_lowers_the_available_balance_only_until_captured_or_voided(
    db: Database, clock: ManualClock
) -> None:
    _open(db, clock, "acc_a")
    _open(db, clock, "acc_m", kind="merchant_settlement")
    _top_up(db, clock, "acc_a", 1_000)
    later = clock.now() + timedelta(minutes=10)
    db.run(lambda s: ledger.authorize(
        s, "hld_1", account_id="acc_a", currency="CNY", amount=600, expires_at=later, now=clock.now()
    ))  # fmt: skip
    assert _balances(db, "acc_a") == [(1_000, 400)]
    with pytest.raises(ledger.InsufficientFunds):  # the held value cannot be spent twice
        _post(db, clock, Leg("acc_a", "acc_m", 401))
    with pytest.raises(ledger.InsufficientFunds):
        db.run(lambda s: ledger.authorize(
            s, "hld_2", account_id="acc_a", currency="CNY", amount=401, expires_at=later,
            now=clock.now(),
        ))  # fmt: skip
    taken = db.run(lambda s: ledger.capture(
        s, "hld_1", credit="acc_m", transaction_id=_txn(), kind="payment", now=clock.now(), amount=500
    ))  # fmt: skip
    assert taken == 500
    assert _balances(db, "acc_a", "acc_m") == [(500, 500), (500, 500)]
    with pytest.raises(ledger.HoldNotActive):
        db.run(lambda s: ledger.void(s, "hld_1", now=clock.now()))
    db.run(lambda s: ledger.authorize(
        s, "hld_3", account_id="acc_a", currency="CNY", amount=200, expires_at=later, now=clock.now()
    ))  # fmt: skip
    db.run(lambda s: ledger.void(s, "hld_3", now=clock.now()))
    assert _balances(db, "acc_a") == [(500, 500)]
    assert db.run(ledger.replay, read_only=True) == []


def test_expired_holds_are_released_and_cannot_be_captured(
    db: Database, clock: ManualClock
) -> None:
    _open(db, clock, "acc_a")
    _top_up(db, clock, "acc_a", 1_000)
    soon = clock.now() + timedelta(minutes=1)
    db.run(lambda s: ledger.authorize(
        s, "hld_1", account_id="acc_a", currency="CNY", amount=700, expires_at=soon, now=clock.now()
    ))  # fmt: skip
    clock.advance(timedelta(minutes=2))
    with pytest.raises(ledger.HoldNotActive):
        db.run(lambda s: ledger.capture(
            s, "hld_1", credit=RESERVE, transaction_id=_txn(), kind="withdrawal", now=clock.now()
        ))  # fmt: skip
    assert db.run(lambda s: ledger.expire_holds(s, now=clock.now())) == 1
    assert _balances(db, "acc_a") == [(1_000, 1_000)]
    assert db.run(lambda s: ledger.expire_holds(s, now=clock.now())) == 0


# ------------------------------------------------------------------------------ reversals


def test_a_reversal_is_a_new_transaction_and_happens_once(db: Database, clock: ManualClock) -> None:
    _open(db, clock, "acc_a", "acc_b")
    _top_up(db, clock, "acc_a", 1_000)
    paid = _post(db, clock, Leg("acc_a", "acc_b", 300))
    db.run(lambda s: ledger.reverse(s, paid, reversal_id=_txn(), now=clock.now()))
    assert _balances(db, "acc_a", "acc_b") == [(1_000, 1_000), (0, 0)]
    with pytest.raises(ledger.AlreadyReversed):
        db.run(lambda s: ledger.reverse(s, paid, reversal_id=_txn(), now=clock.now()))
    entries = db.run(lambda s: s.scalar(text("SELECT count(*) FROM ledger_entries")))
    assert entries == 3  # top-up, payment, its mirror: nothing edited


def test_a_reversal_cannot_overdraw_the_payee(db: Database, clock: ManualClock) -> None:
    _open(db, clock, "acc_a", "acc_b", "acc_c")
    _top_up(db, clock, "acc_a", 1_000)
    paid = _post(db, clock, Leg("acc_a", "acc_b", 300))
    _post(db, clock, Leg("acc_b", "acc_c", 300))
    with pytest.raises(ledger.InsufficientFunds):
        db.run(lambda s: ledger.reverse(s, paid, reversal_id=_txn(), now=clock.now()))


# ----------------------------------------------------------------- the database holds the line


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_accounts SET balance = -1 WHERE id = 'acc_a'",
        "UPDATE ledger_accounts SET held = balance + 1 WHERE id = 'acc_a'",
        "UPDATE ledger_accounts SET held = -1 WHERE id = 'acc_a'",
        "UPDATE ledger_accounts SET allow_overdraft = true WHERE id = 'acc_a'",
        (
            "INSERT INTO ledger_accounts (id, kind, currency, allow_overdraft, balance, held, "
            "created_at) VALUES ('acc_x', 'customer_wallet', 'CNY', true, -5, 0, '2026-01-01')"
        ),
    ],
)
def test_the_database_refuses_a_negative_customer_balance(
    db: Database, clock: ManualClock, statement: str
) -> None:
    """Raw SQL, around Python: a wallet can neither go below zero nor be allowed to."""
    _open(db, clock, "acc_a")
    _top_up(db, clock, "acc_a", 100)
    with pytest.raises(IntegrityError):
        db.run(lambda s: s.execute(text(statement)))


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET amount = amount + 1",
        "DELETE FROM ledger_entries",
        "UPDATE ledger_transactions SET kind = 'edited'",
        "DELETE FROM ledger_transactions",
    ],
)
def test_the_database_refuses_to_edit_the_journal(
    db: Database, clock: ManualClock, statement: str
) -> None:
    _open(db, clock, "acc_a")
    _top_up(db, clock, "acc_a", 100)
    with pytest.raises(DBAPIError, match="append-only"):
        db.run(lambda s: s.execute(text(statement)))


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ("'acc_a', 'acc_b', 'CNY', 0", "amount"),
        ("'acc_a', 'acc_b', 'CNY', -5", "amount"),
        ("'acc_a', 'acc_a', 'CNY', 5", "same account"),
        ("'acc_a', 'acc_b', 'USD', 5", "currency"),
    ],
)
def test_the_database_refuses_an_unbalanced_or_foreign_entry(
    db: Database, clock: ManualClock, values: str, why: str
) -> None:
    _open(db, clock, "acc_a", "acc_b")
    transaction = _top_up(db, clock, "acc_a", 100)
    with pytest.raises(IntegrityError):
        (
            db.run(
                lambda s: s.execute(
                    text(
                        "INSERT INTO ledger_entries (transaction_id, debit_account, credit_account, "
                        f"currency, amount, created_at) VALUES ('{transaction}', {values}, '2026-01-01')"
                    )
                )
            ),
            why,
        )


# ------------------------------------------------------------------------------ concurrency


def test_two_hundred_concurrent_debits_of_a_hundred_never_overdraw(
    committing_db: Database, clock: ManualClock
) -> None:
    """200 transfers of 1 CNY from 100 CNY: exactly 100 succeed, the balance ends at zero."""
    db = Database(committing_db.engine, retry=RetryPolicy(attempts=20))
    _open(db, clock, "acc_a", "acc_b")
    _top_up(db, clock, "acc_a", 100 * 100)
    outcomes: list[str] = []
    lock = threading.Lock()

    def transfer() -> None:
        try:
            _post(db, clock, Leg("acc_a", "acc_b", 100))
            outcome = "ok"
        except ledger.InsufficientFunds:
            outcome = "insufficient_funds"
        except Exception as exc:  # noqa: BLE001 - counted for the assertion
            outcome = repr(exc)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=transfer) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(outcomes)) == ["insufficient_funds", "ok"]
    assert outcomes.count("ok") == 100
    assert _balances(db, "acc_a", "acc_b") == [(0, 0), (10_000, 10_000)]
    assert db.run(ledger.replay, read_only=True) == []


def test_value_is_conserved_under_churn(committing_db: Database, clock: ManualClock) -> None:
    """Many workers move random amounts between accounts; every snapshot sums to the start."""
    db = Database(committing_db.engine, retry=RetryPolicy(attempts=30))
    accounts = [f"acc_{n:02d}" for n in range(12)]
    _open(db, clock, *accounts)
    for account_id in accounts:
        _top_up(db, clock, account_id, 5_000)
    start = 12 * 5_000
    stop = threading.Event()
    snapshots: list[int] = []
    failures: list[BaseException] = []

    def snapshot(session: Session) -> int:
        return int(
            session.scalar(
                select(func.sum(LedgerAccount.balance)).where(
                    LedgerAccount.kind == "customer_wallet"
                )
            )
            or 0
        )

    def watch() -> None:
        while not stop.is_set():
            snapshots.append(db.run(snapshot, read_only=True, isolation="REPEATABLE READ"))

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(60):
            a, b = rng.sample(accounts, 2)
            try:
                _post(db, clock, Leg(a, b, rng.randint(1, 3_000)))
            except ledger.InsufficientFunds:
                pass
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

    watcher = threading.Thread(target=watch)
    workers = [threading.Thread(target=churn, args=(seed,)) for seed in range(8)]
    watcher.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    watcher.join()
    assert failures == []
    assert snapshots and set(snapshots) == {start}
    assert db.run(snapshot, read_only=True) == start
    assert db.run(ledger.replay, read_only=True) == []
    (cny,) = db.run(ledger.reconcile, read_only=True)
    assert cny.ok
