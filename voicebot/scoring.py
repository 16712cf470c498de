"""Answer matching for ``voicebot eval``: the same rules as the shared reference scorer.

A gold line's ``must_include`` is a list of groups (a string, or a list of alternatives); an
answer passes when every group matches and no ``must_not_include`` group does. Both sides are
normalised alike: NFKC, lower case, zero-width joiners and nukta removed, Indic digits to
ASCII, ``1,20,000`` → ``120000``, "2 lakh"/"दो लाख" → ``200000``, percent words → ``%``.
Numeric items match on number boundaries ("5" does not match "1500"); long numbers also match
when split by spaces or hyphens; Latin items on word boundaries ignoring inner separators;
Indic items as substrings. The shared scorer stays the judge (tests compare the two).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["match_group", "match_item", "normalise", "passes"]

_DIGITS: dict[int, str] = {
    zero + i: str(i)
    for zero in (0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66)
    for i in range(10)
}
_REMOVE = dict.fromkeys(map(ord, "\u200c\u200d\u093c\u09bc\u00ad"), None)

# Scoring vocabulary (not answer wording): scale, percent and number words across the
# languages of the eval sets, exactly as the reference scorer reads them.
_PERCENT_WORDS = [
    "percent", "per cent", "pc", "प्रतिशत", "फीसदी", "फीसद", "टक्के", "टक्का",
    "শতাংশ", "শতাংশে", "சதவீத", "சதவிகித", "శాతం", "శాతా",
]  # fmt: skip
_SCALE: dict[int, list[str]] = {
    100000: ["lakhs", "lakh", "lacs", "lac", "लाख", "লাখ", "লক্ষ", "லட்ச", "లక్ష"],
    10000000: ["crores", "crore", "करोड", "कोटी", "কোটি", "கோடி", "కోట్ల", "కోటి"],
    1000: ["thousand", "हजार", "হাজার", "ஆயிர", "వేల", "వేలు"],
}
_WORD_NUM: dict[str, float] = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "twelve": 12, "fifteen": 15, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "hundred": 100,
    "डेढ": 1.5, "ढाई": 2.5,
    "एक": 1, "दो": 2, "दोन": 2, "तीन": 3, "चार": 4, "पांच": 5, "पाँच": 5, "पाच": 5,
    "छह": 6, "छः": 6, "छे": 6, "सहा": 6, "सात": 7, "आठ": 8, "नौ": 9, "नऊ": 9,
    "दस": 10, "दहा": 10, "बारह": 12, "पंद्रह": 15, "बीस": 20, "वीस": 20,
    "पच्चीस": 25, "तीस": 30, "चालीस": 40, "पचास": 50, "पन्नास": 50, "सौ": 100,
    "এক": 1, "দুই": 2, "তিন": 3, "চার": 4, "পাঁচ": 5, "ছয়": 6, "সাত": 7,
    "আট": 8, "নয়": 9, "দশ": 10,
    "ఒక": 1, "రెండు": 2, "మూడు": 3, "నాలుగు": 4, "ఐదు": 5, "ఆరు": 6, "పది": 10,
    "ஒரு": 1, "இரண்டு": 2, "மூன்று": 3, "ஐந்து": 5, "ஆறு": 6, "பத்து": 10,
}  # fmt: skip
_TA_FUSED = {
    "இரண்டாயிர": 2000, "மூவாயிர": 3000, "ஐந்தாயிர": 5000, "ஆறாயிர": 6000, "பத்தாயிர": 10000,
}  # fmt: skip
_UNIT_WORDS = [
    "kg", "किलो", "কেজি", "কিলো", "கிலோ", "కిలో", "days", "दिन", "दिवस",
    "দিন", "நாள்", "రోజు", "years", "साल", "वर्ष", "বছর", "ஆண்டு", "సంవత్సర", "%",
    "months", "महीने", "cylinders", "cylinder", "सिलेंडर", "refills", "रिफिल",
    "instalments", "installments", "किस्त",
]  # fmt: skip
_SUFFIX = r"[^\s\d.,;:!?()\[\]{}\"'/|]*"


def _alt(words: Sequence[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_WN = _alt(list(_WORD_NUM))
_FOLLOW = (
    _alt([w for ws in _SCALE.values() for w in ws])
    + "|"
    + _alt(_UNIT_WORDS)
    + "|"
    + _alt(_PERCENT_WORDS)
)
_WORD_NUM_RE = re.compile(r"(?<!\w)(" + _WN + r")(?=\s*(?:" + _FOLLOW + r"))")
_SCALE_RE = [
    (mult, re.compile(r"(\d+(?:\.\d+)?)\s*(?:" + _alt(words) + r")" + _SUFFIX))
    for mult, words in _SCALE.items()
]
_PERCENT_RE = re.compile(r"(\d)\s*(?:%|" + _alt(_PERCENT_WORDS) + r")" + _SUFFIX)
_NUMERIC_ITEM = re.compile(r"^[\d.,%:/\- ]+$")
_HAS_LATIN = re.compile(r"[a-z]")
_HAS_INDIC = re.compile(r"[\u0900-\u0dff]")


def normalise(text: str) -> str:
    s = unicodedata.normalize("NFKC", text or "")
    s = s.translate(_REMOVE).translate(_DIGITS).lower()
    s = s.replace("₹", " ").replace("\u00a0", " ")
    s = re.sub(r"(?<=\d),(?=\d)", "", s)
    s = re.sub(r"(?<=\d)\s*:\s*(?=\d)", ":", s)
    for fused, val in _TA_FUSED.items():
        s = re.sub(re.escape(fused) + _SUFFIX, str(val), s)
    s = _WORD_NUM_RE.sub(lambda m: f"{_WORD_NUM[m.group(1)]:g}", s)
    for mult, pattern in _SCALE_RE:
        s = pattern.sub(lambda m, k=mult: str(round(float(m.group(1)) * k)), s)  # type: ignore[misc]
    s = _PERCENT_RE.sub(r"\1%", s)
    return re.sub(r"\s+", " ", s).strip()


def match_item(item: str, norm_answer: str) -> bool:
    it = normalise(item)
    if not it:
        return False
    if _NUMERIC_ITEM.match(it):
        digits = re.sub(r"\D", "", it)
        if len(digits) >= 6 and re.fullmatch(r"[\d \-]+", it):
            collapsed = re.sub(r"(?<=\d)[ \-–.]+(?=\d)", "", norm_answer)
            return re.search(r"(?<!\d)" + digits + r"(?!\d)", collapsed) is not None
        it = it.replace(" ", "")
        tail = r"(?![\d])(?!\.\d)" if it[-1].isdigit() else ""
        return re.search(r"(?<![\d.])" + re.escape(it) + tail, norm_answer) is not None
    if _HAS_LATIN.search(it) and not _HAS_INDIC.search(it):
        tokens = [t for t in re.split(r"[\s\-_.]+", it) if t]
        body = r"[\s\-_.]*".join(re.escape(t) for t in tokens)
        return re.search(r"(?<![a-z0-9])" + body + r"(?![a-z0-9])", norm_answer) is not None
    return it in norm_answer


def match_group(group: str | Sequence[str], norm_answer: str) -> bool:
    alternatives = [group] if isinstance(group, str) else list(group)
    return any(match_item(a, norm_answer) for a in alternatives)


def passes(gold: Mapping[str, Any], answer: str) -> bool | None:
    """True/False against the gold line's groups; None when it has nothing to check."""
    include = gold.get("must_include") or []
    exclude = gold.get("must_not_include") or []
    if not include and not exclude:
        return None
    norm = normalise(answer)
    return all(match_group(g, norm) for g in include) and not any(
        match_group(g, norm) for g in exclude
    )
