"""Twilio WhatsApp through the real app and real HTTP, against a loopback Twilio."""

from __future__ import annotations

import asyncio
import base64
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from tests.channel_kit import (
    CALLER,
    OUR_NUMBER,
    SID,
    TOKEN,
    Factory,
    start_fakes,
    start_kit,
    until,
    until_async,
    voice_note_form,
    whatsapp_form,
)
from tests.fakes import CannedAnswerer, FakeTranscriber, ToneSynthesizer
from voicebot import audio

EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response />'


async def test_signed_text_is_acked_at_once_and_answered_with_sources(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path)
    status, body, _ = await kit.twilio_post(
        "/twilio/whatsapp", whatsapp_form("SM1", "pm kisan amount?")
    )
    assert status == 200 and body == EMPTY
    await until(lambda: len(kit.twilio.sent) == 1)
    sent = kit.twilio.sent[0]
    assert sent["To"] == f"whatsapp:{CALLER}" and sent["From"] == f"whatsapp:{OUR_NUMBER}"
    # First contact: the disclosure, then the answer and its source as a link.
    en = kit.services.packs.get("en")
    assert sent["Body"].startswith(en.phrase("greeting"))
    assert "₹6,000" in sent["Body"] and "Source: PM-KISAN — https://pmkisan.gov.in" in sent["Body"]
    expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert kit.twilio.auth[-1] == expected
    audit = await kit.rt.store.audit_log()
    assert audit[0]["channel"] == "twilio-whatsapp" and audit[0]["outcome"] == "ok"
    assert (
        audit[0]["sources"] == ["https://pmkisan.gov.in"]
        and audit[0]["engines"]["answerer"] == "canned"
    )
    assert CALLER not in str(audit) and len(audit[0]["user"]) == 32
    # The second message of the same user has no greeting, and the answerer saw the history.
    await kit.twilio_post("/twilio/whatsapp", whatsapp_form("SM2", "and when?"))
    await until(lambda: len(kit.twilio.sent) == 2)
    assert not kit.twilio.sent[1]["Body"].startswith(en.phrase("greeting"))
    answerer = kit.services.answerer
    assert isinstance(answerer, CannedAnswerer) and answerer.questions[-1][2] == 1


@pytest.mark.parametrize("variant", ["unsigned", "tampered", "wrong-url"])
async def test_bad_signatures_get_403_and_are_never_processed(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path, variant: str
) -> None:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path)
    form = whatsapp_form("SM1", "hello")
    headers = kit.twilio_headers("/twilio/whatsapp", form)
    if variant == "unsigned":
        headers = {}
    elif variant == "tampered":
        form = {**form, "Body": "hello!"}
    else:  # signed for another path (a proxy rewriting URLs looks like this)
        headers = kit.twilio_headers("/twilio/whatsapp?x=1", form)
    resp = await kit.client.post("/twilio/whatsapp", data=form, headers=headers)
    assert resp.status == 403
    await asyncio.sleep(0.1)
    assert kit.twilio.sent == [] and await kit.rt.store.pending_inbox() == []
    metrics = await (await kit.client.get("/metrics")).text()
    assert 'voicebot_errors_total{code="signature-invalid"} 1' in metrics


async def test_unconfigured_channels_are_not_mounted(
    aiohttp_client: Factory, tmp_path: Path
) -> None:
    from tests.channel_kit import kit_settings
    from tests.fakes import fake_services
    from voicebot.app import create_app

    settings = kit_settings(tmp_path, None, None)
    client = await aiohttp_client(create_app(settings, fake_services(settings)))
    for path in ("/twilio/whatsapp", "/twilio/voice", "/twilio/voice/turn", "/whatsapp/cloud"):
        assert (await client.post(path, data={"a": "b"})).status == 404, path
    assert (await client.get("/whatsapp/cloud?hub.mode=subscribe")).status == 404
    assert (await client.get("/media/" + "A" * 43)).status == 404


