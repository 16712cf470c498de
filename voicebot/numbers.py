"""Make written answers speakable: ₹ amounts in lakh/crore, percentages, helpline digits.

Rules come from the pack's ``[numbers]`` table, so each language says "2 लाख रुपये" or
"2 lakh rupees" in its own words without a code branch. Digits inside amounts are left as
digits: every TTS engine here reads digits in its own language.
"""

from __future__ import annotations

import functools
import re

from voicebot.packs import NumberWords

__all__ = ["indian_amount", "speakable"]

_AMOUNT = r"(?:₹|\bRs\.?\s?|\bINR\s?)\s?(?P<amount>\d+(?:,\d+)*(?:\.\d+)?)"
# A helpline or other digit string: 3-5 digit groups joined by - or space, or 5+ digits.
# A trailing full stop or comma still ends it (end of sentence), a decimal point does not.
_PHONE = r"(?<![\d.,])(?P<phone>\d{3,5}(?:[- ]\d{3,4}){1,3}|\d{5,})(?![\d]|[.,]\d)"
_PERCENT = r"(?P<percent>\d+(?:\.\d+)?)\s?%"


@functools.lru_cache(maxsize=64)
def _pattern(lakh: str, crore: str) -> re.Pattern[str]:
    """One pass over the text: a span is rewritten once (an amount never re-read as a phone)."""
    words = sorted({"lakh", "crore", lakh, crore} - {""}, key=len, reverse=True)
    scales = "|".join(re.escape(w) for w in words)
    amount = _AMOUNT + rf"(?P<scale>\s*(?:{scales}))?"
    return re.compile(f"{amount}|{_PHONE}|{_PERCENT}", re.IGNORECASE)


def indian_amount(value: float, words: NumberWords) -> str:
    """6000 → '6 thousand', 120000 → '1.2 lakh', 20000000 → '2 crore' (in the pack's words)."""
    for scale, word in ((10_000_000, words.crore), (100_000, words.lakh), (1000, words.thousand)):
        if value >= scale and (value % (scale / 100) == 0 or scale == 1000):
            amount = value / scale
            if amount == int(amount):
                return f"{int(amount)} {word}"
            if scale == 1000 and value % 100:
                break
            return f"{amount:g} {word}"
    return f"{value:g}"


def _amount(match: re.Match[str], words: NumberWords) -> str:
    number = float(match.group("amount").replace(",", ""))
    scale = (match.group("scale") or "").strip().lower()
    if scale:
        label = words.lakh if scale in {"lakh", words.lakh.lower()} else words.crore
        return f"{number:g} {label} {words.currency}"
    return f"{indian_amount(number, words)} {words.currency}"


def _digits(run: str, words: NumberWords) -> str:
    if not words.digits:
        return " ".join(ch for ch in run if ch.isdigit())
    return " ".join(words.digits[int(ch)] for ch in run if ch.isdigit())


def speakable(text: str, words: NumberWords) -> str:
    """Rewrite written figures so a TTS voice says them the way a caller expects."""

    def rewrite(match: re.Match[str]) -> str:
        if match.group("amount") is not None:
            return _amount(match, words)
        if match.group("phone") is not None:
            return _digits(match.group("phone"), words)
        return f"{match.group('percent')} {words.percent}"

    return re.sub(r"\s+", " ", _pattern(words.lakh, words.crore).sub(rewrite, text)).strip()
