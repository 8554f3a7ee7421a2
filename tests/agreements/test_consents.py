"""Consents: signed receipts, the consent gate, changed terms and re-consent (A1–A3)."""

from __future__ import annotations

import base64
import copy
import json
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from custodia import agreements
from custodia.agreements.receipts import canonical_bytes
from custodia.api.runtime import Runtime
from custodia.core.actors import Role
from custodia.core.clock import ManualClock
from custodia.core.keys import KeyFile
from custodia.core.models import IdempotencyRecord, OutboxEvent
from tests.agreements.conftest import (
    Client,
    agreement_body,
    consent_body,
    publish_new_version,
)
from tests.api.test_cli import run
from tests.factories import audit_actions, bearer, make_client, make_staff


def _current(client: Client, headers: dict[str, str], locale: str = "zh-CN") -> dict[str, Any]:
    return dict(
        client.get("/v1/agreements/current", params={"locale": locale}, headers=headers).json()
    )


def _consent(
    client: Client, headers: dict[str, str], customer_id: str, body: dict[str, object]
) -> Any:
    return client.post(f"/v1/customers/{customer_id}/consents", json=body, headers=headers)


def _public_keys(client: Client) -> dict[str, bytes]:
    published = client.get("/v1/agreements/signing-key").json()  # no credential needed
    return {k["key_id"]: base64.b64decode(k["public_key"]) for k in published["keys"]}


def _gate(runtime: Runtime, customer_id: str) -> str:
    return runtime.db.run(
        lambda s: agreements.require_consent(s, customer_id, now=runtime.clock.now()),
        read_only=True,
    )


# --------------------------------------------------------------------------------- receipts


def test_a_consent_is_recorded_with_every_field_and_a_signed_receipt(
    client: Client, runtime: Runtime, clock: ManualClock, app_key: dict[str, str], customer_id: str
) -> None:
    agreement = _current(client, app_key)
    shown = clock.now() - timedelta(minutes=2)
    response = _consent(client, app_key, customer_id, consent_body(agreement["id"], shown))
    assert response.status_code == 201, response.text
    consent = response.json()
    assert consent["id"].startswith("con_")
    assert (consent["agreement_version"], consent["content_sha256"]) == (
        agreement["version"],
        agreement["content_sha256"],
    )
    assert consent["accepted"] is True
    assert (consent["channel"], consent["ip"]) == ("app", "203.0.113.7")
    assert consent["prominent_clauses"] == ["balance_not_deposit"]
    assert consent["verification"] == {"method": "none", "reference": None}
    payload = consent["receipt"]["payload"]
    assert payload["format"] == "custodia-consent-receipt/1"
    assert payload["consent_id"] == consent["id"]
    assert payload["shown_at"] < payload["decided_at"]
    check = agreements.verify_receipt(consent["receipt"], _public_keys(client))
    assert (check.valid, check.consent_id) == (True, consent["id"])
    assert "agreements:consent:accepted" in audit_actions(runtime, customer_id=customer_id)
    listed = client.get(f"/v1/customers/{customer_id}/consents", headers=app_key).json()
    assert [c["id"] for c in listed["items"]] == [consent["id"]]
    assert listed["items"][0]["receipt"] == consent["receipt"]  # rebuilt, still the same
    assert listed["state"]["satisfied"] is True


def _flip_one_byte(receipt: dict[str, Any], where: str) -> dict[str, Any]:
    changed = copy.deepcopy(receipt)
    if where == "signature":
        raw = bytearray(base64.b64decode(changed["signature"]))
        raw[0] ^= 0x01
        changed["signature"] = base64.b64encode(bytes(raw)).decode()
    else:
        value = str(changed["payload"][where])
        changed["payload"][where] = value[:-1] + chr(ord(value[-1]) ^ 0x01)
    return changed


@pytest.mark.parametrize(
    "where", ["ip", "content_sha256", "customer_id", "decided_at", "user_agent", "signature"]
)
def test_a_receipt_fails_after_one_changed_byte(
    client: Client, clock: ManualClock, app_key: dict[str, str], customer_id: str, where: str
) -> None:
    agreement = _current(client, app_key)
    consent = _consent(
        client, app_key, customer_id, consent_body(agreement["id"], clock.now())
    ).json()
    keys = _public_keys(client)
    assert agreements.verify_receipt(consent["receipt"], keys).valid
    check = agreements.verify_receipt(_flip_one_byte(consent["receipt"], where), keys)
    assert not check.valid
    assert check.reason in {
        "the signature does not match the payload",
        "the signature is not base64",
    }


