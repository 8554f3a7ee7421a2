"""Regulatory reports over HTTP: large-value (L1), suspicious (L2), CSV, filing, roles."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import date, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from custodia.aml import monitoring, reports
from custodia.api.accounts import TransactionOut
from custodia.api.runtime import Runtime, pii_schema
from custodia.core.actors import SYSTEM, Context, Role
from custodia.core.clock import ManualClock
from custodia.core.keys import KeyFile, KeyPurpose, rotate
from custodia.core.logging import configure_logging
from custodia.core.masking import mask_name
from custodia.core.settings import Settings, load_settings
from custodia.core.vault import key_id_of, reencrypt_batch, run_batches
from tests.accounts.conftest import Customer, card_ending, onboard
from tests.aml.conftest import CNY, deliver
from tests.factories import (
    StaffLogin,
    audit_actions,
    bearer,
    log_in,
    make_client,
    make_staff,
)

Client = TestClient[Any]
DAY = "2026-11-22"  # the clock starts at 12:00 on this day, Asia/Shanghai


def _next_day(runtime: Runtime, clock: ManualClock, *staff: StaffLogin, days: int = 1) -> None:
    """Move the clock past the report's day; staff sessions expire meanwhile, so log in again."""
    clock.advance(timedelta(days=days))
    for member in staff:
        member.token = log_in(runtime, member)


def _thresholds(client: Client, lead: StaffLogin, **params: int) -> None:
    changed = client.put("/v1/aml/rules/large_value", json={"params": params}, headers=lead.headers)
    assert changed.status_code == 200, changed.text


def _send(payer: Customer, to: str, amount: int, **extra: Any) -> str:
    """Transfer with two kinds of factor (signature and password), past the one-kind limit."""
    key = payer.key()
    factors = [payer.signature("transfer", key, to, amount), payer.password()]
    sent = payer.transfer(to, amount, key=key, factors=factors, **extra)
    assert sent.status_code == 201, sent.text
    return str(sent.json()["id"])


def _top_up(customer: Customer, amount: int) -> str:
    done = customer.top_up(amount)
    assert done.status_code == 201, done.text
    return str(done.json()["id"])


def _large_value(client: Client, staff: StaffLogin, day: str = DAY) -> dict[str, Any]:
    got = client.get("/v1/aml/reports/large-value", params={"date": day}, headers=staff.headers)
    assert got.status_code == 200, got.text
    return dict(got.json())


def _entries(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["customer"]["id"], e["direction"]): e for e in report["entries"]}


def _ids(entry: dict[str, Any]) -> list[str]:
    return [t["id"] for t in entry["transactions"]]


def _csv(body: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body)))


# ----------------------------------------------------------------------------- large value


