"""Fault injection through the real app, real HTTP and loopback providers (issue 8).

Each test breaks one thing — a model stage, the provider's API, the disk, the process, the
database — and checks three things: the user still gets something sensible in their own
language, the failure is recorded, and the very next normal request is served as usual.

How each fault is made (honestly):
- model stages: fake engines that raise or never return (``asyncio`` hang, and a hang inside a
  worker thread that cannot be cancelled), with a short per-stage timeout;
- provider outages: the loopback fake Twilio/Meta answer 5xx, or hold the request past
  ``http_timeout_seconds``;
- disk full: the media temp file is a symlink to ``/dev/full``, so the kernel itself returns
  ENOSPC on write (no quota or tmpfs is mounted);
- SIGTERM: an in-process ``web.AppRunner`` cleaned up with a ``shutdown_timeout``, which is
  what ``web.run_app`` does on SIGTERM (``voicebot serve`` loads real models for over a minute
  on this machine, too slow for CI as a subprocess);
- SQLite locked: a second real ``sqlite3`` connection holds ``BEGIN IMMEDIATE``; past
  ``ACCEPT_DEADLINE`` messages go to the inbox spool (and with the spool on ``/dev/full`` too,
  the webhook answers 503).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import ClientSession, web
from twilio.request_validator import RequestValidator

from tests.channel_kit import (
    CALLER,
    PUBLIC,
    TOKEN,
    Factory,
    FakeMeta,
    FakeTwilio,
    Kit,
    call_form,
    kit_settings,
    meta_doc,
    ogg_note,
    path_of,
    start_fakes,
    start_kit,
    twiml_tree,
    until,
    until_async,
    voice_note_form,
    wav_8k,
    whatsapp_form,
)
from tests.fakes import CannedAnswerer, FakeTranscriber, ToneSynthesizer, fake_services
from voicebot.app import create_app
from voicebot.channels import RUNTIME
from voicebot.channels import media as media_module
from voicebot.channels.spool import ACCEPT_DEADLINE, SPOOL_FILE, Spool, Spooled
from voicebot.messages import Answer, Exchange
from voicebot.packs import LanguagePack
from voicebot.store import Store

STAGE_TIMEOUT = 0.3
WA_ID = CALLER.lstrip("+")


class FlakyAnswerer(CannedAnswerer):
    """``mode``: "ok", "raise" (a bug, not a coded error), "hang" (never returns) or
    "thread-hang" (blocks a worker thread until released, like a wedged model call)."""

    def __init__(self, mode: str = "ok") -> None:
        super().__init__()
        self.mode = mode
        self.release = threading.Event()

    async def answer(
        self,
        question: str,
        *,
        pack: LanguagePack,
        history: Sequence[Exchange] = (),
        pivot: bool = False,
    ) -> Answer:
        if self.mode == "raise":
            self.questions.append((question, pack.code, len(history)))
            raise RuntimeError("model crashed")
        if self.mode == "hang":
            self.questions.append((question, pack.code, len(history)))
            await asyncio.Event().wait()
        if self.mode == "thread-hang":
            self.questions.append((question, pack.code, len(history)))
            await asyncio.to_thread(self.release.wait, 30)
        return await super().answer(question, pack=pack, history=history, pivot=pivot)


class HangingSynth(ToneSynthesizer):
    def __init__(self) -> None:
        super().__init__()
        self.hang = False

    async def synthesize(self, text: str, *, voice: str, speed: float = 1.0) -> Any:
        if self.hang:
            await asyncio.Event().wait()
        return await super().synthesize(text, voice=voice, speed=speed)


async def _kit(
    aiohttp_client: Factory,
    aiohttp_server: Factory,
    tmp_path: Path,
    *,
    fakes: tuple[FakeTwilio, FakeMeta] | None = None,
    answerer: CannedAnswerer | None = None,
    transcriber: FakeTranscriber | None = None,
    synthesizer: ToneSynthesizer | None = None,
    **overrides: Any,
) -> Kit:
    """A kit whose pipeline has a short per-stage timeout."""
    fakes = fakes or await start_fakes(aiohttp_server)
    settings = kit_settings(tmp_path, *fakes, stage_timeout_seconds=STAGE_TIMEOUT, **overrides)
    services = fake_services(
        settings,
        answerer=answerer,
        transcriber=transcriber,
        synthesizer=synthesizer,
        stage_timeout=STAGE_TIMEOUT,
    )
    return await start_kit(aiohttp_client, aiohttp_server, tmp_path, fakes=fakes, services=services)


async def _choose_hindi(kit: Kit, sid: str = "SMlang") -> None:
    before = len(kit.twilio.sent)
    await kit.twilio_post("/twilio/whatsapp", whatsapp_form(sid, "हिन्दी"))
    await until(lambda: len(kit.twilio.sent) == before + 1)


# -- model stages ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["raise", "hang", "thread-hang"])
async def test_answer_stage_failure_apologises_in_the_users_language_and_keeps_serving(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path, mode: str
) -> None:
    answerer = FlakyAnswerer()
    kit = await _kit(aiohttp_client, aiohttp_server, tmp_path, answerer=answerer)
    hi = kit.services.packs.get("hi")
    await _choose_hindi(kit)
    answerer.mode = mode
    start = time.perf_counter()
    await kit.twilio_post("/twilio/whatsapp", whatsapp_form("SM1", "पीएम किसान कितना देता है?"))
    await until(lambda: len(kit.twilio.sent) == 2)
    took = time.perf_counter() - start
    # The Hindi user gets the Hindi apology (not English, not a traceback, not silence)...
    assert kit.twilio.sent[1]["Body"] == hi.phrase("error")
    assert "Traceback" not in kit.twilio.sent[1]["Body"]
    # ...within the stage timeout, not whenever the model gives up.
    assert took < STAGE_TIMEOUT + 2.0, took
    audit = (await kit.rt.store.audit_log())[0]
    expected = "answer-failed" if mode == "raise" else "answer-timeout"
    assert audit["outcome"] == expected and audit["lang"] == "hi"
    metrics = await (await kit.client.get("/metrics")).text()
    assert f'voicebot_errors_total{{code="{expected}"}} 1' in metrics
    # The process keeps serving: health is fine and the next message is answered normally.
    answerer.mode = "ok"
    answerer.release.set()
    assert (await kit.client.get("/healthz")).status == 200
    await kit.twilio_post("/twilio/whatsapp", whatsapp_form("SM2", "और कब?"))
    await until(lambda: len(kit.twilio.sent) == 3)
    assert "स्रोत: PM-KISAN" in kit.twilio.sent[2]["Body"]
    assert (await kit.rt.store.audit_log())[0]["outcome"] == "ok"


async def test_stt_hang_on_a_voice_note_gets_an_apology_and_the_next_note_works(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    stt = FakeTranscriber("pm kisan kitna", delay=30)
    kit = await _kit(aiohttp_client, aiohttp_server, tmp_path, transcriber=stt)
    kit.meta.media["M1"] = ogg_note()
    voice = {"mime_type": "audio/ogg; codecs=opus", "id": "M1", "voice": True}
    msg = {"from": WA_ID, "id": "wamid.1", "timestamp": "1", "type": "audio", "audio": voice}
    await kit.meta_post(meta_doc(msg))
    await until(lambda: len(kit.meta.sent) == 1)
    en = kit.services.packs.get("en")
    assert kit.meta.sent[0]["text"]["body"] == en.phrase("error")
    assert (await kit.rt.store.audit_log())[0]["outcome"] == "stt-timeout"
    stt.delay = 0
    await kit.meta_post(meta_doc({**msg, "id": "wamid.2"}))
    await until(lambda: len(kit.meta.sent) == 3)  # answer text + voice note
    assert "pmkisan.gov.in" in kit.meta.sent[1]["text"]["body"]
    assert kit.meta.sent[2]["type"] == "audio"


async def test_tts_hang_still_sends_the_text_answer(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    tts = HangingSynth()
    kit = await _kit(aiohttp_client, aiohttp_server, tmp_path, synthesizer=tts)
    await kit.prompts_ready()  # the voice prompts are made before the synthesiser wedges
    tts.hang = True
    form = voice_note_form(kit.twilio, "MM1")
    await kit.twilio_post("/twilio/whatsapp", form)
    await until(lambda: len(kit.twilio.sent) == 1)
    await asyncio.sleep(0.2)
    assert len(kit.twilio.sent) == 1 and "pmkisan.gov.in" in kit.twilio.sent[0]["Body"]
    audit = (await kit.rt.store.audit_log())[0]
    assert audit["outcome"] == "ok" and "tts" not in audit["engines"]
    metrics = await (await kit.client.get("/metrics")).text()
    assert 'voicebot_errors_total{code="tts-timeout"} 1' in metrics


async def test_voice_call_stage_hang_plays_the_callers_language_apology(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    answerer = FlakyAnswerer("hang")
    kit = await _kit(aiohttp_client, aiohttp_server, tmp_path, answerer=answerer)
    kit.twilio.recording = wav_8k(1.5)
    await kit.prompts_ready()
    hi = kit.services.packs.get("hi")
    call = "CA" + "7" * 32
    await kit.twilio_post("/twilio/voice", call_form(call))
    _, body, _ = await kit.twilio_post("/twilio/voice/language?n=1", call_form(call, Digits="2"))
    record = twiml_tree(body).find("Record")
    assert record is not None
    params = call_form(call, RecordingUrl=kit.twilio.recording_url(), RecordingDuration="2")
    status, body, seconds = await kit.twilio_post(path_of(record.get("action", "")), params)
    assert status == 200 and seconds < STAGE_TIMEOUT + 1.5
    first = twiml_tree(body)[0]
    # The cached Hindi "error" prompt, spoken in the Hindi voice — not English, not silence.
    assert first.tag == "Play" and first.text == kit.rt.prompts.url(hi, "error")
    audit = (await kit.rt.store.audit_log())[0]
    assert audit["channel"] == "twilio-voice" and audit["lang"] == "hi"
    assert audit["outcome"] == "apology" and audit["question"] == ""
    metrics = await (await kit.client.get("/metrics")).text()
    assert 'voicebot_errors_total{code="answer-timeout"} 1' in metrics
    # Same call, next turn, the model is back.
    answerer.mode = "ok"
    action = twiml_tree(body).find("Record").get("action", "")  # type: ignore[union-attr]
    _, body, _ = await kit.twilio_post(path_of(action), params)
    assert twiml_tree(body).find("Gather") is not None  # the answer, with the keypad menu


# -- provider outages -----------------------------------------------------------------------


class SlowTwilio(FakeTwilio):
    """Messages.json that records each attempt's time and can hang past the client timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[float] = []
        self.hang = 0.0

    async def _messages(self, request: web.Request) -> web.Response:
        self.attempts.append(time.monotonic())
        if self.hang:
            await asyncio.sleep(self.hang)
        return await super()._messages(request)


