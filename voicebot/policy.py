"""Safety policy: what the bot may say for a question, given what retrieval found.

Public-sector rules (no automated decisions, transparency, human review) become five plans:

* ``answer``   — evidence is clear: compose it (1–2 entries of one scheme; a two-part
  question gets the best entry for each part).
* ``decide``   — the user wants a yes/no on their own case ("will my loan be approved?"):
  never yes or no; give the rule and who decides (a decision entry), and where to ask.
* ``caution``  — someone is asking the user for a fee, an OTP or a bribe: the fraud warning
  and the official channel; never "go ahead and pay".
* ``refer``    — the best evidence is an out-of-scope referral entry (weather, cricket…):
  say so and point to the right service (``abstained``).
* ``abstain``  — evidence is weak, or several schemes fit a question that names none ("how do
  I apply?"): the pack's "I don't know" phrase with a helpline.

Rule entries are found by words in their ``topic`` (knowledge/README.md). Cues are data:
each pack's ``[policy] decision_cues`` plus the English/Hinglish cues below (the pivot
language, and what users type in Latin script whatever their pack); fee and scam questions in
any language are also recognised through retrieval, when a fraud entry ranks near the top.
Follow-ups that name no scheme lean on the previous turn's scheme (``use_memory``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from voicebot.knowledge import Entry, KnowledgeBase
from voicebot.retrieval import Hit, SearchResult, normalize

__all__ = [
    "DECISION_CUES",
    "DECISION_TOPIC_WORDS",
    "FEE_CUES",
    "FRAUD_TOPIC_WORDS",
    "Plan",
    "Policy",
    "is_decision_topic",
    "is_fraud_topic",
]

Action = Literal["answer", "decide", "caution", "refer", "abstain"]

# English and Hinglish cues (pivot language); every pack adds its own decision_cues.
DECISION_CUES: tuple[str, ...] = (
    "will i get",
    "will we get",
    "will he get",
    "will she get",
    "will they give",
    "will it be approved",
    "will bank approve",
    "will they approve",
    "will my loan",
    "will my claim",
    "will my application",
    "approve it",
    "get approved",
    "be approved",
    "sanction",
    "yes or no",
    "can you guarantee",
    "guarantee me",
    "guarantee that",
    "am i sure to get",
    "definitely get",
    "milega ya nahi",
    "milega kya",
    "mil jayega",
    "pakka",
    "haan ya na",
)
FEE_CUES: tuple[str, ...] = (
    "fee",
    "fees",
    "bribe",
    "middleman",
    "is it ok to pay",
    "should i pay",
    "safe to pay",
    "asking money",
    "asking for money",
    "asking me to pay",
    "demanding money",
    "whatsapp link",
    "share otp",
    "otp batao",
    "otp bata do",
    "otp maang",
    "otp bhejo",
    "pin batao",
    "asking otp",
    "asking for otp",
    "asking my otp",
    "wants my otp",
    "rishwat",
    "dalal",
    "paisa maang",
    "paise maang",
    "paisa de",
    "do to",
    "du kya",
    "de du",
)

# Evidence threshold: a question that names no scheme and whose embedding is not close to
# any entry (e5 cosine; off-topic questions score 0.80-0.84, scheme questions in any pack
# language 0.85+) is not answered. Set low on purpose: a wrong abstention loses a real
# answer, while an off-topic question usually lands on an out-of-scope referral anyway.
MIN_DENSE = 0.835
MAX_CLAUSES = 3
CLAUSE_SHORTLIST = 5
# A remembered scheme whose best entry has this share of the top entry's lead is preferred.
MEMORY_RATIO = 0.6
# Ambiguity: this many different schemes within this share of the top entry's lead.
AMBIGUOUS_SCHEMES = 2
AMBIGUOUS_RATIO = 0.8
# A fraud entry this close to the top turns an answer into a caution.
FRAUD_MARGIN = 1.0
FRAUD_RATIO = 0.9
CAUTION_FACT_RATIO = 0.85
# A second entry must be this close to the top one in e5 cosine (about the same thing).
SECOND_DENSE_GAP = 0.02
# A general rule (``_policy.no_secrets``) beats the scheme's own warning when it ranks this
# far above it: an OTP question about PM-KISAN is about OTPs, not about fake PM-KISAN sites.
GENERAL_RULE_MARGIN = 0.5
# An out-of-scope referral just below the top wins when it is the closer match in meaning
# and has this share of the top entry's lead (``Policy._referral``).
REFER_WINDOW = 4
REFER_RATIO = 0.6


# Entry topics that carry a rule rather than a fact (knowledge/README.md): matched by word.
FRAUD_TOPIC_WORDS = ("fraud", "scam", "fake", "fee", "secret")
DECISION_TOPIC_WORDS = ("decision", "decides", "approval", "promise")


def is_fraud_topic(entry: Entry) -> bool:
    return any(word in entry.topic for word in FRAUD_TOPIC_WORDS)


def is_decision_topic(entry: Entry) -> bool:
    return any(word in entry.topic for word in DECISION_TOPIC_WORDS)


def _is_rule(entry: Entry) -> bool:
    return is_fraud_topic(entry) or is_decision_topic(entry)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to say: an action, the evidence entries (in order) and the scheme they concern."""

    action: Action
    entries: tuple[Entry, ...] = ()
    scheme: str | None = None
    reason: str = ""

    @property
    def abstained(self) -> bool:
        return self.action in {"refer", "abstain"}