def test_a_receipt_verifies_with_nothing_but_rfc8785_and_ed25519(
    client: Client, clock: ManualClock, app_key: dict[str, str], customer_id: str
) -> None:
    """Offline: the published public key and the canonical payload bytes are all it takes."""
    agreement = _current(client, app_key)
    receipt = _consent(
        client, app_key, customer_id, consent_body(agreement["id"], clock.now())
    ).json()["receipt"]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415

    key = Ed25519PublicKey.from_public_bytes(_public_keys(client)[receipt["key_id"]])
    key.verify(base64.b64decode(receipt["signature"]), canonical_bytes(receipt["payload"]))


def test_the_cli_verifies_a_receipt_offline(
    client: Client,
    *,
    clock: ManualClock,
    app_key: dict[str, str],
    customer_id: str,
    keys: KeyFile,
    tmp_path: Path,
) -> None:
    agreement = _current(client, app_key)
    consent = _consent(
        client, app_key, customer_id, consent_body(agreement["id"], clock.now())
    ).json()
    published = tmp_path / "signing-key.json"
    published.write_text(client.get("/v1/agreements/signing-key").text)
    whole = tmp_path / "consent.json"
    whole.write_text(json.dumps(consent, ensure_ascii=False))
    good = run("consents", "verify", str(whole), "--public-key", str(published))
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith(f"valid: consent {consent['id']} of {customer_id}: accepted")
    # Without --public-key the operator's own key file is used.
    own = run(
        "consents",
        "verify",
        str(whole),
        env={
            "CUSTODIA_KEYS_JSON": msgspec.json.encode(keys).decode(),
            "CUSTODIA_VAR_DIR": str(tmp_path),
        },
    )
    assert own.returncode == 0, own.stderr
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(_flip_one_byte(consent["receipt"], "ip")))
    bad = run("consents", "verify", str(tampered), "--public-key", str(published))
    assert (bad.returncode, bad.stdout.strip()) == (
        1,
        "invalid: the signature does not match the payload",
    )
    other_key = base64.b64encode(
        Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    ).decode()
    forged = run("consents", "verify", str(whole), "--public-key", other_key)
    assert forged.returncode == 1
    missing = run("consents", "verify", str(tmp_path / "nope.json"), "--public-key", other_key)
    assert missing.returncode == 2
    assert missing.stderr.startswith("custodia: error: cannot read")


# ------------------------------------------------------------------------------- refusals


def test_bad_consents_are_422_naming_each_field(
    client: Client, clock: ManualClock, app_key: dict[str, str], customer_id: str
) -> None:
    agreement = _current(client, app_key)
    body = consent_body(
        agreement["id"],
        clock.now() + timedelta(minutes=5),
        ip="999.1.1.1",
        channel="Mobile App",
        user_agent=" ",
    )
    response = _consent(client, app_key, customer_id, body)
    assert response.status_code == 422, response.text
    assert {e["field"] for e in response.json()["errors"]} == {
        "ip",
        "channel",
        "user_agent",
        "shown_at",
    }
    unknown = _consent(client, app_key, customer_id, consent_body("agr_nope", clock.now()))
    assert [e["field"] for e in unknown.json()["errors"]] == ["agreement_id"]
    assert (
        client.get(f"/v1/customers/{customer_id}/consents", headers=app_key).json()["items"] == []
    )


def test_a_draft_cannot_be_consented_to(
    client: Client,
    clock: ManualClock,
    lead: dict[str, str],
    app_key: dict[str, str],
    customer_id: str,
) -> None:
    draft = client.post(
        "/v1/agreements",
        json=agreement_body("2027.1", clock.now() + timedelta(days=40)),
        headers=lead,
    ).json()
    response = _consent(client, app_key, customer_id, consent_body(draft["id"], clock.now()))
    assert (response.status_code, response.json()["code"]) == (409, "agreement_not_published")


def test_another_apps_customer_is_not_found(
    client: Client, runtime: Runtime, clock: ManualClock, app_key: dict[str, str], customer_id: str
) -> None:
    other = bearer(make_client(runtime, Role.ONBOARDING_APP).key)
    agreement = _current(client, app_key)
    response = _consent(client, other, customer_id, consent_body(agreement["id"], clock.now()))
    assert response.status_code == 404
    assert client.get(f"/v1/customers/{customer_id}/consents", headers=other).status_code == 404