def test_large_value_counts_inflows_and_outflows_separately_single_or_cumulative(
    *, client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    lead: StaffLogin, officer: StaffLogin,
) -> None:  # fmt: skip
    """L1: a cumulative outflow over the threshold is reported, a near miss is not."""
    _thresholds(client, lead, individual_domestic=1_000 * CNY)
    a = onboard(client, app, clock)
    b = onboard(client, app, clock)
    c = onboard(client, app, clock)
    d = onboard(client, app, clock)
    e = onboard(client, app, clock)
    a_in = _top_up(a, 1_200 * CNY)  # one inflow over the threshold: single
    a_out = [
        _send(a, b.account, 400 * CNY),
        _send(a, b.account, 350 * CNY),
        _send(a, c.account, 300 * CNY),
    ]  # 1,050 out in three transfers, each under the threshold: cumulative
    _top_up(d, 999 * CNY)  # near miss in
    _send(d, e.account, 500 * CNY)
    _send(d, e.account, 499 * CNY)  # near miss out (999), and e's inflow (999) too
    _next_day(runtime, clock, officer)  # the next day belongs to the next report
    _send(a, b.account, 100 * CNY)

    # Monitoring has not run (no delivery): the report reads the transaction records.
    report = _large_value(client, officer)
    assert report["kind"] == "large_value"
    assert report["date"] == DAY
    assert report["timezone"] == "Asia/Shanghai"
    assert report["thresholds"]["individual_domestic"] == 1_000 * CNY
    entries = _entries(report)
    assert set(entries) == {(a.id, "in"), (a.id, "out")}  # b (750 in), c, d, e: below
    inflow, outflow = entries[(a.id, "in")], entries[(a.id, "out")]
    assert (inflow["total"], inflow["count"], _ids(inflow)) == (1_200 * CNY, 1, [a_in])
    assert (outflow["category"], outflow["threshold"]) == ("domestic", 1_000 * CNY)
    assert (outflow["total"], outflow["count"]) == (1_050 * CNY, 3)
    assert sorted(_ids(outflow)) == sorted(a_out)
    # The customer as the alert detail shows it (masked); each transaction with every field
    # of its record, as GET /v1/transactions/{id} shows it to the role.
    assert outflow["customer"]["name"] == mask_name(str(a.body["name"]))
    for txn in outflow["transactions"]:
        shown = client.get(f"/v1/transactions/{txn['id']}", headers=officer.headers)
        assert txn == shown.json()
    assert set(outflow["transactions"][0]) == set(TransactionOut.__struct_fields__)

    # The alerts, once monitoring catches up, name the same customers and transactions.
    assert deliver(runtime) > 0
    alerts = client.get(
        "/v1/aml/alerts", params={"rule": "large_value"}, headers=officer.headers
    ).json()["items"]
    found = {(x["customer_id"], x["pattern"]) for x in alerts if x["pattern"].split(":")[1] == DAY}
    assert found == {(a.id, f"in:{DAY}:domestic"), (a.id, f"out:{DAY}:domestic")}


def test_large_value_is_the_same_whatever_the_batch_it_streams_the_day_in(
    *, client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    lead: StaffLogin,
) -> None:  # fmt: skip
    """The tallies carry across the partitions of the day's records."""
    _thresholds(client, lead, individual_domestic=1_000 * CNY)
    payer = onboard(client, app, clock)
    payee = onboard(client, app, clock)
    _top_up(payer, 1_100 * CNY)
    for amount in (300, 250, 200, 150, 120, 80):
        _send(payer, payee.account, amount * CNY)
    policy = runtime.monitoring_policy

    def report(batch: int) -> reports.LargeValueReport:
        return runtime.db.run(
            lambda s: reports.large_value_report(
                s, date(2026, 11, 22), tz=policy.tz, home_country=policy.home_country,
                vault=runtime.vault, batch=batch,
            ),
            read_only=True,
        )  # fmt: skip

    whole, pieces = report(1_000), report(2)
    assert reports.canonical(pieces) == reports.canonical(whole)
    assert [(e.customer.id, e.direction, e.total) for e in whole.entries] == sorted(
        [(payer.id, "in", 1_100 * CNY), (payer.id, "out", 1_100 * CNY),
         (payee.id, "in", 1_100 * CNY)]
    )  # fmt: skip


def test_large_value_applies_the_corporate_threshold_to_companies(
    *, client: Client, clock: ManualClock, app: dict[str, str], lead: StaffLogin,
    officer: StaffLogin,
) -> None:  # fmt: skip
    """L1: a non-natural person's threshold is its own; the report follows the rule's params."""
    _thresholds(client, lead, individual_domestic=1_000 * CNY, corporate=5_000 * CNY)
    company = onboard(client, app, clock, account_class="corporate", corporate=True)
    person = onboard(client, app, clock)
    _top_up(company, 3_000 * CNY)
    _top_up(person, 3_000 * CNY)

    entries = _entries(_large_value(client, officer))
    assert set(entries) == {(person.id, "in")}  # 3,000: over the individual's, under the company's

    _thresholds(client, lead, corporate=2_500 * CNY)
    report = _large_value(client, officer)
    entries = _entries(report)
    assert set(entries) == {(person.id, "in"), (company.id, "in")}
    assert (entries[(company.id, "in")]["category"], report["rule_version"]) == ("transfers", 3)
    assert entries[(company.id, "in")]["customer"]["name"] == company.body["name"]  # public


