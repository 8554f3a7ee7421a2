"""The bank adapters: the sandbox's rules, the HTTP protocol against a local fake bank, config."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from custodia.accounts.bank import (
    BankAnswer,
    BankRequest,
    BankUnavailable,
    DisabledBank,
    HttpBank,
    SandboxBank,
    bank_from_config,
)
from custodia.core.errors import ConfigError

SECRET = b"bank-shared-secret-for-tests"
GOOD_CARD = "6222021234567890128"  # Luhn-valid
BAD_LUHN_CARD = "6222021234567890123"
POOR_CARD = "6222021234567800002"  # Luhn-valid, ends in 0002
DOWN_CARD = "6222021234567300003"  # Luhn-valid, ends in 0003


def _request(card: str = GOOD_CARD, reference: str = "txn_1", amount: int = 12345) -> BankRequest:
    return BankRequest(
        reference=reference,
        card_number=card,
        holder_name="张伟",
        amount=amount,
        currency="CNY",
    )


def _hmac(timestamp: str, body: bytes) -> str:
    """Sign independently of the code under test, from the protocol's text."""
    return "v1=" + hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


# ------------------------------------------------------------------------------ the request


def test_repr_masks_the_card_number_and_hides_the_holder() -> None:
    """repr shows the first and last four digits only, and never the holder's name."""
    text = repr(_request())
    assert "6222 **** **** 0128" in text
    assert GOOD_CARD not in text
    assert "张伟" not in text
    assert str(_request()) == text


@pytest.mark.parametrize(
    ("amount", "error"), [(0, ValueError), (-1, ValueError), (True, TypeError)]
)
def test_a_request_needs_a_positive_integer_amount(amount: Any, error: type[Exception]) -> None:
    """Zero, negative and boolean amounts are refused before any bank is asked."""
    with pytest.raises(error, match="amount"):
        _request(amount=amount)


def test_a_float_amount_is_a_type_error() -> None:
    """Money is integer minor units; a float is a TypeError (STYLE.md 5)."""
    with pytest.raises(TypeError, match="minor units"):
        BankRequest("txn_1", GOOD_CARD, "张伟", 100.0, "CNY")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ sandbox


def test_the_sandbox_succeeds_with_a_sandbox_reference() -> None:
    """A valid card that matches no rule succeeds with bank reference sbx-<reference>."""
    bank = SandboxBank()
    expected = BankAnswer("succeeded", "sbx-txn_1", None)
    assert bank.debit_card(_request()) == expected
    assert bank.payout(_request()) == expected


def test_the_sandbox_declines_a_card_failing_the_luhn_check() -> None:
    """A card number failing the Luhn check is declined card_invalid for both operations."""
    bank = SandboxBank()
    expected = BankAnswer("declined", None, "card_invalid")
    assert bank.debit_card(_request(BAD_LUHN_CARD)) == expected
    assert bank.payout(_request(BAD_LUHN_CARD)) == expected


def test_the_sandbox_declines_cards_ending_in_0002() -> None:
    """0002 is declined insufficient_funds_at_bank on a debit and payout_rejected on a payout."""
    bank = SandboxBank()
    debit = bank.debit_card(_request(POOR_CARD))
    payout = bank.payout(_request(POOR_CARD))
    assert debit == BankAnswer("declined", None, "insufficient_funds_at_bank")
    assert payout == BankAnswer("declined", None, "payout_rejected")


def test_the_sandbox_bank_is_down_for_cards_ending_in_0003() -> None:
    """0003 raises BankUnavailable, and the message does not show the card."""
    bank = SandboxBank()
    for call in (bank.debit_card, bank.payout):
        with pytest.raises(BankUnavailable) as caught:
            call(_request(DOWN_CARD))
        assert DOWN_CARD not in str(caught.value)


def test_the_sandbox_ignores_spaces_in_the_card_number() -> None:
    """A card number written in groups answers as the same digits."""
    spaced = "6222 0212 3456 7800 002"
    assert SandboxBank().debit_card(_request(spaced)).reason == "insufficient_funds_at_bank"


def test_the_sandbox_answers_a_repeated_reference_with_its_first_answer() -> None:
    """The same reference always gets the same answer, even if the repeat says otherwise."""
    bank = SandboxBank()
    first = bank.debit_card(_request(GOOD_CARD, reference="txn_9"))
    assert bank.debit_card(_request(GOOD_CARD, reference="txn_9")) == first
    assert bank.debit_card(_request(POOR_CARD, reference="txn_9")) == first
    assert SandboxBank().debit_card(_request(GOOD_CARD, reference="txn_9")) == first