async def _dead(kit: Kit) -> bool:
    return bool(await kit.rt.store.outbox("dead"))


@pytest.mark.parametrize("fault", ["5xx", "timeout"])
async def test_twilio_outage_retries_with_backoff_then_dead_letters(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path, fault: str
) -> None:
    twilio = SlowTwilio()
    twilio.server = await aiohttp_server(twilio.app())
    meta = FakeMeta()
    meta.server = await aiohttp_server(meta.app())
    base = 0.1
    kit = await start_kit(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        fakes=(twilio, meta),
        outbox_max_attempts=4,
        outbox_backoff_seconds=base,
        http_timeout_seconds=0.3,
    )
    if fault == "5xx":
        twilio.fail_statuses = [500, 502, 503, 504]
    else:
        twilio.hang = 5.0
    await kit.twilio_post("/twilio/whatsapp", whatsapp_form("SM1", "pm kisan?"))
    await until_async(lambda: _dead(kit), timeout=10)
    assert len(twilio.attempts) == 4 and twilio.sent == []
    # Exponential backoff with equal jitter: the k-th wait is in [base·2^(k-1)/2, base·2^(k-1)].
    gaps = [b - a for a, b in zip(twilio.attempts, twilio.attempts[1:], strict=False)]
    hung = 0.3 if fault == "timeout" else 0.0
    for k, gap in enumerate(gaps, start=1):
        assert gap >= hung + base * 2 ** (k - 1) / 2 * 0.9, gaps
    assert gaps[2] > gaps[0], gaps
    audit = await kit.rt.store.audit_log()
    assert audit[0]["outcome"] == "dead-letter:channel-send-retry"
    assert audit[0]["user"] == kit.rt.store.user_key(CALLER)
    assert (await kit.rt.store.outbox())[0][1:] == ("dead", 4)
    metrics = await (await kit.client.get("/metrics")).text()
    assert 'voicebot_outbound_total{channel="twilio-whatsapp",outcome="dead"} 1' in metrics
    # Twilio recovers: the next message goes straight out.
    twilio.hang, twilio.fail_statuses = 0.0, []
    await kit.twilio_post("/twilio/whatsapp", whatsapp_form("SM2", "pm kisan?"))
    await until(lambda: len(twilio.sent) == 1)