def test_large_value_has_its_own_cross_border_threshold(
    *, client: Client, clock: ManualClock, app: dict[str, str], lead: StaffLogin,
    officer: StaffLogin,
) -> None:  # fmt: skip
    """L1: a natural person's cross-border transfers count against the lower threshold."""
    _thresholds(client, lead, individual_domestic=1_000 * CNY, individual_cross_border=500 * CNY)
    payer = onboard(client, app, clock)
    payee = onboard(client, app, clock)
    _top_up(payer, 900 * CNY)
    sent = _send(payer, payee.account, 600 * CNY, channel="cross_border")

    entries = _entries(_large_value(client, officer))
    assert set(entries) == {(payer.id, "out"), (payee.id, "in")}
    assert entries[(payer.id, "out")]["category"] == "cross_border"
    assert _ids(entries[(payee.id, "in")]) == [sent]


def _withdraw(customer: Customer, card: str, amount: int) -> str:
    key = customer.key()
    factors = [customer.signature("withdrawal", key, card, amount)]
    done = customer.client.post(
        "/v1/withdrawals",
        json={
            "account_id": customer.account, "bank_card_id": card, "amount": amount,
            "authentication": {"factors": factors},
        },
        headers=customer.headers(key),
    )  # fmt: skip
    assert done.status_code == 201, done.text
    return str(done.json()["id"])


def test_large_value_counts_a_pending_withdrawal_but_not_one_the_bank_returned(
    *, client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    lead: StaffLogin, officer: StaffLogin,
) -> None:  # fmt: skip
    """L1: a withdrawal debits at once (counted while pending); a returned one moved nothing."""
    _thresholds(client, lead, individual_domestic=1_000 * CNY)
    customer = onboard(client, app, clock)
    _top_up(customer, 1_200 * CNY)
    bound = client.post(
        f"/v1/customers/{customer.id}/bank-cards",
        json={
            "card_number": card_ending("2"),  # the sandbox bank rejects payouts to it
            "holder_name": customer.body["name"],
            "bank_name": "中国工商银行",
            "holder_id_number": customer.body["id_number"],
        },
        headers=app,
    )
    assert bound.status_code == 201, bound.text
    returned = _withdraw(customer, str(bound.json()["id"]), 600 * CNY)
    paid = _withdraw(customer, customer.card, 500 * CNY)

    outflow = _entries(_large_value(client, officer))[(customer.id, "out")]
    assert sorted(_ids(outflow)) == sorted([returned, paid])

    deliver(runtime)  # the payouts: one rejected (the money comes back), one paid
    record = client.get(f"/v1/transactions/{returned}", headers=officer.headers).json()
    assert record["status"] == "failed"
    assert (customer.id, "out") not in _entries(_large_value(client, officer))


def test_large_value_csv_has_a_stable_header_and_one_row_per_transaction(
    *, client: Client, clock: ManualClock, app: dict[str, str], lead: StaffLogin,
    auditor: StaffLogin,
) -> None:  # fmt: skip
    """CSV on ``Accept: text/csv``: the documented header, one row per transaction."""
    _thresholds(client, lead, individual_domestic=1_000 * CNY)
    payer = onboard(client, app, clock)
    payee = onboard(client, app, clock)
    _top_up(payer, 1_100 * CNY)
    first = _send(payer, payee.account, 600 * CNY)
    second = _send(payer, payee.account, 500 * CNY)

    got = client.get(
        "/v1/aml/reports/large-value",
        params={"date": DAY},
        headers={**auditor.headers, "Accept": "text/csv"},
    )
    assert got.status_code == 200, got.text
    assert got.headers["content-type"].startswith("text/csv")
    header, *rows = _csv(got.text)
    assert tuple(header) == reports.CSV_HEADERS["large_value"]
    assert header[:4] == ["report_kind", "date", "customer_id", "customer_type"]
    by_txn = {r[header.index("transaction_id")]: dict(zip(header, r, strict=True)) for r in rows}
    # payer: in (top-up) and out (two transfers); payee: in (the same two transfers)
    assert len(rows) == 5
    row = next(r for r in rows if r[header.index("transaction_id")] == second and r[5] == "out")
    record = dict(zip(header, row, strict=True))
    assert (record["customer_id"], record["total"], record["count"]) == (
        payer.id, str(1_100 * CNY), "2",
    )  # fmt: skip
    assert (record["amount"], record["payer_name"]) == (str(500 * CNY), payer.body["name"])
    assert record["payee_account"] == payee.account
    assert record["customer_name"] == mask_name(str(payer.body["name"]))
    assert first in by_txn


