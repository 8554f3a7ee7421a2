"""Agreement templates: drafts, publication, the version in force (REGULATION.md A1–A3).

- A1, A2 (Art. 7): a ``payment_service`` agreement is published only when it sets out every
  mandatory clause (:data:`MANDATORY_CLAUSES`, extendable per kind by configuration); the
  balance-is-not-a-deposit disclosure is always shown prominently.
- A3 (Art. 7, ≈30): a new version of an agreement already in use takes effect no sooner than
  the notice period (30 days by default) after it is published; until then the old version
  stands. Publishing it tells every customer who accepted an older version (outbox).
- Publishing freezes the text: ``content_sha256`` is the SHA-256 of the agreement's canonical
  form (RFC 8785 JSON of kind, version, locale, title, effective instant, consent
  verification and clauses), and a database trigger refuses to change a published row.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import rfc8785
from sqlalchemy import Connection, insert, select
from sqlalchemy.orm import Session

from custodia.agreements.errors import (
    AgreementNotPublished,
    AgreementPublished,
    AgreementVersionExists,
    EffectiveDateTooEarly,
    InvalidAgreement,
    MandatoryClauseMissing,
)
from custodia.agreements.models import CONSENT_VERIFICATIONS, LOCALES, Agreement
from custodia.core import audit
from custodia.core.actors import Context
from custodia.core.errors import ConfigError, FieldProblem, NotFound
from custodia.core.ids import IdGenerator, IdPrefix
from custodia.core.outbox import publish as publish_event

PAYMENT_SERVICE = "payment_service"
VERSION_PUBLISHED = "agreements.version_published"

#: Clauses a published agreement of each kind must contain (A1, A2; Art. 7).
MANDATORY_CLAUSES: dict[str, tuple[str, ...]] = {
    PAYMENT_SERVICE: (
        "business_rules",  # functions and flows of the service
        "verification_methods",  # identity and transaction verification
        "settlement",  # fund settlement
        "fees",  # fee items and rates
        "queries_disputes_complaints",  # query, error, dispute and complaint procedures
        "risk_and_illegal_acts",  # measures against business risk and illegal acts
        "loss_liability",  # loss liability and compensation
        "balance_not_deposit",  # the prominent disclosure of A2
    ),
}
#: Clauses always shown prominently, whatever the draft says (A2; A3 "material interests").
PROMINENT_CLAUSES: dict[str, tuple[str, ...]] = {PAYMENT_SERVICE: ("balance_not_deposit",)}

_KIND = re.compile(r"[a-z][a-z0-9_]{1,39}")
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.\-]{0,19}")
_CLAUSE_KEY = re.compile(r"[a-z][a-z0-9_]{0,59}")
MAX_CLAUSES = 100
MAX_TITLE = 200
MAX_BODY = 20_000


@dataclass(frozen=True, slots=True)
class AgreementPolicy:
    """What publishing requires: mandatory and prominent clauses per kind, the notice period."""

    notice_days: int = 30
    mandatory: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MANDATORY_CLAUSES)
    prominent: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: PROMINENT_CLAUSES)

    @classmethod
    def from_config(cls, extra_clauses: str, *, notice_days: int) -> AgreementPolicy:
        """Build the policy; ``extra_clauses`` (JSON: kind → [clause keys]) adds to the defaults.

        Configuration can only add mandatory clauses: the regulation's own cannot be dropped.
        """
        mandatory = dict(MANDATORY_CLAUSES)
        if extra_clauses.strip():
            try:
                raw = json.loads(extra_clauses)
            except ValueError as exc:
                raise ConfigError(f"CUSTODIA_AGREEMENT_CLAUSES: not JSON ({exc})") from None
            if not isinstance(raw, dict) or not all(
                isinstance(k, str) and _KIND.fullmatch(k) and isinstance(v, list)
                for k, v in raw.items()
            ):
                raise ConfigError(
                    "CUSTODIA_AGREEMENT_CLAUSES: give an object of agreement kind → list of "
                    'clause keys, e.g. {"payment_service": ["data_export"]}'
                )
            for kind, keys in raw.items():
                if not all(isinstance(k, str) and _CLAUSE_KEY.fullmatch(k) for k in keys):
                    raise ConfigError(
                        f"CUSTODIA_AGREEMENT_CLAUSES: clause keys of {kind} must be lower-case "
                        "words joined by underscores"
                    )
                mandatory[kind] = tuple(dict.fromkeys((*mandatory.get(kind, ()), *keys)))
        return cls(notice_days=notice_days, mandatory=mandatory)


@dataclass(frozen=True, slots=True)
class Clause:
    """One clause of an agreement, by its stable key."""

    key: str
    title: str
    body: str
    prominent: bool = False


@dataclass(frozen=True, slots=True)
class DraftAgreement:
    """``POST /v1/agreements``: a new draft."""

    kind: str
    version: str
    locale: str
    title: str
    effective_at: datetime
    clauses: tuple[Clause, ...]
    consent_verification: str = "none"


@dataclass(frozen=True, slots=True)
class DraftChanges:
    """``PATCH /v1/agreements/{id}``: what to change in a draft (None: unchanged)."""

    title: str | None = None
    effective_at: datetime | None = None
    clauses: tuple[Clause, ...] | None = None
    consent_verification: str | None = None


@dataclass(frozen=True, slots=True)
class AgreementView:
    """An agreement as the API shows it."""

    id: str
    kind: str
    version: str
    locale: str
    title: str
    status: str
    effective_at: datetime
    clauses: tuple[Clause, ...]
    consent_verification: str
    content_sha256: str | None
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime


def rfc3339(at: datetime) -> str:
    """Return ``at`` as RFC 3339 in UTC with microseconds: one spelling per instant."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _clauses_of(row: Agreement) -> tuple[Clause, ...]:
    return tuple(Clause(**c) for c in row.clauses["clauses"])


