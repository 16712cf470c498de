"""Say Latin-script words through the pack's own voice: ``[latin]`` in pack.toml.

Answers in Indian languages carry scheme acronyms and web names in Latin letters ("PM-KISAN",
"KCC", "e-KYC", "pmkisan.gov.in"). Festival's Hindi, Marathi and Telugu diphone voices drop
such words without a sound (and crash on a sentence with nothing else), so a Telugu caller
would never hear which scheme the answer is about. Before synthesis each Latin word is
rewritten in the pack's script: a known word from ``[latin.words]``, else an acronym letter by
letter with ``[latin.letters]``; a longer lower-case English word is left to the voice.
"""

from __future__ import annotations

import re

from voicebot.packs import LatinWords

__all__ = ["say_latin"]

# A Latin word, with inner hyphens and dots: "PM-KISAN", "e-KYC", "pmkisan.gov.in".
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-.][A-Za-z0-9]+)*")
_PART = re.compile(r"[A-Za-z]+|[0-9]+")
_SPELL_MAX = 3  # lower-case words this short are spelled ("e" of e-KYC, "gov", "in")


def say_latin(text: str, latin: LatinWords) -> str:
    """``text`` with every Latin word the pack knows how to say written in its script."""
    if not latin.letters and not latin.words:
        return text

    dot = f" {latin.dot} " if latin.dot else " "

    def rewrite(match: re.Match[str]) -> str:
        word = match.group(0)
        known = latin.words.get(word.upper())
        if known is not None:
            return known
        return dot.join(
            " ".join(_part(part, latin) for part in _PART.findall(piece))
            for piece in word.split(".")
        )

    return _WORD.sub(rewrite, text)


def _part(part: str, latin: LatinWords) -> str:
    known = latin.words.get(part.upper())
    if known is not None:
        return known
    spell = part.isalpha() and (part.isupper() or len(part) <= _SPELL_MAX)
    if spell and latin.letters:
        return " ".join(latin.letters[ord(ch) - ord("A")] for ch in part.upper())
    return part
