"""One realtime phone call: caller audio in, turn-taking, spoken answers out (protocols.md §2).

Inbound, every 20 ms μ-law frame is decoded (8 kHz, kept on a tape for Whisper), upsampled to
16 kHz for the Silero VAD and fed window by window to the ``Endpointer``. Its events drive
the call:

* ``Paused`` (≈200 ms of silence): transcribe what was said so far *speculatively*, answer it
  and synthesise the first sentence while we wait to be sure the turn is over. If the caller
  carries on (``Resumed``) the work is dropped. This hides STT and answer latency inside the
  end-of-turn silence.
* ``Ended`` (≈640 ms of silence): adopt the speculation if the utterance did not grow, else
  start the turn now; then play the reply.
* ``BargeIn`` (caller speech over the bot): send ``clear`` at once and stop sending (§2.5), but
  keep the reply. If the utterance turns out to be a backchannel ("haan", "hmm", the pack's
  ``backchannels``) or noise, the bot resumes from the start of the cut sentence; otherwise
  the reply is cancelled and only what the caller heard goes into conversation memory.

Outbound speech is the ``Speaker``'s job (speaker.py). Process-wide, ``Admission`` bounds
calls and turns in model work; ``SessionFactory`` (one per app) owns it, the shared VAD
model and the phrase cache that lets the greeting start within milliseconds of ``start``.
When the process stops, the factory is ``draining``: a new call hears "busy" and is hung up,
live calls go on until the transport's deadline, then ``farewell`` says goodbye to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections import deque
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import soxr

from voicebot.audio import resample, ulaw_to_pcm16
from voicebot.errors import VoicebotError
from voicebot.memory import Memory
from voicebot.messages import Audio, Exchange, Transcript
from voicebot.packs import LanguagePack
from voicebot.pipeline import Pipeline
from voicebot.realtime.admission import Admission
from voicebot.realtime.config import (
    DTMF_MENU,
    DTMF_REPEAT,
    DTMF_SLOWER,
    DTMF_WHATSAPP,
    CallInfo,
    Hooks,
    RealtimeConfig,
)
from voicebot.realtime.endpoint import Endpointer, Event, Kind, Span
from voicebot.realtime.endpoint import is_backchannel as _is_backchannel
from voicebot.realtime.playback import Outbound, Reply
from voicebot.realtime.speaker import PhraseCache, Speaker, sentences
from voicebot.realtime.vad import RATE as VAD_RATE
from voicebot.realtime.vad import SileroModel, StreamingVad
from voicebot.services import Services

__all__ = ["CallSession", "SessionFactory"]

_LOGGER = logging.getLogger(__name__)

LINE_RATE: Final = 8000  # Media Streams audio is always μ-law/8000 mono (§2.2)
REALTIME_BUCKETS: Final = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


class SessionFactory:
    """Makes ``CallSession``s; one per app. Owns the VAD model, admission and phrase cache."""

    def __init__(
        self,
        services: Services,
        config: RealtimeConfig | None = None,
        *,
        hooks: Hooks | None = None,
        vad_model: SileroModel | None = None,
    ) -> None:
        self.services = services
        self.config = config or RealtimeConfig()
        self.hooks = hooks or Hooks()
        self.vad_model = vad_model or SileroModel()
        self.phrases = PhraseCache()
        self.admission = Admission(
            max_calls=self.config.max_calls,
            slots=self.config.model_slots,
            queue_timeout=self.config.queue_timeout,
        )
        self.sessions: set[CallSession] = set()
        self.draining = False  # the process is stopping: new calls hear "busy"
        metrics = services.metrics
        metrics.describe(
            "voicebot_realtime_seconds",
            "histogram",
            "Realtime latency: greeting (start→first frame), reply (end of speech→first "
            "frame), clear (caller onset→clear sent)",
        )
        metrics.describe("voicebot_realtime_events_total", "counter", "Realtime call events")
        metrics.gauge("voicebot_realtime_calls", lambda: float(self.admission.calls))
        metrics.gauge("voicebot_realtime_model_waiting", lambda: float(self.admission.waiting))

    async def warm(self, packs: Iterable[LanguagePack] | None = None) -> None:
        """Pre-synthesise the greeting, re-prompt and ``warm_phrases`` of every pack."""
        config = self.config
        keys = (config.greeting_phrase, config.reprompt_phrase, *config.warm_phrases)
        chosen = list(packs) if packs is not None else self.services.packs.enabled
        await self.phrases.warm(self.services.pipeline, chosen, keys)

    def create(self, info: CallInfo, out: Outbound) -> CallSession:
        pack = self.services.packs.resolve(info.lang)
        session = CallSession(self, info, pack, out)
        self.sessions.add(session)
        return session

    async def farewell(self, phrase: str, timeout: float) -> int:
        """The stop's deadline came: say ``phrase`` on every live call and hang up, waiting
        at most ``timeout`` for it to play. Returns how many calls were ended."""
        live = list(self.sessions)
        if not live:
            return 0
        _LOGGER.warning("ending %d live call(s) with %r", len(live), phrase)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(s.farewell(phrase) for s in live), return_exceptions=True)
        except TimeoutError:
            _LOGGER.warning("goodbye did not finish in %.1fs; closing the streams", timeout)
        return len(live)


class _PendingMemory:
    """The conversation memory a turn's pipeline sees: it reads the shared history but holds
    the new exchange back, because only the part of the answer the caller heard may be
    remembered (issue 5: barge-in keeps what was heard). ``prior`` is the heard part of an
    answer the caller is talking over right now, not yet written."""

    def __init__(self, shared: Memory, prior: Exchange | None = None) -> None:
        self.shared = shared
        self.prior = prior
        self.pending: Exchange | None = None

    async def history(self, conversation: str) -> list[Exchange]:
        history = await self.shared.history(conversation)
        return [*history, self.prior] if self.prior is not None else history

    async def remember(self, conversation: str, exchange: Exchange) -> None:
        self.pending = exchange


class _Tape:
    """The caller's 8 kHz audio by absolute sample offset, kept for a bounded time."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.begin = 0
        self.end = 0
        self._chunks: deque[npt.NDArray[np.float32]] = deque()

    def append(self, samples: npt.NDArray[np.float32]) -> None:
        self._chunks.append(samples)
        self.end += len(samples)
        while self._chunks and self.end - self.begin - len(self._chunks[0]) >= self.keep:
            self.begin += len(self._chunks.popleft())

    def slice(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        start, stop = max(start, self.begin), min(stop, self.end)
        if stop <= start:
            return np.zeros(0, dtype=np.float32)
        data = np.concatenate(list(self._chunks))
        return data[start - self.begin : stop - self.begin]


@dataclass(eq=False)
class _Turn:
    span: Span
    task: asyncio.Task[_Outcome]
    speculative: bool


@dataclass(frozen=True, slots=True)
class _Outcome:
    kind: str  # answer | apology | backchannel | noise | busy
    transcript: Transcript | None = None
    reply: Reply | None = None


class CallSession:
    """The state of one call. The transport calls ``start``, ``audio``, ``mark``, ``dtmf``
    and ``close``; everything the call says goes out through ``Outbound``."""

    def __init__(
        self, factory: SessionFactory, info: CallInfo, pack: LanguagePack, out: Outbound
    ) -> None:
        self.factory = factory
        self.info = info
        self.pack = pack
        self.out = out
        self.config = factory.config
        self.metrics = factory.services.metrics
        self.conversation = f"call:{info.call_sid}"
        self.timings: list[tuple[str, float]] = []  # (greeting|reply|clear, seconds): for bench
        self.transcripts: list[str] = []
        self._loop = asyncio.get_running_loop()
        ep = self.config.endpoint
        self._endpointer = Endpointer(ep, rate=VAD_RATE)
        self._vad = StreamingVad(factory.vad_model)
        # Quick (cubic) resampling for the VAD: HQ soxr buffers ~100 ms, which barge-in cannot
        # afford. Whisper gets the tape resampled properly instead.
        self._upsample = soxr.ResampleStream(LINE_RATE, VAD_RATE, 1, dtype="float32", quality="QQ")
        self._tape = _Tape(int((ep.max_utterance_s + self.config.preroll + 5.0) * LINE_RATE))
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=2048)  # (VAD position, time)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.speaker = Speaker(
            out,
            factory.services.pipeline,
            pack,
            factory.phrases,
            spawn=self._spawn,
            on_first_frame=self._first_frame,
            on_heard=self._heard,
            max_lead=self.config.max_lead,
            ahead=self.config.synth_ahead,
            label=f"call {info.call_sid}",
        )
        self._held = False  # the bot stopped for caller speech; resume or cancel pending
        self._turn: _Turn | None = None
        self._merge_from: int | None = None
        self._last_answer: Reply | None = None
        self._greeting: Reply | None = None
        self._reprompts = 0
        self._activity = self._loop.time()
        self._started_at = self._loop.time()
        self._admitted = False
        self._closed = False
        self._hanging_up = False

    # -- transport entry points ---------------------------------------------------------

    async def start(self) -> None:
        """Greet at once from the phrase cache, or say "busy" and hang up when full."""
        self._started_at = self._loop.time()
        if self.factory.hooks.conversation is not None:
            try:
                self.conversation = await self.factory.hooks.conversation(self.info)
            except Exception:
                _LOGGER.exception("call %s: no conversation key", self.info.call_sid)
        self._admitted = not self.factory.draining and self.factory.admission.enter_call()
        if not self._admitted:
            self._count("busy-call")
            reply = await self._say("busy")
            self._spawn(self._hang_up_after(reply), "busy-hangup")
            self._spawn(self._busy_hook(), "busy-hook")
            return
        self._greeting = await self._say(self.config.greeting_phrase)
        self._spawn(self._watchdog(), "watchdog")

    async def audio(self, ulaw: bytes) -> None:
        """One inbound media payload (normally 20 ms): tape it, VAD it, act on the events."""
        if self._closed or self._hanging_up or not ulaw:  # a goodbye is not talked over
            return
        pcm = ulaw_to_pcm16(ulaw).astype(np.float32) / 32768.0
        self._tape.append(pcm)
        probs = self._vad.push(np.asarray(self._upsample.resample_chunk(pcm), np.float32))
        if not len(probs):
            return
        now = self._loop.time()
        for p in probs:
            events = self._endpointer.push(float(p), bot_speaking=self.speaker.speaking())
            self._arrivals.append((self._endpointer.position, now))
            for event in events:
                await self._on_event(event)

    async def mark(self, name: str) -> None:
        """A mark came back: the audio before it has played, or was cleared (§2.3)."""
        await self.speaker.mark(name)

    async def dtmf(self, digit: str) -> None:
        """Keys as in turn-based mode: 1 repeat, 2 slower, 0 menu, 9 WhatsApp copy."""
        if self._closed or not self._admitted or self._hanging_up:
            return
        self._activity = self._loop.time()
        self._reprompts = 0
        if digit not in (DTMF_REPEAT, DTMF_SLOWER, DTMF_MENU, DTMF_WHATSAPP):
            return
        self._count(f"dtmf-{digit}")
        if self._turn is not None:  # a key press wins over an answer still being prepared
            self._drop_turn(self._turn)
            self._turn = None
        await self._interrupt()
        source = self._last_answer or self._greeting
        if digit in (DTMF_REPEAT, DTMF_SLOWER) and source is not None:
            self.speaker.play(self.speaker.again(source, slow=digit == DTMF_SLOWER))
        elif digit == DTMF_WHATSAPP:
            await self._whatsapp()
        else:
            await self._say("menu")

    async def farewell(self, key: str) -> None:
        """Say phrase ``key`` over whatever is playing (a turn in preparation is dropped),
        then hang up once it played. For the end of a drain: never silence."""
        if self._closed or self._hanging_up:
            return  # already saying goodbye or busy, and hanging up after it
        self._hanging_up = True
        self._count("drain-goodbye")
        if self._turn is not None:
            self._drop_turn(self._turn)
            self._turn = None
        await self._hang_up_after(await self._say(key))

    async def close(self) -> None:
        """The stream stopped or the socket closed: stop everything, keep what was heard."""
        if self._closed:
            return
        self._closed = True
        self.factory.sessions.discard(self)
        if self._turn is not None:
            self._drop_turn(self._turn)
            self._turn = None
        reply = self.speaker.reply
        if reply is not None:
            reply.cut(self._loop.time())  # what the play clock says was heard by now
            await self._retire(reply)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._admitted:
            self.factory.admission.leave_call()

    # -- turn-taking ----------------------------------------------------------------------

    async def _on_event(self, event: Event) -> None:
        kind = event.kind
        if kind is Kind.STARTED:
            self._activity = self._loop.time()
            self._reprompts = 0
            turn = self._turn
            if turn is not None and not turn.speculative:
                # The caller went on before we answered: answer everything they said.
                self._merge_from = turn.span.start
                self._drop_turn(turn)
                self._turn = None
        elif kind is Kind.BARGE_IN:
            await self._hold(event)
        elif kind is Kind.COMMITTED:
            if self._held:
                self._count("barge-in")
                await self._interrupt()
        elif kind is Kind.PAUSED:
            span = self._merged(event.span)
            short = span.seconds < self.config.endpoint.backchannel_max_s
            # Short utterances and held replies need their verdict fast; otherwise only
            # speculate with a model slot to spare, so guesses never delay real turns.
            if self._held or short or (self.config.speculate and self.factory.admission.free):
                self._turn = _Turn(span, self._spawn(self._prepare(span), "turn"), True)
                self._spawn(self._early(self._turn), "early")
        elif kind is Kind.RESUMED:
            if self._turn is not None and self._turn.speculative:
                self._drop_turn(self._turn)
                self._turn = None
        elif kind is Kind.ENDED:
            span = self._merged(event.span)
            self._merge_from = None
            turn = self._turn
            if turn is None or turn.span != span:
                if turn is not None:
                    self._drop_turn(turn)
                turn = _Turn(span, self._spawn(self._prepare(span), "turn"), False)
            turn.speculative = False
            self._turn = turn
            self._spawn(self._conclude(turn, self._arrival(span.end)), "conclude")
        elif kind is Kind.DROPPED:
            self._merge_from = None
            if self._turn is not None and self._turn.speculative:
                self._drop_turn(self._turn)
                self._turn = None
            if self._held:
                self._resume()

    def _merged(self, span: Span) -> Span:
        if self._merge_from is None or self._merge_from >= span.start:
            return span
        return replace(span, start=self._merge_from)

    async def _early(self, turn: _Turn) -> None:
        """A speculative result that settles a held barge-in before the turn ends."""
        with contextlib.suppress(asyncio.CancelledError):
            outcome = await asyncio.shield(turn.task)
            if self._turn is not turn or not turn.speculative:
                return  # dropped, or the end of the turn took it over
            if outcome.kind in ("backchannel", "noise"):
                self._count(outcome.kind)
                self._endpointer.discard()
                self._turn = None
                if self._held:
                    self._resume()
            elif self._held:
                self._count("barge-in")
                await self._interrupt()

    async def _conclude(self, turn: _Turn, speech_end: float) -> None:
        """The caller's turn is over: say the prepared reply (or nothing, or "busy")."""
        try:
            outcome = await asyncio.shield(turn.task)
        except asyncio.CancelledError:
            return
        except Exception:  # a bug, not a coded failure: say sorry rather than nothing
            _LOGGER.exception("call %s: turn failed", self.info.call_sid)
            outcome = _Outcome("apology", reply=self.speaker.phrase("error"))
        if self._turn is not turn:
            return
        self._turn = None
        if outcome.transcript is not None and outcome.transcript.text:
            self.transcripts.append(outcome.transcript.text)
        if outcome.kind in ("backchannel", "noise"):
            self._count(outcome.kind)
            if self._held:
                self._resume()
            return
        if self._held:
            self._count("barge-in")
        await self._interrupt()
        if outcome.kind == "busy":
            self._count("busy-turn")
            await self._say("busy")
            self._spawn(self._busy_hook(), "busy-hook")
            return
        reply = outcome.reply
        if reply is None:
            return
        if reply.kind == "answer":
            self._last_answer = reply
        reply.speech_end = speech_end
        self.speaker.play(reply)

    def _utterance(self, span: Span) -> Audio:
        ratio = VAD_RATE // LINE_RATE
        start = span.start // ratio - int(self.config.preroll * LINE_RATE)
        stop = span.end // ratio + int(self.config.tail * LINE_RATE)
        samples = self._tape.slice(start, stop)
        return Audio(resample(samples, LINE_RATE, VAD_RATE), VAD_RATE)

    async def _prepare(self, span: Span) -> _Outcome:
        """STT → backchannel check → answer → first sentence synthesised, in one model slot."""
        pipeline = self.factory.services.pipeline
        audio = self._utterance(span)
        reply: Reply | None = None
        try:
            async with self.factory.admission.slot():
                try:
                    transcript = await pipeline.transcribe(audio, lang=self.pack.code)
                except VoicebotError as err:
                    if err.code not in ("stt-empty", "audio-empty"):
                        raise
                    # Whisper heard nothing (VAD gate passed, no-speech filter did not).
                    if span.seconds < self.config.repeat_after:
                        return _Outcome("noise")
                    reply = self.speaker.phrase(self.config.reprompt_phrase)
                    return _Outcome("apology", reply=reply)
                if span.seconds < self.config.endpoint.backchannel_max_s and _is_backchannel(
                    transcript.text, self.pack.backchannels
                ):
                    return _Outcome("backchannel", transcript)
                reply = await self._answer(pipeline, transcript)
                return _Outcome("answer", transcript, reply)
        except asyncio.CancelledError:
            if reply is not None:
                self.speaker.abandon(reply)
            raise
        except VoicebotError as err:
            if err.code == "busy":
                return _Outcome("busy")
            _LOGGER.warning("call %s turn failed: %s", self.info.call_sid, err.code)
            text = pipeline.apology(err.code, self.pack)
            key = next((k for k, v in self.pack.phrases.items() if v == text), None)
            reply = self.speaker.phrase(key) if key else self.speaker.compose(sentences(text))
            return _Outcome("apology", reply=reply)

    async def _answer(self, base: Pipeline, transcript: Transcript) -> Reply:
        held = self.speaker.reply if self._held else None
        prior = None
        if held is not None and held.exchange is not None and not held.committed:
            prior = replace(held.exchange, answer=held.heard_text())
        memory = _PendingMemory(base.memory, prior)
        pipeline = copy.copy(base)  # same engines and metrics; only the memory differs
        pipeline.memory = memory
        answer = await pipeline.ask(
            transcript.text, lang=self.pack.code, conversation=self.conversation
        )
        reply = self.speaker.compose(
            sentences(pipeline.speech_text(answer, self.pack), quick_start=True), kind="answer"
        )
        reply.answer = answer
        reply.exchange = memory.pending
        try:
            await reply.clip(0)  # the first sentence is part of the critical path
        except BaseException:
            self.speaker.abandon(reply)
            raise
        return reply

    # -- barge-in ---------------------------------------------------------------------

    async def _hold(self, event: Event) -> None:
        """Caller speech over the bot: `clear` now (§2.5), decide later whether to resume."""
        reply = self.speaker.reply
        if reply is None or self._held or not self.speaker.speaking():
            return
        self._held = True
        await self.speaker.clear(reply)
        onset = self._arrival(event.span.start + self._endpointer.window)
        self._observe("clear", self._loop.time() - onset)

    def _resume(self) -> None:
        """It was a backchannel or a cough: say the cut sentence again and carry on."""
        self._held = False
        reply = self.speaker.reply
        if reply is not None:
            reply.partial = 0.0
            self.speaker.play(reply, start=reply.heard)

    async def _interrupt(self) -> None:
        """Stop the current reply for good; only its heard part is remembered."""
        self._held = False
        reply = self.speaker.reply
        if reply is None:
            return
        self.speaker.reply = None
        if self.speaker.speaking():
            await self.speaker.clear(reply)
        else:
            reply.cut(self._loop.time())  # played out; some marks may still be on their way
        self.speaker.stop()
        self.speaker.abandon(reply)
        await self._retire(reply)

    # -- what was said and heard -------------------------------------------------------------

    async def _say(self, key: str) -> Reply:
        await self._interrupt()
        reply = self.speaker.phrase(key)
        self.speaker.play(reply)
        return reply

    def _first_frame(self, reply: Reply) -> None:
        assert reply.first_frame_at is not None
        if reply is self._greeting:
            self._observe("greeting", reply.first_frame_at - self._started_at)
        elif reply.speech_end is not None:
            self._observe("reply", reply.first_frame_at - reply.speech_end)

    async def _heard(self, reply: Reply) -> None:
        """Every sentence of ``reply`` was heard (its last mark came back)."""
        self._activity = self._loop.time()
        await self._retire(reply)

    async def _retire(self, reply: Reply) -> None:
        """Remember the exchange once: the whole answer if heard, else the heard part."""
        self.speaker.release(reply)
        if reply.committed:
            return
        reply.committed = True
        if reply.exchange is None:
            return
        heard_all = reply.heard >= len(reply.texts)
        exchange = (
            reply.exchange if heard_all else replace(reply.exchange, answer=reply.heard_text())
        )
        try:
            memory = self.factory.services.pipeline.memory
            await memory.remember(self.conversation, exchange)
        except Exception:  # memory is a nicety; the call goes on
            _LOGGER.exception("call %s: cannot remember the exchange", self.info.call_sid)

    # -- keypad, silence, hang-up ---------------------------------------------------------

    async def _whatsapp(self) -> None:
        hook = self.factory.hooks.whatsapp
        answer = self._last_answer.answer if self._last_answer is not None else None
        if answer is None:
            await self._say("menu")
            return
        sent = False
        if hook is not None:
            try:
                sent = await hook(self.info, answer)
            except Exception:
                _LOGGER.exception("call %s: WhatsApp copy failed", self.info.call_sid)
        await self._say("whatsapp_sent" if sent else "error")

    async def _watchdog(self) -> None:
        """Re-prompt after silence; after repeated silence, say goodbye and hang up."""
        while not self._closed:
            await asyncio.sleep(0.1)
            busy = (
                self.speaker.speaking()
                or self._turn is not None
                or self._held
                or self._endpointer.in_utterance
                or self._hanging_up
            )
            now = self._loop.time()
            quiet_since = max(self._activity, self.speaker.pacer.play_clock)
            if busy or now - quiet_since < self.config.reprompt_after:
                continue
            self._reprompts += 1
            self._activity = now
            if self._reprompts > self.config.max_reprompts:
                self._count("silence-hangup")
                await self._hang_up_after(await self._say("goodbye"))
                return
            self._count("reprompt")
            await self._say(self.config.reprompt_phrase)

    async def _busy_hook(self) -> None:
        hook = self.factory.hooks.busy
        if hook is None:
            return
        try:
            await hook(self.info)
        except Exception:
            _LOGGER.exception("call %s: busy hook failed", self.info.call_sid)

    async def _hang_up_after(self, reply: Reply) -> None:
        """Let ``reply`` play out (its last mark returns), then end the call (§2.7)."""
        self._hanging_up = True
        done = self.speaker.finished(reply)
        if done is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.goodbye_timeout):
                    await done.wait()
        await self.out.hangup()

    # -- plumbing ---------------------------------------------------------------------

    def _drop_turn(self, turn: _Turn) -> None:
        if not turn.task.done():
            turn.task.cancel()
            return
        if not turn.task.cancelled() and turn.task.exception() is None:
            reply = turn.task.result().reply
            if reply is not None and reply is not self.speaker.reply:
                self.speaker.abandon(reply)

    def _arrival(self, position: int) -> float:
        """When the audio at VAD stream ``position`` reached us (for latency metrics)."""
        for end, at in self._arrivals:
            if end >= position:
                return at
        return self._loop.time()

    def _observe(self, what: str, seconds: float) -> None:
        self.timings.append((what, seconds))
        self.metrics.observe(
            "voicebot_realtime_seconds", seconds, buckets=REALTIME_BUCKETS, what=what
        )

    def _count(self, event: str) -> None:
        self.metrics.inc("voicebot_realtime_events_total", event=event)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"{self.info.call_sid}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        err = task.exception()
        if err is not None and not isinstance(err, ConnectionError):
            _LOGGER.error(
                "call %s: task %s failed", self.info.call_sid, task.get_name(), exc_info=err
            )
