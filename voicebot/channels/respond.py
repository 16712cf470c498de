"""Answer one accepted WhatsApp message, whichever provider brought it.

text → ``pipeline.ask``; voice note → download → ``audio.decode`` → ``pipeline.transcribe`` →
``ask``. The reply is the text answer with its sources, then a voice note (OGG/Opus) when the
user spoke or the pack asks for voice replies always. Every failure becomes the pack's phrase
for it: the user never gets silence or a stack trace.

The user's language is the one they chose (on a call or here), else the default pack; a user
switches by sending a pack's native or English name, or ``/code``. Nothing guesses a language.
"""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
import uuid
from dataclasses import dataclass

from voicebot.channels.base import Inbound, Outbound
from voicebot.channels.ratelimit import DROP, REFUSE
from voicebot.channels.runtime import Runtime, engine_versions
from voicebot.errors import SynthesizeError, TranscribeError, VoicebotError
from voicebot.messages import Answer
from voicebot.packs import LanguagePack, PackSet
from voicebot.services import Services
from voicebot.state import is_outage
from voicebot.store import AuditRecord, InboxItem, OutboxItem

__all__ = [
    "TEXT_LIMIT",
    "Reply",
    "Responder",
    "match_pack",
    "pack_for_user",
    "split_text",
    "text_reply",
]

_LOGGER = logging.getLogger(__name__)
TEXT_LIMIT = 1600  # Twilio's WhatsApp Body limit (§3.1); Meta allows 4096


@dataclass(frozen=True, slots=True)
class Reply:
    messages: list[OutboxItem]
    audit: AuditRecord


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Split at a line break, else a space, so no message exceeds the provider's limit."""
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit)
        if cut <= 0:
            cut = rest.rfind(" ", 0, limit)
        if cut <= 0:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return [*parts, rest] if rest else parts or [text]


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFC", text).casefold().strip()
    return text.strip(" .!?।,;:'\"")


def match_pack(text: str, packs: PackSet) -> LanguagePack | None:
    """The enabled pack named by the whole message (native name, English name, or ``/code``).

    A bare code is not enough: "hi" is a greeting far more often than a request for Hindi.
    """
    wanted = _fold(text)
    if not wanted:
        return None
    for pack in packs.enabled:
        names = {_fold(pack.native_name), _fold(pack.name), "/" + pack.code.casefold()}
        if wanted in names:
            return pack
    return None


async def pack_for_user(rt: Runtime, packs: PackSet, user: str) -> LanguagePack:
    """The remembered pack (chosen on any channel), else the configured default."""
    code = await rt.store.language(user)
    if code and code in packs and packs.get(code).enabled:
        return packs.get(code)
    return packs.resolve(rt.settings.default_language)


def text_reply(answer: Answer, pack: LanguagePack) -> str:
    """The answer with its sources as links, for text channels."""
    from voicebot.answering.format import format_text_reply

    return format_text_reply(answer, pack)