async def test_meta_5xx_outage_dead_letters_and_the_next_message_is_delivered(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path, outbox_max_attempts=3)
    kit.meta.fail_statuses = [500, 503, 502]
    text = {"from": WA_ID, "id": "wamid.1", "timestamp": "1", "type": "text"}
    await kit.meta_post(meta_doc({**text, "text": {"body": "pm kisan?"}}))
    await until_async(lambda: _dead(kit), timeout=10)
    assert (await kit.rt.store.audit_log())[0]["outcome"] == "dead-letter:channel-send-retry"
    await kit.meta_post(meta_doc({**text, "id": "wamid.2", "text": {"body": "pm kisan?"}}))
    await until(lambda: len(kit.meta.sent) == 1)


# -- disk full -------------------------------------------------------------------------------


def _full_disk_for_next_media(monkeypatch: pytest.MonkeyPatch, root: Path, ext: str) -> list[str]:
    """The next media token's temp file is a symlink to /dev/full: writing it gets a real
    ENOSPC from the kernel. Returns the tokens handed out."""
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is not available")
    tokens: list[str] = []

    def token_urlsafe(_n: int) -> str:
        token = f"full{len(tokens):028d}"
        tokens.append(token)
        return token

    root.mkdir(parents=True, exist_ok=True)
    os.symlink("/dev/full", root / f"full{0:028d}{ext}.tmp")
    monkeypatch.setattr(media_module, "secrets", SimpleNamespace(token_urlsafe=token_urlsafe))
    return tokens