def test_a_retried_consent_is_recorded_once(
    client: Client, runtime: Runtime, clock: ManualClock, app_key: dict[str, str], customer_id: str
) -> None:
    agreement = _current(client, app_key)
    body = consent_body(agreement["id"], clock.now())
    headers = {**app_key, "Idempotency-Key": "consent-1"}
    first = _consent(client, headers, customer_id, body)
    second = _consent(client, headers, customer_id, body)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert (
        len(client.get(f"/v1/customers/{customer_id}/consents", headers=app_key).json()["items"])
        == 1
    )
    # The stored response holds the receipt (with the IP): it is kept encrypted.
    stored = runtime.db.run(lambda s: s.scalar(select(IdempotencyRecord.response_body)))
    assert stored is not None
    assert b"203.0.113.7" not in stored
    assert customer_id.encode() not in stored


# ------------------------------------------------------------------------------ the gate


def test_the_gate_needs_consent_to_the_version_in_force(
    client: Client, runtime: Runtime, clock: ManualClock, app_key: dict[str, str], customer_id: str
) -> None:
    with pytest.raises(agreements.ConsentRequired) as refused:
        _gate(runtime, customer_id)
    assert refused.value.code == "consent_required"
    agreement = _current(client, app_key, locale="en")  # either locale of the version counts
    consent = _consent(client, app_key, customer_id, consent_body(agreement["id"], clock.now()))
    assert _gate(runtime, customer_id) == consent.json()["id"]


def test_consent_to_a_superseded_version_does_not_satisfy_the_gate_after_the_new_effective_date(
    client: Client,
    *,
    runtime: Runtime,
    clock: ManualClock,
    lead: dict[str, str],
    app_key: dict[str, str],
    customer_id: str,
) -> None:
    old = _current(client, app_key)
    _consent(client, app_key, customer_id, consent_body(old["id"], clock.now()))
    new = publish_new_version(client, lead, "2027.1", timedelta(days=30), clock.now())
    clock.advance(timedelta(days=29, hours=23))
    assert _gate(runtime, customer_id)  # the old version still stands
    clock.advance(timedelta(hours=1))
    with pytest.raises(agreements.ConsentRequired) as refused:
        _gate(runtime, customer_id)
    assert refused.value.data["agreement_id"] == new["id"]
    # Consenting to the old version now is refused: it is superseded.
    late = _consent(client, app_key, customer_id, consent_body(old["id"], clock.now()))
    assert (late.status_code, late.json()["code"]) == (409, "agreement_superseded")
    assert late.json()["current_agreement_id"] == new["id"]


def test_changed_terms_are_announced_and_accepted_again(
    client: Client,
    *,
    runtime: Runtime,
    clock: ManualClock,
    lead: dict[str, str],
    app_key: dict[str, str],
    customer_id: str,
) -> None:
    """A3 end to end with an injected clock: notice, old terms meanwhile, re-consent."""
    old = _current(client, app_key)
    _consent(client, app_key, customer_id, consent_body(old["id"], clock.now()))
    new = publish_new_version(client, lead, "2027.1", timedelta(days=30), clock.now())
    worker = runtime.worker(threading.Event())
    while worker.run_once():
        pass
    assert "agreements:agreement:notice_sent" in audit_actions(runtime, customer_id=customer_id)
    notices = runtime.db.run(
        lambda s: [
            e.payload
            for e in s.scalars(
                select(OutboxEvent).where(OutboxEvent.event_type == agreements.CUSTOMER_NOTIFIED)
            )
        ]
    )
    assert [(n["customer_id"], n["agreement_id"]) for n in notices] == [(customer_id, new["id"])]
    # A second delivery of the publication tells nobody twice.
    while worker.run_once():
        pass
    clock.advance(timedelta(days=10))
    shown = clock.now()
    ahead = _consent(client, app_key, customer_id, consent_body(new["id"], shown))
    assert ahead.status_code == 201  # accepted ahead of the effective date
    clock.advance(timedelta(days=20))
    assert _gate(runtime, customer_id) == ahead.json()["id"]
    officer = make_staff(runtime, Role.COMPLIANCE_OFFICER).headers  # the lead's session ended
    history = client.get(f"/v1/customers/{customer_id}/timeline", headers=officer).json()
    actions = [e["action"] for e in history["items"]]
    assert actions.count("agreements:consent:accepted") == 2
    assert "agreements:agreement:notice_sent" in actions


