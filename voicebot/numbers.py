"""Make written answers speakable: ₹ amounts in lakh/crore, percentages, helpline digits.

Rules come from the pack's ``[numbers]`` table, so each language says "2 लाख रुपये" or
"2 lakh rupees" in its own words without a code branch. Digits inside amounts are left as
digits: every TTS engine here reads digits in its own language.
"""

from __future__ import annotations

import re

from voicebot.packs import NumberWords

__all__ = ["indian_amount", "speakable"]

_AMOUNT = re.compile(r"(?:₹|Rs\.?\s?|INR\s?)\s?(\d[\d,]*(?:\.\d+)?)(\s*(?:lakh|crore))?", re.I)
_PHONE = re.compile(r"(?<![\d.,])(\d{3,5}(?:[- ]\d{3,4}){1,3}|\d{5,})(?![\d.,])")
_PERCENT = re.compile(r"(\d)\s?%")


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
    number = float(match.group(1).replace(",", ""))
    scale = (match.group(2) or "").strip().lower()
    if scale:
        label = words.lakh if scale == "lakh" else words.crore
        return f"{number:g} {label} {words.currency}"
    return f"{indian_amount(number, words)} {words.currency}"


def _digits(match: re.Match[str], words: NumberWords) -> str:
    run = match.group(1)
    if not words.digits:
        return " ".join(ch for ch in run if ch.isdigit())
    return " ".join(words.digits[int(ch)] for ch in run if ch.isdigit())


def speakable(text: str, words: NumberWords) -> str:
    """Rewrite written figures so a TTS voice says them the way a caller expects."""
    text = _AMOUNT.sub(lambda m: _amount(m, words), text)
    text = _PHONE.sub(lambda m: _digits(m, words), text)
    text = _PERCENT.sub(lambda m: f"{m.group(1)} {words.percent}", text)
    return re.sub(r"\s+", " ", text).strip()
