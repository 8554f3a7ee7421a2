"""Agreement templates: drafts, publication, mandatory clauses, notice periods, immutability."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from custodia.agreements import (
    MANDATORY_CLAUSES,
    PAYMENT_SERVICE,
    AgreementPolicy,
    Clause,
    load_agreement,
)
from custodia.agreements.templates import canonical_content, content_hash
from custodia.api.runtime import Runtime
from custodia.core.clock import ManualClock
from custodia.core.errors import ConfigError
from tests.agreements.conftest import Client, agreement_body, clause_bodies, publish_new_version
from tests.factories import audit_actions

# -------------------------------------------------------------------------------- defaults


@pytest.mark.parametrize("locale", ["zh-CN", "en"])
def test_a_fresh_database_has_the_default_payment_agreement_in_force(
    client: Client, app_key: dict[str, str], locale: str
) -> None:
    """Every deployment can onboard at once: the shipped agreement is published (A1, A2)."""
    response = client.get(
        "/v1/agreements/current",
        params={"kind": "payment_service", "locale": locale},
        headers=app_key,
    )
    assert response.status_code == 200, response.text
    agreement = response.json()
    keys = [c["key"] for c in agreement["clauses"]]
    assert set(MANDATORY_CLAUSES[PAYMENT_SERVICE]) <= set(keys)
    assert all(c["body"].strip() for c in agreement["clauses"])
    prominent = {c["key"] for c in agreement["clauses"] if c["prominent"]}
    assert prominent == {"balance_not_deposit"}
    assert agreement["status"] == "published"
    assert agreement["upcoming"] == []
    disclosure = next(c["body"] for c in agreement["clauses"] if c["key"] == "balance_not_deposit")
    assert ("存款保险" if locale == "zh-CN" else "Deposit Insurance") in disclosure


def test_the_published_hash_is_the_sha256_of_the_canonical_text(
    client: Client, app_key: dict[str, str], runtime: Runtime
) -> None:
    """Anyone holding the text can recompute ``content_sha256``; so can the service."""
    agreement = client.get("/v1/agreements/current", headers=app_key).json()
    recomputed = hashlib.sha256(
        canonical_content(
            kind=agreement["kind"],
            version=agreement["version"],
            locale=agreement["locale"],
            title=agreement["title"],
            effective_at=datetime.fromisoformat(agreement["effective_at"]),
            consent_verification=agreement["consent_verification"],
            clauses=[Clause(**c) for c in agreement["clauses"]],
        )
    ).hexdigest()
    assert recomputed == agreement["content_sha256"]
    stored = runtime.db.run(lambda s: content_hash(load_agreement(s, agreement["id"])))
    assert stored == agreement["content_sha256"]


# ---------------------------------------------------------------------------------- drafts


def test_a_draft_is_created_edited_and_published_with_an_audit_trail(
    client: Client, runtime: Runtime, clock: ManualClock, lead: dict[str, str]
) -> None:
    draft = client.post(
        "/v1/agreements",
        json=agreement_body("2027.1", clock.now() + timedelta(days=40)),
        headers=lead,
    )
    assert draft.status_code == 201, draft.text
    created = draft.json()
    assert created["id"].startswith("agr_")
    assert (created["status"], created["content_sha256"]) == ("draft", None)
    edited = client.patch(
        f"/v1/agreements/{created['id']}", json={"title": "支付服务协议（修订）"}, headers=lead
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["title"] == "支付服务协议（修订）"
    published = client.post(f"/v1/agreements/{created['id']}/publish", headers=lead)
    assert published.status_code == 200, published.text
    assert published.json()["status"] == "published"
    assert len(published.json()["content_sha256"]) == 64
    assert audit_actions(runtime, created["id"]) == [
        "agreements:agreement:drafted",
        "agreements:agreement:draft_updated",
        "agreements:agreement:published",
    ]


def test_a_published_agreement_cannot_be_edited_or_published_again(
    client: Client, clock: ManualClock, lead: dict[str, str]
) -> None:
    published = publish_new_version(client, lead, "2027.2", timedelta(days=31), clock.now())
    edit = client.patch(f"/v1/agreements/{published['id']}", json={"title": "x"}, headers=lead)
    assert (edit.status_code, edit.json()["code"]) == (409, "agreement_published")
    again = client.post(f"/v1/agreements/{published['id']}/publish", headers=lead)
    assert (again.status_code, again.json()["code"]) == (409, "agreement_published")


def test_a_version_is_never_replaced_in_place(
    client: Client, clock: ManualClock, lead: dict[str, str]
) -> None:
    body = agreement_body("2026.1", clock.now() + timedelta(days=40))  # the shipped version
    response = client.post("/v1/agreements", json=body, headers=lead)
    assert (response.status_code, response.json()["code"]) == (409, "agreement_version_exists")


def test_bad_drafts_are_422_naming_each_field(
    client: Client, clock: ManualClock, lead: dict[str, str]
) -> None:
    body = agreement_body(
        "bad version!",
        clock.now(),
        kind="Payment Service",
        locale="fr",
        clauses=[
            {"key": "fees", "title": "Fees", "body": "x"},
            {"key": "fees", "title": "", "body": "y"},
        ],
    )
    response = client.post("/v1/agreements", json=body, headers=lead)
    assert response.status_code == 422, response.text
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"kind", "version", "locale", "clauses[1].key", "clauses[1].title"}


def test_an_effective_instant_without_offset_is_refused(
    client: Client, lead: dict[str, str]
) -> None:
    body = agreement_body("2027.3", datetime(2027, 1, 1))  # noqa: DTZ001 - naive on purpose
    response = client.post("/v1/agreements", json=body, headers=lead)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["effective_at"]


def test_onboarding_apps_see_published_versions_only(
    client: Client, clock: ManualClock, lead: dict[str, str], app_key: dict[str, str]
) -> None:
    draft = client.post(
        "/v1/agreements",
        json=agreement_body("2027.4", clock.now() + timedelta(days=40)),
        headers=lead,
    ).json()
    assert client.get(f"/v1/agreements/{draft['id']}", headers=lead).status_code == 200
    assert client.get(f"/v1/agreements/{draft['id']}", headers=app_key).status_code == 404


# ----------------------------------------------------------------- mandatory clauses (A1, A2)


@pytest.mark.parametrize("missing", MANDATORY_CLAUSES[PAYMENT_SERVICE])
def test_publishing_is_refused_for_each_missing_mandatory_clause(
    client: Client, clock: ManualClock, lead: dict[str, str], missing: str
) -> None:
    body = agreement_body(
        "2027.5", clock.now() + timedelta(days=40), clauses=clause_bodies(without=(missing,))
    )
    draft = client.post("/v1/agreements", json=body, headers=lead).json()
    response = client.post(f"/v1/agreements/{draft['id']}/publish", headers=lead)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "mandatory_clause_missing"
    assert problem["missing"] == [missing]
    assert (problem["rule"], problem["regulation"], problem["article"]) == (
        "mandatory_clauses",
        "A1",
        "Art. 7",
    )
    still = client.get(f"/v1/agreements/{draft['id']}", headers=lead).json()
    assert still["status"] == "draft"


def test_a_blank_clause_is_refused_at_drafting(
    client: Client, clock: ManualClock, lead: dict[str, str]
) -> None:
    """A mandatory clause cannot be present in name only."""
    clauses = clause_bodies()
    clauses[0]["body"] = "   "
    body = agreement_body("2027.6", clock.now() + timedelta(days=40), clauses=clauses)
    response = client.post("/v1/agreements", json=body, headers=lead)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "clauses[0].body", "message": "must not be empty"}
    ]


def test_the_deposit_disclosure_is_always_prominent(
    client: Client, clock: ManualClock, lead: dict[str, str]
) -> None:
    """A2: whatever the draft says, the balance-is-not-a-deposit clause is shown prominently."""
    published = publish_new_version(client, lead, "2027.7", timedelta(days=31), clock.now())
    flags = {c["key"]: c["prominent"] for c in published["clauses"]}
    assert flags["balance_not_deposit"] is True
    assert flags["fees"] is False


def test_configuration_adds_mandatory_clauses_but_never_removes_the_regulations() -> None:
    policy = AgreementPolicy.from_config('{"payment_service": ["data_export"]}', notice_days=30)
    assert policy.mandatory[PAYMENT_SERVICE] == (*MANDATORY_CLAUSES[PAYMENT_SERVICE], "data_export")
    extended = AgreementPolicy.from_config('{"partner_product_risk": ["product"]}', notice_days=30)
    assert extended.mandatory["partner_product_risk"] == ("product",)
    assert extended.mandatory[PAYMENT_SERVICE] == MANDATORY_CLAUSES[PAYMENT_SERVICE]
    for bad in ("[1]", '{"payment_service": "fees"}', '{"x": ["Bad Key"]}', "{"):
        with pytest.raises(ConfigError):
            AgreementPolicy.from_config(bad, notice_days=30)


# ---------------------------------------------------------------------- notice period (A3)


def test_a_new_version_takes_effect_no_sooner_than_thirty_days_after_publication(
    client: Client, clock: ManualClock, lead: dict[str, str]
) -> None:
    body = agreement_body("2027.8", clock.now() + timedelta(days=29))
    draft = client.post("/v1/agreements", json=body, headers=lead).json()
    response = client.post(f"/v1/agreements/{draft['id']}/publish", headers=lead)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert (problem["code"], problem["rule"], problem["regulation"], problem["notice_days"]) == (
        "effective_date_too_early",
        "change_notice_period",
        "A3",
        30,
    )
    assert problem["earliest_effective_at"] == (clock.now() + timedelta(days=30)).isoformat()
    fixed = client.patch(
        f"/v1/agreements/{draft['id']}",
        json={"effective_at": problem["earliest_effective_at"]},
        headers=lead,
    )
    assert fixed.status_code == 200
    assert client.post(f"/v1/agreements/{draft['id']}/publish", headers=lead).status_code == 200


def test_a_version_cannot_take_effect_before_the_one_announced_before_it(
    client: Client, clock: ManualClock, lead: dict[str, str]
) -> None:
    publish_new_version(client, lead, "2027.9", timedelta(days=60), clock.now())
    body = agreement_body("2027.10", clock.now() + timedelta(days=45))
    draft = client.post("/v1/agreements", json=body, headers=lead).json()
    response = client.post(f"/v1/agreements/{draft['id']}/publish", headers=lead)
    assert response.json()["code"] == "effective_date_too_early"


def test_the_old_version_stands_until_the_new_effective_date(
    client: Client, clock: ManualClock, lead: dict[str, str], app_key: dict[str, str]
) -> None:
    before = client.get("/v1/agreements/current", headers=app_key).json()
    new = publish_new_version(client, lead, "2027.11", timedelta(days=30), clock.now())
    during = client.get("/v1/agreements/current", headers=app_key).json()
    assert during["id"] == before["id"]
    assert [u["id"] for u in during["upcoming"]] == [new["id"]]
    clock.advance(timedelta(days=30))
    after = client.get("/v1/agreements/current", headers=app_key).json()
    assert (after["id"], after["upcoming"]) == (new["id"], [])


# ------------------------------------------------------------------------- immutability


def _first_published(conn: Any) -> str:
    return str(conn.execute(text("SELECT id FROM agreements WHERE status = 'published'")).scalar())


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE agreements SET title = 'changed' WHERE id = :id",
        "UPDATE agreements SET clauses = clauses WHERE id = :id",
        (
            "UPDATE agreements SET status = 'draft', content_sha256 = NULL, published_at = NULL "
            "WHERE id = :id"
        ),
        "DELETE FROM agreements WHERE id = :id",
    ],
)
def test_the_database_refuses_to_change_published_text(engine: Engine, statement: str) -> None:
    """Raw SQL, around the Python code: a published row cannot change or go."""
    with engine.connect() as conn, conn.begin():
        published = _first_published(conn)
        with pytest.raises(DBAPIError, match="append-only"):
            conn.execute(text(statement), {"id": published})


def test_the_database_lets_a_draft_change(
    runtime: Runtime, client: Client, clock: ManualClock, lead: dict[str, str]
) -> None:
    """The trigger guards published rows only (raw SQL in the test's transaction)."""
    draft = client.post(
        "/v1/agreements",
        json=agreement_body("2027.12", clock.now() + timedelta(days=40)),
        headers=lead,
    ).json()
    changed = runtime.db.run(
        lambda s: (
            s.execute(
                text("UPDATE agreements SET title = 'x' WHERE id = :id"), {"id": draft["id"]}
            ).rowcount
        )
    )
    assert changed == 1
