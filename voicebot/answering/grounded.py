"""The embedded default answerer: evidence-gated composition from knowledge entries only.

retrieve → policy plan → compose. The answer text is the pack's reviewed translation of each
entry when the pack has one (so ``hi`` answers natively without an MT model), else the
English entry text with ``Answer.language = "en"`` so a configured translator can take it
the rest of the way. Nothing is generated: every sentence comes from an entry, and its
sources travel with it. Follow-ups ("and how do I apply for it?") that name no scheme lean on
the previous turn's scheme.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from voicebot.knowledge import Entry, KnowledgeBase
from voicebot.messages import Answer, Exchange, Source
from voicebot.packs import LanguagePack, PackSet
from voicebot.pipeline import PIVOT
from voicebot.policy import DECISION_CUES, Plan, Policy, is_decision_topic
from voicebot.retrieval import KnowledgeIndex, SearchResult

__all__ = ["Evidence", "GroundedAnswerer", "decision_note", "official_channel"]

_LOGGER = logging.getLogger(__name__)
SEARCH_K = 8


@dataclass(frozen=True, slots=True)
class Evidence:
    """A turn's retrieval and plan, shared by the grounded and the LLM answerers."""

    question: str
    result: SearchResult
    plan: Plan
    retrieve_ms: float


def official_channel(kb: KnowledgeBase, scheme_id: str | None) -> str:
    """``☎ helpline · website`` for a scheme (symbols, not words, so it reads in any language)."""
    if not scheme_id or scheme_id not in kb.schemes:
        return ""
    scheme = kb.scheme(scheme_id)
    parts = [f"☎ {scheme.helpline}" if scheme.helpline else "", scheme.website]
    return " · ".join(p for p in parts if p)


def decision_note(kb: KnowledgeBase, scheme_id: str | None) -> str:
    """Fallback when the KB has no decision entry: the bot never says yes or no."""
    scheme = kb.schemes.get(scheme_id) if scheme_id else None
    name = scheme.short_name if scheme else "the scheme"
    where = f" Ask them directly: {scheme.helpline}." if scheme and scheme.helpline else ""
    return (
        f"I cannot say yes or no for your case: that decision is made by the officials who "
        f"handle {name} after checking your documents.{where}"
    )


class GroundedAnswerer:
    """Answers from the knowledge base only; abstains with the pack's phrase when unsure."""

    name = "grounded"

    def __init__(
        self,
        index: KnowledgeIndex,
        *,
        packs: PackSet | None = None,
        policy: Policy | None = None,
        k: int = SEARCH_K,
    ) -> None:
        self.index = index
        self.kb = index.kb
        pivot_cues: Sequence[str] = DECISION_CUES
        if packs is not None and PIVOT in packs:
            pivot_cues = (*DECISION_CUES, *packs.get(PIVOT).decision_cues)
        self.policy = policy or Policy(self.kb, decision_cues=pivot_cues)
        self.k = k

    async def answer(
        self,
        question: str,
        *,
        pack: LanguagePack,
        history: Sequence[Exchange] = (),
        pivot: bool = False,
    ) -> Answer:
        evidence = await self.gather(question, pack=pack, history=history)
        return self.compose(evidence, pack=pack, pivot=pivot)

    async def gather(
        self, question: str, *, pack: LanguagePack, history: Sequence[Exchange] = ()
    ) -> Evidence:
        """Retrieve and plan. A follow-up that names no scheme inherits the last one."""
        start = time.perf_counter()
        # A two-part question ("how much … and when …?") also has each part searched on its
        # own, within the scheme; the scheme's name adds nothing there but noise.
        clauses = self.policy.clauses(question, (pack.numbers.and_word,))
        texts = [question, *(self.index.without_names(c) for c in clauses)]
        vectors = await self.index.embed_many(texts)  # one batch, one thread hop
        result = self.index.search_vector(question, vectors[0], k=self.k)
        previous = history[-1].scheme if history else None
        prefer = [previous] if previous else []
        if previous and self.policy.use_memory(result, previous):
            result = self.index.search_vector(question, vectors[0], k=self.k, prefer=prefer)
        focus = list(result.named_schemes) or prefer
        if not focus and result.top is not None:
            focus = [result.top.entry.scheme]
        clause_results = [
            self.index.search_vector(text, vector, k=1, within=focus)
            for text, vector in zip(texts[1:], vectors[1:], strict=True)
        ]
        plan = self.policy.plan(
            question, result, decision_cues=pack.decision_cues, clause_results=clause_results
        )
        elapsed = (time.perf_counter() - start) * 1000
        _LOGGER.debug(
            "plan=%s entries=%s reason=%s",
            plan.action,
            [e.id for e in plan.entries],
            plan.reason,
        )
        return Evidence(question=question, result=result, plan=plan, retrieve_ms=elapsed)

    # -- composition

    def entry_text(self, entry: Entry, pack: LanguagePack, pivot: bool) -> tuple[str, bool]:
        """The pack's reviewed translation when there is one (and we are not on the pivot)."""
        if not pivot and entry.id in pack.entries:
            return pack.entries[entry.id], True
        return entry.text, pack.code == PIVOT

    def source(self, entry: Entry, pack: LanguagePack) -> Source:
        scheme = self.kb.scheme_of(entry)
        title = pack.scheme_names.get(scheme.id) or scheme.short_name
        return Source(entry_id=entry.id, title=title, url=entry.source, as_of=entry.as_of)

    def compose(self, evidence: Evidence, *, pack: LanguagePack, pivot: bool = False) -> Answer:
        start = time.perf_counter()
        plan = evidence.plan
        entries = list(plan.entries)
        native = [self.entry_text(e, pack, pivot) for e in entries]
        # One language per answer: drop an untranslated extra entry rather than mix scripts.
        if len(entries) > 1 and native[0][1] and not native[1][1] and plan.action == "answer":
            entries, native = entries[:1], native[:1]
        in_pack = bool(native) and all(ok for _, ok in native)
        language = pack.code if (in_pack and not pivot) else PIVOT
        if plan.action == "abstain":
            # The pack's reviewed phrase, marked as already in the user's language so the
            # MT path never re-translates it.
            channel = official_channel(self.kb, plan.scheme)
            return Answer(
                text=f"{pack.phrase('dont_know')} {channel}".strip(),
                language=pack.code,
                abstained=True,
                scheme=plan.scheme,
                timings_ms=self._timings(evidence, start),
            )
        parts = [text for text, _ in native]
        if plan.action == "decide" and not any(is_decision_topic(e) for e in entries):
            parts.append(decision_note(self.kb, plan.scheme))
        if plan.action in {"caution", "decide"}:
            channel = official_channel(self.kb, plan.scheme)
            if channel:
                parts.append(channel)
        sources = tuple(dict.fromkeys(self.source(e, pack) for e in entries))
        return Answer(
            text=" ".join(p.strip() for p in parts if p.strip()),
            language=language,
            sources=sources,
            abstained=plan.abstained,
            scheme=plan.scheme,
            timings_ms=self._timings(evidence, start),
        )

    @staticmethod
    def _timings(evidence: Evidence, start: float) -> dict[str, float]:
        return {
            "retrieve": round(evidence.retrieve_ms, 2),
            "compose": round((time.perf_counter() - start) * 1000, 2),
        }
