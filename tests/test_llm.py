"""LLM answerers through their real loading code: a tiny CTranslate2 Generator built here with
numpy, and a loopback OpenAI-compatible server. A model answer that states a number not in
the evidence, or a failing model, falls back to the grounded composition."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from tests.grounded_kit import DATA_DIR, ROOT, real_answerer, real_index, real_packs
from voicebot.answering import factory
from voicebot.answering.factory import build_answerer
from voicebot.answering.llm import (
    Ct2GeneratorAnswerer,
    OpenAICompatAnswerer,
    numbers_in,
    unsupported_numbers,
)
from voicebot.config import Settings
from voicebot.errors import ModelError

QUESTION = "How much money does PM-KISAN give in a year?"


def build_chain_generator(out: Path, words: Sequence[str]) -> Path:
    """A 1-layer CT2 decoder that, after any prompt, writes ``words`` and then ``</s>``.

    Attention and FFN weights are zero, so each step's hidden state is the layer-normed
    one-hot embedding of the current token; the output projection maps it to its successor.
    """
    from ctranslate2.specs import transformer_spec
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = ["<unk>", "<s>", "</s>", *dict.fromkeys(words)]
    size = len(vocab)
    d = size + size % 2
    f32 = np.float32
    spec = transformer_spec.TransformerDecoderModelSpec.from_config(1, 2)
    dec = spec.decoder
    layer = dec.layer[0]
    for norm in (dec.layer_norm, layer.self_attention.layer_norm, layer.ffn.layer_norm):
        norm.gamma, norm.beta = np.ones(d, f32), np.zeros(d, f32)
    layer.self_attention.linear[0].weight = np.zeros((3 * d, d), f32)
    layer.self_attention.linear[1].weight = np.zeros((d, d), f32)
    layer.ffn.linear_0.weight = np.zeros((4, d), f32)
    layer.ffn.linear_1.weight = np.zeros((d, 4), f32)
    embeddings = np.eye(size, d, dtype=f32)
    dec.embeddings.weight = embeddings
    dec.position_encodings.encodings = np.zeros((256, d), f32)
    chain = [*words, "</s>"]
    successor = {token: chain[0] for token in vocab}  # any prompt token starts the answer
    successor.update(itertools.pairwise(chain))
    projection = np.zeros((size, d), f32)
    for token, following in successor.items():
        row = embeddings[vocab.index(token)]
        projection[vocab.index(following)] += 5 * (row - row.mean()) / row.std()
    dec.projection.weight = projection
    spec.register_vocabulary(vocab)
    spec.validate()
    out.mkdir(parents=True, exist_ok=True)
    spec.save(str(out))
    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(out / "tokenizer.json"))
    return out


def test_number_check_normalises_figures() -> None:
    evidence = ["PMSBY pays ₹2 lakh for accidental death for ₹20 a year; call 1800-180-1111."]
    assert unsupported_numbers("It pays ₹2,00,000 for ₹20.", evidence) == set()
    assert (
        unsupported_numbers("दो लाख नहीं, २ लाख और ₹२० सालाना", evidence, [("लाख", 100_000)])
        == set()
    )
    assert unsupported_numbers("It pays ₹2 crore.", evidence) == {2.0}
    assert unsupported_numbers("Call 1800-180-2222.", evidence) == {2222.0}
    assert 6000.0 in numbers_in("₹6,000 a year") and 200000.0 in numbers_in("2 lakh")


async def test_ct2_generator_answer_is_sent_when_it_stays_in_the_evidence(tmp_path: Path) -> None:
    model = build_chain_generator(tmp_path / "ok", ["PM-KISAN", "pays", "₹6,000", "a", "year."])
    answerer = await asyncio.to_thread(
        Ct2GeneratorAnswerer.load, model, grounded=real_answerer(), device="cpu"
    )
    grounded = await real_answerer().answer(QUESTION, pack=real_packs().get("en"))
    answer = await answerer.answer(QUESTION, pack=real_packs().get("en"))
    assert answer.text == "PM-KISAN pays ₹6,000 a year."
    assert answer.sources == grounded.sources and answer.scheme == "pm-kisan"
    assert answer.timings_ms["llm"] > 0 and answerer.fallbacks == 0


async def test_ct2_generator_answer_with_an_invented_number_falls_back(tmp_path: Path) -> None:
    model = build_chain_generator(tmp_path / "bad", ["PM-KISAN", "pays", "₹9,999", "a", "year."])
    answerer = await asyncio.to_thread(
        Ct2GeneratorAnswerer.load, model, grounded=real_answerer(), device="cpu"
    )
    grounded = await real_answerer().answer(QUESTION, pack=real_packs().get("en"))
    answer = await answerer.answer(QUESTION, pack=real_packs().get("en"))
    assert answer.text == grounded.text and answer.sources == grounded.sources
    assert "9,999" not in answer.text and "llm" not in answer.timings_ms
    assert answerer.fallbacks == 1


def test_ct2_loader_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        Ct2GeneratorAnswerer.load(tmp_path, grounded=real_answerer())
    assert err.value.code == "model-missing" and "model.bin" in err.value.message


async def test_factory_builds_each_answerer_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build_chain_generator(tmp_path / "m", ["PM-KISAN", "pays", "₹6,000", "a", "year."])
    base = Settings(
        data_dir=DATA_DIR,
        knowledge_dir=ROOT / "knowledge",
        languages_dir=ROOT / "languages",
        device="cpu",
    )
    packs = real_packs()
    real_index()  # the shared embedding cache under DATA_DIR: this build only loads it
    grounded = await build_answerer(base, packs)
    assert grounded.name == "grounded"
    assert len(grounded.index.entries) == len(real_index().entries)  # type: ignore[attr-defined]

    async def shared(_settings: Settings, _packs: object) -> object:
        return real_answerer()  # the index was just shown to build; do not build it again

    monkeypatch.setattr(factory, "build_grounded", shared)
    ct2 = await build_answerer(base.with_overrides(answerer="ct2-llm", llm_model=str(model)), packs)
    assert isinstance(ct2, Ct2GeneratorAnswerer)
    assert (await ct2.answer(QUESTION, pack=packs.get("en"))).text == "PM-KISAN pays ₹6,000 a year."
    remote = await build_answerer(
        base.with_overrides(answerer="openai", llm_base_url="http://127.0.0.1:9/v1"), packs
    )
    assert isinstance(remote, OpenAICompatAnswerer)
    assert remote.url == "http://127.0.0.1:9/v1/chat/completions"


class FakeChatServer:
    """Loopback OpenAI-compatible ``/v1/chat/completions``; ``mode`` picks the behaviour."""

    def __init__(self) -> None:
        self.mode = "grounded"
        self.requests: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.mode == "error":
            return web.json_response({"error": "boom"}, status=500)
        if self.mode == "slow":
            await asyncio.sleep(2)
        content = {
            "grounded": "PM-KISAN gives ₹6,000 a year, in three instalments of ₹2,000.",
            "invented": "PM-KISAN gives ₹7,500 a year.",
            "slow": "too late",
        }[self.mode]
        return web.json_response(
            {"choices": [{"message": {"role": "assistant", "content": content}}]}
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        return app


async def test_openai_compatible_server_answers_pass_or_fall_back(aiohttp_server: Any) -> None:
    fake = FakeChatServer()
    server = await aiohttp_server(fake.app())
    answerer = OpenAICompatAnswerer(
        str(server.make_url("/v1")), model="tiny", grounded=real_answerer(), timeout=0.5
    )
    en = real_packs().get("en")
    grounded = await real_answerer().answer(QUESTION, pack=en)
    try:
        ok = await answerer.answer(QUESTION, pack=en)
        assert ok.text.startswith("PM-KISAN gives ₹6,000") and ok.sources == grounded.sources
        sent = fake.requests[-1]
        assert sent["model"] == "tiny" and sent["temperature"] == 0
        system, user = sent["messages"][0]["content"], sent["messages"][1]["content"]
        assert "ONLY" in system and "EVIDENCE" in user and QUESTION in user
        assert "₹6,000" in user  # the retrieved entry is the evidence
        for mode in ("invented", "error", "slow"):
            fake.mode = mode
            fallback = await answerer.answer(QUESTION, pack=en)
            assert (fallback.text, fallback.sources) == (grounded.text, grounded.sources), mode
        assert answerer.fallbacks == 3
        # Safety plans never reach the model.
        calls = len(fake.requests)
        decided = await answerer.answer("will the bank approve my KCC loan? yes or no", pack=en)
        assert len(fake.requests) == calls and "kcc.loan_decision" in [
            s.entry_id for s in decided.sources
        ]
    finally:
        await answerer.close()