# ------------------------------------------------------------------------------ fake bank


@dataclass
class FakeBank:
    """A local bank speaking docs/bank-protocol.md, with knobs to misbehave."""

    fail_first: int = 0  # answer 503 to the first N requests
    hang_s: float = 0.0  # wait this long before answering
    tamper: bool = False  # corrupt the answer's signature
    stale_s: int = 0  # date the answer this many seconds in the past
    status: str = "succeeded"
    http_status: int = 200
    reference: str | None = None  # answer for another reference
    raw_answer: bytes | None = None  # send these bytes instead of the protocol's JSON
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    bad_signatures: int = 0
    released: threading.Event = field(default_factory=threading.Event)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        bank = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                bank.headers.append(dict(self.headers))
                bank.paths.append(self.path)
                timestamp = self.headers["X-Custodia-Timestamp"]
                if self.headers["X-Custodia-Signature"] != _hmac(timestamp, body):
                    bank.bad_signatures += 1
                    self._send(401, b"")
                    return
                request = json.loads(body)
                bank.requests.append(request)
                if len(bank.requests) <= bank.fail_first:
                    self._send(503, b"")
                    return
                if bank.hang_s:
                    bank.released.wait(bank.hang_s)
                answer = (
                    bank.raw_answer
                    or json.dumps(
                        {
                            "reference": bank.reference or request["reference"],
                            "status": bank.status,
                            "bank_reference": "BK-7" if bank.status == "succeeded" else None,
                            "reason": None if bank.status == "succeeded" else "card_invalid",
                        }
                    ).encode()
                )
                now = str(int(time.time()) - bank.stale_s)
                signature = _hmac(now, answer)
                if bank.tamper:
                    signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
                self._send(bank.http_status, answer, now, signature)

            def _send(self, status: int, body: bytes, *signed: str) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    if signed:
                        self.send_header("X-Custodia-Timestamp", signed[0])
                        self.send_header("X-Custodia-Signature", signed[1])
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting, which is what a timeout test wants

        return Handler


@pytest.fixture
def fake_bank() -> Iterator[tuple[FakeBank, str]]:
    fake = FakeBank()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        fake.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def make_bank() -> Iterator[Callable[..., HttpBank]]:
    banks: list[HttpBank] = []

    def make(url: str, **kwargs: Any) -> HttpBank:
        kwargs.setdefault("sleep", lambda _s: None)
        kwargs.setdefault("secret", SECRET)
        bank = HttpBank(url=url, key_id="k-1", **kwargs)
        banks.append(bank)
        return bank

    yield make
    for bank in banks:
        bank.close()


FakeBankServer = tuple[FakeBank, str]
MakeBank = Callable[..., HttpBank]

# ------------------------------------------------------------------------------ HTTP adapter


def test_the_http_bank_sends_a_signed_card_debit(
    fake_bank: FakeBankServer, make_bank: MakeBank
) -> None:
    """The debit arrives at /v1/card-debits with the protocol's body and verifiable headers."""
    fake, url = fake_bank
    make_bank(url).debit_card(_request())
    assert fake.paths == ["/v1/card-debits"]
    assert fake.bad_signatures == 0
    assert fake.requests == [
        {
            "reference": "txn_1",
            "card_number": GOOD_CARD,
            "holder_name": "张伟",
            "amount": 12345,
            "currency": "CNY",
        }
    ]
    headers = fake.headers[0]
    assert headers["X-Custodia-Key-Id"] == "k-1"
    assert headers["Idempotency-Key"] == "txn_1"
    assert headers["Content-Type"] == "application/json"
    assert abs(int(headers["X-Custodia-Timestamp"]) - time.time()) < 5


def test_the_http_bank_sends_payouts_to_their_own_endpoint(
    fake_bank: FakeBankServer, make_bank: MakeBank
) -> None:
    """A payout is posted to /v1/payouts."""
    fake, url = fake_bank
    answer = make_bank(url).payout(_request())
    assert answer == BankAnswer("succeeded", "BK-7", None)
    assert fake.paths == ["/v1/payouts"]


def test_the_http_bank_returns_a_succeeded_answer(
    fake_bank: FakeBankServer, make_bank: MakeBank
) -> None:
    """A signed succeeded answer carries the bank's own reference."""
    _fake, url = fake_bank
    assert make_bank(url).debit_card(_request()) == BankAnswer("succeeded", "BK-7", None)


