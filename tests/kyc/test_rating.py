"""Risk rating arithmetic: Σ weight·score / Σ weight·10, levels by cut-offs (REGULATION.md K1)."""

from __future__ import annotations

import pytest

from custodia.core.errors import ConfigError
from custodia.kyc.rating import FACTORS, RiskInputs, RiskModel, load_model, rate

BASE = RiskInputs(
    corporate=False,
    financial_institution=False,
    external_channels=1,
    in_person=False,
    occupation="engineer",
    nationality="CN",
    screening_status="clear",
    document_state="valid",
    transaction_behaviour=None,
    relationship_days=10,
)


def test_the_score_is_the_weighted_sum_over_its_maximum() -> None:
    rating = rate(BASE, RiskModel())
    scores = {f.name: f.score for f in rating.factors}
    # customer type 3, one channel 6, engineer 3, CN 2, clear 1, valid 1, no behaviour yet 3,
    # ten days old 6 — weights 2, 3, 2, 3, 5, 2, 4, 1.
    assert scores == {
        "customer_type": 3,
        "verification_strength": 6,
        "occupation": 3,
        "geography": 2,
        "screening_result": 1,
        "document_state": 1,
        "transaction_behaviour": 3,
        "relationship_age": 6,
    }
    total = 2 * 3 + 3 * 6 + 2 * 3 + 3 * 2 + 5 * 1 + 2 * 1 + 4 * 3 + 1 * 6
    assert rating.score == total * 1000 // (10 * (2 + 3 + 2 + 3 + 5 + 2 + 4 + 1))
    assert rating.score == 277
    assert rating.level == "low"
    assert [f.name for f in rating.factors] == list(FACTORS)


def test_weights_and_cut_offs_come_from_the_model() -> None:
    model = load_model(
        '{"weights": {"customer_type": 1, "verification_strength": 0, "occupation": 0, "geography": 0, "screening_result": 0, "document_state": 0, "transaction_behaviour": 0, "relationship_age": 0}, "medium_from": 200, "high_from": 300}'
    )
    rating = rate(BASE, model)
    assert rating.score == 300  # only customer type counts: 3 / 10
    assert rating.level == "high"


@pytest.mark.parametrize(
    ("change", "level"),
    [
        ({"nationality": "KP", "screening_status": "potential_match"}, "medium"),
        ({"screening_status": "confirmed_match"}, "high"),
        (
            {
                "occupation": "casino cashier",
                "nationality": "IR",
                "external_channels": 0,
                "screening_status": "potential_match",
                "transaction_behaviour": 9,
            },
            "high",
        ),
        ({"in_person": True, "relationship_days": 800, "transaction_behaviour": 1}, "low"),
    ],
)
def test_levels_follow_the_factors(change: dict[str, object], level: str) -> None:
    from dataclasses import replace  # noqa: PLC0415

    assert rate(replace(BASE, **change), RiskModel()).level == level  # type: ignore[arg-type]


def test_a_confirmed_sanctions_match_is_always_high() -> None:
    from dataclasses import replace  # noqa: PLC0415

    rating = rate(replace(BASE, screening_status="confirmed_match", in_person=True), RiskModel())
    assert rating.score < 600
    assert rating.level == "high"


@pytest.mark.parametrize(
    "raw",
    [
        '{"weights": {"customer_type": 1}}',
        '{"medium_from": 700, "high_from": 600}',
        '{"countries": {"CN": 11}}',
        "not json",
    ],
)
def test_bad_models_are_refused(raw: str) -> None:
    with pytest.raises(ConfigError):
        load_model(raw)