def view(row: Agreement) -> AgreementView:
    """Return the agreement ``row`` as the API shows it."""
    return AgreementView(
        id=row.id,
        kind=row.kind,
        version=row.version,
        locale=row.locale,
        title=row.title,
        status=row.status,
        effective_at=row.effective_at,
        clauses=_clauses_of(row),
        consent_verification=row.consent_verification,
        content_sha256=row.content_sha256,
        published_at=row.published_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def canonical_content(
    *,
    kind: str,
    version: str,
    locale: str,
    title: str,
    effective_at: datetime,
    consent_verification: str,
    clauses: Iterable[Clause],
) -> bytes:
    """Return the canonical bytes of an agreement's content (RFC 8785 JSON)."""
    return rfc8785.dumps(
        {
            "kind": kind,
            "version": version,
            "locale": locale,
            "title": title,
            "effective_at": rfc3339(effective_at),
            "consent_verification": consent_verification,
            "clauses": [
                {"key": c.key, "title": c.title, "body": c.body, "prominent": c.prominent}
                for c in clauses
            ],
        }
    )


def content_hash(agreement: AgreementView | Agreement | DraftAgreement) -> str:
    """Return the hex SHA-256 of the agreement's canonical content."""
    clauses = agreement.clauses if not isinstance(agreement, Agreement) else _clauses_of(agreement)
    return hashlib.sha256(
        canonical_content(
            kind=agreement.kind,
            version=agreement.version,
            locale=agreement.locale,
            title=agreement.title,
            effective_at=agreement.effective_at,
            consent_verification=agreement.consent_verification,
            clauses=clauses,
        )
    ).hexdigest()


# ------------------------------------------------------------------------------ validation


def _check_text(value: str, name: str, limit: int, problems: list[FieldProblem]) -> None:
    if not value.strip():
        problems.append(FieldProblem(name, "must not be empty"))
    elif len(value) > limit:
        problems.append(FieldProblem(name, f"at most {limit} characters"))


def _check_clauses(clauses: Sequence[Clause], problems: list[FieldProblem]) -> None:
    if not clauses:
        problems.append(FieldProblem("clauses", "an agreement has at least one clause"))
    if len(clauses) > MAX_CLAUSES:
        problems.append(FieldProblem("clauses", f"at most {MAX_CLAUSES} clauses"))
    seen: set[str] = set()
    for n, clause in enumerate(clauses):
        if not _CLAUSE_KEY.fullmatch(clause.key):
            problems.append(
                FieldProblem(f"clauses[{n}].key", "lower-case words joined by underscores")
            )
        elif clause.key in seen:
            problems.append(FieldProblem(f"clauses[{n}].key", f"{clause.key} appears twice"))
        seen.add(clause.key)
        _check_text(clause.title, f"clauses[{n}].title", MAX_TITLE, problems)
        _check_text(clause.body, f"clauses[{n}].body", MAX_BODY, problems)


def _check_common(
    *,
    title: str | None,
    effective_at: datetime | None,
    clauses: Sequence[Clause] | None,
    consent_verification: str | None,
    problems: list[FieldProblem],
) -> None:
    if title is not None:
        _check_text(title, "title", MAX_TITLE, problems)
    if effective_at is not None and effective_at.tzinfo is None:
        problems.append(FieldProblem("effective_at", "give an instant with a UTC offset"))
    if clauses is not None:
        _check_clauses(clauses, problems)
    if consent_verification is not None and consent_verification not in CONSENT_VERIFICATIONS:
        problems.append(
            FieldProblem("consent_verification", f"one of {', '.join(CONSENT_VERIFICATIONS)}")
        )


def _with_prominence(
    kind: str, clauses: Iterable[Clause], policy: AgreementPolicy
) -> tuple[Clause, ...]:
    """Mark the clauses the policy always shows prominently (A2); others keep their flag."""
    always = set(policy.prominent.get(kind, ()))
    return tuple(replace(c, prominent=c.prominent or c.key in always) for c in clauses)


def _clause_document(clauses: Iterable[Clause]) -> dict[str, Any]:
    return {
        "clauses": [
            {"key": c.key, "title": c.title, "body": c.body, "prominent": c.prominent}
            for c in clauses
        ]
    }


# ---------------------------------------------------------------------------------- drafts


def create_draft(
    session: Session,
    draft: DraftAgreement,
    *,
    ctx: Context,
    ids: IdGenerator,
    policy: AgreementPolicy,
) -> AgreementView:
    """Store a new draft after checking every field; the same kind/version/locale → 409."""
    problems: list[FieldProblem] = []
    if not _KIND.fullmatch(draft.kind):
        problems.append(FieldProblem("kind", "lower-case words joined by underscores"))
    if not _VERSION.fullmatch(draft.version):
        problems.append(FieldProblem("version", "letters, digits, dots and hyphens, ≤ 20"))
    if draft.locale not in LOCALES:
        problems.append(FieldProblem("locale", f"one of {', '.join(LOCALES)}"))
    _check_common(
        title=draft.title,
        effective_at=draft.effective_at,
        clauses=draft.clauses,
        consent_verification=draft.consent_verification,
        problems=problems,
    )
    if problems:
        raise InvalidAgreement(problems)
    exists = session.scalar(
        select(Agreement.id).where(
            Agreement.kind == draft.kind,
            Agreement.version == draft.version,
            Agreement.locale == draft.locale,
        )
    )
    if exists is not None:
        raise AgreementVersionExists(draft.kind, draft.version, draft.locale)
    row = Agreement(
        id=ids.new(IdPrefix.AGREEMENT),
        kind=draft.kind,
        version=draft.version,
        locale=draft.locale,
        title=draft.title.strip(),
        status="draft",
        effective_at=draft.effective_at,
        clauses=_clause_document(_with_prominence(draft.kind, draft.clauses, policy)),
        consent_verification=draft.consent_verification,
        content_sha256=None,
        published_at=None,
        published_by=None,
        created_by=str(ctx.actor),
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.AGREEMENT_DRAFTED,
        target=row.id,
        details={"kind": row.kind, "version": row.version, "locale": row.locale},
    )
    return view(row)


def load(session: Session, agreement_id: str, *, for_update: bool = False) -> Agreement:
    """Return the agreement ``agreement_id`` (NotFound if there is none)."""
    query = select(Agreement).where(Agreement.id == agreement_id)
    row = session.scalar(query.with_for_update() if for_update else query)
    if row is None:
        raise NotFound("agreement", agreement_id)
    return row


def update_draft(
    session: Session,
    agreement_id: str,
    changes: DraftChanges,
    *,
    ctx: Context,
    policy: AgreementPolicy,
) -> AgreementView:
    """Change a draft; a published agreement is frozen (409 ``agreement_published``)."""
    row = load(session, agreement_id, for_update=True)
    if row.status != "draft":
        raise AgreementPublished(row.id)
    problems: list[FieldProblem] = []
    _check_common(
        title=changes.title,
        effective_at=changes.effective_at,
        clauses=changes.clauses,
        consent_verification=changes.consent_verification,
        problems=problems,
    )
    if problems:
        raise InvalidAgreement(problems)
    changed = []
    if changes.title is not None:
        row.title = changes.title.strip()
        changed.append("title")
    if changes.effective_at is not None:
        row.effective_at = changes.effective_at
        changed.append("effective_at")
    if changes.clauses is not None:
        row.clauses = _clause_document(_with_prominence(row.kind, changes.clauses, policy))
        changed.append("clauses")
    if changes.consent_verification is not None:
        row.consent_verification = changes.consent_verification
        changed.append("consent_verification")
    row.updated_at = ctx.now
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.AGREEMENT_DRAFT_UPDATED,
        target=row.id,
        details={"changed": changed},
    )
    return view(row)