def test_every_field_of_the_transaction_record_has_a_csv_column() -> None:
    """B2: the CSV flattens every field of the record, none left out."""
    columns = set(reports.RECORD_COLUMNS)
    for name in TransactionOut.__struct_fields__:
        flat = "transaction_id" if name == "id" else name
        assert any(c == flat or c.startswith(f"{flat}_") for c in columns), name


def test_the_openapi_schema_describes_the_report_documents(client: Client) -> None:
    """Clients code against the schema: each report answer names its document."""
    paths = client.get("/schema/openapi.json").json()["paths"]
    for path, document in (
        ("/v1/aml/reports/large-value", "LargeValueReport"),
        ("/v1/aml/reports/suspicious", "SuspiciousReport"),
        ("/v1/aml/reports/filed/{report_id}", "FiledReportDoc"),
    ):
        answer = paths[path]["get"]["responses"]["200"]["content"]["application/json"]
        assert answer["schema"]["$ref"].endswith(f"/{document}"), path


def test_an_empty_day_is_an_empty_report_and_csv_keeps_its_header(
    client: Client, officer: StaffLogin
) -> None:
    """A day without large values: no entries; the CSV is the header alone."""
    assert _large_value(client, officer, "2026-01-01")["entries"] == []
    got = client.get(
        "/v1/aml/reports/large-value",
        params={"date": "2026-01-01"},
        headers={**officer.headers, "Accept": "text/csv"},
    )
    assert _csv(got.text) == [list(reports.CSV_HEADERS["large_value"])]


# ----------------------------------------------------------------------------- suspicious


def _alert_of(client: Client, staff: StaffLogin, customer_id: str, pattern: str) -> str:
    items = client.get(
        "/v1/aml/alerts", params={"customer_id": customer_id}, headers=staff.headers
    ).json()["items"]
    return str(next(a["id"] for a in items if a["pattern"].startswith(pattern)))


def _decide(client: Client, staff: StaffLogin, alert_id: str, decision: str, reason: str) -> None:
    assigned = client.post(
        f"/v1/aml/alerts/{alert_id}/assign", json={"assignee": staff.username},
        headers=staff.headers,
    )  # fmt: skip
    assert assigned.status_code == 200, assigned.text
    done = client.post(
        f"/v1/aml/alerts/{alert_id}/decision",
        json={"decision": decision, "reason": reason},
        headers=staff.headers,
    )
    assert done.status_code == 200, done.text


