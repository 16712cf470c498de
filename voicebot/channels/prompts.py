"""Pre-synthesised voice prompts, so a call's greeting starts playing at once.

Each pack's fixed phrases are spoken once in the pack's own voice, written as 8 kHz WAV (what
Twilio plays anyway, protocols.md §1.3) under ``data_dir/prompts`` — keyed by a hash of voice
plan and text, so a restart reuses them and an edited phrase is re-made — and served from
pinned ``/media`` tokens. Until a prompt exists, callers get ``None`` and fall back to
``<Say>`` rather than waiting for synthesis inside a webhook.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

from voicebot.channels.media import MediaStore
from voicebot.errors import VoicebotError
from voicebot.numbers import speakable
from voicebot.packs import LanguagePack
from voicebot.pipeline import Pipeline

__all__ = ["CALL_START", "PROMPTS", "Prompts"]

_LOGGER = logging.getLogger(__name__)

# What a call needs first, then everything else a call can say without the answerer.
CALL_START = ("greeting", "choose_language", "ask_question", "please_wait")
PROMPTS = (
    *CALL_START,
    "menu",
    "please_repeat",
    "not_understood",
    "error",
    "busy",
    "text_only",
    "goodbye",
    "whatsapp_sent",
)


class Prompts:
    def __init__(self, media: MediaStore, root: Path) -> None:
        self._media = media
        self._root = Path(root)
        self._urls: dict[tuple[str, str], str] = {}  # (pack code, phrase text) -> URL
        self.ready = asyncio.Event()  # set once every pack's CALL_START prompts exist
        self.complete = asyncio.Event()  # set once all of them exist

    def url(self, pack: LanguagePack, key: str) -> str | None:
        return self._urls.get((pack.code, pack.phrases.get(key, "")))

    def url_for_text(self, pack: LanguagePack, text: str) -> str | None:
        """The cached recording of ``text`` if it is one of the pack's phrases (apologies)."""
        return self._urls.get((pack.code, text))

    async def warm(
        self,
        pipeline: Pipeline,
        packs: Iterable[LanguagePack],
        text_only: Iterable[LanguagePack] = (),
    ) -> None:
        """Every prompt of ``packs``; only the ``text_only`` phrase of the ``text_only`` packs
        (languages a call cannot run in, whose callers are told so in their language)."""
        packs = list(packs)
        for keys in (CALL_START, PROMPTS[len(CALL_START) :]):
            for key in keys:
                for pack in packs:
                    await self._make(pipeline, pack, key)
            self.ready.set()
        for pack in text_only:
            await self._make(pipeline, pack, "text_only")
        self.complete.set()
        _LOGGER.info("voice prompts ready: %d files for %d packs", len(self._urls), len(packs))

    async def _make(self, pipeline: Pipeline, pack: LanguagePack, key: str) -> None:
        from voicebot import audio

        text = pack.phrases.get(key, "")
        if not text or (pack.code, text) in self._urls:
            return
        plan = f"{pack.tts.plan}|{pack.tts.speed}|{text}"
        digest = hashlib.sha256(plan.encode("utf-8")).hexdigest()[:16]
        path = self._root / pack.code / f"{key}-{digest}.wav"
        if not path.is_file():
            try:
                spoken = await pipeline.speak(speakable(text, pack.numbers), lang=pack.code)
                wav = await asyncio.to_thread(audio.encode_wav, spoken, 8000)
            except VoicebotError as err:
                _LOGGER.warning("prompt %s/%s not synthesised (%s)", pack.code, key, err.code)
                return
            await asyncio.to_thread(_write, path, wav)
        token = self._media.pin(path, "audio/wav", ext=".wav")
        self._urls[(pack.code, text)] = self._media.url(token)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
