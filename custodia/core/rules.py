"""The one table of the rules Custodia enforces and the articles they come from.

REGULATION.md asks that article references be data, not strings scattered through the code:
article numbers differ between published copies (those marked ≈). A refusal on regulatory
grounds names its rule by code (``A3``) and takes the article from here, so that a
correction is made once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of REGULATION.md: its code, the article it comes from, what it says."""

    code: str
    article: str
    summary: str


RULES: dict[str, Rule] = {
    rule.code: rule
    for rule in (
        Rule("R1", "Art. 6", "real-name management, unique customer id, no anonymous accounts"),
        Rule("R2", "Art. 6", "identity data of individuals and corporates"),
        Rule("R3", "Art. 10", "corporate verification: face to face or three channels"),
        Rule("R4", "Art. 9", "no payment accounts for financial institutions"),
        Rule("R5", "Art. 11", "payment account classes I, II, III and their limits"),
        Rule("R6", "Art. 11", "the yearly limit window"),
        Rule("R7", "Art. 12", "bank and payment account transfers only for the same customer"),
        Rule("A1", "Art. 7", "the content a service agreement must set out"),
        Rule("A2", "Art. 7", "prominent disclosure: the balance is not a bank deposit"),
        Rule("A3", "Art. 7", "30 days' notice of changed terms; confirmation or termination"),
        Rule("A4", "Art. 24", "risk warnings before high-risk operations"),
        Rule("B1", "Art. 3", "a payment account cannot be overdrawn, lent, rented or sold"),
        Rule("B2", "Art. 20", "transaction records true, complete, traceable"),
        Rule("B3", "Art. 21", "refunds to the original debit account"),
        Rule("B4", "Art. 22", "identity and intent confirmed; records kept"),
        Rule("K1", "Art. 23", "customer risk rating"),
        Rule("K2", "Art. 23", "transaction monitoring; delay settlement, stop service"),
        Rule("K3", "Art. 25", "verification factors"),
        Rule("K4", "Art. 24", "daily limits by verification strength"),
        Rule("K5", "Art. 25", "customer information protection"),
        Rule("K6", "Art. 27", "confirm, notify, queries, complaints"),
        Rule("K7", "—", "expired documents and re-verification (supervisory practice)"),
    )
}


def article(code: str) -> str:
    """Return the article rule ``code`` comes from (KeyError for an unknown code)."""
    return RULES[code].article