async def test_voice_note_gets_text_then_an_ogg_voice_note(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    stt = FakeTranscriber("what does pm kisan pay")
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path, transcriber=stt)
    form = voice_note_form(kit.twilio, "MM1")
    status, body, _ = await kit.twilio_post("/twilio/whatsapp", form)
    assert (status, body) == (200, EMPTY)
    await until(lambda: len(kit.twilio.sent) == 2)
    text, note = kit.twilio.sent
    assert "https://pmkisan.gov.in" in text["Body"] and "MediaUrl" not in text
    assert "Body" not in note and note["To"] == f"whatsapp:{CALLER}"
    assert stt.calls == 1
    status, kind, data = await kit.get_media(note["MediaUrl"])
    assert status == 200 and kind == "audio/ogg" and data[:4] == b"OggS"
    assert audio.decode(data).seconds > 0.5  # a real, decodable Opus voice note
    audit = (await kit.rt.store.audit_log())[0]
    assert audit["question"] == "what does pm kisan pay" and audit["engines"]["tts"]


async def test_hindi_user_gets_hindi_text_and_voice(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    tts = ToneSynthesizer()
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path, synthesizer=tts)
    hi = kit.services.packs.get("hi")
    await kit.twilio_post("/twilio/whatsapp", whatsapp_form("SM1", "हिन्दी"))
    await until(lambda: len(kit.twilio.sent) == 1)
    assert kit.twilio.sent[0]["Body"] == hi.phrase("greeting")  # switched, in Hindi
    form = voice_note_form(kit.twilio, "MM2")
    await kit.twilio_post("/twilio/whatsapp", form)
    await until(lambda: len(kit.twilio.sent) == 3)
    assert "स्रोत: PM-KISAN" in kit.twilio.sent[1]["Body"]  # the Hindi pack's source label
    assert "MediaUrl" in kit.twilio.sent[2]
    answers = [voice for text, voice, _ in tts.calls if "हज़ार" in text]  # not warm-up prompts
    assert answers == [hi.tts.voice]
    # A bare "hi" is a greeting, not a language switch.
    await kit.twilio_post("/twilio/whatsapp", whatsapp_form("SM3", "Hi"))
    await until(lambda: len(kit.twilio.sent) == 4)
    assert "स्रोत" in kit.twilio.sent[3]["Body"]


