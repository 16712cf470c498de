"""Machine translation with a CTranslate2 sequence-to-sequence model, glossary terms protected.

Terms that must survive translation exactly (scheme names, ₹ amounts, dates, numbers, phone
numbers, and the pack glossary) are swapped for placeholders like ``[T0]`` before the model
runs and swapped back afterwards. A model may drop or mangle a placeholder; the term is then
appended to the sentence rather than lost, and the loss is logged, because a missing helpline
number is worse than an awkward sentence.

Model conventions differ (NLLB wants ``hin_Deva`` as the first source token and as the target
prefix; a bilingual OPUS-MT model wants neither), so they are constructor options, defaulted
from ``voicebot-model.json`` written by ``voicebot models pull``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from voicebot.engines.base import Blocking, Glossary
from voicebot.engines.device import pick_device
from voicebot.errors import ModelError, TranslateError
from voicebot.models import read_options

if TYPE_CHECKING:
    import ctranslate2

__all__ = ["Ct2Translator", "Protected", "protect", "restore"]

_LOGGER = logging.getLogger(__name__)

_SPECIAL = frozenset({"<unk>", "<s>", "</s>", "<pad>", "<blank>"})
_SPM_FILES = ("sentencepiece.bpe.model", "source.spm", "spm.model", "sentencepiece.model")
_SENTENCE = re.compile(r"(?<=[.?!।॥])\s+")

# Order matters: the first alternative that matches at a position wins.
_TERM_PATTERNS = (
    r"\[T\d+\]",  # text that already looks like a placeholder is protected too
    r"₹\s?\d[\d,]*(?:\.\d+)?(?:\s?/-)?",
    r"\b(?:Rs\.?|INR)\s?\d[\d,]*(?:\.\d+)?(?:\s?/-)?",
    r"\b\d{4}-\d{2}-\d{2}\b",
    r"\b\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b",
    r"\+?\d[\d -]{6,}\d",  # phone numbers: 1800-180-1551, +91 98765 43210, 155261
    r"\b[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+\b",  # hyphenated names: PM-KISAN, PM-JAY
    r"\b[a-z]-[A-Z]{2,}\b",  # e-KYC
    r"\b[A-Z]{2,}[A-Z0-9]*\b",  # acronyms: KYC, DBT, PMFBY
    r"\d[\d,]*(?:\.\d+)?%?",
)
_NO_GLOSSARY = Glossary()
_PLACEHOLDER = re.compile(r"\[\s*T\s*(\d+)\s*\]", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Protected:
    """Text with placeholders, and the original terms in placeholder order."""

    text: str
    terms: tuple[str, ...]


def _term_regex(glossary_terms: Collection[str]) -> re.Pattern[str]:
    # Glossary terms first, longest first, so "PM-KISAN helpline" beats "PM-KISAN".
    terms = sorted({t.strip() for t in glossary_terms if t.strip()}, key=len, reverse=True)
    parts = [rf"(?<!\w){re.escape(t)}(?!\w)" for t in terms]
    return re.compile("|".join((*parts, *_TERM_PATTERNS)))


def protect(text: str, glossary: Glossary = _NO_GLOSSARY) -> Protected:
    """Replace protected terms by ``[T0]``, ``[T1]``, … (same term → same placeholder)."""
    terms: list[str] = []

    def swap(match: re.Match[str]) -> str:
        term = match.group(0)
        if term not in terms:
            terms.append(term)
        return f"[T{terms.index(term)}]"

    return Protected(_term_regex(glossary.terms).sub(swap, text), tuple(terms))


def restore(translated: str, protected: Protected) -> tuple[str, tuple[str, ...]]:
    """Put the terms back; returns (text, terms the model lost), lost terms appended at the end."""
    seen: set[int] = set()

    def back(match: re.Match[str]) -> str:
        index = int(match.group(1))
        if index >= len(protected.terms):
            return ""  # the model invented a placeholder
        seen.add(index)
        return protected.terms[index]

    text = _PLACEHOLDER.sub(back, translated)
    lost = tuple(t for i, t in enumerate(protected.terms) if i not in seen)
    if lost:
        text = " ".join((text.strip(), *lost)).strip()
    return " ".join(text.split()), lost


class _Tokenizer(Protocol):
    def encode(self, text: str) -> list[str]: ...

    def decode(self, tokens: Sequence[str]) -> str: ...


class _CharTokenizer:
    """One token per character, spaces as "▁" (tiny test models, character-level models)."""

    def encode(self, text: str) -> list[str]:
        return ["▁" if ch.isspace() else ch for ch in " ".join(text.split())]

    def decode(self, tokens: Sequence[str]) -> str:
        return "".join(tokens).replace("▁", " ").strip()


class _SentencePieceTokenizer:
    def __init__(self, model_file: Path) -> None:
        try:
            # Optional dependency, only for SentencePiece models (NLLB, OPUS-MT).
            sentencepiece = importlib.import_module("sentencepiece")
        except ImportError as err:
            raise ModelError(
                f"{model_file.parent} needs the sentencepiece package (pip install sentencepiece)",
                code="model-dependency",
            ) from err
        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))

    def encode(self, text: str) -> list[str]:
        return [str(p) for p in self._sp.encode(text, out_type=str)]

    def decode(self, tokens: Sequence[str]) -> str:
        return str(self._sp.decode(list(tokens))).strip()


def _load_vocabulary(model_dir: Path) -> frozenset[str]:
    """Target-side tokens, used to check that a language code token exists."""
    for stem in ("shared_vocabulary", "target_vocabulary"):
        json_file, txt_file = model_dir / f"{stem}.json", model_dir / f"{stem}.txt"
        if json_file.is_file():
            return frozenset(str(t) for t in json.loads(json_file.read_text(encoding="utf-8")))
        if txt_file.is_file():
            return frozenset(txt_file.read_text(encoding="utf-8").splitlines())
    return frozenset()


class Ct2Translator:
    """The ``Translator`` for a CTranslate2 model directory.

    ``source_prefix``/``target_prefix``/``source_suffix`` are token templates where ``{code}``
    is the pack's translation code (NLLB: ``"{code}"``, ``"{code}"``, ``"</s>"``); ``""`` means
    none. ``languages`` lists the codes a model without language tokens can serve.
    """

    def __init__(
        self,
        model_dir: Path | str,
        *,
        tokenizer: str | None = None,
        source_prefix: str | None = None,
        source_suffix: str | None = None,
        target_prefix: str | None = None,
        languages: Collection[str] | None = None,
        device: str = "auto",
        cpu_threads: int = 2,
        num_workers: int = 1,
        beam_size: int = 4,
        max_decoding_length: int = 256,
    ) -> None:
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "model.bin").is_file():
            raise ModelError(
                f"no CTranslate2 model in {self.model_dir}; run `voicebot models pull <name>` "
                "or set the pack's mt model to a converted directory",
                code="model-missing",
            )
        options = read_options(self.model_dir)
        self.name = f"ct2:{self.model_dir.name}"
        self.source_prefix = (
            source_prefix if source_prefix is not None else options.get("source_prefix", "")
        )
        self.source_suffix = (
            source_suffix if source_suffix is not None else options.get("source_suffix", "")
        )
        self.target_prefix = (
            target_prefix if target_prefix is not None else options.get("target_prefix", "")
        )
        if languages is None and options.get("languages"):
            languages = options["languages"].split(",")
        self.languages = frozenset(languages or ())
        self.beam_size = beam_size
        self.max_decoding_length = max_decoding_length
        self._vocabulary = _load_vocabulary(self.model_dir)
        self._tokenizer = self._make_tokenizer(tokenizer or options.get("tokenizer", "auto"))
        self._blocking = Blocking(num_workers)
        device_name, compute_type = pick_device(device)
        self._translator = self._load(device_name, compute_type, cpu_threads, num_workers)

    def _make_tokenizer(self, kind: str) -> _Tokenizer:
        spm = next((self.model_dir / f for f in _SPM_FILES if (self.model_dir / f).is_file()), None)
        if kind == "auto":
            kind = "sentencepiece" if spm is not None else "char"
        if kind == "char":
            return _CharTokenizer()
        if kind == "sentencepiece":
            if spm is None:
                raise ModelError(
                    f"{self.model_dir} has no SentencePiece model ({', '.join(_SPM_FILES)})",
                    code="model-incomplete",
                )
            return _SentencePieceTokenizer(spm)
        raise ModelError(f"unknown tokenizer {kind!r} (char | sentencepiece)", code="model-config")

    def _load(
        self, device: str, compute_type: str, cpu_threads: int, num_workers: int
    ) -> ctranslate2.Translator:
        import ctranslate2

        try:
            return ctranslate2.Translator(
                str(self.model_dir),
                device=device,
                compute_type=compute_type,
                intra_threads=cpu_threads,
                inter_threads=num_workers,
            )
        except (RuntimeError, ValueError, OSError) as err:
            raise ModelError(f"cannot load {self.model_dir}: {err}", code="model-corrupt") from err

    def _token(self, template: str, code: str) -> str:
        return template.replace("{code}", code)

    def supports(self, source: str, target: str) -> bool:
        if source == target:
            return True
        if self.languages:
            return source in self.languages and target in self.languages
        templates = [t for t in (self.source_prefix, self.target_prefix) if "{code}" in t]
        if not templates:
            return False  # a model without language tokens must be told its languages
        return all(
            self._token(t, code) in self._vocabulary
            for t, code in ((self.source_prefix, source), (self.target_prefix, target))
            if "{code}" in t
        )

    async def translate(
        self, text: str, *, source: str, target: str, glossary: Glossary = _NO_GLOSSARY
    ) -> str:
        if source == target or not text.strip():
            return text
        if not self.supports(source, target):
            raise TranslateError(
                f"{self.name} cannot translate {source} → {target}", code="mt-unsupported"
            )
        protected = protect(text, glossary)
        sentences = [s for s in _SENTENCE.split(protected.text.strip()) if s.strip()]
        try:
            outputs = await self._blocking.run(self._translate_sync, sentences, source, target)
        except (asyncio.CancelledError, TimeoutError, TranslateError):
            raise
        except Exception as err:
            _LOGGER.exception("%s failed %s → %s", self.name, source, target)
            raise TranslateError(f"{self.name} failed: {err}", code="mt-failed") from err
        restored, lost = restore(" ".join(outputs), protected)
        if lost:
            _LOGGER.warning(
                "%s dropped %d protected term(s) %s → %s; appended them",
                self.name,
                len(lost),
                source,
                target,
            )
        return restored

    def _translate_sync(self, sentences: list[str], source: str, target: str) -> list[str]:
        batch = []
        for sentence in sentences:
            tokens = self._tokenizer.encode(sentence)
            if self.source_prefix:
                tokens.insert(0, self._token(self.source_prefix, source))
            if self.source_suffix:
                tokens.append(self._token(self.source_suffix, source))
            batch.append(tokens)
        prefix_token = self._token(self.target_prefix, target) if self.target_prefix else ""
        longest = max((len(tokens) for tokens in batch), default=1)
        results = self._translator.translate_batch(
            batch,
            target_prefix=[[prefix_token] for _ in batch] if prefix_token else None,
            beam_size=self.beam_size,
            # Output rarely needs more than twice the input; the cap stops degenerate loops.
            max_decoding_length=min(self.max_decoding_length, 2 * longest + 16),
        )
        outputs = []
        for result in results:
            tokens = list(result.hypotheses[0])
            if prefix_token and tokens[:1] == [prefix_token]:
                tokens = tokens[1:]
            outputs.append(self._tokenizer.decode([t for t in tokens if t not in _SPECIAL]))
        return outputs
