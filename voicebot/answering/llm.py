"""LLM answerers: free-form wording, grounded in retrieved entries, checked before sending.

Both answerers stand on the grounded one: it retrieves and plans every turn, so safety plans
(abstain, refer, decide, caution) never reach a model; only a plain ``answer`` plan does. The
model gets ONLY the planned evidence in a strict prompt that forbids other facts. Its output
is rejected, and the grounded composition sent instead, when it is empty, when it states a
number the evidence does not contain, or when the model fails or times out.

* ``Ct2GeneratorAnswerer`` — a CTranslate2 ``Generator`` directory (``model.bin``,
  ``vocabulary.json`` and the HF ``tokenizer.json``), run in a worker thread.
* ``OpenAICompatAnswerer`` — ``POST {base_url}/chat/completions`` on a local vLLM or
  llama.cpp server.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from voicebot.answering.grounded import GroundedAnswerer
from voicebot.engines.base import Blocking
from voicebot.errors import ModelError
from voicebot.messages import Answer, Exchange
from voicebot.packs import LanguagePack
from voicebot.pipeline import PIVOT
from voicebot.retrieval import normalize

__all__ = [
    "SYSTEM_PROMPT",
    "Ct2GeneratorAnswerer",
    "OpenAICompatAnswerer",
    "build_prompt",
    "numbers_in",
    "unsupported_numbers",
]

_LOGGER = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You answer questions from farmers and rural citizens about Indian government schemes. "
    "Use ONLY the facts in the EVIDENCE. Do not add any fact, number, amount, date, name, "
    "phone number or website that is not written in the EVIDENCE, and do not guess. "
    "Never say that the person will or will not be approved or paid; explain the rule. "
    "If the EVIDENCE does not answer the question, say so and give the helpline from it. "
    "Answer in {language}, in at most three short sentences that can be read aloud."
)

# Scale words after a number, so "₹2 lakh" and "200000" count as the same figure.
_SCALES = {"thousand": 1_000, "lakh": 100_000, "lakhs": 100_000, "crore": 10_000_000}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def build_prompt(question: str, evidence: Sequence[str], *, language: str) -> tuple[str, str]:
    """(system, user) messages: numbered evidence, then the question."""
    lines = [f"[{i}] {text}" for i, text in enumerate(evidence, 1)]
    user = "EVIDENCE:\n" + "\n".join(lines) + f"\n\nQUESTION: {question}\nANSWER:"
    return SYSTEM_PROMPT.format(language=language), user


def _figures(text: str, scale_words: Iterable[tuple[str, int]]) -> list[tuple[float, float]]:
    """(value, value times a following scale word, or the value itself) for each figure."""
    scales = {**_SCALES, **{normalize(w): v for w, v in scale_words if w}}
    plain = normalize(text)
    out = []
    for match in _NUMBER.finditer(plain):
        value = float(match.group(0))
        following = plain[match.end() :].lstrip().split(" ", 1)[0].strip(".,;:!?)")
        out.append((value, value * scales.get(following, 1)))
    return out


def numbers_in(text: str, scale_words: Iterable[tuple[str, int]] = ()) -> set[float]:
    """Every figure in ``text`` (Indic digits, 6,000 and "2 lakh" normalised) as values."""
    return {v for pair in _figures(text, scale_words) for v in pair}


def unsupported_numbers(
    answer: str, evidence: Iterable[str], scale_words: Iterable[tuple[str, int]] = ()
) -> set[float]:
    """Figures in the answer that no evidence text contains (empty: the answer may be sent).

    "₹2 lakh" in the answer is supported by "₹2,00,000" in the evidence and vice versa.
    """
    words = list(scale_words)
    allowed: set[float] = set()
    for text in evidence:
        allowed |= numbers_in(text, words)
    # A scaled figure must match as a whole: "2 crore" is not supported by "₹2 lakh".
    return {value for value, scaled in _figures(answer, words) if scaled not in allowed}


def _pack_scales(pack: LanguagePack) -> list[tuple[str, int]]:
    words = pack.numbers
    return [(words.thousand, 1_000), (words.lakh, 100_000), (words.crore, 10_000_000)]


class _LlmAnswerer:
    """Shared flow: plan with the grounded answerer, generate, check, fall back."""

    name = "llm"

    def __init__(self, grounded: GroundedAnswerer) -> None:
        self.grounded = grounded
        self.fallbacks = 0  # how often the grounded composition was sent instead

    async def _complete(self, system: str, user: str) -> str:
        raise NotImplementedError

    async def answer(
        self,
        question: str,
        *,
        pack: LanguagePack,
        history: Sequence[Exchange] = (),
        pivot: bool = False,
    ) -> Answer:
        evidence = await self.grounded.gather(question, pack=pack, history=history)
        grounded = self.grounded.compose(evidence, pack=pack, pivot=pivot)
        if evidence.plan.action != "answer":
            return grounded  # safety plans are never left to a model
        texts = [self.grounded.entry_text(e, pack, pivot)[0] for e in evidence.plan.entries]
        language = self._language(pack, pivot)
        system, user = build_prompt(question, texts, language=language)
        start = time.perf_counter()
        try:
            raw = await self._complete(system, user)
        except (TimeoutError, aiohttp.ClientError, ModelError, ValueError, KeyError) as err:
            return self._fallback(grounded, f"model failed: {err.__class__.__name__}: {err}")
        elapsed = (time.perf_counter() - start) * 1000
        text = _clean(raw)
        if not text:
            return self._fallback(grounded, "empty model answer")
        english = [e.text for e in evidence.plan.entries]
        invented = unsupported_numbers(text, [*texts, *english], _pack_scales(pack))
        if invented:
            shown = ", ".join(f"{v:g}" for v in sorted(invented))
            return self._fallback(grounded, f"numbers not in the evidence: {shown}")
        timings = {**grounded.timings_ms, "llm": round(elapsed, 2)}
        return Answer(
            text=text,
            language=pack.code if (not pivot and grounded.language == pack.code) else PIVOT,
            sources=grounded.sources,
            abstained=False,
            scheme=grounded.scheme,
            timings_ms=timings,
        )

    @staticmethod
    def _language(pack: LanguagePack, pivot: bool) -> str:
        if pivot or not pack.entries:
            return "English"
        return f"{pack.name} ({pack.native_name})"

    def _fallback(self, grounded: Answer, reason: str) -> Answer:
        self.fallbacks += 1
        _LOGGER.warning("%s answer rejected (%s); sending the grounded answer", self.name, reason)
        return grounded


def _clean(raw: str) -> str:
    # Base models run on: keep the first paragraph, and stop at an echoed prompt header.
    text = re.split(r"\n\s*\n|\n(?:QUESTION|EVIDENCE|ANSWER)\s*:", raw.strip(), maxsplit=1)[0]
    return re.sub(r"\s+", " ", text).strip()


class Ct2GeneratorAnswerer(_LlmAnswerer):
    """A CTranslate2 ``Generator`` plus its HF ``tokenizer.json``, greedy, in a worker thread."""

    name = "ct2-llm"

    def __init__(
        self,
        generator: Any,
        tokenizer: Any,
        *,
        grounded: GroundedAnswerer,
        max_new_tokens: int = 160,
        blocking: Blocking | None = None,
    ) -> None:
        super().__init__(grounded)
        self._generator = generator
        self._tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self._blocking = blocking or Blocking(1)

    @classmethod
    def load(
        cls,
        directory: Path,
        *,
        grounded: GroundedAnswerer,
        device: str = "auto",
        threads: int = 2,
        max_new_tokens: int = 160,
    ) -> Ct2GeneratorAnswerer:
        """Blocking: load the model directory (call it in a thread at start-up)."""
        import ctranslate2
        from tokenizers import Tokenizer

        from voicebot.engines.device import pick_device

        directory = Path(directory)
        for name in ("model.bin", "tokenizer.json"):
            if not (directory / name).is_file():
                raise ModelError(f"{directory}: {name} is missing", code="model-missing")
        where, compute = pick_device(device)
        try:
            generator = ctranslate2.Generator(
                str(directory), device=where, compute_type=compute, intra_threads=threads
            )
            tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        except (RuntimeError, ValueError, OSError) as err:
            raise ModelError(f"{directory}: cannot load: {err}", code="model-corrupt") from err
        return cls(generator, tokenizer, grounded=grounded, max_new_tokens=max_new_tokens)

    async def _complete(self, system: str, user: str) -> str:
        return await self._blocking.run(self._generate, f"{system}\n\n{user}")

    def _generate(self, prompt: str) -> str:
        tokens = self._tokenizer.encode(prompt).tokens
        try:
            results = self._generator.generate_batch(
                [tokens],
                max_length=self.max_new_tokens,
                sampling_topk=1,
                include_prompt_in_result=False,
            )
        except (RuntimeError, ValueError) as err:
            raise ModelError(f"generation failed: {err}", code="model-failed") from err
        return str(self._tokenizer.decode(results[0].sequences_ids[0]))


class OpenAICompatAnswerer(_LlmAnswerer):
    """Any OpenAI-compatible chat server (vLLM, llama.cpp ``server``) on the local network."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        grounded: GroundedAnswerer,
        timeout: float = 20.0,
        max_tokens: int = 200,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        super().__init__(grounded)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_tokens = max_tokens
        self._session = session
        self._own_session = session is None

    async def _complete(self, system: str, user: str) -> str:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
            self._own_session = True
        payload = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        async with asyncio.timeout(self.timeout.total):
            async with self._session.post(self.url, json=payload, timeout=self.timeout) as resp:
                if resp.status != 200:
                    raise ModelError(f"{self.url} answered {resp.status}", code="model-failed")
                body = await resp.json(content_type=None)
        content = body["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise ValueError("the completion has no text content")
        return content

    async def close(self) -> None:
        if self._session is not None and self._own_session and not self._session.closed:
            await self._session.close()