def test_declining_an_announced_version_ends_service_when_it_takes_effect(
    client: Client,
    *,
    runtime: Runtime,
    clock: ManualClock,
    lead: dict[str, str],
    app_key: dict[str, str],
    customer_id: str,
) -> None:
    old = _current(client, app_key)
    _consent(client, app_key, customer_id, consent_body(old["id"], clock.now()))
    new = publish_new_version(client, lead, "2027.1", timedelta(days=30), clock.now())
    declined = _consent(
        client, app_key, customer_id, consent_body(new["id"], clock.now(), accepted=False)
    )
    assert declined.status_code == 201
    assert _gate(runtime, customer_id)  # the old terms stand until the new ones take effect
    ends = runtime.db.run(
        lambda s: [
            e.payload["service_ends_at"]
            for e in s.scalars(
                select(OutboxEvent).where(OutboxEvent.event_type == agreements.CONSENT_DECLINED)
            )
        ]
    )
    assert [datetime.fromisoformat(e.replace("Z", "+00:00")) for e in ends] == [
        datetime.fromisoformat(new["effective_at"])
    ]
    clock.advance(timedelta(days=30))
    with pytest.raises(agreements.ConsentRequired):
        _gate(runtime, customer_id)


def test_declining_the_version_in_force_ends_service_under_it(
    client: Client, runtime: Runtime, clock: ManualClock, app_key: dict[str, str], customer_id: str
) -> None:
    agreement = _current(client, app_key)
    _consent(client, app_key, customer_id, consent_body(agreement["id"], clock.now()))
    clock.advance(timedelta(days=3))
    declined = _consent(
        client, app_key, customer_id, consent_body(agreement["id"], clock.now(), accepted=False)
    )
    assert declined.status_code == 201
    assert declined.json()["receipt"]["payload"]["accepted"] is False
    with pytest.raises(agreements.ConsentRequired):
        _gate(runtime, customer_id)
    events = runtime.db.run(
        lambda s: [
            e.payload
            for e in s.scalars(
                select(OutboxEvent).where(OutboxEvent.event_type == agreements.CONSENT_DECLINED)
            )
        ]
    )
    assert events == [
        {
            "customer_id": customer_id,
            "agreement_id": agreement["id"],
            "kind": "payment_service",
            "service_ends_at": declined.json()["receipt"]["payload"]["decided_at"],  # at once
        }
    ]
    assert "agreements:consent:declined" in audit_actions(runtime, customer_id=customer_id)


# ------------------------------------------------------------------- confirmed consents


def _totp_agreement(client: Client, lead: dict[str, str], clock: ManualClock) -> dict[str, Any]:
    body = agreement_body(
        "2027.1",
        clock.now(),
        kind="partner_product_risk",
        clauses=[{"key": "risks", "title": "Risks", "body": "You may lose money."}],
        consent_verification="totp",
    )
    draft = client.post("/v1/agreements", json=body, headers=lead).json()
    published = client.post(f"/v1/agreements/{draft['id']}/publish", headers=lead)
    assert published.status_code == 200, published.text
    return dict(published.json())


def _bind_totp(
    client: Client, headers: dict[str, str], customer_id: str, clock: ManualClock
) -> str:
    uri = client.post(f"/v1/customers/{customer_id}/credentials/totp", headers=headers).json()
    secret = pyotp.parse_uri(uri["provisioning_uri"]).secret
    confirmed = client.post(
        f"/v1/customers/{customer_id}/credentials/totp/confirm",
        json={"code": pyotp.TOTP(secret).at(clock.now())},
        headers=headers,
    )
    assert confirmed.status_code == 200, confirmed.text
    clock.advance(timedelta(seconds=30))
    return str(secret)