# ------------------------------------------------------------------------------ publishing


def missing_clauses(kind: str, clauses: Iterable[Clause], policy: AgreementPolicy) -> list[str]:
    """Return the mandatory clause keys of ``kind`` that ``clauses`` lack (A1, A2)."""
    present = {c.key for c in clauses if c.body.strip()}
    return [key for key in policy.mandatory.get(kind, ()) if key not in present]


def _published_versions(session: Session, kind: str, locale: str) -> Sequence[Agreement]:
    return (
        session.execute(
            select(Agreement)
            .where(
                Agreement.kind == kind,
                Agreement.locale == locale,
                Agreement.status == "published",
            )
            .order_by(Agreement.effective_at)
        )
        .scalars()
        .all()
    )


def earliest_effective(
    session: Session, kind: str, locale: str, *, now: datetime, policy: AgreementPolicy
) -> datetime:
    """Return the earliest instant a version published now may take effect (A3).

    Not in the past; for a change to an agreement already published, not before the notice
    period ends and strictly after the latest version's effective instant.
    """
    earlier = _published_versions(session, kind, locale)
    if not earlier:
        return now
    latest = max(a.effective_at for a in earlier)
    return max(now + timedelta(days=policy.notice_days), latest + timedelta(microseconds=1))


def publish(
    session: Session, agreement_id: str, *, ctx: Context, ids: IdGenerator, policy: AgreementPolicy
) -> AgreementView:
    """Publish a draft: mandatory clauses present, effective date allowed; the text freezes."""
    row = load(session, agreement_id, for_update=True)
    if row.status != "draft":
        raise AgreementPublished(row.id)
    clauses = _with_prominence(row.kind, _clauses_of(row), policy)
    missing = missing_clauses(row.kind, clauses, policy)
    if missing:
        raise MandatoryClauseMissing(row.kind, missing)
    earliest = earliest_effective(session, row.kind, row.locale, now=ctx.now, policy=policy)
    if row.effective_at < earliest:
        raise EffectiveDateTooEarly(row.effective_at, earliest, notice_days=policy.notice_days)
    is_change = bool(_published_versions(session, row.kind, row.locale))
    row.clauses = _clause_document(clauses)
    row.status = "published"
    row.published_at = ctx.now
    row.published_by = str(ctx.actor)
    row.updated_at = ctx.now
    row.content_sha256 = content_hash(row)
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.AGREEMENT_PUBLISHED,
        target=row.id,
        details={
            "kind": row.kind,
            "version": row.version,
            "locale": row.locale,
            "effective_at": rfc3339(row.effective_at),
            "content_sha256": row.content_sha256,
        },
    )
    if is_change:
        publish_event(
            session,
            VERSION_PUBLISHED,
            {"agreement_id": row.id, "kind": row.kind, "locale": row.locale, "after": ""},
            ids=ids,
            now=ctx.now,
        )
    return view(row)