class Responder:
    def __init__(self, rt: Runtime, services: Services) -> None:
        self.rt = rt
        self.services = services

    async def respond(self, item: InboxItem) -> Reply:
        msg = Inbound.from_json(item.payload)
        rt, pipeline = self.rt, self.services.pipeline
        turn = uuid.uuid4().hex[:12]
        start = time.perf_counter()
        user = rt.store.user_key(msg.phone)
        first = await rt.store.touch_user(user)
        pack = await pack_for_user(rt, self.services.packs, user)
        texts: list[str] = []
        voice_text: str | None = None
        question, outcome = msg.text, "ok"
        sources: tuple[str, ...] = ()
        engines = {"answerer": self.services.answerer.name, **engine_versions()}
        try:
            if msg.limited == DROP:
                outcome = "rate-dropped"
            elif msg.limited == REFUSE:
                outcome, texts = "rate-limited", [pack.phrase("rate_limited")]
            elif msg.kind == "text" and (chosen := match_pack(msg.text, self.services.packs)):
                await rt.store.set_language(user, chosen.code)
                pack, outcome, texts = chosen, "language", [chosen.phrase("greeting")]
            elif msg.kind == "audio" or (msg.kind == "text" and msg.text.strip()):
                if msg.kind == "audio":
                    question = await self._listen(msg, pack)
                    engines["stt"] = pack.stt.model
                answer = await pipeline.ask(question, lang=pack.code, conversation=user)
                body = text_reply(answer, pack)
                texts = [f"{pack.phrase('greeting')}\n\n{body}" if first else body]
                sources = tuple(s.url for s in answer.sources)
                outcome = "abstained" if answer.abstained else "ok"
                # A worker shedding load (queue too old) marks the item text-only: no TTS.
                speak = msg.kind == "audio" or pack.voice_reply_always
                if speak and not item.payload.get("text_only"):
                    voice_text = pipeline.speech_text(answer, pack)
            else:
                outcome, texts = "unsupported-message", [pack.phrase("not_understood")]
        except (VoicebotError, TimeoutError) as err:
            outcome = getattr(err, "code", "timeout")
            texts = [pipeline.apology(outcome, pack)]
            if outcome.startswith(("audio", "channel")):  # stage errors are counted by stages
                rt.metrics.inc("voicebot_errors_total", code=outcome)
        except Exception as err:
            if is_outage(err):
                raise  # the state backend is away: retake the turn later, do not apologise
            _LOGGER.exception("turn=%s failed unexpectedly", turn)
            outcome, texts = "internal", [pack.phrase("error")]
        chunks = [part for text in texts for part in split_text(text)]
        messages = [
            self._out(msg, item, i, user, kind="text", text=t) for i, t in enumerate(chunks)
        ]
        if voice_text is not None:
            token = await self._speak(voice_text, pack, turn)
            if token:
                engines["tts"] = pack.tts.voice
                messages.append(
                    self._out(msg, item, len(messages), user, kind="audio", media=token)
                )
        latency = (time.perf_counter() - start) * 1000
        _LOGGER.info(
            "turn=%s channel=%s lang=%s kind=%s outcome=%s ms=%.0f",
            turn, msg.channel, pack.code, msg.kind, outcome, latency,
        )  # fmt: skip
        rt.metrics.inc("voicebot_turns_total", channel=msg.channel, outcome=outcome)
        audit = AuditRecord(
            turn=turn,
            channel=msg.channel,
            user=user,
            lang=pack.code,
            question=question,
            outcome=outcome,
            latency_ms=latency,
            sources=sources,
            engines=engines,
        )
        return Reply(messages=messages, audit=audit)

    async def _listen(self, msg: Inbound, pack: LanguagePack) -> str:
        from voicebot import audio

        if not pack.can_listen:  # no recogniser: the pack's `text_only` reply, nothing fetched
            raise TranscribeError(f"{pack.code} has no speech recogniser", code="stt-unsupported")
        fetcher = self.rt.fetchers[msg.channel]
        data = await fetcher.fetch(msg)
        settings = self.rt.settings
        decoded = await asyncio.to_thread(
            audio.decode,
            data,
            max_seconds=settings.max_audio_seconds,
            max_bytes=settings.max_audio_bytes,
        )
        transcript = await self.services.pipeline.transcribe(decoded, lang=pack.code)
        return transcript.text

    async def _speak(self, text: str, pack: LanguagePack, turn: str) -> str | None:
        """A voice note in the media store, or None (the text reply still goes out)."""
        from voicebot import audio

        try:
            spoken = await self.services.pipeline.speak(text, lang=pack.code)
            ogg = await asyncio.to_thread(audio.encode_ogg_opus, spoken)
            # A full disk must not cost the user the text answer (or retry the whole turn).
            return await self.rt.media.put(ogg, "audio/ogg", ext=".ogg")
        except Exception as err:  # the voice note is a bonus: the text answer still goes out
            if isinstance(err, VoicebotError):
                code = err.code
            else:
                code = "media-write-failed" if isinstance(err, OSError) else "tts-encode-failed"
            _LOGGER.warning("turn=%s voice note skipped: %s", turn, code)
            if not isinstance(err, SynthesizeError):  # synthesis errors are counted by the stage
                self.rt.metrics.inc("voicebot_errors_total", code=code)
            return None

    @staticmethod
    def _out(
        msg: Inbound,
        item: InboxItem,
        seq: int,
        user: str,
        *,
        kind: str,
        text: str = "",
        media: str = "",
    ) -> OutboxItem:
        out = Outbound(
            channel=msg.channel,
            to=msg.reply_to,
            sender=msg.reply_from,
            kind=kind,
            text=text,
            media=media,
            user=user,
        )
        return OutboxItem(
            id=f"{item.id}#{seq}",
            parent=item.id,
            seq=seq,
            channel=msg.channel,
            payload=out.to_json(),
        )
