"""Everything one call says: sentences synthesised a little ahead, paced out, marked, heard.

A reply is synthesised sentence by sentence through ``Pipeline.speak`` (the pack's voice plan
with its fallbacks), at most ``ahead`` sentences beyond the one playing, so one call's long
answer does not hold the synthesiser while another call waits for its first sentence. Each
sentence goes out as 20 ms μ-law frames at real-time pace (``Pacer``), followed by a ``mark``
whose echo says the caller heard it (protocols.md §2.3–2.5).

``PhraseCache`` keeps the pack's fixed phrases (greeting, busy, goodbye…) as ready μ-law, so
they start within milliseconds instead of waiting for the synthesiser.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from voicebot.audio import encode_ulaw, ulaw_frames
from voicebot.engines.synth import split_sentences
from voicebot.errors import SynthesizeError, VoicebotError
from voicebot.packs import LanguagePack
from voicebot.pipeline import Pipeline
from voicebot.realtime.playback import FRAME_SECONDS, Outbound, Pacer, Reply

__all__ = ["PhraseCache", "Speaker", "sentences", "synthesize_clip"]

_LOGGER = logging.getLogger(__name__)
_JITTER = 0.15  # seconds frames may reach the caller later than the play clock says

Spawn = Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]]


async def synthesize_clip(pipeline: Pipeline, text: str, *, lang: str, slow: bool) -> bytes:
    """One sentence → 8 kHz μ-law (§6.3), through the pack's voice plan."""
    return encode_ulaw(await pipeline.speak(text, lang=lang, slow=slow))


# A clause end: a comma-like mark of the packs' scripts (Latin, Arabic/Urdu) and a space, so
# "₹6,000" never splits. Callers pause there anyway, so a cut there sounds natural.
_CLAUSE_END = re.compile(r"(?<=[,;:\u060c\u061b])\s+")
# The synthesiser makes a whole chunk before its first frame (Piper: ≈ 35 ms per second of
# speech here), so a long first sentence is cut at a clause end near this many characters.
QUICK_START_CHARS = 60
_MIN_CLAUSE_CHARS = 20  # neither piece shorter than this: a cut must not sound choppy


def sentences(text: str, *, quick_start: bool = False) -> list[str]:
    """The sentences to speak one by one (the whole text when it has no sentence end).

    ``quick_start`` cuts a long first sentence once, at a clause end, so the first audio of an
    answer is ready sooner (measured: 270 → 120 ms of Piper for a 23-word first sentence).
    """
    parts = split_sentences(text) or [text]
    if quick_start and len(parts[0]) > QUICK_START_CHARS:
        parts[:1] = _cut_first_clause(parts[0])
    return parts


def _cut_first_clause(sentence: str) -> list[str]:
    cuts = [
        m
        for m in _CLAUSE_END.finditer(sentence)
        if m.start() >= _MIN_CLAUSE_CHARS and len(sentence) - m.end() >= _MIN_CLAUSE_CHARS
    ]
    if not cuts:
        return [sentence]
    cut = min(cuts, key=lambda m: abs(m.start() - QUICK_START_CHARS))
    return [sentence[: cut.start()], sentence[cut.end() :]]


class PhraseCache:
    """Fixed phrases as μ-law per sentence, by (pack, phrase key, slow); one per process."""

    def __init__(self) -> None:
        self._clips: dict[tuple[str, str, bool], list[bytes]] = {}

    def get(self, pack: LanguagePack, key: str, *, slow: bool = False) -> list[bytes] | None:
        return self._clips.get((pack.code, key, slow))

    def put(self, pack: LanguagePack, key: str, clips: list[bytes], *, slow: bool) -> None:
        if clips and all(clips):  # never cache a phrase with a sentence missing
            self._clips[(pack.code, key, slow)] = list(clips)

    async def warm(
        self, pipeline: Pipeline, packs: Iterable[LanguagePack], keys: Iterable[str]
    ) -> None:
        """Synthesise ``keys`` for every pack (a pack whose voice fails is only logged)."""
        wanted = list(dict.fromkeys(keys))
        for pack in packs:
            for key in wanted:
                if self.get(pack, key) is not None or not pack.phrases.get(key):
                    continue
                try:
                    clips = [
                        await synthesize_clip(pipeline, text, lang=pack.code, slow=False)
                        for text in sentences(pack.phrase(key))
                    ]
                except (VoicebotError, TimeoutError) as err:
                    _LOGGER.warning("cannot pre-synthesise %s/%s: %s", pack.code, key, err)
                    break  # this pack's voice does not work; the next pack's may
                self.put(pack, key, clips, slow=False)