def ensure_published(row: Agreement) -> None:
    """Refuse a draft where only published text may be used."""
    if row.status != "published":
        raise AgreementNotPublished(row.id)


# ---------------------------------------------------------------------------------- reading


def in_force(session: Session, kind: str, locale: str, now: datetime) -> Agreement | None:
    """Return the published version of ``kind`` in ``locale`` in force at ``now`` (A3)."""
    return session.scalar(
        select(Agreement)
        .where(
            Agreement.kind == kind,
            Agreement.locale == locale,
            Agreement.status == "published",
            Agreement.effective_at <= now,
        )
        .order_by(Agreement.effective_at.desc())
        .limit(1)
    )


def upcoming(session: Session, kind: str, locale: str, now: datetime) -> Sequence[Agreement]:
    """Return the published versions that take effect after ``now``, soonest first."""
    return (
        session.execute(
            select(Agreement)
            .where(
                Agreement.kind == kind,
                Agreement.locale == locale,
                Agreement.status == "published",
                Agreement.effective_at > now,
            )
            .order_by(Agreement.effective_at)
        )
        .scalars()
        .all()
    )


def list_agreements(
    session: Session,
    *,
    kind: str | None,
    locale: str | None,
    status: str | None,
    after_id: str | None,
    limit: int,
) -> list[AgreementView]:
    """Return agreements matching the filters, by id (oldest first), after ``after_id``."""
    query = select(Agreement).order_by(Agreement.id).limit(limit)
    if kind is not None:
        query = query.where(Agreement.kind == kind)
    if locale is not None:
        query = query.where(Agreement.locale == locale)
    if status is not None:
        query = query.where(Agreement.status == status)
    if after_id is not None:
        query = query.where(Agreement.id > after_id)
    return [view(row) for row in session.execute(query).scalars()]


