"""Language packs: everything that differs per language, loaded from ``languages/<code>/``.

A pack is data, not code: ``pack.toml`` names the language, its engines, its numbers and
every fixed phrase the bot says (written natively, never machine-translated at run time);
``knowledge.toml`` carries reviewed translations of knowledge entries. ``check_pack`` reports
one clear line per problem, including engine capabilities it cannot meet.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicebot.errors import PackError

__all__ = [
    "REQUIRED_PHRASES",
    "Capabilities",
    "LanguagePack",
    "LatinWords",
    "NumberWords",
    "PackSet",
    "SttSettings",
    "TtsSettings",
    "check_pack",
    "load_pack",
    "load_packs",
]

# Every phrase the bot can say without the answerer; a pack must define all of them.
REQUIRED_PHRASES: tuple[str, ...] = (
    "greeting",  # must disclose that this is an automated assistant
    "choose_language",  # "for Hindi press 2", read in this language in the language menu
    "ask_question",  # prompt before recording
    "please_wait",
    "please_repeat",
    "not_understood",
    "dont_know",  # must name a helpline (155261 / 1800-180-1551)
    "menu",  # keypad shortcuts: repeat, slower, main menu, WhatsApp copy
    "goodbye",
    "error",
    "busy",
    "rate_limited",
    "sources",  # label before the list of sources, e.g. "Source"
    "whatsapp_sent",
    "text_only",  # said/written when speech is not available in this language
)

_CODE = re.compile(r"^[a-z]{2,3}(-[A-Z][a-z]{3})?(-[A-Z]{2})?$")
_HELPLINE = re.compile(r"\d{4}|\d{3}-\d{3}")


@dataclass(frozen=True, slots=True)
class SttSettings:
    """Speech recognition: Whisper language code ('' when no model can serve it)."""

    language: str = ""
    model: str = "base"
    initial_prompt: str = ""
    beam_size: int = 5
    # Shortest audio window the encoder sees (engines/whisper.py trim_padding); 30 = whole
    # 30 s windows, as Whisper was trained.
    context_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class TtsSettings:
    """Voice plan: a primary voice spec and an ordered fallback (e.g. ``espeak-ng:hi``)."""

    voice: str = ""
    fallback: tuple[str, ...] = ()
    speed: float = 1.0
    slow_speed: float = 0.8

    @property
    def plan(self) -> tuple[str, ...]:
        return tuple(v for v in (self.voice, *self.fallback) if v)


@dataclass(frozen=True, slots=True)
class NumberWords:
    """How to speak amounts: scale words and the currency word, e.g. ``2 लाख रुपये``."""

    currency: str = "rupees"
    thousand: str = "thousand"
    lakh: str = "lakh"
    crore: str = "crore"
    percent: str = "percent"
    digits: tuple[str, ...] = ()  # words for 0-9, to read phone numbers digit by digit
    and_word: str = "and"


@dataclass(frozen=True, slots=True)
class LatinWords:
    """How the pack's voice says Latin-script words it cannot read itself (Festival's Indic
    diphone voices drop them silently): ``words`` by upper-case spelling ("KISAN" → "किसान"),
    else short or all-capital words letter by letter with ``letters`` (the names of A-Z);
    ``dot`` is said between the parts of a web address."""

    letters: tuple[str, ...] = ()
    words: Mapping[str, str] = field(default_factory=dict)
    dot: str = ""


@dataclass(frozen=True, slots=True)
class LanguagePack:
    code: str
    name: str
    native_name: str
    script: str
    path: Path
    enabled: bool = True
    dtmf_digit: int | None = None
    mt_code: str = ""  # the translation model's code for this language (e.g. NLLB hin_Deva)
    mt_model: str = ""  # a CT2 translation model dir or cache name; '' = no MT
    stt: SttSettings = field(default_factory=SttSettings)
    tts: TtsSettings = field(default_factory=TtsSettings)
    numbers: NumberWords = field(default_factory=NumberWords)
    latin: LatinWords = field(default_factory=LatinWords)
    phrases: Mapping[str, str] = field(default_factory=dict)
    glossary: Mapping[str, str] = field(default_factory=dict)  # English term -> native form
    backchannels: tuple[str, ...] = ()  # short words that must not end a turn or barge in
    voice_mode: str = ""  # turn | realtime for this language's calls; "" = the deployment's
    decision_cues: tuple[str, ...] = ()  # words of "will I get it / yes or no" questions
    voice_reply_always: bool = False  # WhatsApp: also send a voice note to text messages
    quality: Mapping[str, float] = field(default_factory=dict)  # thresholds for `packs eval`
    scheme_names: Mapping[str, str] = field(default_factory=dict)  # scheme id -> native name
    scheme_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    entries: Mapping[str, str] = field(default_factory=dict)  # entry id -> reviewed translation

    def phrase(self, key: str) -> str:
        try:
            return self.phrases[key]
        except KeyError:
            raise PackError(f"{self.code}: phrase {key!r} is missing", code="pack-phrase") from None

    @property
    def can_listen(self) -> bool:
        return bool(self.stt.language)


class Capabilities:
    """What the installed engines can do; built by the engine registry, injected into checks."""

    def __init__(
        self,
        *,
        stt_languages: Callable[[str], Iterable[str]] | None = None,
        voice_available: Callable[[str], bool] | None = None,
        model_available: Callable[[str], bool] | None = None,
    ) -> None:
        self._stt = stt_languages
        self._voice = voice_available
        self._model = model_available

    def stt_supports(self, model: str, language: str) -> bool | None:
        return None if self._stt is None else language in set(self._stt(model))

    def voice(self, spec: str) -> bool | None:
        return None if self._voice is None else self._voice(spec)

    def model(self, name: str) -> bool | None:
        return None if self._model is None else self._model(name)


def _table(raw: Mapping[str, Any], key: str, where: Path) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise PackError(f"{where}: [{key}] must be a table", code="pack-schema")
    return value


def _strs(value: Any, name: str, where: Path) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PackError(f"{where}: {name} must be a list of strings", code="pack-schema")
    return tuple(value)


def load_pack(directory: Path) -> LanguagePack:
    """Parse one pack; raises PackError naming the file and key on malformed data."""
    directory = Path(directory)
    pack_file = directory / "pack.toml"
    try:
        raw = tomllib.loads(pack_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackError(f"{pack_file}: missing", code="pack-missing") from None
    except tomllib.TOMLDecodeError as err:
        raise PackError(f"{pack_file}: not valid TOML: {err}", code="pack-toml") from err
    for key in ("code", "name", "native_name", "script"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise PackError(f"{pack_file}: '{key}' is required", code="pack-schema")
    stt = _table(raw, "stt", pack_file)
    tts = _table(raw, "tts", pack_file)
    mt = _table(raw, "mt", pack_file)
    num = _table(raw, "numbers", pack_file)
    realtime = _table(raw, "realtime", pack_file)
    latin = _table(raw, "latin", pack_file)
    policy = _table(raw, "policy", pack_file)
    try:
        pack = LanguagePack(
            code=raw["code"],
            name=raw["name"],
            native_name=raw["native_name"],
            script=raw["script"],
            path=directory,
            enabled=bool(raw.get("enabled", True)),
            dtmf_digit=raw.get("dtmf_digit"),
            mt_code=str(mt.get("code", "")),
            mt_model=str(mt.get("model", "")),
            stt=SttSettings(
                language=str(stt.get("language", "")),
                model=str(stt.get("model", "base")),
                initial_prompt=str(stt.get("initial_prompt", "")),
                beam_size=int(stt.get("beam_size", 5)),
                context_seconds=float(stt.get("context_seconds", 30.0)),
            ),
            tts=TtsSettings(
                voice=str(tts.get("voice", "")),
                fallback=_strs(tts.get("fallback", []), "tts.fallback", pack_file),
                speed=float(tts.get("speed", 1.0)),
                slow_speed=float(tts.get("slow_speed", 0.8)),
            ),
            numbers=_number_words(num, pack_file),
            latin=LatinWords(
                letters=_strs(latin.get("letters", []), "latin.letters", pack_file),
                words={
                    str(k).upper(): str(v) for k, v in _table(latin, "words", pack_file).items()
                },
                dot=str(latin.get("dot", "")),
            ),
            phrases={str(k): str(v) for k, v in _table(raw, "phrases", pack_file).items()},
            glossary={str(k): str(v) for k, v in _table(raw, "glossary", pack_file).items()},
            backchannels=_strs(realtime.get("backchannels", []), "backchannels", pack_file),
            voice_mode=str(realtime.get("voice_mode", "")),
            decision_cues=_strs(policy.get("decision_cues", []), "decision_cues", pack_file),
            voice_reply_always=bool(raw.get("voice_reply_always", False)),
            quality={str(k): float(v) for k, v in _table(raw, "quality", pack_file).items()},
            **_load_translations(directory),
        )
    except (TypeError, ValueError) as err:
        raise PackError(f"{pack_file}: {err}", code="pack-schema") from err
    return pack


def _number_words(raw: Mapping[str, Any], where: Path) -> NumberWords:
    known = set(NumberWords.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise PackError(f"{where}: [numbers] unknown keys {sorted(unknown)}", code="pack-schema")
    words = {k: str(v) for k, v in raw.items() if k != "digits"}
    digits = _strs(raw.get("digits", []), "numbers.digits", where)
    return NumberWords(digits=digits, **words)


def _load_translations(directory: Path) -> dict[str, Any]:
    path = directory / "knowledge.toml"
    if not path.exists():
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise PackError(f"{path}: not valid TOML: {err}", code="pack-toml") from err
    schemes = _table(raw, "schemes", path)
    entries = _table(raw, "entries", path)
    names: dict[str, str] = {}
    aliases: dict[str, tuple[str, ...]] = {}
    for scheme_id, info in schemes.items():
        if not isinstance(info, dict):
            raise PackError(f"{path}: [schemes.{scheme_id}] must be a table", code="pack-schema")
        if "name" in info:
            names[scheme_id] = str(info["name"])
        aliases[scheme_id] = _strs(info.get("aliases", []), f"{scheme_id}.aliases", path)
    texts: dict[str, str] = {}
    for entry_id, info in entries.items():
        text = info.get("text") if isinstance(info, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise PackError(f'{path}: [entries."{entry_id}"] needs text', code="pack-schema")
        texts[entry_id] = text.strip()
    return {"scheme_names": names, "scheme_aliases": aliases, "entries": texts}


@dataclass(frozen=True, slots=True)
class PackSet:
    """All loaded packs by code; ``resolve`` maps a BCP-47 tag to the best pack."""

    packs: Mapping[str, LanguagePack]
    default: str = "en"

    def __iter__(self) -> Any:
        return iter(self.packs.values())

    def __len__(self) -> int:
        return len(self.packs)

    def __contains__(self, code: object) -> bool:
        return code in self.packs

    def get(self, code: str) -> LanguagePack:
        return self.packs[code]

    def resolve(self, tag: str | None) -> LanguagePack:
        """Exact tag, then its base language (``hi-Latn`` → ``hi``), then the default pack."""
        if tag:
            if tag in self.packs:
                return self.packs[tag]
            base = tag.split("-")[0].lower()
            if base in self.packs:
                return self.packs[base]
        return self.packs[self.default]

    def by_digit(self, digit: str) -> LanguagePack | None:
        for pack in self.packs.values():
            if pack.enabled and pack.dtmf_digit is not None and str(pack.dtmf_digit) == digit:
                return pack
        return None

    @property
    def enabled(self) -> list[LanguagePack]:
        return [p for p in self.packs.values() if p.enabled]


def load_packs(root: Path, *, default: str = "en") -> PackSet:
    root = Path(root)
    packs: dict[str, LanguagePack] = {}
    if not root.is_dir():
        raise PackError(f"{root}: languages directory not found", code="pack-missing")
    for child in sorted(root.iterdir()):
        if child.is_dir() and (child / "pack.toml").exists() and not child.name.startswith("_"):
            pack = load_pack(child)
            packs[pack.code] = pack
    if default not in packs:
        raise PackError(f"{root}: the default pack {default!r} is missing", code="pack-missing")
    return PackSet(packs=packs, default=default)


def check_pack(
    pack: LanguagePack,
    capabilities: Capabilities | None = None,
    *,
    knowledge_ids: Iterable[str] | None = None,
    other_digits: Mapping[int, str] | None = None,
) -> list[str]:
    """Return one human-readable line per problem (empty list means the pack is valid)."""
    where = pack.path / "pack.toml"
    problems: list[str] = []
    if pack.path.name != pack.code:
        problems.append(f"{where}: code {pack.code!r} must equal the directory name")
    if not _CODE.match(pack.code):
        problems.append(f"{where}: code {pack.code!r} is not a BCP-47 tag like 'hi' or 'hi-Latn'")
    for key in REQUIRED_PHRASES:
        if not pack.phrases.get(key, "").strip():
            problems.append(f"{where}: [phrases] {key} is missing")
    for key in sorted(set(pack.phrases) - set(REQUIRED_PHRASES)):
        problems.append(f"{where}: [phrases] {key} is not a known phrase")
    if pack.phrases.get("dont_know") and not _HELPLINE.search(pack.phrases["dont_know"]):
        problems.append(f"{where}: [phrases] dont_know must name a helpline number")
    if pack.dtmf_digit is not None:
        # 1-9 for the first page of the language menu; 10-99 are typed as two digits.
        if not 0 < pack.dtmf_digit < 100:
            problems.append(f"{where}: dtmf_digit must be 1-99")
        elif other_digits and other_digits.get(pack.dtmf_digit, pack.code) != pack.code:
            owner = other_digits[pack.dtmf_digit]
            problems.append(f"{where}: dtmf_digit {pack.dtmf_digit} is already used by {owner}")
    if pack.stt.language and pack.stt.beam_size < 1:
        problems.append(f"{where}: [stt] beam_size must be >= 1")
    if not 1.0 <= pack.stt.context_seconds <= 30.0:
        problems.append(f"{where}: [stt] context_seconds must be between 1 and 30")
    if not pack.tts.plan:
        problems.append(f"{where}: [tts] needs a voice (or a fallback)")
    if not 0.3 <= pack.tts.speed <= 3.0 or not 0.3 <= pack.tts.slow_speed <= 3.0:
        problems.append(f"{where}: [tts] speed must be between 0.3 and 3.0")
    if pack.numbers.digits and len(pack.numbers.digits) != 10:
        problems.append(f"{where}: [numbers] digits must list 10 words (0-9)")
    if pack.voice_mode not in ("", "turn", "realtime"):
        problems.append(f"{where}: [realtime] voice_mode must be turn, realtime or empty")
    if pack.latin.letters and len(pack.latin.letters) != 26:
        problems.append(f"{where}: [latin] letters must name all 26 letters A-Z")
    if knowledge_ids is not None:
        known = set(knowledge_ids)
        for entry_id in sorted(set(pack.entries) - known):
            problems.append(f"{pack.path / 'knowledge.toml'}: entry {entry_id!r} is not in the KB")
    if capabilities is not None:
        problems.extend(_check_engines(pack, capabilities, where))
    return problems


def _check_engines(pack: LanguagePack, caps: Capabilities, where: Path) -> list[str]:
    problems: list[str] = []
    if pack.stt.language:
        ok = caps.stt_supports(pack.stt.model, pack.stt.language)
        if ok is False:
            problems.append(
                f"{where}: [stt] model {pack.stt.model!r} cannot recognise {pack.stt.language!r}"
            )
    if pack.tts.plan and all(caps.voice(v) is False for v in pack.tts.plan):
        problems.append(f"{where}: [tts] no voice in {list(pack.tts.plan)} is installed")
    if pack.mt_model and caps.model(pack.mt_model) is False:
        problems.append(f"{where}: [mt] model {pack.mt_model!r} is not in the model cache")
    return problems
