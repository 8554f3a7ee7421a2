"""Helpers of the accounts tests: a verified, consenting customer with an account, a card, keys."""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar.testing import TestClient

from custodia.accounts.movements import signing_string
from custodia.api.runtime import Runtime
from custodia.core.actors import Role
from custodia.core.clock import ManualClock
from tests.factories import bearer, corporate_body, make_client, make_staff, person_body

Client = TestClient[Any]
EXTERNAL = ("public_security_id", "mobile_carrier", "bank_card", "social_security", "tax")
_KEYS = itertools.count(1)
#: A card number that passes the Luhn check (the sandbox bank accepts it).
GOOD_CARD = "6222021234567890128"


def luhn_card(prefix: str) -> str:
    """Return ``prefix`` completed with its Luhn check digit."""
    from stdnum import luhn  # noqa: PLC0415

    return prefix + luhn.calc_check_digit(prefix)


def card_ending(last: str) -> str:
    """Return a valid card number ending in ``000`` + ``last`` (the sandbox's special cards)."""
    return next(
        card for n in range(1000) if (card := luhn_card(f"6222021{n:05d}000")).endswith(last)
    )


@dataclass
class Customer:
    """A customer set up through the API, with what the tests need to act for it."""

    client: Client
    app: dict[str, str]
    id: str
    body: dict[str, Any]
    account: str = ""
    card: str = ""
    device: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    key_id: str = ""
    pin: str = "274951"

    def key(self) -> str:
        """Return a fresh idempotency key."""
        return f"key-{next(_KEYS)}"

    def headers(self, key: str) -> dict[str, str]:
        """Return the app's headers with an idempotency key."""
        return {**self.app, "Idempotency-Key": key}

    def signature(
        self, operation: str, key: str, payee: str, amount: int, payer: str = ""
    ) -> dict[str, str]:
        """Return a signature factor over the API.md signing string."""
        message = signing_string(
            operation, idempotency_key=key, payer=payer or self.account, payee=payee,
            amount=amount, currency="CNY",
        )  # fmt: skip
        return {
            "type": "signature",
            "key_id": self.key_id,
            "signature": base64.b64encode(self.device.sign(message)).decode(),
        }

    def password(self) -> dict[str, str]:
        """Return the payment password factor."""
        return {"type": "password", "value": self.pin}

    def top_up(self, amount: int, account: str = "") -> Any:
        """Top up from the customer's card (sandbox bank)."""
        return self.client.post(
            "/v1/top-ups",
            json={
                "account_id": account or self.account,
                "bank_card_id": self.card,
                "amount": amount,
            },
            headers=self.headers(self.key()),
        )

    def transfer(self, to: str, amount: int, *, factors: list[dict[str, str]] | None = None,
                 key: str = "", **extra: Any) -> Any:  # fmt: skip
        """Transfer with a signature factor (or the factors given)."""
        key = key or self.key()
        body = {
            "from_account_id": self.account,
            "to_account_id": to,
            "amount": amount,
            "authentication": {
                "factors": factors
                if factors is not None
                else [self.signature("transfer", key, to, amount)]
            },
            **extra,
        }
        return self.client.post("/v1/transfers", json=body, headers=self.headers(key))


def verify(client: Client, app: dict[str, str], customer_id: str, channels: int) -> None:
    """Pass ``channels`` external sandbox verifications."""
    for channel in EXTERNAL[:channels]:
        done = client.post(
            f"/v1/customers/{customer_id}/verifications",
            json={"channel": channel, "evidence": {}},
            headers=app,
        )
        assert done.status_code == 201, done.text


def consent(client: Client, app: dict[str, str], customer_id: str, clock: ManualClock) -> str:
    """Accept the payment-service agreement in force."""
    agreement = client.get("/v1/agreements/current", headers=app).json()
    done = client.post(
        f"/v1/customers/{customer_id}/consents",
        json={
            "agreement_id": agreement["id"],
            "accepted": True,
            "channel": "app",
            "ip": "203.0.113.7",
            "user_agent": "test",
            "shown_at": clock.now().isoformat(),
        },
        headers=app,
    )
    assert done.status_code == 201, done.text
    return str(done.json()["id"])


def onboard(
    client: Client,
    app: dict[str, str],
    clock: ManualClock,
    *,
    account_class: str = "II",
    funds: int = 0,
    corporate: bool = False,
    card: str = GOOD_CARD,
    **overrides: Any,
) -> Customer:
    """Register, verify, consent, open an account, bind a card, register a device key, fund."""
    body = corporate_body(**overrides) if corporate else person_body(**overrides)
    created = client.post("/v1/customers", json=body, headers=app)
    assert created.status_code == 201, created.text
    customer = Customer(client, app, created.json()["id"], body)
    channels = {"I": 1, "II": 3, "III": 5, "corporate": 3}[account_class]
    verify(client, app, customer.id, channels)
    consent(client, app, customer.id, clock)
    opened = client.post(
        "/v1/accounts",
        json={"customer_id": customer.id, "account_class": account_class},
        headers=app,
    )
    assert opened.status_code == 201, opened.text
    customer.account = opened.json()["id"]
    holder = body  # a company binds its own account: its name and USCC
    bound = client.post(
        f"/v1/customers/{customer.id}/bank-cards",
        json={
            "card_number": card,
            "holder_name": holder["name"],
            "bank_name": "中国工商银行",
            "holder_id_number": holder["id_number"],
        },
        headers=app,
    )
    assert bound.status_code == 201, bound.text
    customer.card = bound.json()["id"]
    public = base64.b64encode(customer.device.public_key().public_bytes_raw()).decode()
    key = client.post(
        f"/v1/customers/{customer.id}/credentials/signing-keys",
        json={"public_key": public},
        headers=app,
    )
    customer.key_id = key.json()["key_id"]
    pin = client.post(
        f"/v1/customers/{customer.id}/credentials/password",
        json={"password": customer.pin},
        headers=app,
    )
    assert pin.status_code == 204, pin.text
    if funds:
        topped = customer.top_up(funds)
        assert topped.status_code == 201, topped.text
    return customer


@pytest.fixture
def app(runtime: Runtime) -> dict[str, str]:
    """An onboarding app's credential."""
    return bearer(make_client(runtime, Role.ONBOARDING_APP).key)


@pytest.fixture
def officer(runtime: Runtime) -> dict[str, str]:
    """A compliance officer's session."""
    return make_staff(runtime, Role.COMPLIANCE_OFFICER).headers


@pytest.fixture
def admin(runtime: Runtime) -> dict[str, str]:
    """An admin's session."""
    return make_staff(runtime, Role.ADMIN).headers


def make_merchant(
    client: Client, runtime: Runtime, app: dict[str, str], admin: dict[str, str], clock: ManualClock,
    *, mcc: str = "5411",
) -> tuple[str, dict[str, str]]:  # fmt: skip
    """Register a corporate customer as a merchant; return its id and a merchant key."""
    company = client.post("/v1/customers", json=corporate_body(), headers=app)
    assert company.status_code == 201, company.text
    verify(client, app, company.json()["id"], 3)
    merchant = client.post(
        "/v1/merchants",
        json={"name": "示例超市", "legal_customer_id": company.json()["id"], "mcc": mcc},
        headers=admin,
    )
    assert merchant.status_code == 201, merchant.text
    merchant_id = merchant.json()["id"]
    key = make_client(runtime, Role.MERCHANT, merchant_id=merchant_id).key
    return merchant_id, bearer(key)