@pytest.mark.parametrize("http_status", [200, 402, 422])
def test_the_http_bank_returns_a_declined_answer(
    fake_bank: FakeBankServer, make_bank: MakeBank, http_status: int
) -> None:
    """A signed declined answer is final, whether it comes with 200 or a 4xx."""
    fake, url = fake_bank
    fake.status, fake.http_status = "declined", http_status
    answer = make_bank(url).debit_card(_request())
    assert answer == BankAnswer("declined", None, "card_invalid")
    assert len(fake.requests) == 1


def test_a_tampered_answer_is_unavailable(fake_bank: FakeBankServer, make_bank: MakeBank) -> None:
    """An answer whose signature does not verify is retried, then BankUnavailable."""
    fake, url = fake_bank
    fake.tamper = True
    with pytest.raises(BankUnavailable, match="signature does not verify"):
        make_bank(url, retries=1).debit_card(_request())
    assert len(fake.requests) == 2


def test_a_stale_answer_is_unavailable(fake_bank: FakeBankServer, make_bank: MakeBank) -> None:
    """An answer dated more than five minutes away is refused."""
    fake, url = fake_bank
    fake.stale_s = 301
    with pytest.raises(BankUnavailable, match="fresh timestamp"):
        make_bank(url, retries=0).debit_card(_request())


@pytest.mark.parametrize(
    ("knob", "value", "message"),
    [
        ("reference", "txn_other", "another reference"),
        ("status", "pending", "protocol's JSON"),
        ("raw_answer", b"<html>ok</html>", "protocol's JSON"),
        ("raw_answer", b'{"reference": "txn_1", "status": "succeeded"}', "bank reference"),
    ],
)
def test_an_answer_that_is_not_the_protocols_is_unavailable(
    fake_bank: FakeBankServer, make_bank: MakeBank, knob: str, value: object, message: str
) -> None:
    """Another reference, an unknown status, non-JSON or a missing field tell nothing."""
    fake, url = fake_bank
    setattr(fake, knob, value)
    with pytest.raises(BankUnavailable, match=message):
        make_bank(url, retries=0).debit_card(_request())


def test_a_server_error_is_retried_with_the_same_reference(
    fake_bank: FakeBankServer, make_bank: MakeBank
) -> None:
    """A 5xx then success: asked again under the same reference, and it succeeds."""
    fake, url = fake_bank
    fake.fail_first = 1
    sleeps: list[float] = []
    answer = make_bank(url, retries=2, sleep=sleeps.append).debit_card(_request())
    assert answer.status == "succeeded"
    assert [r["reference"] for r in fake.requests] == ["txn_1", "txn_1"]
    assert len(sleeps) == 1
    assert 0.1 <= sleeps[0] <= 0.2


def test_the_http_bank_gives_up_after_its_retries(
    fake_bank: FakeBankServer, make_bank: MakeBank
) -> None:
    """Server errors on every attempt end in BankUnavailable after retries + 1 attempts."""
    fake, url = fake_bank
    fake.fail_first = 10
    with pytest.raises(BankUnavailable, match=r"after 3 attempts \(HTTP 503\)"):
        make_bank(url, retries=2).debit_card(_request())
    assert len(fake.requests) == 3


def test_a_refused_request_is_not_retried(fake_bank: FakeBankServer, make_bank: MakeBank) -> None:
    """A 4xx that is not a signed declined answer raises BankUnavailable at once."""
    fake, url = fake_bank
    with pytest.raises(BankUnavailable, match="HTTP 401"):
        make_bank(url, secret=b"wrong", retries=2).debit_card(_request())
    assert fake.bad_signatures == 1


def test_a_slow_bank_times_out(fake_bank: FakeBankServer, make_bank: MakeBank) -> None:
    """A bank slower than the timeout is asked retries + 1 times, then BankUnavailable."""
    fake, url = fake_bank
    fake.hang_s = 2.0
    started = time.monotonic()
    with pytest.raises(BankUnavailable, match=r"after 2 attempts \(ReadTimeout\)"):
        make_bank(url, timeout_s=0.2, retries=1).debit_card(_request())
    assert time.monotonic() - started < 1.5
    assert [r["reference"] for r in fake.requests] == ["txn_1", "txn_1"]


