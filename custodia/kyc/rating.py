"""Customer risk rating by feature analysis (REGULATION.md K1, Art. 23; seed ``002_…``).

Each factor has a weight and scores the customer from 1 (least risk) to 10 (most). The
customer's score is Σ weight × score; divided by the maximum, Σ weight × 10, it gives a
ratio between 0.1 and 1.0, kept as an integer permille. The level follows from configurable
cut-offs. Every factor's weight and score is kept with the rating, so that an officer can
see exactly why a customer is rated as they are (``GET /v1/customers/{id}/risk``).

The model is data: ``CUSTODIA_RISK_MODEL`` (JSON) overrides weights, cut-offs and the
tables for occupations and countries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from custodia.core.errors import ConfigError

FACTORS = (
    "customer_type",
    "verification_strength",
    "occupation",
    "geography",
    "screening_result",
    "document_state",
    "transaction_behaviour",
    "relationship_age",
)


#: The transaction-behaviour score of a customer reported for suspicious transactions (L2);
#: such a customer is high risk whatever else they are (issue 7, :mod:`custodia.aml.feedback`).
REPORTED_BEHAVIOUR = 10


class RiskModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Weights, level cut-offs (permille) and scoring tables."""

    weights: dict[str, int] = msgspec.field(
        default_factory=lambda: {
            "customer_type": 2,
            "verification_strength": 3,
            "occupation": 2,
            "geography": 3,
            "screening_result": 5,
            "document_state": 2,
            "transaction_behaviour": 4,
            "relationship_age": 1,
        }
    )
    medium_from: int = 400
    high_from: int = 600
    #: Occupation keywords (lower-case, any language) and their scores; unknown → 5.
    occupations: dict[str, int] = msgspec.field(
        default_factory=lambda: {
            "student": 2, "学生": 2, "retired": 2, "退休": 2, "teacher": 2, "教师": 2,
            "civil servant": 3, "公务员": 3, "engineer": 3, "工程师": 3, "doctor": 3, "医生": 3,
            "nurse": 3, "护士": 3, "employee": 4, "职员": 4, "farmer": 4, "农民": 4,
            "self-employed": 6, "个体": 6, "real estate": 7, "房地产": 7,
            "jewel": 8, "珠宝": 8, "precious metal": 8, "贵金属": 8, "art dealer": 8,
            "古董": 8, "casino": 9, "gambling": 9, "博彩": 9, "money changer": 9,
            "货币兑换": 9, "pawn": 8, "典当": 8,
        }
    )  # fmt: skip
    #: Nationality / country scores; others → ``default_country``.
    countries: dict[str, int] = msgspec.field(
        default_factory=lambda: {
            # FATF "call for action" jurisdictions (February 2026): highest risk.
            "KP": 10, "IR": 10, "MM": 10,
            # The institution's home market.
            "CN": 2,
        }
    )  # fmt: skip
    default_country: int = 4

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(FACTORS)
        missing = set(FACTORS) - set(self.weights)
        if unknown or missing:
            raise ConfigError(
                f"CUSTODIA_RISK_MODEL: weights must name exactly {', '.join(FACTORS)}"
            )
        if any(w < 0 for w in self.weights.values()) or not any(self.weights.values()):
            raise ConfigError("CUSTODIA_RISK_MODEL: weights are non-negative, not all zero")
        if not 0 < self.medium_from < self.high_from <= 1000:
            raise ConfigError("CUSTODIA_RISK_MODEL: need 0 < medium_from < high_from <= 1000")
        scores = [*self.occupations.values(), *self.countries.values(), self.default_country]
        if any(not 1 <= s <= 10 for s in scores):
            raise ConfigError("CUSTODIA_RISK_MODEL: every score is between 1 and 10")


def load_model(raw: str) -> RiskModel:
    """Return the model from its JSON (the default model when empty); ConfigError if bad."""
    if not raw:
        return RiskModel()
    try:
        return msgspec.json.decode(raw, type=RiskModel)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"CUSTODIA_RISK_MODEL is not a risk model: {exc}") from None


@dataclass(frozen=True, slots=True)
class RatingPolicy:
    """What rating needs besides the model: the document periods (settings)."""

    notice_days: int = 30
    grace_days: int = 30


@dataclass(frozen=True, slots=True)
class RiskInputs:
    """What the rating looks at."""

    corporate: bool
    financial_institution: bool
    external_channels: int
    in_person: bool
    occupation: str | None
    nationality: str | None
    screening_status: str
    document_state: str  # valid, expiring, expired, expired_past_grace
    transaction_behaviour: int | None  # 1–10 from AML monitoring (aml.feedback), or None
    relationship_days: int


@dataclass(frozen=True, slots=True)
class FactorScore:
    """One factor's weight and score."""

    name: str
    weight: int
    score: int


@dataclass(frozen=True, slots=True)
class Rating:
    """A customer's level, score (permille) and the factors behind it."""

    level: str
    score: int
    factors: tuple[FactorScore, ...]

    def as_json(self) -> dict[str, Any]:
        """Return the factors as stored with the customer."""
        return {"factors": [[f.name, f.weight, f.score] for f in self.factors]}


def _verification_score(inputs: RiskInputs) -> int:
    if inputs.in_person:
        return 1
    if inputs.external_channels >= 5:
        return 2
    if inputs.external_channels >= 3:
        return 4
    if inputs.external_channels >= 1:
        return 6
    return 9


def _occupation_score(occupation: str | None, table: Mapping[str, int]) -> int:
    if not occupation:
        return 5
    text = occupation.casefold()
    matches = [score for keyword, score in table.items() if keyword in text]
    return max(matches) if matches else 5


_SCREENING = {"not_screened": 5, "clear": 1, "potential_match": 8, "confirmed_match": 10}
_DOCUMENT = {"valid": 1, "expiring": 4, "expired": 8, "expired_past_grace": 10}


def _relationship_score(days: int) -> int:
    if days < 30:
        return 6
    if days < 365:
        return 4
    return 2


def rate(inputs: RiskInputs, model: RiskModel) -> Rating:
    """Score every factor 1–10 and combine them (see the module docstring)."""
    customer_type = (8 if inputs.financial_institution else 5) if inputs.corporate else 3
    scores = {
        "customer_type": customer_type,
        "verification_strength": _verification_score(inputs),
        "occupation": 5
        if inputs.corporate
        else _occupation_score(inputs.occupation, model.occupations),
        "geography": model.countries.get(inputs.nationality or "", model.default_country),
        "screening_result": _SCREENING[inputs.screening_status],
        "document_state": _DOCUMENT[inputs.document_state],
        "transaction_behaviour": inputs.transaction_behaviour or 3,
        "relationship_age": _relationship_score(inputs.relationship_days),
    }
    factors = tuple(FactorScore(name, model.weights[name], scores[name]) for name in FACTORS)
    total = sum(f.weight * f.score for f in factors)
    maximum = sum(f.weight * 10 for f in factors)
    permille = total * 1000 // maximum
    level = (
        "high"
        if permille >= model.high_from
        else "medium"
        if permille >= model.medium_from
        else "low"
    )
    # A confirmed sanctions match is high risk whatever else the customer is (L3), and so
    # is a customer reported for suspicious transactions (K1, L2).
    if (
        inputs.screening_status == "confirmed_match"
        or inputs.transaction_behaviour == REPORTED_BEHAVIOUR
    ):
        level = "high"
    return Rating(level, permille, factors)
