"""Ed25519 signatures by the service: consent receipts anyone can check offline.

The private keys are the ``signing`` ring of the key file; the public keys are published
(``GET /v1/agreements/signing-key``) so that a customer, a court or a regulator can verify a
receipt without asking the service. Older keys stay in the ring after a rotation, so that
receipts signed under them still verify.
"""

from __future__ import annotations

import base64

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from custodia.core.keys import KeyFile, KeyPurpose


class Signer:
    """Signs with the primary signing key; knows the public half of every key in the ring."""

    def __init__(self, keys: KeyFile) -> None:
        ring = keys.rings[KeyPurpose.SIGNING]
        self.primary_id = ring.primary
        self._private = {
            key_id: Ed25519PrivateKey.from_private_bytes(keys.secret(KeyPurpose.SIGNING, key_id))
            for key_id in ring.keys
        }

    def sign(self, message: bytes) -> tuple[str, bytes]:
        """Return the primary key's id and its signature over ``message``."""
        return self.primary_id, self._private[self.primary_id].sign(message)

    def public_keys(self) -> dict[str, bytes]:
        """Return every key id → its raw 32-byte Ed25519 public key."""
        return {kid: key.public_key().public_bytes_raw() for kid, key in self._private.items()}


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Return whether ``signature`` is ``public_key``'s Ed25519 signature over ``message``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def b64(raw: bytes) -> str:
    """Return standard base64 of ``raw`` (the form keys and signatures travel in)."""
    return base64.b64encode(raw).decode()
