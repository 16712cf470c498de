"""The work behind a voice turn, run as tracked background jobs keyed by CallSid.

``turn_job``: recording → ``audio.decode`` → ``Pipeline.voice_turn`` (which already turns every
speech failure into a spoken apology) → 8 kHz WAV in the media store → parked for
``/twilio/voice/poll`` and remembered as the call's last answer (for keypad 1/2/9).
``slow_job`` re-speaks the last answer slowly; ``whatsapp_copy`` queues it to the caller's
WhatsApp through the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from voicebot.channels.base import Outbound
from voicebot.channels.http import MediaMissing, download
from voicebot.channels.respond import text_reply
from voicebot.channels.runtime import Runtime, engine_versions, normalize_phone
from voicebot.channels.twilio_whatsapp import CHANNEL as WHATSAPP
from voicebot.channels.twilio_whatsapp import credentials_for
from voicebot.errors import VoicebotError
from voicebot.messages import Answer
from voicebot.packs import LanguagePack
from voicebot.priority import Priority, priority
from voicebot.services import Services
from voicebot.store import AuditRecord, OutboxItem

__all__ = ["CHANNEL", "fetch_recording", "slow_job", "turn_job", "whatsapp_copy"]

_LOGGER = logging.getLogger(__name__)
CHANNEL = "twilio-voice"
_RECORDING_TRIES = 6  # 404 right after <Record> means "not ready yet": retry ~3.75 s (§1.4)


async def fetch_recording(rt: Runtime, url: str) -> bytes:
    """``RecordingUrl`` + ``.wav`` with Basic auth; a 404 right after ``<Record>`` means
    "still processing", so retry with a short backoff well inside the budget (§1.4)."""
    target = url if url.endswith(".wav") else f"{url}.wav"
    headers = credentials_for(target, rt.settings.twilio)
    limit = rt.settings.max_audio_bytes
    for attempt in range(1, _RECORDING_TRIES + 1):
        try:
            return await download(rt.http, target, max_bytes=limit, headers=headers)
        except MediaMissing:
            if attempt == _RECORDING_TRIES:
                raise
            await asyncio.sleep(0.25 * attempt)
    raise AssertionError("unreachable")


async def turn_job(
    rt: Runtime, services: Services, sid: str, n: int, recording: str, pack: LanguagePack, user: str
) -> dict[str, Any]:
    from voicebot import audio

    pipeline, start, turn_id = services.pipeline, time.perf_counter(), uuid.uuid4().hex[:12]
    heard = ""
    try:
        data = await fetch_recording(rt, recording)
        settings = rt.settings
        decoded = await asyncio.to_thread(
            audio.decode,
            data,
            max_seconds=settings.max_audio_seconds,
            max_bytes=settings.max_audio_bytes,
        )
        with priority(Priority.CALL):  # a caller on hold goes before WhatsApp turns
            result = await pipeline.voice_turn(decoded, lang=pack.code, conversation=user)
        answer, heard, spoken_audio = result.answer, result.transcript.text, result.audio
        outcome = ("abstained" if answer.abstained else "ok") if heard else "apology"
    except (VoicebotError, TimeoutError) as err:
        outcome = getattr(err, "code", "timeout")
        rt.metrics.inc("voicebot_errors_total", code=outcome)
        answer = Answer(text=pipeline.apology(outcome, pack), language=pack.code, abstained=True)
        spoken_audio = None
    media = rt.prompts.url_for_text(pack, answer.text) if not heard else None
    if spoken_audio is not None and media is None:
        # Twilio transcodes everything to 8 kHz telephony audio: send exactly that (§1.3).
        wav = await asyncio.to_thread(audio.encode_wav, spoken_audio, 8000)
        try:
            media = rt.media.url(await rt.media.put(wav, "audio/wav", ext=".wav", owner=sid))
        except OSError as err:  # a full disk: the caller still hears the answer, via <Say>
            _LOGGER.warning("call=%s answer audio not stored (%s); using <Say>", sid[-6:], err)
            rt.metrics.inc("voicebot_errors_total", code="media-write-failed")
    reply = {
        "media": media or "",
        "text": answer.text,
        "spoken": pipeline.speech_text(answer, pack) if heard else answer.text,
        "written": text_reply(answer, pack) if heard else answer.text,
        "apology": not heard,
    }
    await rt.store.park(sid, str(n), reply)
    if heard:
        await rt.store.set_call_last(sid, reply)
    latency = (time.perf_counter() - start) * 1000
    rt.metrics.inc("voicebot_turns_total", channel=CHANNEL, outcome=outcome)
    _LOGGER.info(
        "turn=%s channel=%s lang=%s n=%d outcome=%s ms=%.0f",
        turn_id, CHANNEL, pack.code, n, outcome, latency,
    )  # fmt: skip
    await rt.store.audit(
        AuditRecord(
            turn=turn_id,
            channel=CHANNEL,
            user=user,
            lang=pack.code,
            question=heard,
            outcome=outcome,
            latency_ms=latency,
            sources=tuple(s.url for s in answer.sources),
            engines={
                "answerer": services.answerer.name,
                "stt": pack.stt.model,
                "tts": pack.tts.voice,
                **engine_versions(),
            },
        )
    )
    return reply


async def slow_job(
    rt: Runtime, services: Services, sid: str, n: int, last: Mapping[str, Any], pack: LanguagePack
) -> dict[str, Any]:
    """The last answer again at the pack's slow speed; the normal one if synthesis fails."""
    from voicebot import audio

    reply = dict(last)
    try:
        with priority(Priority.CALL):
            spoken = await services.pipeline.speak(
                str(last.get("spoken", "")), lang=pack.code, slow=True
            )
        wav = await asyncio.to_thread(audio.encode_wav, spoken, 8000)
        reply["media"] = rt.media.url(await rt.media.put(wav, "audio/wav", ext=".wav", owner=sid))
    except VoicebotError as err:
        _LOGGER.warning(
            "call=%s slow replay failed (%s); replaying at normal speed", sid[-6:], err.code
        )
    await rt.store.park(sid, f"{n}-slow", reply)
    return reply


async def whatsapp_copy(
    rt: Runtime, sid: str, n: int, state: Mapping[str, Any], text: str, *, tag: str = "whatsapp"
) -> bool:
    """Queue ``text`` to the caller's WhatsApp: the last answer with its source links (keypad 9),
    or a text-only language's greeting (``tag`` keeps the two apart in the outbox)."""
    phone = normalize_phone(str(state.get("caller", "")))
    if WHATSAPP not in rt.senders or not phone.startswith("+") or not text:
        return False
    sender = (
        rt.settings.twilio_whatsapp_from
        or f"whatsapp:{normalize_phone(str(state.get('callee', '')))}"
    )
    out = Outbound(
        channel=WHATSAPP,
        to=f"whatsapp:{phone}",
        sender=sender,
        kind="text",
        text=text,
        user=str(state.get("user", "")),
    )
    parent = f"{CHANNEL}:{sid}:{n}:{tag}"  # fixed id: a retried keypress queues it once
    await rt.store.enqueue(
        [
            OutboxItem(
                id=f"{parent}#0", parent=parent, seq=0, channel=WHATSAPP, payload=out.to_json()
            )
        ]
    )
    rt.wake_outbox()
    return True