def _cue_pattern(cues: Iterable[str]) -> re.Pattern[str] | None:
    parts = []
    for cue in {normalize(c).strip() for c in cues if c.strip()}:
        body = re.escape(cue)
        # Latin cues match whole words ("fee" not "feed"); Indic cues may carry endings.
        if cue.isascii():
            body = rf"(?<![a-z0-9]){body}(?![a-z0-9])"
        parts.append(body)
    if not parts:
        return None
    return re.compile("|".join(sorted(parts, key=len, reverse=True)))


class Policy:
    """Turns a question and its search result into a ``Plan``; pure and fast."""

    def __init__(
        self,
        kb: KnowledgeBase,
        *,
        decision_cues: Sequence[str] = DECISION_CUES,
        fee_cues: Sequence[str] = FEE_CUES,
        second_ratio: float = 0.75,
    ) -> None:
        self.kb = kb
        self._decision_base = tuple(decision_cues)
        self._fee = _cue_pattern(fee_cues)
        self._decision_cache: dict[tuple[str, ...], re.Pattern[str] | None] = {}
        # How close a runner-up must be to be added, as a share of the top entry's lead over
        # the median entry.
        self.second_ratio = second_ratio

    # -- intent

    def wants_decision(self, question: str, pack_cues: Sequence[str] = ()) -> bool:
        key = tuple(pack_cues)
        if key not in self._decision_cache:
            self._decision_cache[key] = _cue_pattern((*self._decision_base, *pack_cues))
        pattern = self._decision_cache[key]
        return bool(pattern and pattern.search(normalize(question)))

    def mentions_fee(self, question: str) -> bool:
        return bool(self._fee and self._fee.search(normalize(question)))

    @staticmethod
    def clauses(question: str, and_words: Sequence[str] = ()) -> list[str]:
        """Split "how much … and when …?" at question marks and the pack's word for "and"."""
        words = sorted({"and", *(normalize(w) for w in and_words if w.strip())}, key=len)
        joints = "|".join(rf"(?<!\S){re.escape(w)}(?!\S)" for w in reversed(words))
        parts = re.split(rf"[?？।]+|{joints}", normalize(question))
        # Three words at least: "husband and wife" is one question, not two.
        clauses = [p.strip(" ,.;:!") for p in parts if len(p.split()) >= 3][:MAX_CLAUSES]
        return clauses if len(clauses) > 1 else []

    # -- planning

    def plan(
        self,
        question: str,
        result: SearchResult,
        *,
        decision_cues: Sequence[str] = (),
        clause_results: Sequence[SearchResult] = (),
    ) -> Plan:
        """``clause_results``: searches for the question's later clauses ("… and how much?")."""
        hits = list(result.hits)
        if not hits:
            return Plan("abstain", reason="empty knowledge base")
        top = hits[0]
        referral = self._referral(hits, result)
        if referral is not None:
            return Plan(
                "refer", (referral.entry,), None, reason=f"out of scope: {referral.entry.id}"
            )
        named = result.named_schemes[0] if result.named_schemes else None
        if self._weak(top):
            return Plan("abstain", scheme=named, reason=f"weak evidence ({top.dense:.3f})")
        # The scheme the turn is about: the one named (or followed up on), else the best
        # scheme entry's; a general policy entry at the top does not change it.
        focus = named or next(
            (h.entry.scheme for h in hits if self.kb.scheme_of(h.entry).kind == "scheme"),
            top.entry.scheme,
        )
        # A warning is safe whatever scheme the question is about, so it comes before the
        # ambiguity check: "someone wants my OTP" names no scheme and fits several.
        if self._fraud_near_top(hits, result) or self.mentions_fee(question):
            if named is None and (self._ambiguous(hits, result) or self._is_general(top.entry)):
                # No one scheme: the general rules' own channel, not a guessed scheme's.
                rule = self._best(result, self._general_rules(is_fraud_topic))
                focus = rule.scheme if rule is not None else focus
            return self._caution(hits, result, focus)
        if self._ambiguous(hits, result):
            return Plan("abstain", reason="several schemes fit equally well")
        if self.wants_decision(question, decision_cues) or is_decision_topic(top.entry):
            return self._decide(hits, result, focus)
        entries = self._per_clause(result, clause_results) or [top.entry]
        if len(entries) < 2:
            second = self._second(hits, result, exclude=entries[0])
            entries += [second] if second is not None else []
        return Plan("answer", tuple(entries), entries[0].scheme, reason="clear evidence")

    def _is_general(self, entry: Entry) -> bool:
        return self.kb.scheme_of(entry).kind == "policy"

    def _referral(self, hits: Sequence[Hit], result: SearchResult) -> Hit | None:
        """The out-of-scope entry to refer to, if any. At the top it always wins. Just below
        a scheme entry it still wins when the question names no scheme and the referral is
        the closer match in meaning (higher e5 cosine) and nearly as strong overall: "will it
        rain tomorrow?" shares words like rain with crop-loss facts, but a forecast is never
        answered by a scheme fact."""
        top = hits[0]
        if not self.kb.scheme_of(top.entry).in_scope:
            return top
        if result.named_schemes or top.named:
            return None
        lead = result.lift(top)
        for hit in hits[1:REFER_WINDOW]:
            if self.kb.scheme_of(hit.entry).in_scope:
                continue
            closer = hit.dense > top.dense and hit.dense >= MIN_DENSE
            if closer and result.lift(hit) >= REFER_RATIO * lead:
                return hit
            break  # only the best referral is compared
        return None

    def use_memory(self, result: SearchResult, scheme: str) -> bool:
        """Should a question that names no scheme lean on the previous turn's scheme?

        Yes when it is vague on its own (weak, or several schemes tie: "and how do I apply
        for it?"), or when the remembered scheme is already a close contender; no when it is
        clearly about something else ("will it rain tomorrow?" after a PM-KISAN answer).
        """
        if result.named_schemes or not result.hits:
            return False
        hits = list(result.hits)
        if self._weak(hits[0]) or self._ambiguous(hits, result):
            return True
        lead = hits[0].score - result.median
        best = max(
            (v for k, v in result.scores.items() if self.kb.entry(k).scheme == scheme),
            default=float("-inf"),
        )
        return best - result.median >= MEMORY_RATIO * lead

    @staticmethod
    def _weak(top: Hit) -> bool:
        # A named scheme (or a follow-up on one) is evidence enough to try.
        return not top.named and top.dense < MIN_DENSE

    @staticmethod
    def _ambiguous(hits: Sequence[Hit], result: SearchResult) -> bool:
        """ "How do I apply?" with no scheme named or remembered: answering about one scheme
        at random would mislead, so the bot says it does not know and gives the helpline."""
        top = hits[0]
        if top.named or len(hits) < AMBIGUOUS_SCHEMES:
            return False
        lead = top.score - result.median
        close = [h for h in hits[:4] if h.score - result.median >= AMBIGUOUS_RATIO * lead]
        return len({h.entry.scheme for h in close}) >= AMBIGUOUS_SCHEMES

    def _second(self, hits: Sequence[Hit], result: SearchResult, exclude: Entry) -> Entry | None:
        """A second entry only when it is about the same scheme and nearly as relevant, both
        on its own merits (the name's boost left out: every entry of a named scheme shares
        it) and in meaning (e5 cosine): "पीएम किसान की किस्त कितनी है" is about the amount,
        and e-KYC, ranked next only because it is a PM-KISAN entry, must not tag along."""
        lead = result.lift(hits[0])
        for hit in hits[:3]:
            if hit.entry == exclude or hit.entry.scheme != exclude.scheme or _is_rule(hit.entry):
                continue
            close_in_meaning = hits[0].dense - hit.dense <= SECOND_DENSE_GAP
            if close_in_meaning and result.lift(hit) >= self.second_ratio * lead:
                return hit.entry
        return None

    @staticmethod
    def _per_clause(result: SearchResult, clause_results: Sequence[SearchResult]) -> list[Entry]:
        """A two-part question ("how much … and at what age?") gets the best entry of each
        clause, when that entry is about the top scheme and among the whole question's top
        hits (so a stray clause like "bank is saying 7" cannot pull in an unrelated fact)."""
        top = result.hits[0]
        shortlist = {h.entry.id for h in result.hits[:CLAUSE_SHORTLIST]}
        chosen: list[Entry] = []
        for clause in clause_results:
            best = clause.top
            if best is None or best.entry in chosen or _is_rule(best.entry):
                continue
            if best.entry.scheme == top.entry.scheme and best.entry.id in shortlist:
                chosen.append(best.entry)
        return chosen[:2]

    @staticmethod
    def _fraud_near_top(hits: Sequence[Hit], result: SearchResult) -> bool:
        """A warning at the top, or just below it on its own merits: every entry of a named
        scheme shares the name's boost, so closeness is measured without it."""
        if is_fraud_topic(hits[0].entry):
            return True
        top, lead = hits[0].score, result.lift(hits[0])
        return any(
            is_fraud_topic(h.entry)
            and top - h.score <= FRAUD_MARGIN
            and result.lift(h) >= FRAUD_RATIO * lead
            for h in hits[1:3]
        )

    def _best(self, result: SearchResult, entries: Iterable[Entry]) -> Entry | None:
        ranked = sorted(entries, key=lambda e: -result.scores.get(e.id, float("-inf")))
        return ranked[0] if ranked else None

    def _rule_entries(self, scheme_id: str, test: Callable[[Entry], bool]) -> list[Entry]:
        """Rule entries of the scheme itself, else the general policy ones."""
        own = [e for e in self.kb.scheme(scheme_id).entries if test(e)]
        return own or self._general_rules(test)

    def _general_rules(self, test: Callable[[Entry], bool]) -> list[Entry]:
        return [e for s in self.kb if s.kind == "policy" for e in s.entries if test(e)]

    def _top_fact(
        self, hits: Sequence[Hit], focus: str, skip: Callable[[Entry], bool]
    ) -> Hit | None:
        for hit in hits[:3]:
            if hit.entry.scheme == focus and not skip(hit.entry):
                return hit
        return None

    def _caution(self, hits: Sequence[Hit], result: SearchResult, focus: str) -> Plan:
        """The best fraud warning (the scheme's own first), then the top fact if it is close."""
        warning = self._best(result, self._rule_entries(focus, is_fraud_topic))
        general = self._best(result, self._general_rules(is_fraud_topic))
        if warning is not None and general is not None and general != warning:
            # On their own merits: the scheme's warning carries the name's boost.
            own = result.scores.get(warning.id, 0.0)
            own -= result.boost if warning.scheme in result.named_schemes else 0.0
            if result.scores.get(general.id, 0.0) - own > GENERAL_RULE_MARGIN:
                warning = general
        entries = [warning] if warning is not None else []
        fact = self._top_fact(hits, focus, is_fraud_topic)
        # Only a fact nearly as relevant as the warning: the warning is the point here.
        if fact is not None and fact.score - result.median >= CAUTION_FACT_RATIO * (
            hits[0].score - result.median
        ):
            entries.append(fact.entry)
        return Plan("caution", tuple(entries), focus, reason="fee or scam question")

    def _decide(self, hits: Sequence[Hit], result: SearchResult, focus: str) -> Plan:
        """The rule that applies, then who decides: never a yes or a no."""
        fact = self._top_fact(hits, focus, lambda e: is_decision_topic(e) or is_fraud_topic(e))
        who = self._best(result, self._rule_entries(focus, is_decision_topic))
        entries = [e for e in (fact.entry if fact else None, who) if e is not None]
        return Plan("decide", tuple(entries), focus, reason="asks for a decision")