class Speaker:
    """The outbound side of one call. ``reply`` is what it is saying (or holding after a
    ``clear``); ``on_first_frame`` and ``on_heard`` tell the session when a reply starts
    sounding and when its last sentence has been heard."""

    def __init__(
        self,
        out: Outbound,
        pipeline: Pipeline,
        pack: LanguagePack,
        cache: PhraseCache,
        *,
        spawn: Spawn,
        on_first_frame: Callable[[Reply], None],
        on_heard: Callable[[Reply], Awaitable[None]],
        max_lead: float = 0.1,
        ahead: int = 2,
        label: str = "",
    ) -> None:
        self.out = out
        self.pipeline = pipeline
        self.pack = pack
        self.cache = cache
        self.ahead = ahead
        self.label = label
        self.pacer = Pacer(max_lead=max_lead)
        self.reply: Reply | None = None
        self._spawn = spawn
        self._on_first_frame = on_first_frame
        self._on_heard = on_heard
        self._loop = asyncio.get_running_loop()
        self._numbers = 0
        self._playback: asyncio.Task[None] | None = None
        self._synth: dict[Reply, asyncio.Task[None]] = {}
        self._marks: dict[str, tuple[Reply, int, int]] = {}
        self._outstanding: dict[Reply, set[str]] = {}
        self._finished: dict[Reply, asyncio.Event] = {}

    # -- making replies -----------------------------------------------------------------

    def compose(self, texts: list[str], *, kind: str = "phrase", slow: bool = False) -> Reply:
        """A reply of these sentences; synthesis starts now."""
        reply = self._new(texts, kind=kind, slow=slow)
        self._synth[reply] = self._spawn(self._synthesize(reply), "synth")
        return reply

    def phrase(self, key: str, *, slow: bool = False) -> Reply:
        """A fixed phrase of the pack, from the cache when it is there."""
        texts = sentences(self.pack.phrase(key))
        cached = self.cache.get(self.pack, key, slow=slow)
        if cached is not None and len(cached) == len(texts):
            return self._ready(texts, cached, slow=slow)
        return self.compose(texts, kind=f"phrase:{key}", slow=slow)

    def again(self, source: Reply, *, slow: bool) -> Reply:
        """``source`` once more (key 1), or re-synthesised at the slow speed (key 2)."""
        if source.complete and source.slow == slow:
            return self._ready(list(source.texts), [c or b"" for c in source.clips], slow=slow)
        return self.compose(list(source.texts), slow=slow)

    def _new(self, texts: list[str], *, kind: str, slow: bool) -> Reply:
        self._numbers += 1
        return Reply(number=self._numbers, texts=texts, kind=kind, slow=slow)

    def _ready(self, texts: list[str], clips: list[bytes], *, slow: bool) -> Reply:
        reply = self._new(texts, kind="phrase", slow=slow)
        filled: list[bytes | None] = list(clips)
        reply.clips = filled
        reply.finish_synthesis()
        return reply

    async def _synthesize(self, reply: Reply) -> None:
        try:
            for index, text in enumerate(reply.texts):
                await reply.room_for(index, self.ahead)
                try:
                    clip = await synthesize_clip(
                        self.pipeline, text, lang=self.pack.code, slow=reply.slow
                    )
                except (SynthesizeError, TimeoutError) as err:
                    _LOGGER.warning("%s: sentence %d unspoken (%s)", self.label, index, err)
                    clip = b""  # say the rest rather than nothing
                reply.put(index, clip)
            if reply.kind.startswith("phrase:"):
                key = reply.kind.removeprefix("phrase:")
                self.cache.put(self.pack, key, [c or b"" for c in reply.clips], slow=reply.slow)
        finally:
            reply.finish_synthesis()
            self._synth.pop(reply, None)

    def abandon(self, reply: Reply) -> None:
        """Stop synthesising ``reply``."""
        task = self._synth.pop(reply, None)
        if task is not None:
            task.cancel()
        reply.finish_synthesis()

    # -- playing ------------------------------------------------------------------------

    def speaking(self) -> bool:
        """Frames are going out, or are still queued at the far end."""
        sending = self._playback is not None and not self._playback.done()
        return sending or self.pacer.queued() > 0

    def play(self, reply: Reply, *, start: int = 0) -> None:
        """Say ``reply`` from sentence ``start`` (replacing whatever was being sent)."""
        self.stop()
        self.reply = reply
        reply.stopped = False
        reply.sent_all = False
        self._finished.setdefault(reply, asyncio.Event())
        self._playback = self._spawn(self._send(reply, start), "playback")

    def stop(self) -> None:
        """Stop sending frames (what is queued at the far end still plays)."""
        if self._playback is not None and not self._playback.done():
            self._playback.cancel()
        self._playback = None

    async def clear(self, reply: Reply) -> None:
        """Empty the far end's buffer now (§2.5) and note how much of ``reply`` was heard."""
        now = self._loop.time()
        self.stop()
        await self.out.clear()
        # The play clock assumes every frame reached the caller on time; late frames (network
        # jitter, a busy event loop) play later. A sentence that ended on the clock within
        # _JITTER may not have been heard to its end, so it counts as cut and is said again
        # if the bot resumes: repeating a few words beats skipping them (seen on a loaded
        # machine: the bot resumed after "hmm" one sentence too far).
        reply.cut(now, margin=_JITTER)
        # Twilio echoes the cleared marks back, but their audio was not heard (§2.5 step 4).
        reply.generation += 1
        for name in self._outstanding.pop(reply, set()):
            self._marks.pop(name, None)
        self.pacer.flush()

    async def _send(self, reply: Reply, start: int) -> None:
        """Frames at real-time pace, a mark after each sentence (§2.3, §2.4)."""
        generation = reply.generation
        outstanding = self._outstanding.setdefault(reply, set())
        for index in range(start, len(reply.texts)):
            clip = await reply.clip(index)
            if clip is None:
                break  # synthesis was stopped
            if not clip:
                continue  # this sentence could not be synthesised
            reply.playing = index
            reply.changed()
            frames = ulaw_frames(clip)
            reply.durations[index] = len(frames) * FRAME_SECONDS
            for n, frame in enumerate(frames):
                starts = await self.pacer.slot()
                if n == 0:
                    reply.starts[index] = starts
                await self.out.media(frame)
                if reply.first_frame_at is None:
                    reply.first_frame_at = self._loop.time()
                    self._on_first_frame(reply)
            name = f"r{reply.number}.s{index}.g{generation}"
            self._marks[name] = (reply, index, generation)
            outstanding.add(name)
            await self.out.mark(name)
        reply.sent_all = True
        if not outstanding:
            await self._heard_all(reply)

    async def mark(self, name: str) -> None:
        """A mark came back: the audio before it has played (§2.3)."""
        entry = self._marks.pop(name, None)
        if entry is None:
            return  # cleared, or not ours
        reply, index, generation = entry
        outstanding = self._outstanding.get(reply, set())
        outstanding.discard(name)
        if generation != reply.generation:
            return
        reply.heard = max(reply.heard, index + 1)
        if reply.sent_all and not outstanding:
            await self._heard_all(reply)

    async def _heard_all(self, reply: Reply) -> None:
        reply.heard = len(reply.texts)
        reply.partial = 0.0
        if self.reply is reply:
            self.reply = None
        await self._on_heard(reply)

    def finished(self, reply: Reply) -> asyncio.Event | None:
        """Set once ``reply`` is done with (heard, interrupted or dropped)."""
        return self._finished.get(reply)

    def release(self, reply: Reply) -> None:
        """Forget ``reply``'s bookkeeping and wake whoever waits for it to finish."""
        event = self._finished.pop(reply, None)
        if event is not None:
            event.set()
        for name in self._outstanding.pop(reply, set()):
            self._marks.pop(name, None)