def test_suspicious_report_lists_the_cases_reported_with_their_transactions(
    *, client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    lead: StaffLogin, officer: StaffLogin,
) -> None:  # fmt: skip
    """L2: one report per case decided ``report``; alerts closed otherwise are left out."""
    _thresholds(client, lead, individual_domestic=500 * CNY)
    suspect = onboard(client, app, clock)
    cleared = onboard(client, app, clock)
    payee = onboard(client, app, clock)
    top_up = _top_up(suspect, 900 * CNY)
    sent = _send(suspect, payee.account, 800 * CNY)
    _top_up(cleared, 900 * CNY)
    assert deliver(runtime) > 0

    reported = _alert_of(client, officer, suspect.id, "out:")
    _decide(client, officer, reported, "report", "资金快进快出，与客户身份不符")
    # The same case's inflow alert, closed as a false positive: not in the report.
    _decide(
        client, officer, _alert_of(client, officer, suspect.id, "in:"), "false_positive", "工资"
    )
    _decide(client, officer, _alert_of(client, officer, cleared.id, "in:"), "false_positive", "ok")

    got = client.get(
        "/v1/aml/reports/suspicious", params={"from": DAY, "to": DAY}, headers=officer.headers
    )
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["kind"], body["from"], body["to"]) == ("suspicious", DAY, DAY)
    [case] = body["reports"]
    assert case["customer"]["id"] == suspect.id
    assert case["customer"]["name"] == mask_name(str(suspect.body["name"]))
    [alert] = case["alerts"]
    assert alert["id"] == reported
    assert (alert["rule"], alert["rule_version"]) == ("large_value", 2)
    assert alert["params"]["individual_domestic"] == 500 * CNY
    assert alert["score"] > 0
    assert alert["decision"]["decision"] == "report"
    assert alert["decision"]["reason"] == "资金快进快出，与客户身份不符"
    assert alert["decision"]["decided_by"].endswith(officer.id)
    assert [t["id"] for t in case["transactions"]] == [sent]  # not the top-up's
    assert top_up not in alert["transaction_ids"]
    shown = client.get(f"/v1/transactions/{sent}", headers=officer.headers).json()
    assert case["transactions"][0] == shown

    as_csv = client.get(
        "/v1/aml/reports/suspicious",
        params={"from": DAY, "to": DAY},
        headers={**officer.headers, "Accept": "text/csv"},
    )
    header, *rows = _csv(as_csv.text)
    assert tuple(header) == reports.CSV_HEADERS["suspicious"]
    [row] = [dict(zip(header, r, strict=True)) for r in rows]
    assert (row["case_id"], row["alert_ids"], row["transaction_id"]) == (
        case["case_id"], reported, sent,
    )  # fmt: skip

    # Another period: nothing reported then.
    other = client.get(
        "/v1/aml/reports/suspicious",
        params={"from": "2026-11-23", "to": "2026-11-30"},
        headers=officer.headers,
    )
    assert other.json()["reports"] == []

    # Filed once the day is over: the same content, its digest reproducible by any client.
    _next_day(runtime, clock, officer)
    filed = _file(client, officer, {"kind": "suspicious", "from": DAY, "to": DAY}).json()
    assert filed["counts"] == {"cases": 1, "alerts": 1, "transactions": 1}
    content = client.get(f"/v1/aml/reports/filed/{filed['id']}", headers=officer.headers).json()[
        "content"
    ]
    assert content == body
    assert _canonical_sha256(content) == filed["sha256"]


def test_a_reported_case_without_transactions_keeps_its_csv_row(
    *, client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    officer: StaffLogin,
) -> None:  # fmt: skip
    """L2, L3: a reported watchlist hit has no transactions; the CSV still names the case."""
    listed = onboard(client, app, clock)
    ctx = Context(SYSTEM, clock.now())
    runtime.db.run(
        lambda s: monitoring.screening_hit(
            s, listed.id, "hit_test", 92, policy=runtime.monitoring_policy, ctx=ctx,
            ids=runtime.ids,
        )
    )  # fmt: skip
    alert = _alert_of(client, officer, listed.id, "hit:")
    _decide(client, officer, alert, "report", "名单命中，已核实")

    got = client.get(
        "/v1/aml/reports/suspicious",
        params={"from": DAY, "to": DAY},
        headers={**officer.headers, "Accept": "text/csv"},
    )
    header, row = _csv(got.text)
    record = dict(zip(header, row, strict=True))
    assert (record["customer_id"], record["alert_ids"], record["rules"]) == (
        listed.id, alert, "watchlist@1",
    )  # fmt: skip
    assert record["transaction_id"] == ""


# ------------------------------------------------------------------------------- filing


def _file(client: Client, staff: StaffLogin, body: dict[str, str], **headers: str) -> Any:
    return client.post("/v1/aml/reports", json=body, headers={**staff.headers, **headers})


def _canonical_sha256(content: Any) -> str:
    encoded = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


