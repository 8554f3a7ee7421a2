"""What the transfer route may take from per-process caches, and what it never may.

The guard takes an API key it authenticated before from the process's known keys on
``POST /v1/transfers`` (``Access.key_rechecked``): the transfer's own transaction checks
the client again, so a revoked key is still refused at once, on either path. On PostgreSQL
the record is sealed before the call from the customers' name blobs as the process last
read them; a renamed customer is named anew (the function refuses ``parties_changed``
and the transfer is sealed again).
"""

from __future__ import annotations

import base64
import os
import tracemalloc
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from custodia import access
from custodia.accounts import fastpath
from custodia.api import security
from custodia.api.runtime import Runtime
from custodia.core.clock import ManualClock
from tests.accounts.conftest import Client, onboard
from tests.factories import cli_context


def _one(runtime: Runtime, statement: str, **params: Any) -> Any:
    return runtime.db.run(lambda s: s.execute(text(statement), params).one())


def _client_id(app: dict[str, str]) -> str:
    key = app["Authorization"].removeprefix("Bearer ")
    return "cli_" + key.split("_")[2]


@pytest.fixture(params=["as_routed", "general"])
def path(request: pytest.FixtureRequest, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which transfer path runs: the one-call path (as a signature-only transfer is routed)."""
    if request.param == "general":
        monkeypatch.setattr(fastpath, "eligible", lambda *_: False)
        return "general"
    return "one_call"


def test_a_known_key_skips_the_lookup_but_a_revoked_one_is_refused_at_once(
    client: Client,
    runtime: Runtime,
    clock: ManualClock,
    app: dict[str, str],
    *,
    path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payer = onboard(client, app, clock, funds=1_000)
    payee = onboard(client, app, clock)
    lookups: list[str] = []
    real = security.authenticate

    def counted(*args: Any) -> Any:
        lookups.append("lookup")
        return real(*args)

    monkeypatch.setattr(security, "authenticate", counted)
    assert payer.transfer(payee.account, 10).status_code == 201
    assert payer.transfer(payee.account, 10).status_code == 201
    # The guard looked the key up once; the general path confirms a cached key itself.
    assert len(lookups) == (1 if path == "one_call" else 2)

    runtime.db.run(lambda s: access.revoke_client(s, _client_id(app), ctx=cli_context(runtime)))
    key = payer.key()
    refused = payer.transfer(payee.account, 10, key=key)
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == "unauthenticated"
    # Nothing moved, and the refusal is not kept under the key.
    assert _one(runtime, "SELECT balance FROM ledger_accounts WHERE id = :a", a=payer.account)[
        0
    ] == (1_000 - 20)
    assert _one(runtime, "SELECT count(*) FROM idempotency_keys WHERE key = :k", k=key)[0] == 0
    # Other routes never took the key from the cache: refused by their own lookup.
    assert client.get(f"/v1/accounts/{payer.account}", headers=app).status_code == 401


def test_a_device_key_revoked_through_the_api_is_refused_though_the_process_knows_it(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str], path: str
) -> None:
    """The one-call path keeps the key's public half per process; the revocation still wins."""
    payer = onboard(client, app, clock, funds=1_000)
    payee = onboard(client, app, clock)
    assert payer.transfer(payee.account, 10).status_code == 201  # the key is now known
    revoked = client.delete(
        f"/v1/customers/{payer.id}/credentials/signing-keys/{payer.key_id}", headers=app
    )
    assert revoked.status_code == 204, revoked.text
    key = payer.key()
    refused = payer.transfer(payee.account, 10, key=key)
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == "authentication_failed"
    balance = _one(runtime, "SELECT balance FROM ledger_accounts WHERE id = :a", a=payer.account)
    assert balance[0] == 1_000 - 10
    assert _one(runtime, "SELECT count(*) FROM idempotency_keys WHERE key = :k", k=key)[0] == 0
    # Another factor still pays: only the device is shut out.
    assert payer.transfer(payee.account, 10, factors=[payer.password()]).status_code == 201


def test_a_wrong_secret_for_a_known_client_is_not_taken_from_the_cache(
    client: Client, clock: ManualClock, app: dict[str, str], path: str
) -> None:
    payer = onboard(client, app, clock, funds=1_000)
    payee = onboard(client, app, clock)
    assert payer.transfer(payee.account, 10).status_code == 201
    key = app["Authorization"].removeprefix("Bearer ")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    payer.app = {"Authorization": f"Bearer {forged}"}
    refused = payer.transfer(payee.account, 10)
    assert refused.status_code == 401, refused.text


def test_a_renamed_customer_is_named_anew_in_the_next_record(
    client: Client,
    runtime: Runtime,
    clock: ManualClock,
    app: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payer = onboard(client, app, clock, funds=1_000)
    payee = onboard(client, app, clock, name="李娜")
    assert payer.transfer(payee.account, 10).status_code == 201  # the process read both
    renamed = runtime.vault.encrypt("李丽", table="customers", column="name_enc", row_id=payee.id)
    runtime.db.run(
        lambda s: s.execute(
            text("UPDATE customers SET name_enc = :b WHERE id = :c"), {"b": renamed, "c": payee.id}
        )
    )
    forgotten: list[tuple[str, ...]] = []
    real = fastpath.Parties.forget

    def counted(self: fastpath.Parties, *accounts: str) -> None:
        forgotten.append(accounts)
        real(self, *accounts)

    monkeypatch.setattr(fastpath.Parties, "forget", counted)
    second = payer.transfer(payee.account, 10)
    assert second.status_code == 201, second.text
    assert forgotten == [(payer.account, payee.account)]  # refused once, sealed again
    blob = _one(
        runtime,
        "SELECT payee_name_enc FROM payment_transactions WHERE id = :t",
        t=second.json()["id"],
    )[0]
    name = runtime.vault.decrypt(
        bytes(blob), table="payment_transactions", column="payee_name_enc",
        row_id=second.json()["id"],
    )  # fmt: skip
    assert name == "李丽"
    # Moved once: the refused attempt rolled back.
    assert _one(runtime, "SELECT balance FROM ledger_accounts WHERE id = :a", a=payer.account)[
        0
    ] == (1_000 - 20)


@pytest.mark.postgres_only
def test_the_function_refuses_a_record_sealed_from_other_names(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    """Around Python: a call whose names do not match the customers' writes nothing."""
    import json  # noqa: PLC0415

    payer = onboard(client, app, clock, funds=1_000)
    payee = onboard(client, app, clock)

    def call(conn: Any) -> None:
        conn.execute(
                "SELECT * FROM custodia_transfer(%s::jsonb)",
                (
                    json.dumps(
                        {
                            "now": clock.now().isoformat(), "scope": "s", "key": "k",
                            "fingerprint": "f", "expires_at": clock.now().isoformat(),
                            "lock_wait": "1s", "from_account_id": payer.account,
                            "to_account_id": payee.account, "amount": 1,
                            "payer_customer_id": payer.id, "payee_customer_id": payee.id,
                            "payer_name_enc": "AAAA", "payee_name_enc": "AAAA",
                            "response_status": 201, "response_body": "e30=",
                            "response_content_type": "application/json",
                        }
                    ),
            ),
        )  # fmt: skip

    with pytest.raises(DBAPIError, match="custodia:parties_changed"):
        runtime.db.run_driver(call)
    assert _one(runtime, "SELECT count(*) FROM idempotency_keys WHERE scope = 's'")[0] == 0


@pytest.mark.sqlite_only
def test_the_sqlite_steps_refuse_a_record_sealed_from_other_names(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    """The same on SQLite: the refused steps leave nothing, not even the claimed key."""
    from custodia.accounts import fastpath_sqlite  # noqa: PLC0415

    payer = onboard(client, app, clock, funds=1_000)
    payee = onboard(client, app, clock)
    payload = {
        "now": clock.now().isoformat(), "scope": "s", "key": "k", "fingerprint": "f",
        "expires_at": clock.now().isoformat(), "from_account_id": payer.account,
        "to_account_id": payee.account, "amount": 1, "client_id": None, "visible_to": None,
        "payer_customer_id": payer.id, "payee_customer_id": payee.id,
        "payer_name_enc": b"other", "payee_name_enc": b"other", "response_status": 201,
        "response_body": b"{}", "response_content_type": "application/json",
    }  # fmt: skip
    with pytest.raises(fastpath_sqlite.Refused, match="parties_changed"):
        runtime.db.run_driver(lambda conn: fastpath_sqlite.transfer(conn, payload))
    assert _one(runtime, "SELECT count(*) FROM idempotency_keys WHERE scope = 's'")[0] == 0
    assert (
        _one(runtime, "SELECT balance FROM ledger_accounts WHERE id = :a", a=payer.account)[0]
        == 1_000
    )


def test_a_process_that_knows_no_party_yet_reads_what_a_transfer_needs_once(
    client: Client,
    runtime: Runtime,
    clock: ManualClock,
    app: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The device key and both parties come in one read, then from the caches."""
    payer = onboard(client, app, clock, funds=1_000)
    payee = onboard(client, app, clock)
    other = onboard(client, app, clock)
    reads: list[str] = []
    real = runtime.db.fetch_one

    def counted(query: Any, params: Any) -> Any:
        if "api_clients" not in query.text:  # not the guard's key lookup
            reads.append(query.text)
        return real(query, params)

    # A process just started: empty caches.
    monkeypatch.setattr(runtime, "device_keys", fastpath.DeviceKeys(counted))
    monkeypatch.setattr(runtime, "parties", fastpath.Parties())
    monkeypatch.setattr(runtime.db, "fetch_one", counted)
    assert payer.transfer(payee.account, 10).status_code == 201
    assert len(reads) == 1  # the key and both accounts' parties, in one statement
    assert payer.transfer(payee.account, 10).status_code == 201
    assert len(reads) == 1  # all cached now
    assert payer.transfer(other.account, 10).status_code == 201
    assert len(reads) == 2  # only the new payee was missing: one read again
    unknown = payer.transfer("acc_" + "0" * 26, 10)
    assert unknown.status_code == 404, unknown.text  # refused by the function, as before
    assert (
        _one(runtime, "SELECT balance FROM ledger_accounts WHERE id = :a", a=payer.account)[0]
        == 1_000 - 30
    )


@pytest.mark.postgres_only
def test_the_function_writes_the_idempotency_row_once_completed(
    client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str]
) -> None:
    """Around Python: one insert of the key's row with the response, no later update.

    The call is one transaction, so the row is claimed with the response already in it
    (migration 0013); counted in PostgreSQL's statistics of the test's own transaction.
    """
    payer = onboard(client, app, clock, funds=1_000)
    payee = onboard(client, app, clock)
    counts = (
        "SELECT n_tup_ins, n_tup_upd FROM pg_stat_xact_user_tables "
        "WHERE relname = 'idempotency_keys'"
    )
    before = _one(runtime, counts)
    done = payer.transfer(payee.account, 10, key="written-once")
    assert done.status_code == 201, done.text
    after = _one(runtime, counts)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 0)
    state, status = _one(
        runtime,
        "SELECT state, response_status FROM idempotency_keys WHERE key = :k",
        k="written-once",
    )
    assert (state, status) == ("completed", 201)
    replayed = payer.transfer(payee.account, 10, key="written-once")
    assert replayed.status_code == 201
    assert replayed.json() == done.json()


def test_the_transfer_caches_stay_within_their_share_of_a_worker_s_memory() -> None:
    """Full to their bounds, the parties and device-key caches take at most ~40 MiB.

    Issue 6 gives a server worker 250 MB; without these caches one takes ~130 MiB, and each
    concurrent scrypt hash 32 MiB more. The caches grow with the customers who transfer,
    so their bounds (not the bench's book) decide whether a large book still fits. Ids of
    the real length; name blobs of 64 bytes, more than a name's usually are.
    """
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    public = base64.b64encode(raw).decode()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        parties = fastpath.Parties()
        keys = fastpath.DeviceKeys(lambda *_: None)
        for n in range(fastpath.PARTIES_CACHED + 1_000):
            parties.put(f"acc_{n:026d}", f"cus_{n:026d}", os.urandom(64))
        for n in range(fastpath.KEYS_CACHED + 1_000):
            keys.put(f"key_{n:026d}", public)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert parties.get("acc_" + "0" * 26) is None  # the oldest went: the bound holds
    assert keys.get(f"key_{fastpath.KEYS_CACHED + 999:026d}") is not None
    assert held <= 40 * 2**20, f"{held / 2**20:.1f} MiB"
