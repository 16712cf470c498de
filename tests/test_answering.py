"""The grounded answerer and the safety policy on the real knowledge base and packs, the
text-channel format, and `voicebot ask` end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.grounded_kit import (
    DATA_DIR,
    ROOT,
    real_answerer,
    real_index,
    real_kb,
    real_packs,
)
from tests.grounded_kit import restore_logging as restore_logging
from voicebot.answering.format import format_text_reply, sources_json
from voicebot.cli import main
from voicebot.messages import Answer, Exchange, Source
from voicebot.metrics import Metrics
from voicebot.packs import LanguagePack
from voicebot.pipeline import Pipeline
from voicebot.policy import Policy, is_fraud_topic
from voicebot.retrieval import Hit, SearchResult

DEVANAGARI = re.compile(r"[\u0900-\u097f]")


def hi() -> LanguagePack:
    return real_packs().get("hi")


def en() -> LanguagePack:
    return real_packs().get("en")


async def test_hindi_question_gets_the_reviewed_hindi_answer_with_amount_and_source() -> None:
    answer = await real_answerer().answer("पीएम किसान की किस्त कितनी है", pack=hi())
    assert answer.language == "hi" and not answer.abstained
    assert len(DEVANAGARI.findall(answer.text)) > 40
    assert "₹2,000" in answer.text and "₹6,000" in answer.text
    assert answer.scheme == "pm-kisan"
    source = answer.sources[0]
    assert source.entry_id == "pm-kisan.benefit"
    assert source.title == hi().scheme_names["pm-kisan"]  # the pack's native name
    assert source.url.startswith("https://") and source.as_of == "2026-03-13"
    assert answer.timings_ms["retrieve"] > 0 and "compose" in answer.timings_ms


async def test_pivot_path_answers_in_english_from_the_same_entries() -> None:
    answer = await real_answerer().answer(
        "How much is the PM-KISAN instalment?", pack=hi(), pivot=True
    )
    assert answer.language == "en"
    assert not DEVANAGARI.search(answer.text)
    assert "₹2,000" in answer.text and answer.sources[0].title == hi().scheme_names["pm-kisan"]


async def test_every_sentence_comes_from_a_cited_entry() -> None:
    kb = real_kb()
    for question in ("ayushman card se kitne ka ilaj free hota hai", "KCC interest rate?"):
        answer = await real_answerer().answer(question, pack=en())
        cited = " ".join(kb.entry(s.entry_id).text for s in answer.sources)
        assert answer.text == cited


async def test_decision_questions_get_the_rule_and_who_decides_never_yes_or_no() -> None:
    for question, pack in (
        ("will the bank approve my KCC loan? just tell yes or no", en()),
        ("मेरा केसीसी लोन पास होगा क्या? हाँ या ना बताओ", hi()),
    ):
        evidence = await real_answerer().gather(question, pack=pack)
        assert evidence.plan.action == "decide"
        answer = real_answerer().compose(evidence, pack=pack)
        text = answer.text.lower()
        assert not re.search(r"\b(yes|will be approved|definitely)\b", text)
        assert "kcc.loan_decision" in [s.entry_id for s in answer.sources]
        assert "bank" in text or "बैंक" in text
        assert "1800-180-1551" in answer.text  # the official channel is always given


async def test_fee_and_scam_questions_get_a_warning_and_the_official_channel() -> None:
    answer = await real_answerer().answer(
        "an agent is asking 500 rupees fee to add my name in pm kisan, should i pay?", pack=en()
    )
    assert answer.sources[0].entry_id == "pm-kisan.fraud"
    assert "do not pay" in answer.text.lower() and "155261" in answer.text
    assert "https://pmkisan.gov.in" in answer.text
    # A fee question about a scheme without its own warning gets a general one, and the
    # scheme's own official channel.
    other = await real_answerer().answer(
        "kcc card banane ke liye agent 3000 fee maang raha", pack=en()
    )
    warning = real_kb().entry(other.sources[0].entry_id)
    assert warning.scheme == "_policy" and is_fraud_topic(warning)
    assert "1800-180-1551" in other.text and other.scheme == "kcc"


async def test_out_of_scope_is_a_referral_and_weak_evidence_abstains() -> None:
    weather = await real_answerer().answer("कल बारिश होगी क्या?", pack=hi())
    assert weather.abstained and weather.sources[0].entry_id == "_out_of_scope.weather"
    assert "1800-180-1551" in weather.text and weather.language == "hi"
    nonsense = await real_answerer().answer("how to write a good love letter", pack=hi())
    assert nonsense.abstained and nonsense.sources == ()
    assert nonsense.text.startswith(hi().phrase("dont_know"))
    vague = await real_answerer().answer("and how do I apply for it?", pack=en())
    assert vague.abstained, "no scheme named or remembered: the bot must not pick one"


async def test_follow_up_resolves_against_the_previous_turns_scheme() -> None:
    history = [Exchange(question="crop insurance premium?", answer="...", scheme="pmfby")]
    answer = await real_answerer().answer("and how do I apply for it?", pack=en(), history=history)
    assert answer.scheme == "pmfby" and not answer.abstained
    assert answer.sources[0].entry_id == "pmfby.apply"
    # Naming another scheme wins over the memory.
    switched = await real_answerer().answer(
        "and how do I apply for ujjwala?", pack=en(), history=history
    )
    assert switched.scheme == "pmuy"


async def test_pipeline_memory_carries_the_scheme_between_turns() -> None:
    async def no_stt(_pack: LanguagePack) -> object:
        raise AssertionError("speech is not used on the text path")

    pipeline = Pipeline(
        packs=real_packs(),
        answerer=real_answerer(),
        transcriber_for=no_stt,  # type: ignore[arg-type]
        synthesizer=None,  # type: ignore[arg-type]
        metrics=Metrics(),
    )
    first = await pipeline.ask("आयुष्मान कार्ड में कितने का इलाज मिलता है?", lang="hi", conversation="c1")
    assert first.scheme == "pm-jay"
    second = await pipeline.ask("और यह कार्ड कैसे बनता है?", lang="hi", conversation="c1")
    assert second.scheme == "pm-jay" and not second.abstained
    assert "pm-jay.card" in [s.entry_id for s in second.sources]


def fake_result(*items: tuple[str, float], named: tuple[str, ...] = ()) -> SearchResult:
    kb = real_kb()
    hits = tuple(
        Hit(kb.entry(i), score, dense=0.9, words=0.0, named=kb.entry(i).scheme in named)
        for i, score in items
    )
    scores = {e.id: -1.0 for e in kb.entries} | {i: s for i, s in items}
    return SearchResult(hits=hits, named_schemes=named, spread=items[0][1], scores=scores)


def test_policy_adds_a_second_entry_only_when_close_and_same_scheme() -> None:
    policy = Policy(real_kb())
    apy = ("apy",)
    close = policy.plan(
        "q", fake_result(("apy.benefit", 10), ("kcc.limit", 9), ("apy.eligibility", 8), named=apy)
    )
    assert [e.id for e in close.entries] == ["apy.benefit", "apy.eligibility"]
    far = policy.plan("q", fake_result(("apy.benefit", 10), ("apy.eligibility", 4), named=apy))
    assert [e.id for e in far.entries] == ["apy.benefit"]
    other = policy.plan("q", fake_result(("apy.benefit", 10), ("kcc.limit", 9.5), named=apy))
    assert [e.id for e in other.entries] == ["apy.benefit"]
    # Unnamed, and two schemes fit as well as each other: do not pick one at random.
    tie = policy.plan("q", fake_result(("apy.benefit", 10), ("pm-kmy.benefit", 9.5)))
    assert tie.action == "abstain" and tie.abstained


def test_policy_splits_two_part_questions_with_the_packs_and_word() -> None:
    assert Policy.clauses("किसान मानधन में कितनी पेंशन मिलेगी और हर महीने कितना जमा करना है", ["और"]) == [
        "किसान मानधन में कितनी पेंशन मिलेगी",
        "हर महीने कितना जमा करना है",
    ]
    assert Policy.clauses("can husband and wife both get it", []) == []  # one question
    assert len(Policy.clauses("what is the premium? when is the last date to enrol?", [])) == 2


def test_text_reply_puts_sources_after_the_body_once_per_link() -> None:
    pack = hi()
    source = Source("pm-kisan.benefit", "पीएम-किसान", "https://pmkisan.gov.in", "2026-03-13")
    answer = Answer(text="उत्तर।", language="hi", sources=(source, source))
    reply = format_text_reply(answer, pack)
    assert reply.splitlines() == [
        "उत्तर।",
        f"{pack.phrase('sources')}: पीएम-किसान — https://pmkisan.gov.in (2026-03-13)",
    ]
    assert sources_json(answer)[0] == {
        "entry_id": "pm-kisan.benefit",
        "title": "पीएम-किसान",
        "url": "https://pmkisan.gov.in",
        "as_of": "2026-03-13",
    }


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> None:
    real_index()  # make sure the shared embedding cache exists before the CLI builds its own
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(DATA_DIR))


def test_ask_command_prints_json_per_contract(
    cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ask", "--lang", "hi", "--json", "पीएम किसान की किस्त कितनी है"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == {"lang", "question", "answer", "sources", "abstained", "timings_ms"}
    assert payload["lang"] == "hi" and payload["abstained"] is False
    assert "₹2,000" in payload["answer"] and payload["sources"][0]["url"].startswith("https://")
    assert payload["timings_ms"]["answer"] > 0


def test_ask_command_prints_body_then_sources(
    cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ask", "--lang", "en", "what", "is", "the", "pmsby", "premium"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "₹20" in lines[0]
    assert lines[-1].startswith("Source: PMSBY — https://")
    assert Path(DATA_DIR / "index").is_dir()
