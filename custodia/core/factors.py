"""A verification factor as a customer presents it (REGULATION.md K3; API.md "Money movement").

Three kinds: ``password`` (the payment password, something only the customer knows),
``totp`` (a one-time code from the customer's bound authenticator, something only the
customer holds) and ``signature`` (an Ed25519 signature by a registered device key, the
electronic signature of K3/K4). The kinds used decide a payment's daily limit tier.
"""

from __future__ import annotations

from dataclasses import dataclass

FACTOR_TYPES = ("password", "totp", "signature")


@dataclass(frozen=True, slots=True)
class Factor:
    """One factor: ``password`` (``value``), ``totp`` (``code``) or ``signature``.

    A ``signature`` factor names the device key (``key_id``) and carries the signature.
    """

    type: str
    value: str | None = None
    code: str | None = None
    key_id: str | None = None
    signature: str | None = None

    def __repr__(self) -> str:
        # Factors end up in tracebacks: never show the secret parts.
        return f"Factor(type={self.type!r}, key_id={self.key_id!r})"