def test_filing_freezes_the_report_with_its_digest_and_audits_it(
    *, client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    lead: StaffLogin, officer: StaffLogin, auditor: StaffLogin,
) -> None:  # fmt: skip
    """A filed report is an audited record; its digest is the SHA-256 of its content."""
    _thresholds(client, lead, individual_domestic=1_000 * CNY)
    customer = onboard(client, app, clock)
    _top_up(customer, 1_500 * CNY)
    refused = _file(client, officer, {"kind": "large_value", "date": DAY})
    assert (refused.status_code, refused.json()["code"]) == (409, "period_not_over")

    _next_day(runtime, clock, officer, auditor)
    preview = client.get(
        "/v1/aml/reports/large-value", params={"date": DAY}, headers=officer.headers
    )
    filed = _file(
        client, officer, {"kind": "large_value", "date": DAY}, **{"Idempotency-Key": "f1"}
    )
    assert filed.status_code == 201, filed.text
    meta = filed.json()
    assert meta["kind"] == "large_value"
    assert meta["period"] == {"from": DAY, "to": DAY, "timezone": "Asia/Shanghai"}
    assert meta["counts"] == {"customers": 1, "entries": 1, "transactions": 1}
    assert meta["filed_by"].endswith(officer.id)
    # The preview answers the canonical content: same data, same digest.
    assert meta["sha256"] == hashlib.sha256(preview.content).hexdigest()

    again = _file(
        client, officer, {"kind": "large_value", "date": DAY}, **{"Idempotency-Key": "f1"}
    )
    assert (again.status_code, again.json()) == (201, meta)
    assert again.headers["idempotent-replayed"] == "true"

    got = client.get(f"/v1/aml/reports/filed/{meta['id']}", headers=auditor.headers)
    assert got.status_code == 200, got.text
    detail = got.json()
    assert {k: v for k, v in detail.items() if k != "content"} == meta
    assert _canonical_sha256(detail["content"]) == meta["sha256"]
    assert detail["content"] == preview.json()
    listed = client.get("/v1/aml/reports/filed", headers=auditor.headers).json()["items"]
    assert listed == [meta]
    other_kind = client.get(
        "/v1/aml/reports/filed", params={"kind": "suspicious"}, headers=auditor.headers
    )
    assert other_kind.json()["items"] == []
    unknown = client.get("/v1/aml/reports/filed", params={"kind": "x"}, headers=auditor.headers)
    assert (unknown.status_code, unknown.json()["code"]) == (422, "validation_failed")

    as_csv = client.get(
        f"/v1/aml/reports/filed/{meta['id']}", headers={**auditor.headers, "Accept": "text/csv"}
    )
    header, row = _csv(as_csv.text)
    assert tuple(header) == reports.CSV_HEADERS["large_value"]
    assert row[header.index("customer_id")] == customer.id

    assert audit_actions(runtime, meta["id"]) == ["aml:report:filed"]
    # The content names people: sealed in the vault, never in the row in clear.
    blob = runtime.db.run(
        lambda s: s.execute(
            text("SELECT content_enc FROM regulatory_reports WHERE id = :id"), {"id": meta["id"]}
        ).scalar_one(),
        read_only=True,
    )
    assert str(customer.body["name"]).encode() not in bytes(blob)
    assert customer.id.encode() not in bytes(blob)


def test_an_empty_report_is_filed_too(
    client: Client, runtime: Runtime, clock: ManualClock, officer: StaffLogin
) -> None:
    """Nothing to report is a fact: a nil suspicious report is filed with zero counts."""
    _next_day(runtime, clock, officer, days=2)
    filed = _file(client, officer, {"kind": "suspicious", "from": "2026-11-01", "to": DAY})
    assert filed.status_code == 201, filed.text
    assert filed.json()["counts"] == {"cases": 0, "alerts": 0, "transactions": 0}
    got = client.get(f"/v1/aml/reports/filed/{filed.json()['id']}", headers=officer.headers)
    assert got.json()["content"]["reports"] == []
    assert _canonical_sha256(got.json()["content"]) == filed.json()["sha256"]

    clock.advance(timedelta(seconds=1))
    second = _file(client, officer, {"kind": "large_value", "date": DAY}).json()
    page = client.get("/v1/aml/reports/filed", params={"limit": 1}, headers=officer.headers)
    assert [r["id"] for r in page.json()["items"]] == [second["id"]]  # newest first
    rest = client.get(
        "/v1/aml/reports/filed",
        params={"limit": 1, "cursor": page.json()["next_cursor"]},
        headers=officer.headers,
    ).json()
    assert ([r["id"] for r in rest["items"]], rest["next_cursor"]) == ([filed.json()["id"]], None)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE regulatory_reports SET content_sha256 = :zeros WHERE id = :id",
        "UPDATE regulatory_reports SET counts = '{}' WHERE id = :id",
        "UPDATE regulatory_reports SET filed_by = 'someone' WHERE id = :id",
        "UPDATE regulatory_reports SET period_to = period_from WHERE id = :id",
        "DELETE FROM regulatory_reports WHERE id = :id",
    ],
)
def test_a_filed_report_cannot_be_changed_or_removed_in_sql(
    client: Client, runtime: Runtime, clock: ManualClock, officer: StaffLogin, statement: str
) -> None:
    """The database refuses, whatever goes around the service (triggers on both backends)."""
    _next_day(runtime, clock, officer)
    filed = _file(client, officer, {"kind": "large_value", "date": DAY}).json()
    with pytest.raises(DBAPIError, match="append-only"):
        runtime.db.run(lambda s: s.execute(text(statement), {"id": filed["id"], "zeros": "0" * 64}))