def test_an_agreement_asking_for_totp_needs_a_fresh_code(
    client: Client,
    *,
    runtime: Runtime,
    clock: ManualClock,
    lead: dict[str, str],
    app_key: dict[str, str],
    customer_id: str,
) -> None:
    agreement = _totp_agreement(client, lead, clock)
    secret = _bind_totp(client, app_key, customer_id, clock)
    body = consent_body(agreement["id"], clock.now())
    missing = _consent(client, app_key, customer_id, body)
    assert (missing.status_code, missing.json()["code"]) == (422, "verification_required")
    wrong = _consent(
        client,
        app_key,
        customer_id,
        {**body, "authentication": {"factors": [{"type": "totp", "code": "000000"}]}},
    )
    assert (wrong.status_code, wrong.json()["code"]) == (401, "authentication_failed")
    assert "kyc:credential:verification_failed" in audit_actions(runtime, customer_id=customer_id)
    code = pyotp.TOTP(secret).at(clock.now())
    with_code = {**body, "authentication": {"factors": [{"type": "totp", "code": code}]}}
    good = _consent(client, app_key, customer_id, with_code)
    assert good.status_code == 201, good.text
    assert good.json()["verification"]["method"] == "totp"
    replayed = _consent(client, app_key, customer_id, with_code)
    assert (replayed.status_code, replayed.json()["code"]) == (401, "authentication_failed")


def test_a_consent_signed_by_a_device_key(
    client: Client,
    clock: ManualClock,
    lead: dict[str, str],
    app_key: dict[str, str],
    customer_id: str,
) -> None:
    body = agreement_body(
        "2027.1",
        clock.now(),
        kind="partner_product_risk",
        clauses=[{"key": "risks", "title": "Risks", "body": "You may lose money."}],
        consent_verification="signature",
    )
    draft = client.post("/v1/agreements", json=body, headers=lead).json()
    agreement = client.post(f"/v1/agreements/{draft['id']}/publish", headers=lead).json()
    device = Ed25519PrivateKey.generate()
    key_id = client.post(
        f"/v1/customers/{customer_id}/credentials/signing-keys",
        json={"public_key": base64.b64encode(device.public_key().public_bytes_raw()).decode()},
        headers=app_key,
    ).json()["key_id"]
    message = agreements.signing_string(
        customer_id, agreement["id"], agreement["content_sha256"], accepted=True
    )
    signature = base64.b64encode(device.sign(message)).decode()
    factor = {"type": "signature", "key_id": key_id, "signature": signature}
    consent = _consent(
        client,
        app_key,
        customer_id,
        {**consent_body(agreement["id"], clock.now()), "authentication": {"factors": [factor]}},
    )
    assert consent.status_code == 201, consent.text
    assert consent.json()["verification"] == {
        "method": "signature",
        "reference": f"signature:{key_id}",
    }
    # The same signature does not confirm a refusal: the decision is part of what is signed.
    refusal = _consent(
        client,
        app_key,
        customer_id,
        {
            **consent_body(agreement["id"], clock.now(), accepted=False),
            "authentication": {"factors": [factor]},
        },
    )
    assert refusal.status_code == 401


# --------------------------------------------------------------------------- append-only


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE consents SET accepted = NOT accepted WHERE id = :id",
        "UPDATE consents SET content_sha256 = 'x' WHERE id = :id",
        "DELETE FROM consents WHERE id = :id",
    ],
)
def test_the_database_refuses_to_change_a_consent(
    client: Client,
    *,
    runtime: Runtime,
    clock: ManualClock,
    app_key: dict[str, str],
    customer_id: str,
    statement: str,
) -> None:
    agreement = _current(client, app_key)
    consent = _consent(client, app_key, customer_id, consent_body(agreement["id"], clock.now()))
    with pytest.raises(DBAPIError, match="append-only"):
        runtime.db.run(lambda s: s.execute(text(statement), {"id": consent.json()["id"]}))


def test_only_the_ip_blob_may_move_to_a_new_key(
    client: Client, runtime: Runtime, clock: ManualClock, app_key: dict[str, str], customer_id: str
) -> None:
    """``keys reencrypt`` rewrites ``ip_enc``; the receipt still verifies afterwards."""
    agreement = _current(client, app_key)
    consent = _consent(
        client, app_key, customer_id, consent_body(agreement["id"], clock.now())
    ).json()
    again = runtime.vault.encrypt(
        "203.0.113.7", table="consents", column="ip_enc", row_id=consent["id"]
    )
    moved = runtime.db.run(
        lambda s: (
            s.execute(
                text("UPDATE consents SET ip_enc = :blob WHERE id = :id"),
                {"blob": again, "id": consent["id"]},
            ).rowcount
        )
    )
    assert moved == 1
    listed = client.get(f"/v1/customers/{customer_id}/consents", headers=app_key).json()
    assert agreements.verify_receipt(listed["items"][0]["receipt"], _public_keys(client)).valid
