"""Anti-money-laundering: monitoring, alerts, cases and reports (REGULATION.md K2, L1–L3).

- :mod:`custodia.aml.rules`: the rules, each with typed parameters; :mod:`~.config` keeps
  their parameters in the database, versioned and audited.
- :mod:`custodia.aml.monitoring`: the outbox consumer that runs every posted transaction
  through the enabled rules, once.
- :mod:`custodia.aml.alerts`: alerts, their de-duplication, cases, and the work on them.
- :mod:`custodia.aml.actions`: measures on accounts and customers (freeze, delay settlement,
  terminate, lift).
- :mod:`custodia.aml.feedback`: alerts and decisions feed the customer risk rating (K1).
- :mod:`custodia.aml.reports`: the large-value (L1) and suspicious-transaction (L2)
  reports, and filing them as immutable, digested, audited records.
"""

from custodia.aml.actions import ActionTaken, TakeAction, take_action
from custodia.aml.alerts import (
    AlertDetail,
    AlertFilter,
    DuePolicy,
    NoteView,
    add_note,
    assign,
    customer_context,
    decide,
    get_alert,
    list_alerts,
    raise_alert,
    transaction_records,
)
from custodia.aml.config import RuleChange, RuleState, rule_states, rule_versions, update_rule
from custodia.aml.feedback import RatingFeedback, behaviour_score
from custodia.aml.monitoring import (
    MonitoringPolicy,
    batch_consumers,
    consumers,
    evaluate_transaction,
    evaluate_transactions,
    monitoring_backlog,
)
from custodia.aml.rules import RULES, Finding, Rule

__all__ = [
    "RULES",
    "ActionTaken",
    "AlertDetail",
    "AlertFilter",
    "DuePolicy",
    "Finding",
    "MonitoringPolicy",
    "NoteView",
    "RatingFeedback",
    "Rule",
    "RuleChange",
    "RuleState",
    "TakeAction",
    "add_note",
    "assign",
    "batch_consumers",
    "behaviour_score",
    "consumers",
    "customer_context",
    "decide",
    "evaluate_transaction",
    "evaluate_transactions",
    "get_alert",
    "list_alerts",
    "monitoring_backlog",
    "raise_alert",
    "rule_states",
    "rule_versions",
    "take_action",
    "transaction_records",
    "update_rule",
]
