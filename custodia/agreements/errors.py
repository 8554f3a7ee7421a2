"""Refusals of the agreements package; each carries what the caller needs to act on it."""

from __future__ import annotations

from datetime import datetime

from custodia.core.errors import DomainError, ErrorKind, FieldProblem, InvalidFields
from custodia.core.rules import article

__all__ = [
    "AgreementError",
    "AgreementNotPublished",
    "AgreementPublished",
    "AgreementSuperseded",
    "AgreementVersionExists",
    "ConsentRequired",
    "EffectiveDateTooEarly",
    "FieldProblem",
    "InvalidAgreement",
    "MandatoryClauseMissing",
    "RiskWarningRequired",
    "VerificationRequired",
]


class AgreementError(DomainError):
    """Base of the agreements package's refusals."""


class InvalidAgreement(InvalidFields, AgreementError):
    """A request about agreements, consents or warnings with bad fields; each is listed."""


class AgreementVersionExists(AgreementError):
    """This kind, version and locale exist already: a text is never replaced in place."""

    code = "agreement_version_exists"
    kind = ErrorKind.CONFLICT
    title = "Agreement version exists"

    def __init__(self, kind: str, version: str, locale: str) -> None:
        super().__init__(
            f"{kind} version {version} ({locale}) exists already; give the new text a new version.",
            kind=kind,
            version=version,
            locale=locale,
        )


class AgreementPublished(AgreementError):
    """A published agreement is frozen: it cannot be edited or published again."""

    code = "agreement_published"
    kind = ErrorKind.CONFLICT
    title = "Agreement already published"

    def __init__(self, agreement_id: str) -> None:
        super().__init__(
            f"Agreement {agreement_id} is published and can no longer change; draft a new "
            "version instead.",
            agreement_id=agreement_id,
        )


class MandatoryClauseMissing(AgreementError):
    """The agreement lacks clauses the regulation requires (A1, A2, Art. 7)."""

    code = "mandatory_clause_missing"
    kind = ErrorKind.INVALID
    title = "Mandatory clause missing"

    def __init__(self, agreement_kind: str, missing: list[str]) -> None:
        super().__init__(
            f"A {agreement_kind} agreement must set out every mandatory clause; missing: "
            f"{', '.join(missing)}.",
            missing=missing,
            rule="mandatory_clauses",
            regulation="A1",
            article=article("A1"),
        )


class EffectiveDateTooEarly(AgreementError):
    """A version would take effect before the notice period ends (A3) or before its predecessor."""

    code = "effective_date_too_early"
    kind = ErrorKind.INVALID
    title = "Effective date too early"

    def __init__(self, effective_at: datetime, earliest: datetime, *, notice_days: int) -> None:
        super().__init__(
            f"This version cannot take effect at {effective_at.isoformat()}: changed terms take "
            f"effect at least {notice_days} days after they are published, after the version "
            f"before them, and never in the past. Earliest: {earliest.isoformat()}.",
            effective_at=effective_at.isoformat(),
            earliest_effective_at=earliest.isoformat(),
            notice_days=notice_days,
            rule="change_notice_period",
            regulation="A3",
            article=article("A3"),
        )


class AgreementNotPublished(AgreementError):
    """A draft cannot be shown to customers or consented to."""

    code = "agreement_not_published"
    kind = ErrorKind.CONFLICT
    title = "Agreement not published"

    def __init__(self, agreement_id: str) -> None:
        super().__init__(
            f"Agreement {agreement_id} is a draft; customers consent to published versions only.",
            agreement_id=agreement_id,
        )


class AgreementSuperseded(AgreementError):
    """A newer version of the agreement is in force: consent to that one."""

    code = "agreement_superseded"
    kind = ErrorKind.CONFLICT
    title = "Agreement superseded"

    def __init__(self, agreement_id: str, current_id: str) -> None:
        super().__init__(
            f"Agreement {agreement_id} has been superseded by {current_id}; show the customer "
            "the current version.",
            agreement_id=agreement_id,
            current_agreement_id=current_id,
        )


class VerificationRequired(AgreementError):
    """The agreement asks the customer to confirm with a factor that was not given."""

    code = "verification_required"
    kind = ErrorKind.INVALID
    title = "Consent needs the customer's confirmation"

    def __init__(self, required: str) -> None:
        super().__init__(
            f"Consent to this agreement must be confirmed with a {required} factor in "
            "authentication.factors.",
            required=required,
        )


class ConsentRequired(AgreementError):
    """The customer has not accepted the agreement in force (API.md: 409 ``consent_required``)."""

    code = "consent_required"
    kind = ErrorKind.CONFLICT
    title = "Consent required"

    def __init__(self, customer_id: str, agreement_kind: str, agreement_id: str | None) -> None:
        super().__init__(
            f"Customer {customer_id} has not accepted the {agreement_kind} agreement in force; "
            "show it and record the customer's consent first.",
            customer_id=customer_id,
            agreement_kind=agreement_kind,
            agreement_id=agreement_id,
            rule="consent_to_terms_in_force",
            regulation="A3",
            article=article("A3"),
        )


class RiskWarningRequired(AgreementError):
    """A high-risk operation needs an acknowledged risk warning first (A4)."""

    code = "risk_warning_required"
    kind = ErrorKind.CONFLICT
    title = "Risk warning required"

    def __init__(self, customer_id: str, operation: str, warning_kind: str) -> None:
        super().__init__(
            f"Before {operation}, show customer {customer_id} the {warning_kind} risk warning "
            "and record the acknowledgement.",
            customer_id=customer_id,
            operation=operation,
            warning_kind=warning_kind,
            rule="risk_warning_before_operation",
            regulation="A4",
            article=article("A4"),
        )
