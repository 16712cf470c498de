"""Word and character error rates for any script, shared by tests, `packs eval` and `bench`.

Normalisation is deliberately small and script-neutral: Unicode NFKC, case folding, punctuation
removed (including the danda ``।``), digit group separators dropped (``6,000`` → ``6000``),
whitespace collapsed. Combining marks (Devanagari matras, viramas) are letters here, never
punctuation. No spelling aliases ("Mr." stays "mr"): a bound measured with this code means
what it says.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Hashable, Iterable, Sequence

__all__ = ["cer", "corpus_cer", "corpus_wer", "edit_distance", "normalize", "wer", "words"]

_DIGIT_GROUP = re.compile(r"(?<=\d),(?=\d{2,3}\b)")  # 6,000 and Indian 1,00,000
_APOSTROPHE = re.compile(r"(?<=\w)['’](?=\w)")


def normalize(text: str) -> str:
    """Case-folded text with punctuation and symbols turned into single spaces."""
    text = unicodedata.normalize("NFKC", text)
    text = _DIGIT_GROUP.sub("", text)
    text = _APOSTROPHE.sub("", text)
    out = []
    for ch in text.casefold():
        category = unicodedata.category(ch)
        out.append(" " if category[0] in "PSZ" or category == "Cc" else ch)
    return " ".join("".join(out).split())


def words(text: str) -> list[str]:
    return normalize(text).split()


def edit_distance(reference: Sequence[Hashable], hypothesis: Sequence[Hashable]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    if len(reference) < len(hypothesis):
        reference, hypothesis = hypothesis, reference
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


def _rate(errors: int, length: int, hyp_length: int) -> float:
    if length == 0:
        return 0.0 if hyp_length == 0 else 1.0
    return errors / length


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of one utterance (can exceed 1 when the hypothesis inserts words)."""
    ref, hyp = words(reference), words(hypothesis)
    return _rate(edit_distance(ref, hyp), len(ref), len(hyp))


def _chars(text: str) -> str:
    # Spaces are left out: Whisper often splits or joins Indic words ("समाननी" vs "सम्मान निधि"),
    # and a CER that counted those twice would mostly measure segmentation.
    return normalize(text).replace(" ", "")


def cer(reference: str, hypothesis: str) -> float:
    """Character (code point) error rate of one utterance, whitespace ignored."""
    ref, hyp = _chars(reference), _chars(hypothesis)
    return _rate(edit_distance(ref, hyp), len(ref), len(hyp))


def _corpus(pairs: Iterable[tuple[str, str]], split: Callable[[str], Sequence[str]]) -> float:
    errors = length = hyp_length = 0
    for reference, hypothesis in pairs:
        ref, hyp = split(reference), split(hypothesis)
        errors += edit_distance(ref, hyp)
        length += len(ref)
        hyp_length += len(hyp)
    return _rate(errors, length, hyp_length)


def corpus_wer(pairs: Iterable[tuple[str, str]]) -> float:
    """Total word errors / total reference words over (reference, hypothesis) pairs."""
    return _corpus(pairs, words)


def corpus_cer(pairs: Iterable[tuple[str, str]]) -> float:
    """Total character errors / total reference characters over (reference, hypothesis) pairs."""
    return _corpus(pairs, _chars)