async def test_voice_note_in_a_language_that_cannot_listen_gets_the_text_only_reply(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    stt = FakeTranscriber("what does pm kisan pay")
    kit = await start_kit(
        aiohttp_client, aiohttp_server, tmp_path, transcriber=stt, langs=("en", "or")
    )
    odia = kit.services.packs.get("or")
    assert not odia.can_listen  # `[stt] language = ""`: no recogniser knows Odia
    await kit.twilio_post("/twilio/whatsapp", whatsapp_form("SM1", "ଓଡ଼ିଆ"))
    await until(lambda: len(kit.twilio.sent) == 1)
    assert kit.twilio.sent[0]["Body"] == odia.phrase("greeting")
    form = voice_note_form(kit.twilio, "MM2")
    fetched = len(kit.twilio.auth)
    await kit.twilio_post("/twilio/whatsapp", form)
    await until(lambda: len(kit.twilio.sent) == 2)
    await asyncio.sleep(0.2)
    assert len(kit.twilio.sent) == 2  # one text, no voice note
    reply = kit.twilio.sent[1]
    assert reply["Body"] == odia.phrase("text_only") and "MediaUrl" not in reply
    assert stt.calls == 0 and len(kit.twilio.auth) == fetched + 1  # the note was not downloaded
    audit = (await kit.rt.store.audit_log())[0]
    assert audit["lang"] == "or" and audit["outcome"] == "stt-unsupported"
    # A typed question in the same conversation is answered normally, in Odia.
    await kit.twilio_post("/twilio/whatsapp", whatsapp_form("SM3", "PM kisan?"))
    await until(lambda: len(kit.twilio.sent) == 3)
    assert odia.phrase("sources") in kit.twilio.sent[2]["Body"]


async def test_duplicate_and_concurrent_redeliveries_are_answered_once(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path)
    form = whatsapp_form("SM1", "pm kisan?")
    results = await asyncio.gather(*[kit.twilio_post("/twilio/whatsapp", form) for _ in range(5)])
    assert all(status == 200 for status, _, _ in results)
    await until(lambda: len(kit.twilio.sent) == 1)
    await kit.twilio_post("/twilio/whatsapp", form)
    await asyncio.sleep(0.3)
    assert len(kit.twilio.sent) == 1


async def test_crash_between_accept_and_reply_is_answered_once_after_restart(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    fakes = await start_fakes(aiohttp_server)
    stuck = CannedAnswerer(delay=60)
    first = await start_kit(aiohttp_client, aiohttp_server, tmp_path, fakes=fakes, answerer=stuck)
    await first.twilio_post("/twilio/whatsapp", whatsapp_form("SM1", "pm kisan?"))
    await until(lambda: len(stuck.questions) == 1)  # the worker is mid-answer...
    await first.client.close()  # ...when the process goes away
    assert fakes[0].sent == []
    second = await start_kit(aiohttp_client, aiohttp_server, tmp_path, fakes=fakes)
    await until(lambda: len(fakes[0].sent) == 1)
    assert "https://pmkisan.gov.in" in fakes[0].sent[0]["Body"]
    await second.twilio_post("/twilio/whatsapp", whatsapp_form("SM1", "pm kisan?"))  # redelivery
    await asyncio.sleep(0.3)
    assert len(fakes[0].sent) == 1 and await second.rt.store.count_pending() == (0, 0)


async def test_queued_reply_survives_a_provider_outage_and_a_restart(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    fakes = await start_fakes(aiohttp_server)
    fakes[0].fail_statuses = [503] * 100
    first = await start_kit(
        aiohttp_client, aiohttp_server, tmp_path, fakes=fakes, outbox_backoff_seconds=0.05
    )
    await first.twilio_post("/twilio/whatsapp", whatsapp_form("SM1", "pm kisan?"))
    await until_async(lambda: _attempted(first))
    await first.client.close()
    fakes[0].fail_statuses = [429]  # one more throttle, then Twilio is back
    second = await start_kit(aiohttp_client, aiohttp_server, tmp_path, fakes=fakes)
    await until(lambda: len(fakes[0].sent) == 1)
    rows = await second.rt.store.outbox()
    assert [status for _, status, _ in rows] == ["sent"] and rows[0][2] >= 2


async def _attempted(kit: Any) -> bool:
    rows = await kit.rt.store.outbox()
    return bool(rows) and rows[0][2] >= 1


async def test_outbound_retries_then_dead_letters_in_the_audit_log(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path, outbox_max_attempts=3)
    kit.twilio.fail_statuses = [500, 503]  # two server errors, then accepted
    await kit.twilio_post("/twilio/whatsapp", whatsapp_form("SM1", "pm kisan?"))
    await until(lambda: len(kit.twilio.sent) == 1)
    assert (await kit.rt.store.outbox())[0][1:] == ("sent", 3)
    kit.twilio.fail_statuses = [400]  # e.g. 63016 outside the 24 h window: never retried
    await kit.twilio_post("/twilio/whatsapp", whatsapp_form("SM2", "pm kisan?"))
    await until_async(lambda: _dead(kit))
    audit = await kit.rt.store.audit_log()
    assert audit[0]["outcome"] == "dead-letter:channel-send-rejected"
    assert audit[0]["user"] == kit.rt.store.user_key(CALLER)


async def _dead(kit: Any) -> bool:
    return bool(await kit.rt.store.outbox("dead"))


@pytest.mark.parametrize(
    ("media", "phrase"),
    [(b"\x00" * 5000, "please_repeat"), (b"OggS" + b"\x01" * 300, "please_repeat")],
    ids=["oversized", "corrupt"],
)
async def test_bad_media_gets_an_apology_never_silence(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path, media: bytes, phrase: str
) -> None:
    stt = FakeTranscriber()
    kit = await start_kit(
        aiohttp_client, aiohttp_server, tmp_path, transcriber=stt, max_audio_bytes=4096
    )
    form = voice_note_form(kit.twilio, "MM1", media)
    await kit.twilio_post("/twilio/whatsapp", form)
    await until(lambda: len(kit.twilio.sent) == 1)
    body = kit.twilio.sent[0]["Body"]
    assert body.endswith(kit.services.packs.get("en").phrase(phrase)) and "Traceback" not in body
    assert stt.calls == 0
    outcome = (await kit.rt.store.audit_log())[0]["outcome"]
    assert outcome.startswith("audio-")


async def test_image_without_text_gets_not_understood(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path)
    form = whatsapp_form(
        "MM1", NumMedia="1", MediaUrl0=kit.twilio.media_url("X"), MediaContentType0="image/jpeg"
    )
    await kit.twilio_post("/twilio/whatsapp", form)
    await until(lambda: len(kit.twilio.sent) == 1)
    assert kit.twilio.sent[0]["Body"].endswith(
        kit.services.packs.get("en").phrase("not_understood")
    )


async def test_rate_limit_refuses_politely_once_then_drops(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path, rate_limit_per_minute=2)
    for i in range(4):
        status, _, _ = await kit.twilio_post(
            "/twilio/whatsapp", whatsapp_form(f"SM{i}", "pm kisan?")
        )
        assert status == 200
    await until(lambda: len(kit.twilio.sent) == 3)
    await asyncio.sleep(0.2)
    bodies = [m["Body"] for m in kit.twilio.sent]
    assert bodies[2] == kit.services.packs.get("en").phrase("rate_limited") and len(bodies) == 3
    # Another sender is not affected.
    await kit.twilio_post(
        "/twilio/whatsapp", whatsapp_form("SM9", "pm kisan?", phone="+919800000001")
    )
    await until(lambda: len(kit.twilio.sent) == 4)


async def test_oversized_webhook_body_is_413(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path, max_body_bytes=2048)
    status, _, _ = await kit.twilio_post("/twilio/whatsapp", whatsapp_form("SM1", "x" * 5000))
    assert status == 413
    assert await kit.rt.store.pending_inbox() == []


async def test_ack_latency_and_metrics(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path, rate_limit_per_minute=1000)
    times = []
    for i in range(60):
        status, _, seconds = await kit.twilio_post(
            "/twilio/whatsapp", whatsapp_form(f"SM{i}", "pm kisan?", phone=f"+91980000{i:04d}")
        )
        assert status == 200
        times.append(seconds)
    times.sort()
    p50, p99 = statistics.median(times), times[int(len(times) * 0.99) - 1]
    print(f"\ntwilio whatsapp ack: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert p99 < 0.3
    metrics = await (await kit.client.get("/metrics")).text()
    assert 'voicebot_webhook_ack_seconds_count{route="/twilio/whatsapp"} 60' in metrics
    assert "# TYPE voicebot_inbox_pending gauge" in metrics
    assert "voicebot_outbox_pending" in metrics
    await until(lambda: len(kit.twilio.sent) == 60, timeout=20)


class TimedAnswerer(CannedAnswerer):
    """A slow answerer that notes when each answer was ready (``time.monotonic()``)."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay=delay)
        self.done_at: list[float] = []

    async def answer(self, question: str, **kwargs: Any) -> Any:
        answer = await super().answer(question, **kwargs)
        self.done_at.append(time.monotonic())
        return answer


async def test_replies_go_out_while_a_burst_is_still_being_answered(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    """Issue #4: delivering a computed answer never waits behind answering new questions.

    24 users write at once; answering is slow (0.15 s, two at a time, ≈1.8 s for all) and
    Twilio is fast. The first replies must reach Twilio while most questions are still being
    answered. Before the fix, sends shared the answering semaphore and queued behind every
    waiting question: the first reply went out only when the last questions were answered.
    """
    burst, delay = 24, 0.15
    answerer = TimedAnswerer(delay)
    kit = await start_kit(
        aiohttp_client, aiohttp_server, tmp_path, answerer=answerer, channel_concurrency=2
    )
    forms = [whatsapp_form(f"SM{i}", "pm kisan?", phone=f"+91981111{i:04d}") for i in range(burst)]
    results = await asyncio.gather(*[kit.twilio_post("/twilio/whatsapp", f) for f in forms])
    assert all(status == 200 for status, _, _ in results)
    await until(lambda: len(kit.twilio.sent) == burst, timeout=30)
    done, sent = sorted(answerer.done_at), sorted(kit.twilio.sent_at)
    lags = [s - d for s, d in zip(sent, done, strict=True)]  # k-th reply out vs k-th answer
    print(
        f"\nburst of {burst}: first reply {sent[0] - done[0]:.2f} s after the first answer, "
        f"answering ran {done[-1] - done[0]:.2f} s more; reply lag p50 "
        f"{statistics.median(lags) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms"
    )
    # The first reply went out while at least half of the burst was still unanswered...
    assert sent[0] < done[burst // 2 - 1], (sent[0] - done[0], done[-1] - done[0])
    # ...and replies kept pace with answers instead of arriving in one lump at the end.
    assert statistics.median(lags) < 4 * delay, lags
    assert len({f["To"] for f in kit.twilio.sent}) == burst  # one reply each
    assert await kit.rt.store.count_pending() == (0, 0)
