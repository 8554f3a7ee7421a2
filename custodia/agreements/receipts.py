"""Signed consent receipts that anyone can verify offline (REGULATION.md A3: keep the evidence).

A receipt is a JSON object::

    {"payload": {...}, "algorithm": "Ed25519", "key_id": "1", "signature": "<base64>"}

``signature`` is the service's Ed25519 signature over the RFC 8785 (JSON Canonicalization
Scheme) bytes of ``payload``. The payload names its format
(``custodia-consent-receipt/1``) and the signing key's id, and holds the consent: customer,
agreement id, kind, version, locale and content hash, accepted or declined, channel, IP,
user agent, when the text was shown and when the customer decided, the factor that confirmed
it, and the prominent clauses the customer confirmed having read. The public keys are served
at ``GET /v1/agreements/signing-key``; ``custodia consents verify RECEIPT.json`` checks one.
A receipt needs nothing from the service to verify: any RFC 8785 implementation and any
Ed25519 library will do.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785

from custodia.core.signing import Signer, b64, verify_signature

RECEIPT_FORMAT = "custodia-consent-receipt/1"
ALGORITHM = "Ed25519"


def canonical_bytes(payload: Mapping[str, Any]) -> bytes:
    """Return the bytes a receipt's signature covers (RFC 8785)."""
    return rfc8785.dumps(dict(payload))


def sign(payload: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """Return the signed receipt of ``payload`` (which must carry ``key_id`` = the primary)."""
    if payload.get("key_id") != signer.primary_id or payload.get("format") != RECEIPT_FORMAT:
        raise ValueError("a receipt payload names its format and the signing key")
    key_id, signature = signer.sign(canonical_bytes(payload))
    return assemble(payload, key_id, b64(signature))


def assemble(payload: Mapping[str, Any], key_id: str, signature: str) -> dict[str, Any]:
    """Return the receipt of a payload whose signature is already known (stored)."""
    return {
        "payload": dict(payload),
        "algorithm": ALGORITHM,
        "key_id": key_id,
        "signature": signature,
    }


@dataclass(frozen=True, slots=True)
class ReceiptCheck:
    """The outcome of checking a receipt: valid, or why not."""

    valid: bool
    reason: str
    consent_id: str | None = None


def verify(receipt: Any, public_keys: Mapping[str, bytes]) -> ReceiptCheck:
    """Check ``receipt`` (parsed JSON) against the service's public keys by id."""
    payload = receipt.get("payload") if isinstance(receipt, dict) else None
    consent_id = payload.get("consent_id") if isinstance(payload, dict) else None
    reason = _why_invalid(receipt, payload, public_keys)
    return ReceiptCheck(
        valid=reason is None,
        reason=reason or "signature valid",
        consent_id=consent_id if isinstance(consent_id, str) else None,
    )


def _why_invalid(  # noqa: PLR0911 - one reason per check, in order
    receipt: Any, payload: Any, public_keys: Mapping[str, bytes]
) -> str | None:
    if not isinstance(receipt, dict):
        return "a receipt is a JSON object"
    if not isinstance(payload, dict):
        return "the receipt has no payload object"
    if payload.get("format") != RECEIPT_FORMAT:
        return f"unknown receipt format {payload.get('format')!r}"
    if receipt.get("algorithm") != ALGORITHM:
        return f"unknown algorithm {receipt.get('algorithm')!r}"
    key_id = receipt.get("key_id")
    if payload.get("key_id") != key_id:
        return "the key id outside the payload differs from the signed one"
    public_key = public_keys.get(str(key_id))
    if public_key is None:
        return f"no public key with id {key_id!r}"
    try:
        signature = base64.b64decode(str(receipt.get("signature", "")), validate=True)
    except (binascii.Error, ValueError):
        return "the signature is not base64"
    try:
        message = canonical_bytes(payload)
    except rfc8785.CanonicalizationError as exc:
        return f"the payload cannot be canonicalised ({exc})"
    if not verify_signature(public_key, message, signature):
        return "the signature does not match the payload"
    return None
