"""The rules' parameters in the database: installed with defaults, changed, versioned (K2).

A rule's row in ``aml_rules`` is created with the rule's defaults the first time anything
reads the rules (so a rule added in a release starts working without a data migration);
every change by a compliance lead writes version n + 1 to ``aml_rule_versions`` and an
audit event with the parameters before and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from custodia.aml.errors import InvalidRuleParams, UnknownRule
from custodia.aml.models import AmlRule, AmlRuleVersion
from custodia.aml.rules import RULES, Params, Rule
from custodia.core import audit
from custodia.core.actors import SYSTEM, Context
from custodia.core.db import upsert_insert
from custodia.core.models import table_of


@dataclass(frozen=True, slots=True)
class RuleState:
    """A rule as configured now: its version, whether it runs, its typed parameters."""

    rule: Rule[Any]
    version: int
    enabled: bool
    params: Params
    updated_by: str
    updated_at: datetime

    def params_dict(self) -> dict[str, Any]:
        """Return the parameters as plain data (what alerts copy and the API shows)."""
        return msgspec.to_builtins(self.params)  # type: ignore[no-any-return]


def install_defaults(session: Session, now: datetime) -> None:
    """Give every rule without a row its defaults as version 1 (safe under concurrency)."""
    present = set(session.execute(select(AmlRule.key)).scalars())
    missing = [rule for key, rule in RULES.items() if key not in present]
    if not missing:
        return
    insert = upsert_insert(session)
    for rule in missing:
        params = msgspec.to_builtins(rule.defaults)
        row = {"key": rule.key, "version": 1, "enabled": True, "params": params}
        session.execute(
            insert(table_of(AmlRule))
            .values(**row, updated_by=str(SYSTEM), updated_at=now)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        session.execute(
            insert(table_of(AmlRuleVersion))
            .values(**row, changed_by=str(SYSTEM), changed_at=now)
            .on_conflict_do_nothing(index_elements=["key", "version"])
        )


def _state(row: AmlRule) -> RuleState:
    rule = RULES[row.key]
    return RuleState(
        rule=rule,
        version=row.version,
        enabled=row.enabled,
        params=rule.parse(row.params),
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


def rule_states(session: Session, now: datetime) -> list[RuleState]:
    """Return every known rule's current state, in evaluation order."""
    install_defaults(session, now)
    rows = {r.key: r for r in session.execute(select(AmlRule)).scalars() if r.key in RULES}
    return [_state(rows[key]) for key in RULES if key in rows]


@dataclass(frozen=True, slots=True)
class RuleChange:
    """``PUT /v1/aml/rules/{key}``: the new switch and parameters (omitted: unchanged)."""

    enabled: bool | None = None
    params: dict[str, Any] | None = None


def update_rule(session: Session, key: str, change: RuleChange, *, ctx: Context) -> RuleState:
    """Set a rule's switch and parameters as a new version; audited before/after (K2).

    Parameters are validated against the rule's typed struct; keys left out keep their
    current values. A change that changes nothing writes no version.
    """
    rule = RULES.get(key)
    if rule is None:
        raise UnknownRule(key)
    install_defaults(session, ctx.now)
    row = session.execute(select(AmlRule).where(AmlRule.key == key).with_for_update()).scalar_one()
    merged = {**row.params, **(change.params or {})}
    try:
        params = rule.parse(merged)
    except msgspec.ValidationError as exc:
        raise InvalidRuleParams.from_message(str(exc)) from None
    new_params = msgspec.to_builtins(params)
    enabled = row.enabled if change.enabled is None else change.enabled
    if new_params == row.params and enabled == row.enabled:
        return _state(row)
    before = {"version": row.version, "enabled": row.enabled, "params": row.params}
    row.version += 1
    row.enabled = enabled
    row.params = new_params
    row.updated_by = str(ctx.actor)
    row.updated_at = ctx.now
    session.add(
        AmlRuleVersion(
            key=key,
            version=row.version,
            enabled=enabled,
            params=new_params,
            changed_by=str(ctx.actor),
            changed_at=ctx.now,
        )
    )
    session.flush()
    audit.record(
        session,
        ctx,
        audit.AuditAction.AML_RULE_CHANGED,
        target=f"aml_rule:{key}",
        details={
            "before": before,
            "after": {"version": row.version, "enabled": enabled, "params": new_params},
        },
    )
    return _state(row)


def rule_versions(session: Session, key: str) -> list[AmlRuleVersion]:
    """Return every version of a rule, newest first."""
    if key not in RULES:
        raise UnknownRule(key)
    return list(
        session.execute(
            select(AmlRuleVersion)
            .where(AmlRuleVersion.key == key)
            .order_by(AmlRuleVersion.version.desc())
        ).scalars()
    )
