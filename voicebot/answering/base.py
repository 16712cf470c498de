"""The Answerer Protocol shared by the embedded grounded answerer and LLM answerers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from voicebot.messages import Answer, Exchange
from voicebot.packs import LanguagePack

__all__ = ["Answerer"]


class Answerer(Protocol):
    """Answers only from retrieved evidence; abstains (``Answer.abstained``) when it is weak.

    ``question`` is in ``pack``'s language unless the pipeline translated it to the pivot
    language first, in which case ``pivot`` is true and the answer is expected in English.
    """

    name: str

    async def answer(
        self,
        question: str,
        *,
        pack: LanguagePack,
        history: Sequence[Exchange] = (),
        pivot: bool = False,
    ) -> Answer: ...
