"""Hybrid retrieval: Unicode tokenizer, BM25, alias boost, pack translations, disk cache,
and the real multilingual-e5 index ranking questions in several languages."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.grounded_kit import real_answerer, real_index, real_packs
from voicebot.knowledge import Entry, KnowledgeBase, Scheme
from voicebot.packs import LanguagePack, PackSet
from voicebot.retrieval import BM25, EmbeddingCache, KnowledgeIndex, normalize, tokenize


class HashEmbedder:
    """Vectors with no meaning. ``flat`` (the default) gives every text the same vector, so
    only the lexical channels and the boosts decide; otherwise a hash-seeded random one."""

    name = "hash-test"
    dim = 16

    def __init__(self, *, flat: bool = True) -> None:
        self.flat = flat
        self.calls: list[tuple[str, int]] = []
        self.threads: set[int] = set()

    def _encode(self, role: str, texts: Sequence[str]) -> np.ndarray:  # type: ignore[type-arg]
        self.calls.append((role, len(texts)))
        self.threads.add(threading.get_ident())
        rows = []
        for text in texts:
            key = "" if self.flat else text
            seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)

    def query(self, texts: Sequence[str]) -> np.ndarray:  # type: ignore[type-arg]
        return self._encode("query", texts)

    def passage(self, texts: Sequence[str]) -> np.ndarray:  # type: ignore[type-arg]
        return self._encode("passage", texts)


def entry(scheme: str, topic: str, text: str, *questions: str) -> Entry:
    return Entry(
        f"{scheme}.{topic}", scheme, topic, text, questions, "https://x.gov.in", "2026-01-01"
    )


def tiny_kb() -> KnowledgeBase:
    alpha = Scheme(
        "alpha",
        "scheme",
        "Alpha Krishi Yojana",
        "ALPHA",
        ("alpha yojana", "अल्फा योजना"),
        "1800",
        "https://alpha.gov.in",
        (
            entry(
                "alpha", "benefit", "ALPHA pays ₹6,000 a year in three instalments.", "How much?"
            ),
            entry("alpha", "apply", "Apply for ALPHA at a CSC with Aadhaar.", "How to apply?"),
        ),
    )
    beta = Scheme(
        "beta",
        "scheme",
        "Beta Bima",
        "BETA",
        ("beta bima",),
        "1800",
        "https://beta.gov.in",
        (
            entry("beta", "premium", "BETA crop insurance premium is 2% for kharif.", "Premium?"),
            entry("beta", "claim", "Report BETA crop loss within 72 hours.", "Claim time?"),
        ),
    )
    return KnowledgeBase(schemes={"alpha": alpha, "beta": beta})


def pack(code: str, **fields: object) -> LanguagePack:
    return LanguagePack(
        code=code, name=code, native_name=code, script="Zzzz", path=Path(code), **fields
    )  # type: ignore[arg-type]


async def build(kb: KnowledgeBase, packs: PackSet | None = None, **kw: object) -> KnowledgeIndex:
    embedder = kw.pop("embedder", None) or HashEmbedder()
    return await KnowledgeIndex.build(kb, packs, embedder=embedder, **kw)  # type: ignore[arg-type]


# -- tokenizer -------------------------------------------------------------------------------


def test_tokenizer_keeps_indic_words_whole_and_normalises() -> None:
    # \w alone would split at virama and vowel signs: कृषि → क, ष.
    assert tokenize("कृषि सिंचाई योजना") == ["कृषि", "सिंचाई", "योजना"]
    assert tokenize("பிஎம் கிசான் திட்டத்துல") == ["பிஎம்", "கிசான்", "திட்டத்துல"]
    assert tokenize("জন ধন অ্যাকাউন্টে") == ["জন", "ধন", "অ্যাকাউন্টে"]
    assert tokenize("పీఎం కిసాన్ 22వ విడత") == ["పీఎం", "కిసాన్", "22వ", "విడత"]
    # Latin: case-folded, hyphenated forms kept joined too, plural s dropped, numbers whole.
    assert tokenize("PM-KISAN e-KYC Instalments ₹6,000 1.5%") == [
        "pm", "kisan", "pmkisan", "e", "kyc", "ekyc", "instalment", "6000", "1.5",
    ]  # fmt: skip
    # Indic digits, zero-width joiners and nukta spellings fold together.
    assert tokenize("२०२६ ज़मीन") == tokenize("2026 जमीन")
    assert normalize("क्‍ष") == normalize("क्ष")


def test_bm25_prefers_the_rare_matching_term() -> None:
    bm = BM25([["kcc", "loan", "interest"], ["loan", "bank"], ["pension", "age"]])
    scores = bm.scores(["interest", "loan"])
    assert scores.argmax() == 0 and scores[2] == 0
    assert 0 < bm.coverage(["interest", "loan"])[0] <= 1.0
    # An unknown word keeps coverage low: one shared common word is weak evidence.
    assert bm.coverage(["loan", "zzz", "yyy"])[1] < bm.coverage(["loan"])[1] / 2


# -- index behaviour with a meaningless embedder -------------------------------------------


async def test_scheme_alias_in_any_script_boosts_that_scheme() -> None:
    index = await build(tiny_kb())
    assert index.named_schemes("meri अल्फा योजना ki kisht kab aayegi") == ["alpha"]
    assert index.named_schemes("BETA-BIMA claim") == ["beta"]
    assert index.named_schemes("alphabet soup") == []  # Latin aliases end on a word boundary
    result = await index.search("alpha yojana kab aayegi", k=4)
    assert result.named_schemes == ("alpha",)
    assert {h.entry.scheme for h in result.hits[:2]} == {"alpha"}
    assert all(h.named == (h.entry.scheme == "alpha") for h in result.hits)
    # A follow-up that names nothing leans on the scheme it prefers.
    followed = await index.search("and the claim?", k=4, prefer=["beta"])
    assert followed.top is not None and followed.top.entry.id == "beta.claim"


async def test_pack_translations_and_aliases_are_indexed() -> None:
    xx = pack(
        "xx",
        entries={"beta.claim": "ஃபசல் இழப்பு 72 மணி நேரத்தில் சொல்லுங்கள்"},
        scheme_names={"beta": "பீட்டா காப்பீடு"},
        scheme_aliases={"alpha": ("ஆல்ஃபா",)},
        glossary={"premium": "ப்ரீமியம்"},
    )
    packs = PackSet(packs={"xx": xx, "en": pack("en")}, default="en")
    index = await build(tiny_kb(), packs)
    result = await index.search("இழப்பு மணி நேரத்தில்", k=2)
    assert result.top is not None and result.top.entry.id == "beta.claim"
    assert index.named_schemes("ஆல்ஃபாவில் எவ்வளவு") == ["alpha"]  # case ending allowed
    assert index.named_schemes("பீட்டா காப்பீடு பற்றி") == ["beta"]
    # A glossary term in the question brings in its English form.
    glossed = await index.search("ப்ரீமியம் எவ்வளவு", k=1)
    assert glossed.top is not None and glossed.top.entry.id == "beta.premium"


async def test_index_is_built_once_and_queries_embed_off_the_event_loop() -> None:
    embedder = HashEmbedder()
    index = await build(tiny_kb(), embedder=embedder)
    built = list(embedder.calls)
    assert ("passage", 4) in built and any(role == "query" for role, _ in built)
    embedder.calls.clear()
    for question in ("ALPHA kitna", "beta premium", "claim"):
        await index.search(question)
    assert embedder.calls == [("query", 1)] * 3  # one short query each, no passages
    assert threading.get_ident() not in embedder.threads


async def test_embeddings_are_cached_on_disk_by_content(tmp_path: Path) -> None:
    first = HashEmbedder()
    await build(tiny_kb(), embedder=first, cache_dir=tmp_path)
    assert sum(n for role, n in first.calls if role == "passage") == 4
    second = HashEmbedder()
    index = await build(tiny_kb(), embedder=second, cache_dir=tmp_path)
    assert [c for c in second.calls if c[0] == "passage"] == []  # restart: nothing re-embedded
    # Change one entry: only that passage is embedded again.
    kb = tiny_kb()
    alpha = kb.schemes["alpha"]
    changed = entry("alpha", "benefit", "ALPHA now pays ₹8,000 a year.", "How much?")
    kb = KnowledgeBase(schemes={**kb.schemes, "alpha": Scheme(
        alpha.id, alpha.kind, alpha.name, alpha.short_name, alpha.aliases, alpha.helpline,
        alpha.website, (changed, alpha.entries[1]),
    )})  # fmt: skip
    third = HashEmbedder()
    await build(kb, embedder=third, cache_dir=tmp_path)
    assert [c for c in third.calls if c[0] == "passage"] == [("passage", 1)]
    # A corrupt cache file is rebuilt, not fatal.
    cache_file = next(tmp_path.glob("*.npz"))
    cache_file.write_bytes(b"not a numpy file")
    fourth = HashEmbedder()
    rebuilt = await build(tiny_kb(), embedder=fourth, cache_dir=tmp_path)
    assert sum(n for role, n in fourth.calls if role == "passage") == 4
    assert len(rebuilt.entries) == len(index.entries) == 4


def test_embedding_cache_returns_vectors_in_input_order() -> None:
    cache = EmbeddingCache(None, HashEmbedder(flat=False))
    a = cache.embed("passage", ["one", "two"])
    b = cache.embed("passage", ["two", "one", "three"])
    assert np.allclose(a[0], b[1]) and np.allclose(a[1], b[0])
    assert cache.hits == 2 and cache.misses == 3
    assert cache.embed("query", []).shape == (0, 16)


# -- the real index ----------------------------------------------------------------------------

MULTILINGUAL = [
    ("how much premium for pmsby every year", "pmsby.premium"),
    ("उज्ज्वला गैस कनेक्शन के लिए आवेदन कैसे करें", "pmuy.apply"),
    ("solar pump subsidy kitna milta hai kusum me", "pm-kusum.subsidy"),
    ("ஆயுஷ்மான் பாரத் அட்டையில் எவ்வளவு ரூபாய் வரை சிகிச்சை கிடைக்கும்?", "pm-jay.benefit"),
    ("ফসল বিমায় ক্ষতি হলে কত ঘণ্টার মধ্যে জানাতে হবে?", "pmfby.claim_72_hours"),
    ("అటల్ పెన్షన్ యోజనలో గరిష్ట పెన్షన్ ఎంత?", "apy.benefit"),
    ("उज्ज्वला योजनेत गॅस सिलेंडरवर किती अनुदान मिळते?", "pmuy.subsidy"),
]


@pytest.mark.parametrize(("question", "expected"), MULTILINGUAL)
async def test_real_index_finds_the_entry_in_any_language(question: str, expected: str) -> None:
    result = await real_index().search(question, k=3)
    assert expected in [h.entry.id for h in result.hits], [h.entry.id for h in result.hits]
    assert result.hits[0].entry.scheme == expected.split(".")[0]


async def test_real_index_ranks_an_off_topic_question_low() -> None:
    on_topic = await real_index().search("pm kisan kisht kitni hai")
    off_topic = await real_index().search("how to write a good love letter")
    assert on_topic.top is not None and off_topic.top is not None
    assert on_topic.top.named and not off_topic.top.named
    assert on_topic.top.dense > off_topic.top.dense


# -- held-out questions ------------------------------------------------------------------------
# Written in callers' style for this check only, never copied into the knowledge base (entries'
# questions are other paraphrases): they measure how retrieval and the policy generalise.
# (lang, question, expected first entry); "!" marks an unsafe question that must get a
# warning (plan "caution"); every "_out_of_scope.*" item must be referred (plan "refer").
HELD_OUT = [
    ("en", "how many rupees pm kisan sends every year to farmer", "pm-kisan.benefit"),
    ("en", "my kisan credit card interest is how much percent", "kcc.interest"),
    ("en", "tomorrow there will be storm or not in our district?", "_out_of_scope.weather"),
    (
        "en",
        "a man on phone saying he is from bank, asking the otp that came on my mobile",
        "!_policy.no_secrets",
    ),
    ("en", "what papers needed to open jan dhan account", "pmjdy.documents"),
    ("en", "who is winning ipl this year", "_out_of_scope.sports_entertainment"),
    ("hi", "आयुष्मान कार्ड कैसे बनवाएं", "pm-jay.card"),
    ("hi", "अटल पेंशन में हर महीने कितना जमा करना पड़ेगा", "apy.contribution"),
    ("hi", "आज मंडी में प्याज का भाव क्या है", "_out_of_scope.market_prices"),
    ("hi", "पड़ोसी ने मेरी जमीन पर कब्जा कर लिया है", "_out_of_scope.land_dispute"),
    ("hi", "कल क्रिकेट मैच कौन जीतेगा", "_out_of_scope.sports_entertainment"),
    ("hi", "पंचायत वाला आवास योजना में नाम डालने के 5000 रुपये मांग रहा है", "!pmay-g.fee_warning"),
    ("hi", "मनरेगा जॉब कार्ड कैसे बनेगा", "mgnrega.job_card"),
    ("hi-Latn", "ration card me har mahine kitna anaj milta hai", "nfsa.entitlement"),
    (
        "hi-Latn",
        "fasal kharab hone par bima claim kitne ghante me batana hai",
        "pmfby.claim_72_hours",
    ),
    (
        "hi-Latn",
        "bachhe ko tez bukhar hai aur saans nahi aa rahi, kya karu",
        "_out_of_scope.medical_emergency",
    ),
    ("hi-Latn", "koi bol raha hai pm kisan ka paisa chahiye to otp batao", "!_policy.no_secrets"),
    ("ta", "இந்த வாரம் வெயில் அதிகமா இருக்குமா?", "_out_of_scope.weather"),
    ("ta", "உஜ்வாலா கேஸ் இணைப்புக்கு என்ன ஆவணங்கள் வேண்டும்?", "pmuy.documents"),
    ("ta", "ரேஷன் கார்டுக்கு ஒருவருக்கு எத்தனை கிலோ அரிசி கிடைக்கும்?", "nfsa.entitlement"),
    ("ta", "பருத்தி விலை இன்னைக்கு என்ன?", "_out_of_scope.market_prices"),
    ("te", "రేపు వర్షం పడుతుందా?", "_out_of_scope.weather"),
    ("te", "ఉపాధి హామీ పనికి రోజు కూలీ ఎంత ఇస్తారు?", "mgnrega.wage_rate"),
    ("te", "ఎవరో ఫోన్ చేసి నా ఏటీఎం పిన్ అడుగుతున్నారు", "!_policy.no_secrets"),
    ("te", "భూసార పరీక్ష కార్డు ఎలా పొందాలి?", "shc.apply"),
    ("mr", "किसान क्रेडिट कार्ड साठी कोणती कागदपत्रे लागतात?", "kcc.documents"),
    ("mr", "सोयाबीनचा आजचा बाजारभाव काय आहे?", "_out_of_scope.market_prices"),
    ("mr", "शेजाऱ्याशी बांधावरून भांडण आहे, काय करू?", "_out_of_scope.land_dispute"),
    ("mr", "सोलर पंपासाठी किती अनुदान मिळते?", "pm-kusum.subsidy"),
    ("bn", "আয়ুষ্মান কার্ডে কত টাকার চিকিৎসা ফ্রি?", "pm-jay.benefit"),
    ("bn", "কাল কি বৃষ্টি হবে?", "_out_of_scope.weather"),
    ("bn", "জীবন জ্যোতি বিমার প্রিমিয়াম কত?", "pmjjby.premium"),
    ("bn", "ধানে পোকা লেগেছে, কোন ওষুধ দেব?", "_out_of_scope.crop_disease"),
    ("gu", "પીએમ કિસાનનો હપ્તો કેટલો આવે છે?", "pm-kisan.benefit"),
    ("gu", "ઉજ્જવલા ગેસ સિલિન્ડર પર કેટલી સબસિડી મળે છે?", "pmuy.subsidy"),
    ("gu", "આજે મેચ કોણ જીત્યું?", "_out_of_scope.sports_entertainment"),
    ("gu", "એક એજન્ટ પીએમ કિસાનમાં નામ ઉમેરવા 1000 રૂપિયા માંગે છે", "!pm-kisan.fraud"),
    ("kn", "ಕಿಸಾನ್ ಕ್ರೆಡಿಟ್ ಕಾರ್ಡ್ ಸಾಲಕ್ಕೆ ಬಡ್ಡಿ ಎಷ್ಟು?", "kcc.interest"),
    ("kn", "ನಾಳೆ ಮಳೆ ಬರುತ್ತಾ?", "_out_of_scope.weather"),
    ("kn", "ಬೆಳೆ ವಿಮೆ ಪ್ರೀಮಿಯಂ ಎಷ್ಟು?", "pmfby.premium"),
    ("kn", "ಯಾರೋ ಫೋನಿನಲ್ಲಿ ಒಟಿಪಿ ಕೇಳುತ್ತಿದ್ದಾರೆ, ಹೇಳಬೇಕಾ?", "!_policy.no_secrets"),
    ("kn", "ಹಾವು ಕಚ್ಚಿದೆ, ಏನು ಮಾಡಬೇಕು?", "_out_of_scope.medical_emergency"),
]
HELD_OUT_TOP1 = 0.85
HELD_OUT_LANGS = {"en", "hi", "hi-Latn", "ta", "te", "mr", "bn", "gu", "kn"}


async def test_held_out_questions_rank_well_and_off_topic_ones_are_referred() -> None:
    answerer = real_answerer()
    top1, unreferred, unwarned = 0, [], []
    for lang, question, expected in HELD_OUT:
        unsafe, expected = expected.startswith("!"), expected.lstrip("!")
        pack = real_packs().get(lang.split("-")[0])
        plan = (await answerer.gather(question, pack=pack)).plan
        got = [e.id for e in plan.entries]
        top1 += bool(got) and got[0] == expected
        if expected.startswith("_out_of_scope."):
            # Never a scheme fact for an off-topic question: a referral, at worst "I don't know".
            assert plan.abstained, (question, plan)
            if plan.action != "refer":
                unreferred.append(question)
        if unsafe and plan.action != "caution":
            unwarned.append(question)
    referrals = sum(e.startswith("_out_of_scope.") for _, _, e in HELD_OUT)
    assert len(HELD_OUT) >= 30 and referrals >= 8 and sum(e[0] == "!" for *_, e in HELD_OUT) >= 4
    assert {lang for lang, _, _ in HELD_OUT} >= HELD_OUT_LANGS
    assert top1 / len(HELD_OUT) >= HELD_OUT_TOP1, top1
    assert unwarned == []
    # One Hinglish medical question (fever + breathing) still abstains instead of referring.
    assert len(unreferred) <= 1, unreferred