def test_a_changed_blob_fails_its_digest_and_is_not_served(
    client: Client, runtime: Runtime, clock: ManualClock, officer: StaffLogin
) -> None:
    """Only re-encryption may touch the blob; other content is caught by the digest on read."""
    _next_day(runtime, clock, officer)
    filed = _file(client, officer, {"kind": "large_value", "date": DAY}).json()
    forged = runtime.vault.encrypt(
        '{"entries":[]}', table="regulatory_reports", column="content_enc", row_id=filed["id"]
    )
    runtime.db.run(
        lambda s: s.execute(
            text("UPDATE regulatory_reports SET content_enc = :b WHERE id = :id"),
            {"b": forged, "id": filed["id"]},
        )
    )
    got = client.get(f"/v1/aml/reports/filed/{filed['id']}", headers=officer.headers)
    assert (got.status_code, got.json()["code"]) == (500, "internal_error")


def test_a_filed_report_moves_to_a_new_key_and_still_proves_its_content(
    *, client: Client, runtime: Runtime, clock: ManualClock, officer: StaffLogin,
    settings: Settings, keys: KeyFile,
) -> None:  # fmt: skip
    """K5: ``keys reencrypt`` may re-seal the blob (the trigger allows it); the digest holds."""
    _next_day(runtime, clock, officer)
    filed = _file(client, officer, {"kind": "suspicious", "from": DAY, "to": DAY}).json()
    rotated = Runtime(
        settings=settings, db=runtime.db, keys=rotate(keys, KeyPurpose.PII), clock=clock
    )
    spec = next(s for s in pii_schema().encrypted if s.table == "regulatory_reports")
    _, changed = run_batches(
        runtime.db,
        lambda s, after: reencrypt_batch(s, rotated.vault, spec, after=after, limit=10),
    )
    assert changed == 1
    reread = runtime.db.run(
        lambda s: reports.filed_report(s, filed["id"], vault=rotated.vault), read_only=True
    )
    assert key_id_of(reread.report.content_enc) == rotated.vault.primary_key_id
    assert reports.digest_of(reread.content) == filed["sha256"]


