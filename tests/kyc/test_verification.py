"""Verification channels: the sandbox's rules, the HTTP adapter's protocol, account classes."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from litestar.testing import TestClient

from custodia.api.runtime import Runtime
from custodia.core.actors import Role
from custodia.core.errors import ConfigError
from custodia.kyc import ChannelRouter, HttpAdapter, SandboxAdapter, max_account_class
from custodia.kyc.verification import (
    AdapterUnavailable,
    Subject,
    VerificationRequest,
    sign,
)
from tests.factories import audit_actions, bearer, corporate_body, make_client, person_body

Client = TestClient[Any]
SECRET = b"provider-shared-secret-for-tests"
SUBJECT = Subject(
    "cus_1",
    "individual",
    "张伟",
    "prc_resident_id",
    "11010519491231002X",
    "1949-12-31",
    "+8613812345678",
)


def _ask(adapter: Any, channel: str = "public_security_id", **evidence: object) -> Any:
    return adapter.verify(VerificationRequest("ver_1", channel, SUBJECT, evidence))


# ------------------------------------------------------------------------------ sandbox


def test_the_sandbox_passes_empty_evidence_for_valid_data() -> None:
    assert _ask(SandboxAdapter()).result == "passed"


@pytest.mark.parametrize(
    ("channel", "evidence", "reason"),
    [
        ("public_security_id", {"name": "李四"}, "name_mismatch"),
        ("public_security_id", {"id_number": "110105194912310037"}, "id_number_mismatch"),
        (
            "bank_card",
            {"card_number": "6222021234567890128", "holder_name": "王五"},
            "name_mismatch",
        ),
        ("bank_card", {"card_number": "6222021234567890123"}, "card_number_invalid"),
        ("mobile_carrier", {"phone": "+8613900000000"}, "phone_mismatch"),
        ("tax", {"sandbox_outcome": "fail"}, "sandbox_forced_failure"),
    ],
)
def test_the_sandbox_fails_contradicting_evidence(
    channel: str, evidence: dict[str, object], reason: str
) -> None:
    answer = _ask(SandboxAdapter(), channel, **evidence)
    assert (answer.result, answer.reason) == ("failed", reason)


def test_the_sandbox_accepts_matching_evidence_in_other_forms() -> None:
    answer = _ask(
        SandboxAdapter(),
        "bank_card",
        card_number="6222 0212 3456 7890 128",
        holder_name="张 伟",
        holder_id_number="11010519491231002x",
        phone="+86 138 1234 5678",
    )
    assert answer.result == "passed"


def test_the_sandbox_can_be_told_to_be_down() -> None:
    with pytest.raises(AdapterUnavailable):
        _ask(SandboxAdapter(), sandbox_outcome="unavailable")


# ------------------------------------------------------------------------------ account classes


@pytest.mark.parametrize(
    ("kind", "channels", "expected"),
    [
        ("individual", [], None),
        ("individual", ["public_security_id"], "I"),
        ("individual", ["public_security_id", "bank_card"], "I"),
        ("individual", ["public_security_id", "bank_card", "mobile_carrier"], "II"),
        ("individual", ["public_security_id", "bank_card", "mobile_carrier", "tax"], "II"),
        (
            "individual",
            ["public_security_id", "bank_card", "mobile_carrier", "tax", "education"],
            "III",
        ),
        ("individual", ["face_to_face"], "III"),
        ("individual", ["video"], "III"),
        ("corporate", ["public_security_id", "bank_card"], None),
        ("corporate", ["public_security_id", "bank_card", "tax"], "corporate"),
        ("corporate", ["face_to_face"], "corporate"),
    ],
)
def test_verified_channels_decide_the_account_class(
    kind: str, channels: list[str], expected: str | None
) -> None:
    """R5 (Art. 11): ≥1 / ≥3 / ≥5 external channels or face to face; corporates R3."""
    assert max_account_class(kind, channels) == expected


# ------------------------------------------------------------------------------ HTTP adapter


@dataclass
class FakeProvider:
    """A local verification provider speaking docs/verification-protocol.md."""

    fail_first: int = 0
    hang_s: float = 0.0
    tamper: bool = False
    answer: str = "passed"
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                provider.headers.append(dict(self.headers))
                timestamp = self.headers["X-Custodia-Timestamp"]
                expected = (
                    "v1="
                    + hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
                )
                if (
                    self.path != "/v1/verifications"
                    or self.headers["X-Custodia-Signature"] != expected
                ):
                    self.send_response(401)
                    self.end_headers()
                    return
                request = json.loads(body)
                provider.requests.append(request)
                if len(provider.requests) <= provider.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                if provider.hang_s:
                    time.sleep(provider.hang_s)
                answer = json.dumps(
                    {
                        "request_id": request["request_id"],
                        "result": provider.answer,
                        "reason": None if provider.answer == "passed" else "no_record",
                        "reference": "PSB-42",
                    }
                ).encode()
                now = str(int(time.time()))
                signature = sign(SECRET, now, answer)
                if provider.tamper:
                    signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Custodia-Timestamp", now)
                self.send_header("X-Custodia-Signature", signature)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        return Handler


@pytest.fixture
def provider() -> Iterator[tuple[FakeProvider, str]]:
    fake = FakeProvider()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _adapter(url: str, **kwargs: Any) -> HttpAdapter:
    return HttpAdapter(url=url, key_id="k-1", secret=SECRET, sleep=lambda _s: None, **kwargs)


def test_the_http_adapter_sends_a_signed_request_and_checks_the_signed_answer(
    provider: tuple[FakeProvider, str],
) -> None:
    fake, url = provider
    answer = _ask(_adapter(url), evidence_ref="x")
    assert (answer.result, answer.reference) == ("passed", "PSB-42")
    sent = fake.requests[0]
    assert sent["channel"] == "public_security_id"
    assert sent["subject"]["id_number"] == "11010519491231002X"
    assert fake.headers[0]["X-Custodia-Key-Id"] == "k-1"
    assert fake.headers[0]["Idempotency-Key"] == "ver_1"


def test_the_http_adapter_retries_server_errors_with_the_same_request_id(
    provider: tuple[FakeProvider, str],
) -> None:
    fake, url = provider
    fake.fail_first = 2
    assert _ask(_adapter(url, retries=2)).result == "passed"
    assert [r["request_id"] for r in fake.requests] == ["ver_1", "ver_1", "ver_1"]


def test_the_http_adapter_gives_up_after_its_retries(provider: tuple[FakeProvider, str]) -> None:
    fake, url = provider
    fake.fail_first = 10
    with pytest.raises(AdapterUnavailable, match="no answer after 3 attempts"):
        _ask(_adapter(url, retries=2))


def test_the_http_adapter_times_out(provider: tuple[FakeProvider, str]) -> None:
    fake, url = provider
    fake.hang_s = 1.0
    started = time.monotonic()
    with pytest.raises(AdapterUnavailable):
        _ask(_adapter(url, timeout_s=0.2, retries=1))
    assert time.monotonic() - started < 1.5


def test_the_http_adapter_refuses_an_answer_with_a_bad_signature(
    provider: tuple[FakeProvider, str],
) -> None:
    fake, url = provider
    fake.tamper = True
    with pytest.raises(AdapterUnavailable, match="signature"):
        _ask(_adapter(url, retries=0))


def test_the_http_adapter_reports_a_failed_check(provider: tuple[FakeProvider, str]) -> None:
    fake, url = provider
    fake.answer = "failed"
    answer = _ask(_adapter(url))
    assert (answer.result, answer.reason) == ("failed", "no_record")


def test_the_http_adapter_refuses_a_stale_answer(provider: tuple[FakeProvider, str]) -> None:
    _fake, url = provider
    adapter = _adapter(url, retries=0, clock=lambda: time.time() + 3600)
    with pytest.raises(AdapterUnavailable, match="fresh timestamp"):
        _ask(adapter)


def test_an_unreachable_provider_is_unavailable() -> None:
    with pytest.raises(AdapterUnavailable):
        _ask(_adapter("http://127.0.0.1:1", retries=1, timeout_s=0.5))


# ------------------------------------------------------------------------------ configuration


def test_configuration_maps_channels_to_adapters(provider: tuple[FakeProvider, str]) -> None:
    _fake, url = provider
    config = json.dumps(
        {
            "public_security_id": {"adapter": "http", "url": url, "key_id": "k", "secret": "s"},
            "tax": {"adapter": "disabled"},
        }
    )
    router = ChannelRouter.from_config(config, production=False)
    assert router.adapter_for("public_security_id").name == "http"
    assert router.adapter_for("bank_card").name == "sandbox"
    with pytest.raises(Exception, match="No adapter"):
        router.adapter_for("tax")


@pytest.mark.parametrize(
    "config",
    [
        '{"bank_card": {"adapter": "sandbox"}}',
        '{"nowhere": {"adapter": "http"}}',
        '{"tax": {"adapter": "http"}}',
        "not json",
    ],
)
def test_bad_channel_configurations_are_refused(config: str) -> None:
    with pytest.raises(ConfigError):
        ChannelRouter.from_config(config, production=True)


def test_production_switches_unlisted_channels_off() -> None:
    router = ChannelRouter.from_config("", production=True)
    with pytest.raises(Exception, match="No adapter"):
        router.adapter_for("public_security_id")


# ------------------------------------------------------------------------------ over HTTP


@pytest.fixture
def app_key(runtime: Runtime) -> dict[str, str]:
    return bearer(make_client(runtime, Role.ONBOARDING_APP).key)


def _verify(
    client: Client, headers: dict[str, str], customer_id: str, channel: str, **evidence: object
) -> Any:
    return client.post(
        f"/v1/customers/{customer_id}/verifications",
        json={"channel": channel, "evidence": evidence},
        headers=headers,
    )


def test_verifying_activates_and_raises_the_account_class(
    client: Client, runtime: Runtime, app_key: dict[str, str]
) -> None:
    customer_id = client.post("/v1/customers", json=person_body(), headers=app_key).json()["id"]
    first = _verify(client, app_key, customer_id, "public_security_id")
    assert first.status_code == 201, first.text
    assert {k: first.json()[k] for k in ("channel", "result", "reason")} == {
        "channel": "public_security_id",
        "result": "passed",
        "reason": None,
    }
    assert first.json()["customer_status"] == "active"
    assert first.json()["max_account_class"] == "I"
    for channel in ("bank_card", "mobile_carrier"):
        _verify(client, app_key, customer_id, channel)
    customer = client.get(f"/v1/customers/{customer_id}", headers=app_key).json()
    assert customer["max_account_class"] == "II"
    assert customer["verified_channels"] == ["bank_card", "mobile_carrier", "public_security_id"]
    actions = audit_actions(runtime, customer_id=customer_id)
    assert actions.count("kyc:customer:verification") == 3
    assert "kyc:customer:activated" in actions


def test_a_failed_check_is_recorded_and_changes_nothing(
    client: Client, app_key: dict[str, str]
) -> None:
    customer_id = client.post("/v1/customers", json=person_body(), headers=app_key).json()["id"]
    failed = _verify(client, app_key, customer_id, "public_security_id", name="李四")
    assert failed.status_code == 201
    assert (failed.json()["result"], failed.json()["reason"]) == ("failed", "name_mismatch")
    assert failed.json()["customer_status"] == "pending_verification"
    history = client.get(f"/v1/customers/{customer_id}/verifications", headers=app_key).json()[
        "items"
    ]
    assert [(h["channel"], h["result"]) for h in history] == [("public_security_id", "failed")]


def test_a_channel_that_is_down_answers_503_and_the_attempt_is_kept(
    client: Client, app_key: dict[str, str]
) -> None:
    customer_id = client.post("/v1/customers", json=person_body(), headers=app_key).json()["id"]
    down = _verify(client, app_key, customer_id, "tax", sandbox_outcome="unavailable")
    assert down.status_code == 503
    assert down.json()["code"] == "verification_unavailable"
    history = client.get(f"/v1/customers/{customer_id}/verifications", headers=app_key).json()[
        "items"
    ]
    assert [h["result"] for h in history] == ["error"]


def test_evidence_is_not_stored_only_a_keyed_reference(
    client: Client, runtime: Runtime, app_key: dict[str, str]
) -> None:
    body = person_body()
    customer_id = client.post("/v1/customers", json=body, headers=app_key).json()["id"]
    card = "6222021234567890128"
    done = _verify(client, app_key, customer_id, "bank_card", card_number=card, holder_name="张伟")
    ref = done.json()["evidence_ref"]
    assert ref.startswith("sbx-")
    history = client.get(f"/v1/customers/{customer_id}/verifications", headers=app_key).text
    assert card not in history


def test_a_replayed_verification_does_not_ask_again(
    client: Client, app_key: dict[str, str]
) -> None:
    customer_id = client.post("/v1/customers", json=person_body(), headers=app_key).json()["id"]
    headers = {**app_key, "Idempotency-Key": "verify-1"}
    first = _verify(client, headers, customer_id, "public_security_id")
    second = _verify(client, headers, customer_id, "public_security_id")
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    history = client.get(f"/v1/customers/{customer_id}/verifications", headers=app_key).json()[
        "items"
    ]
    assert len(history) == 1


def test_a_corporate_needs_three_channels_or_face_to_face(
    client: Client, app_key: dict[str, str]
) -> None:
    customer_id = client.post("/v1/customers", json=corporate_body(), headers=app_key).json()["id"]
    for channel in ("public_security_id", "tax"):
        _verify(client, app_key, customer_id, channel)
    assert (
        client.get(f"/v1/customers/{customer_id}", headers=app_key).json()["max_account_class"]
        is None
    )
    _verify(client, app_key, customer_id, "bank_card")
    assert (
        client.get(f"/v1/customers/{customer_id}", headers=app_key).json()["max_account_class"]
        == "corporate"
    )


def test_unknown_channels_are_422(client: Client, app_key: dict[str, str]) -> None:
    customer_id = client.post("/v1/customers", json=person_body(), headers=app_key).json()["id"]
    response = _verify(client, app_key, customer_id, "astrology")
    assert response.status_code == 422