def test_an_unreachable_bank_is_unavailable(make_bank: MakeBank) -> None:
    """A connection refused is a transport error: retried, then BankUnavailable."""
    with pytest.raises(BankUnavailable, match="ConnectError"):
        make_bank("http://127.0.0.1:1", retries=1, timeout_s=0.5).debit_card(_request())


def test_the_card_number_never_reaches_an_error_message(
    fake_bank: FakeBankServer, make_bank: MakeBank
) -> None:
    """Whatever goes wrong, the exception text does not show the card number or the holder."""
    fake, url = fake_bank
    fake.raw_answer = json.dumps({"reference": "txn_1", "card_number": GOOD_CARD}).encode()
    with pytest.raises(BankUnavailable) as caught:
        make_bank(url, retries=0).debit_card(_request())
    assert GOOD_CARD not in str(caught.value)
    assert "张伟" not in str(caught.value)


# ------------------------------------------------------------------------------ configuration


def _http_setting(url: str, **extra: object) -> str:
    secret = base64.b64encode(SECRET).decode()
    return json.dumps({"adapter": "http", "url": url, "key_id": "k-1", "secret": secret, **extra})


def test_no_setting_means_the_sandbox_in_development() -> None:
    """An empty CUSTODIA_BANK_ADAPTER gives the sandbox outside production."""
    assert isinstance(bank_from_config("", production=False), SandboxBank)


def test_no_setting_means_no_bank_in_production() -> None:
    """An empty CUSTODIA_BANK_ADAPTER in production gives a bank whose calls are unavailable."""
    bank = bank_from_config("", production=True)
    assert isinstance(bank, DisabledBank)
    for call in (bank.debit_card, bank.payout):
        with pytest.raises(BankUnavailable, match="no bank adapter configured"):
            call(_request())


def test_the_bank_can_be_disabled_explicitly() -> None:
    """adapter "disabled" gives the disabled bank in any environment."""
    for production in (False, True):
        bank = bank_from_config('{"adapter": "disabled"}', production=production)
        assert bank.name == "disabled"


def test_the_sandbox_can_be_chosen_in_development() -> None:
    """adapter "sandbox" outside production gives the sandbox."""
    assert bank_from_config('{"adapter": "sandbox"}', production=False).name == "sandbox"


def test_production_refuses_the_sandbox() -> None:
    """A sandbox must never stand in for the bank that moves real money."""
    with pytest.raises(ConfigError, match="CUSTODIA_BANK_ADAPTER: production refuses the sandbox"):
        bank_from_config('{"adapter": "sandbox"}', production=True)


def test_the_http_setting_builds_a_working_http_bank(fake_bank: FakeBankServer) -> None:
    """The http setting's url, key id, base64 secret, timeout and retries reach the adapter."""
    fake, url = fake_bank
    bank = bank_from_config(_http_setting(url, timeout_s=1.5, retries=0), production=False)
    assert isinstance(bank, HttpBank)
    try:
        assert bank.retries == 0
        assert bank.debit_card(_request()).status == "succeeded"
        assert fake.bad_signatures == 0
    finally:
        bank.close()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "is not valid"),
        ('{"adapter": "carrier-pigeon"}', "is not valid"),
        ('{"adapter": "http", "surprise": 1}', "is not valid"),
        ('{"adapter": "http"}', "needs url, key_id and secret"),
        ('{"adapter": "http", "url": "https://bank.example", "key_id": "k"}', "needs url"),
        (
            '{"adapter": "http", "url": "https://b.example", "key_id": "k", "secret": "@@"}',
            "secret must be base64",
        ),
        (
            '{"adapter": "http", "url": "ftp://b.example", "key_id": "k", "secret": "c2VjcmV0"}',
            "url must start with https://",
        ),
        ('{"adapter": "sandbox", "timeout_s": 0}', "is not valid"),
        ('{"adapter": "sandbox", "retries": -1}', "is not valid"),
    ],
)
def test_bad_settings_are_refused_with_a_one_line_message(raw: str, message: str) -> None:
    """Bad JSON, unknown adapters or fields, and missing or bad http fields are ConfigError."""
    with pytest.raises(ConfigError, match=message) as caught:
        bank_from_config(raw, production=False)
    assert str(caught.value).startswith("CUSTODIA_BANK_ADAPTER")
    assert "\n" not in str(caught.value)


def test_production_needs_https() -> None:
    """Card numbers never cross plain HTTP in production."""
    with pytest.raises(ConfigError, match="https"):
        bank_from_config(_http_setting("http://bank.example"), production=True)