def test_reports_put_no_personal_data_in_the_logs(
    *, client: Client, runtime: Runtime, clock: ManualClock, app: dict[str, str],
    lead: StaffLogin, officer: StaffLogin, logging_restored: None,
) -> None:  # fmt: skip
    """K5: names reach the report, never the log (requests, filing, a refused corrupt read)."""
    _thresholds(client, lead, individual_domestic=500 * CNY)
    payer = onboard(client, app, clock, name="欧阳娜娜")
    payee = onboard(client, app, clock, name="司马相如")
    _top_up(payer, 900 * CNY)
    _send(payer, payee.account, 600 * CNY)
    _next_day(runtime, clock, officer)
    log = io.StringIO()
    configure_logging(load_settings({}, log_format="json"), stream=log)

    for accept in ("application/json", "text/csv"):
        got = client.get(
            "/v1/aml/reports/large-value",
            params={"date": DAY},
            headers={**officer.headers, "Accept": accept},
        )
        assert "司马相如" in got.text
    filed = _file(client, officer, {"kind": "large_value", "date": DAY}).json()
    assert client.get(f"/v1/aml/reports/filed/{filed['id']}", headers=officer.headers).is_success
    forged = runtime.vault.encrypt(
        '{"note":"欧阳娜娜"}', table="regulatory_reports", column="content_enc", row_id=filed["id"]
    )
    runtime.db.run(
        lambda s: s.execute(
            text("UPDATE regulatory_reports SET content_enc = :b WHERE id = :id"),
            {"b": forged, "id": filed["id"]},
        )
    )
    refused = client.get(f"/v1/aml/reports/filed/{filed['id']}", headers=officer.headers)
    assert refused.status_code == 500

    logged = log.getvalue()
    assert filed["id"] in logged  # the corrupt report is named ...
    for name in ("欧阳娜娜", "司马相如", "欧", "司马"):
        assert name not in logged  # ... and nobody in it


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("large-value", {"date": "2026-13-01"}, "invalid_date"),
        ("large-value", {"date": "20261122"}, "invalid_date"),
        ("large-value", {}, "validation_failed"),
        ("suspicious", {"from": "2026-11-22", "to": "2026-11-21"}, "invalid_period"),
        ("suspicious", {"from": "2025-01-01", "to": "2026-11-22"}, "period_too_long"),
        ("suspicious", {"from": "2026-11-22", "to": "tomorrow"}, "invalid_date"),
    ],
)
def test_bad_report_parameters_are_refused_with_a_stable_code(
    client: Client, officer: StaffLogin, path: str, params: dict[str, str], code: str
) -> None:
    """422 problem+json with a code a client can act on."""
    got = client.get(f"/v1/aml/reports/{path}", params=params, headers=officer.headers)
    assert got.status_code == 422, got.text
    assert got.headers["content-type"].startswith("application/problem+json")
    assert got.json()["code"] == code


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"kind": "large_value"}, "validation_failed"),
        ({"kind": "large_value", "date": DAY, "to": DAY}, "validation_failed"),
        ({"kind": "suspicious", "from": DAY}, "validation_failed"),
        ({"kind": "suspicious", "from": "2026-11-22", "to": "2026-11-02"}, "invalid_period"),
        ({"kind": "large_value", "date": "2026-02-30"}, "invalid_date"),
        ({"kind": "weekly", "date": DAY}, "validation_failed"),
    ],
)
def test_bad_filings_are_refused(
    client: Client, officer: StaffLogin, body: dict[str, str], code: str
) -> None:
    """A filing names its kind and exactly the dates that kind needs."""
    refused = _file(client, officer, body)
    assert (refused.status_code, refused.json()["code"]) == (422, code)


def test_reports_are_for_compliance_and_auditors_only(
    client: Client, runtime: Runtime, clock: ManualClock, auditor: StaffLogin
) -> None:
    """Admins (IT), apps and merchants never see reports; auditors read but do not file."""
    _next_day(runtime, clock, auditor)
    outsiders = {
        "admin": make_staff(runtime, Role.ADMIN).headers,
        "merchant": bearer(make_client(runtime, Role.MERCHANT).key),
        "app": bearer(make_client(runtime, Role.ONBOARDING_APP).key),
    }
    reads = [
        ("/v1/aml/reports/large-value", {"date": DAY}),
        ("/v1/aml/reports/suspicious", {"from": DAY, "to": DAY}),
        ("/v1/aml/reports/filed", {}),
    ]
    for who, headers in outsiders.items():
        for path, params in reads:
            got = client.get(path, params=params, headers=headers)
            assert (got.status_code, got.json()["code"]) == (403, "forbidden"), (who, path)
        filed = client.post(
            "/v1/aml/reports", json={"kind": "large_value", "date": DAY}, headers=headers
        )
        assert filed.status_code == 403, who
    for path, params in reads:
        assert client.get(path, params=params, headers=auditor.headers).status_code == 200
    by_auditor = _file(client, auditor, {"kind": "large_value", "date": DAY})
    assert (by_auditor.status_code, by_auditor.json()["code"]) == (403, "forbidden")
