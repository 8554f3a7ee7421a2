"""Time-based one-time passwords (RFC 6238, pyotp): staff logins and customers' factors (K3).

A code is accepted within ``TOTP_WINDOW`` steps either side of the current 30-second step,
and each step at most once per person: callers store the last step used and accept only a
later one, with a conditional update so that two concurrent uses of one code cannot both win.
"""

from __future__ import annotations

import hmac
from datetime import datetime

import pyotp

TOTP_ISSUER = "Custodia"
TOTP_WINDOW = 1  # steps either side of the current one (30 s each)


def new_secret() -> str:
    """Return a fresh 160-bit base32 TOTP secret."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, *, name: str) -> str:
    """Return the ``otpauth://`` URI an authenticator app scans."""
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=TOTP_ISSUER)


def matched_step(secret: str, code: str, now: datetime, *, window: int = TOTP_WINDOW) -> int | None:
    """Return the time step whose TOTP code is ``code`` (within ``window``), or None."""
    totp = pyotp.TOTP(secret)
    if len(code) != totp.digits or not code.isdigit():
        return None
    current = totp.timecode(now)
    found = None
    for step in range(current - window, current + window + 1):
        # Compare every candidate, in constant time, whatever matched before.
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found