# --------------------------------------------------------------------------------- defaults


DEFAULT_EFFECTIVE_AT = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_FILES = ("payment_service.zh-CN.json", "payment_service.en.json")


def default_agreements() -> list[DraftAgreement]:
    """Return the default ``payment_service`` agreement in zh-CN and en shipped with Custodia."""
    drafts = []
    for name in DEFAULT_FILES:
        raw = json.loads(
            resources.files("custodia.agreements").joinpath("data", name).read_text("utf-8")
        )
        drafts.append(
            DraftAgreement(
                kind=raw["kind"],
                version=raw["version"],
                locale=raw["locale"],
                title=raw["title"],
                effective_at=DEFAULT_EFFECTIVE_AT,
                clauses=tuple(Clause(**c) for c in raw["clauses"]),
            )
        )
    return drafts


def install_defaults(connection: Connection, *, now: datetime, ids: IdGenerator) -> int:
    """Insert the default agreements, published, where their kind/locale has none yet.

    Run by the migration that creates the tables, so that a fresh deployment can onboard at
    once; returns how many were inserted.
    """
    policy = AgreementPolicy()
    inserted = 0
    for draft in default_agreements():
        missing = missing_clauses(draft.kind, draft.clauses, policy)
        if missing:  # the shipped text itself is checked like any other
            raise ConfigError(f"default {draft.kind} ({draft.locale}) lacks {missing}")
        exists = connection.scalar(
            select(Agreement.id).where(
                Agreement.kind == draft.kind, Agreement.locale == draft.locale
            )
        )
        if exists is not None:
            continue
        shipped = replace(draft, clauses=_with_prominence(draft.kind, draft.clauses, policy))
        values = {
            "id": ids.new(IdPrefix.AGREEMENT),
            "kind": draft.kind,
            "version": draft.version,
            "locale": draft.locale,
            "title": draft.title,
            "status": "published",
            "effective_at": draft.effective_at,
            "clauses": _clause_document(shipped.clauses),
            "consent_verification": draft.consent_verification,
            "content_sha256": content_hash(shipped),
            # The shipped text's own date: it is in force from the first start.
            "published_at": draft.effective_at,
            "published_by": "system:custodia",
            "created_by": "system:custodia",
            "created_at": now,
            "updated_at": now,
        }
        connection.execute(insert(Agreement), values)
        inserted += 1
    return inserted
