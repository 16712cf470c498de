"""Ct2Translator on tiny CTranslate2 models built in the test (no torch, no downloads).

Translation quality cannot be tested offline (no MT model ships in any package, models.md §3);
these tests pin the plumbing: real model loading, tokenisation, language-code prefixes,
determinism, and that protected terms survive both when the model keeps the placeholders
(copy model) and when it loses them (random model → appended, logged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from voicebot.engines.base import Glossary
from voicebot.engines.ct2_translate import Ct2Translator, protect, restore
from voicebot.errors import ModelError, TranslateError

pytestmark = pytest.mark.model

HINDI = "PM-KISAN की किस्त ₹6,000 है। हेल्पलाइन 155261 पर कॉल करें।"
TERMS = ("PM-KISAN", "₹6,000", "155261")
PLACEHOLDER_CHARS = "[]T0123456789"


def _chars(*texts: str) -> list[str]:
    return sorted({"▁" if c.isspace() else c for text in texts for c in text})


@pytest.fixture(scope="module")
def random_model(ct2_factory: Callable[..., Path]) -> Path:
    tokens = _chars(HINDI, PLACEHOLDER_CHARS, "abcdefghijklmnopqrstuvwxyz")
    return ct2_factory("random", [*tokens, "hin_Deva", "eng_Latn"])


@pytest.fixture(scope="module")
def copy_model(ct2_factory: Callable[..., Path]) -> Path:
    return ct2_factory("copy", _chars(HINDI, PLACEHOLDER_CHARS), copy=True)


def test_protect_and_restore_round_trip() -> None:
    glossary = Glossary(terms=("Kisan Credit Card",))
    text = (
        "PM-KISAN pays ₹6,000 (Rs. 2,000 x 3). Kisan Credit Card: call 1800-180-1551 by 31/03/2025."
    )
    protected = protect(text, glossary)
    assert "PM-KISAN" not in protected.text and "₹" not in protected.text
    assert protected.terms[:3] == ("PM-KISAN", "₹6,000", "Rs. 2,000")
    assert "Kisan Credit Card" in protected.terms and "1800-180-1551" in protected.terms
    assert restore(protected.text, protected) == (text, ())
    # A model that spaces out or drops placeholders: spaced ones match, lost ones are appended.
    mangled = protected.text.replace("[T0]", "[ t0 ]").replace("[T1]", "")
    restored, lost = restore(mangled, protected)
    assert (
        lost == ("₹6,000",) and restored.startswith("PM-KISAN pays") and restored.endswith("₹6,000")
    )


async def test_copy_model_keeps_terms_in_place_via_placeholders(
    copy_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    translator = Ct2Translator(
        copy_model, tokenizer="char", source_suffix="</s>", languages=("hi", "xx")
    )
    with caplog.at_level(logging.WARNING):
        out = await translator.translate(HINDI, source="hi", target="xx")
    # Every term came back where it was: the placeholders went through the model and back.
    assert out == HINDI
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]


async def test_random_model_is_deterministic_and_never_loses_terms(
    random_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    translator = Ct2Translator(
        random_model, tokenizer="char", source_prefix="{code}", target_prefix="{code}"
    )
    assert translator.supports("hin_Deva", "eng_Latn")
    assert not translator.supports("hin_Deva", "tam_Taml")  # no tam_Taml token in the vocabulary
    with caplog.at_level(logging.WARNING):
        first = await translator.translate(HINDI, source="hin_Deva", target="eng_Latn")
    second = await translator.translate(HINDI, source="hin_Deva", target="eng_Latn")
    assert first == second and first.strip()
    assert first != HINDI
    assert "eng_Latn" not in first and "<unk>" not in first  # prefix and specials are stripped
    for term in TERMS:
        assert term in first
    assert any("dropped" in r.getMessage() for r in caplog.records)


async def test_identity_when_source_equals_target(random_model: Path) -> None:
    translator = Ct2Translator(random_model, tokenizer="char", languages=("hi", "en"))
    assert await translator.translate(HINDI, source="hi", target="hi") == HINDI
    assert translator.supports("ta", "ta")  # identity needs no model support


async def test_unsupported_pair_is_a_translate_error(random_model: Path) -> None:
    translator = Ct2Translator(random_model, tokenizer="char", languages=("hi", "en"))
    assert not translator.supports("hi", "ta")
    with pytest.raises(TranslateError) as info:
        await translator.translate("नमस्ते", source="hi", target="ta")
    assert info.value.code == "mt-unsupported"


def test_missing_model_dir_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        Ct2Translator(tmp_path / "nope")
    assert info.value.code == "model-missing"
    with pytest.raises(ModelError) as info:
        Ct2Translator(tmp_path, tokenizer="sentencepiece")  # exists but holds no model
    assert info.value.code == "model-missing"