async def test_disk_full_on_voice_note_still_sends_the_text_answer(
    aiohttp_client: Factory,
    aiohttp_server: Factory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kit = await _kit(aiohttp_client, aiohttp_server, tmp_path)
    await kit.prompts_ready()
    tokens = _full_disk_for_next_media(monkeypatch, kit.rt.media.root, ".ogg")
    form = voice_note_form(kit.twilio, "MM1")
    await kit.twilio_post("/twilio/whatsapp", form)
    await until(lambda: len(kit.twilio.sent) == 1)
    await asyncio.sleep(0.3)
    assert tokens, "the voice note was never written"
    assert len(kit.twilio.sent) == 1 and "pmkisan.gov.in" in kit.twilio.sent[0]["Body"]
    assert "MediaUrl" not in kit.twilio.sent[0]
    audit = (await kit.rt.store.audit_log())[0]
    assert audit["outcome"] == "ok"
    assert await kit.rt.store.count_pending() == (0, 0)  # answered once, not retried
    # The half-written temp file is gone: a full disk is not made fuller.
    assert not list(kit.rt.media.root.glob("*.tmp"))
    metrics = await (await kit.client.get("/metrics")).text()
    assert 'voicebot_errors_total{code="media-write-failed"} 1' in metrics
    # The disk has room again: the next voice note gets its voice reply.
    await kit.twilio_post("/twilio/whatsapp", {**form, "MessageSid": "MM2", "SmsMessageSid": "MM2"})
    await until(lambda: len(kit.twilio.sent) == 3)
    assert "MediaUrl" in kit.twilio.sent[2]


async def test_disk_full_on_a_call_still_speaks_the_answer(
    aiohttp_client: Factory,
    aiohttp_server: Factory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kit = await _kit(aiohttp_client, aiohttp_server, tmp_path)
    kit.twilio.recording = wav_8k(1.5)
    await kit.prompts_ready()
    _full_disk_for_next_media(monkeypatch, kit.rt.media.root, ".wav")
    call = "CA" + "8" * 32
    await kit.twilio_post("/twilio/voice", call_form(call))
    _, body, _ = await kit.twilio_post("/twilio/voice/language?n=1", call_form(call, Digits="1"))
    action = twiml_tree(body).find("Record").get("action", "")  # type: ignore[union-attr]
    params = call_form(call, RecordingUrl=kit.twilio.recording_url(), RecordingDuration="2")
    status, body, _ = await kit.twilio_post(path_of(action), params)
    assert status == 200
    gather = twiml_tree(body).find("Gather")
    assert gather is not None, body  # the answer, not "application error" or a hang-up
    say = gather.find("Say")
    assert say is not None and "₹6,000" in (say.text or "")  # spoken by <Say>, no file needed
    assert (await kit.rt.store.audit_log())[0]["outcome"] == "ok"
    assert not list(kit.rt.media.root.glob("*.tmp"))


# -- SIGTERM: drain --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_shutdown_lets_an_in_flight_call_turn_finish_and_answer(
    aiohttp_server: Factory, tmp_path: Path
) -> None:
    """What ``web.run_app`` does on SIGTERM: stop listening, wait ``shutdown_timeout`` for
    handlers in flight, then clean up. A caller mid-turn still gets their answer."""
    twilio, meta = await start_fakes(aiohttp_server)
    stt = FakeTranscriber("how much does pm kisan pay", delay=0.8)
    settings = kit_settings(tmp_path, twilio, meta, voice_answer_wait_seconds=3.0)
    twilio.recording = wav_8k(1.5)
    app = create_app(settings, fake_services(settings, transcriber=stt))
    runner = web.AppRunner(app, shutdown_timeout=10)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rt = app[RUNTIME]
    await asyncio.wait_for(rt.workers.wait(), 5)
    await asyncio.wait_for(rt.prompts.complete.wait(), 20)
    call = "CA" + "9" * 32
    base = f"http://127.0.0.1:{port}"

    async def post(session: ClientSession, path_qs: str, form: dict[str, str]) -> str:
        sig = RequestValidator(TOKEN).compute_signature(PUBLIC + path_qs, form)
        async with session.post(
            base + path_qs, data=form, headers={"X-Twilio-Signature": sig}
        ) as resp:
            assert resp.status == 200
            return await resp.text()

    async with ClientSession() as session:
        await post(session, "/twilio/voice", call_form(call))
        await post(session, "/twilio/voice/language?n=1", call_form(call, Digits="1"))
        params = call_form(call, RecordingUrl=twilio.recording_url(), RecordingDuration="2")
        turn = asyncio.create_task(post(session, "/twilio/voice/turn?n=1", params))
        await until(lambda: stt.calls == 1)  # the turn is mid-transcription...
        start = time.perf_counter()
        await runner.cleanup()  # ...when SIGTERM arrives
        stopped = time.perf_counter() - start
        body = await asyncio.wait_for(turn, 5)
    gather = twiml_tree(body).find("Gather")
    assert gather is not None, body  # the answer, played
    assert 0.3 < stopped < 10, stopped  # it waited for the turn, and no longer than the bound
    # The turn ran to completion and was logged before the store closed.
    db = sqlite3.connect(settings.data_dir / "voicebot.sqlite3")
    rows = db.execute("SELECT channel, outcome FROM audit").fetchall()
    db.close()
    assert rows == [("twilio-voice", "ok")]
    with pytest.raises(OSError):  # and the port is closed
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()


# -- SQLite locked ---------------------------------------------------------------------------


def _lock_db(kit: Kit) -> sqlite3.Connection:
    other = sqlite3.connect(kit.settings.data_dir / "voicebot.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock until COMMIT
    other.execute("INSERT INTO dedupe(key, value, expires) VALUES ('lock-holder', '', 0)")
    return other


async def test_write_lock_held_briefly_waits_and_loses_no_message(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path)
    other = _lock_db(kit)
    post = asyncio.create_task(
        kit.twilio_post("/twilio/whatsapp", whatsapp_form("SM1", "pm kisan?"))
    )
    await asyncio.sleep(1.0)
    assert not post.done()  # waiting on busy_timeout, not failing
    other.execute("COMMIT")
    other.close()
    status, _, seconds = await post
    assert status == 200 and seconds >= 0.9
    await until(lambda: len(kit.twilio.sent) == 1)
    assert "pmkisan.gov.in" in kit.twilio.sent[0]["Body"]


def _spooled(kit: Kit) -> list[str]:
    path = kit.settings.data_dir / SPOOL_FILE
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return [json.loads(line)["item_id"] for line in lines]


def _inbox_rows(kit: Kit) -> int:
    db = sqlite3.connect(kit.settings.data_dir / "voicebot.sqlite3")
    try:
        return int(db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0])
    finally:
        db.close()


def _db_ok(kit: Kit) -> None:
    db = sqlite3.connect(kit.settings.data_dir / "voicebot.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT COUNT(*) FROM dedupe WHERE key='lock-holder'").fetchone() == (0,)
    db.close()


async def test_write_lock_past_the_deadline_is_spooled_acked_and_answered_once(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    """SQLite stays write-locked: the webhook cannot wait for the 5 s busy timeout and then
    fail (Twilio does not redeliver WhatsApp webhooks, protocols.md §3.6). After
    ``ACCEPT_DEADLINE`` the message goes to the fsync'd spool and the webhook answers 200;
    later messages join the spool at once; the spool is replayed when the lock clears."""
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path)
    other = _lock_db(kit)
    doc = meta_doc(
        {"from": WA_ID, "id": "wamid.1", "timestamp": "1", "type": "text", "text": {"body": "x"}}
    )
    try:
        status, first = await kit.meta_post(doc)
        redelivered, second = await kit.meta_post(doc)  # Meta retries, still locked
        twilio, _, third = await kit.twilio_post(
            "/twilio/whatsapp", whatsapp_form("SM1", "pm kisan?")
        )
        spooled = _spooled(kit)
        # The store really has none of them (read beside it: WAL readers are not blocked).
        assert _inbox_rows(kit) == 0
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert status == redelivered == twilio == 200
    assert ACCEPT_DEADLINE - 0.1 <= first < ACCEPT_DEADLINE + 2.0, first  # not the 5 s timeout
    assert second < 1.0 and third < 1.0, (second, third)  # behind the spool: no waiting
    assert spooled == ["meta-whatsapp:wamid.1", "meta-whatsapp:wamid.1", "twilio-whatsapp:SM1"]
    # The lock is gone: the spool is replayed, the duplicate recognised, both users answered.
    await until(lambda: len(kit.meta.sent) == 1 and len(kit.twilio.sent) == 1, timeout=15)
    assert "pmkisan.gov.in" in kit.twilio.sent[0]["Body"]
    await until(
        lambda: _spooled(kit) == [] and kit.rt.spool is not None and not kit.rt.spool.pending
    )
    status, _ = await kit.meta_post(doc)  # a late redelivery is acknowledged, not answered
    assert status == 200
    await asyncio.sleep(0.3)
    assert len(kit.meta.sent) == 1 and len(kit.twilio.sent) == 1
    assert await kit.rt.store.count_pending() == (0, 0)
    metrics = await (await kit.client.get("/metrics")).text()
    assert 'voicebot_errors_total{code="inbox-spooled"} 3' in metrics
    _db_ok(kit)


async def test_spooled_message_survives_a_restart_and_is_answered_once(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    fakes = await start_fakes(aiohttp_server)
    first = await start_kit(aiohttp_client, aiohttp_server, tmp_path, fakes=fakes)
    other = _lock_db(first)
    try:
        status, _, _ = await first.twilio_post("/twilio/whatsapp", whatsapp_form("SM1", "pm?"))
        assert status == 200 and _spooled(first) == ["twilio-whatsapp:SM1"]
        await first.client.close()  # the process goes away while the database is locked
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert fakes[0].sent == [] and _spooled(first) == ["twilio-whatsapp:SM1"]
    second = await start_kit(aiohttp_client, aiohttp_server, tmp_path, fakes=fakes)
    await until(lambda: len(fakes[0].sent) == 1, timeout=10)  # replayed at start-up
    assert "pmkisan.gov.in" in fakes[0].sent[0]["Body"]
    await second.twilio_post("/twilio/whatsapp", whatsapp_form("SM1", "pm?"))  # redelivery
    await asyncio.sleep(0.3)
    assert len(fakes[0].sent) == 1 and _spooled(second) == []
    assert await second.rt.store.count_pending() == (0, 0)
    _db_ok(second)


async def test_spool_write_failing_too_is_an_honest_503_and_the_retry_is_answered_once(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is not available")
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path)
    spool = kit.settings.data_dir / SPOOL_FILE
    os.symlink("/dev/full", spool)  # the kernel answers ENOSPC to every spool write
    other = _lock_db(kit)
    doc = meta_doc(
        {"from": WA_ID, "id": "wamid.1", "timestamp": "1", "type": "text", "text": {"body": "x"}}
    )
    try:
        status, _ = await kit.meta_post(doc)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert status == 503  # nothing could persist it: Meta retries anything but 200 (§5.2)
    assert kit.rt.spool is not None and not kit.rt.spool.pending
    metrics = await (await kit.client.get("/metrics")).text()
    assert 'voicebot_errors_total{code="inbox-spool-failed"} 1' in metrics
    spool.unlink()  # room again
    status, _ = await kit.meta_post(doc)  # Meta's retry
    assert status == 200
    await until(lambda: len(kit.meta.sent) == 1)
    await kit.meta_post(doc)
    await asyncio.sleep(0.3)
    assert len(kit.meta.sent) == 1
    _db_ok(kit)


async def test_spool_skips_a_torn_line_and_replays_the_rest_in_order(tmp_path: Path) -> None:
    """A crash mid-append leaves a line without its end; it was never acknowledged. The
    records around it replay, in order, each once."""
    store = await Store.open(tmp_path)
    path = tmp_path / SPOOL_FILE
    try:
        spool = Spool(path)
        await spool.append(Spooled("a:1", "twilio-whatsapp", {"n": 1}, 60.0))
        with path.open("ab") as handle:
            handle.write(b'{"item_id": "a:2", "chan')  # torn
        await spool.append(Spooled("a:3", "twilio-whatsapp", {"n": 3}, 60.0))
        await spool.append(Spooled("a:1", "twilio-whatsapp", {"n": 1}, 60.0))  # redelivered
        assert Spool(path).pending  # a new process sees the leftovers at start-up
        assert await spool.replay(store) == 2
        assert [i.id for i in await store.pending_inbox()] == ["a:1", "a:3"]
        assert not spool.pending and path.read_bytes() == b""
        assert await spool.replay(store) == 0  # nothing left, nothing re-added
    finally:
        await store.close()
