"""How personal data is shown when the reader may not see it in clear (API.md "Conventions").

``110101********1234``, ``138****5678``, ``6222 **** **** 1234``: enough to recognise one's
own data, not enough to use someone else's.
"""

from __future__ import annotations

import unicodedata


def _is_wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in {"W", "F"}


def mask_name(name: str) -> str:
    """Show a name's first character (the family name in Chinese) and hide the rest.

    ``张伟`` → ``张*``, ``欧阳娜娜`` → ``欧***``, ``Zhang Wei`` → ``Z**** W**``.
    """
    if not name:
        return name
    if any(_is_wide(ch) for ch in name):
        return name[0] + "*" * (len(name) - 1)
    return " ".join(word[0] + "*" * (len(word) - 1) for word in name.split())


def mask_id_number(number: str) -> str:
    """Show the first six and last four characters (``110101********1234``)."""
    if len(number) <= 8:
        return "*" * (len(number) - 2) + number[-2:]
    return number[:6] + "*" * (len(number) - 10) + number[-4:]


def mask_phone(phone: str) -> str:
    """Show a mainland mobile as ``138****5678``; other numbers keep the last four digits."""
    digits = phone.removeprefix("+86") if phone.startswith("+86") else phone
    if len(digits) == 11 and digits.isdigit():
        return f"{digits[:3]}****{digits[-4:]}"
    return "*" * max(len(phone) - 4, 0) + phone[-4:]


def mask_card(number: str) -> str:
    """Show a card number's first and last four digits (``6222 **** **** 1234``)."""
    return f"{number[:4]} **** **** {number[-4:]}"


def mask_text(text: str, shown: int = 6) -> str:
    """Show the beginning of a text (an address: province and city) and hide the rest."""
    if len(text) <= shown:
        return "*" * len(text)
    return text[:shown] + "*" * min(len(text) - shown, 8)
