"""Twilio voice calls through the real app: greeting, language menu, record turns, hold/poll,
keypad shortcuts, empty recordings and hang-ups, against a loopback Twilio."""

from __future__ import annotations

import asyncio
import io
import time
import wave
from pathlib import Path

import pytest

from tests.channel_kit import (
    CALLER,
    OUR_NUMBER,
    Factory,
    Kit,
    call_form,
    path_of,
    start_kit,
    twiml_tree,
    until,
    wav_8k,
)
from tests.fakes import CannedAnswerer, FakeTranscriber, ToneSynthesizer

CALL = "CA" + "1" * 32


async def _voice_kit(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path, **kw: object
) -> Kit:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path, **kw)  # type: ignore[arg-type]
    kit.twilio.recording = wav_8k(1.5)
    await kit.prompts_ready()
    return kit


async def _play_wav(kit: Kit, url: str) -> float:
    status, kind, data = await kit.get_media(url)
    assert status == 200 and kind == "audio/wav", (status, kind)
    with wave.open(io.BytesIO(data)) as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1  # what Twilio plays (§1.3)
        return w.getnframes() / 8000


async def test_greeting_starts_fast_with_cached_prompts_and_offers_every_language_it_hears(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    langs = ("en", "hi", "ur", "pa")
    kit = await _voice_kit(aiohttp_client, aiohttp_server, tmp_path, langs=langs)
    # Webhook in, TwiML out, then Twilio fetches the greeting audio: all before it can play.
    times = []
    for i in range(20):
        start = time.perf_counter()
        status, body, _ = await kit.twilio_post("/twilio/voice", call_form(f"CA{i:032d}"))
        first = twiml_tree(body)[0].text or ""
        assert status == 200 and (await kit.get_media(first))[0] == 200
        times.append(time.perf_counter() - start)
    times.sort()
    median, worst = times[10] * 1000, times[-1] * 1000
    print(f"\ngreeting webhook + audio fetch: median {median:.1f} ms, max {worst:.1f} ms")
    assert times[-1] < 0.3
    root = twiml_tree(body)
    greeting, gather, fallback = list(root)
    assert greeting.tag == "Play" and fallback.tag == "Redirect"
    assert gather.get("input") == "dtmf" and gather.get("numDigits") == "2"  # Urdu is 11
    plays = [p.text or "" for p in gather.findall("Play")]
    assert len(plays) == 3 and len(set(plays)) == 3  # each pack's phrase, in its own voice
    # Punjabi cannot listen (`[stt] language = ""`): a call is never offered in it.
    punjabi = kit.services.packs.get("pa")
    assert not punjabi.can_listen and kit.rt.prompts.url(punjabi, "choose_language") not in plays
    assert await _play_wav(kit, greeting.text or "") > 0.2
    for url in plays:
        await _play_wav(kit, url)
    # Prompt audio is cacheable; everything else is not guessable.
    resp = await kit.client.get(path_of(plays[0]))
    assert "max-age" in resp.headers["Cache-Control"]


async def test_call_flow_record_turn_hold_poll_play(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    stt = FakeTranscriber("how much does pm kisan pay", delay=0.4)
    kit = await _voice_kit(
        aiohttp_client, aiohttp_server, tmp_path, transcriber=stt, voice_answer_wait_seconds=0.1
    )
    kit.twilio.recording_404s = 2  # "not ready yet" right after <Record> (§1.4)
    _, body, _ = await kit.twilio_post("/twilio/voice", call_form(CALL))
    action = twiml_tree(body).find("Gather").get("action")  # type: ignore[union-attr]
    _, body, _ = await kit.twilio_post(path_of(action or ""), call_form(CALL, Digits="2"))
    record = twiml_tree(body).find("Record")
    assert record is not None and record.get("action", "").endswith("/twilio/voice/turn?n=1")
    turn = path_of(record.get("action", ""))
    params = call_form(
        CALL, RecordingUrl=kit.twilio.recording_url(), RecordingDuration="2", Digits="#"
    )
    status, held, seconds = await kit.twilio_post(turn, params)
    assert status == 200 and seconds < 1.0
    hold = twiml_tree(held)
    assert [v.tag for v in hold] == ["Play", "Redirect"]  # please_wait, then poll
    # A retried POST of the same turn gets the same TwiML and starts nothing new.
    _, again, _ = await kit.twilio_post(turn, params)
    assert again == held
    redirect = hold.find("Redirect").text or ""  # type: ignore[union-attr]
    for _ in range(30):
        _, body, _ = await kit.twilio_post(path_of(redirect), call_form(CALL))
        root = twiml_tree(body)
        if root.find("Gather") is not None:
            break
        redirect = root.find("Redirect").text or ""  # type: ignore[union-attr]
    gather = root.find("Gather")
    assert gather is not None and gather.get("action", "").endswith("/keys?n=1")
    answer_url = gather.find("Play").text or ""  # type: ignore[union-attr]
    assert await _play_wav(kit, answer_url) > 1.0
    assert [v.tag for v in root][1:] == ["Play", "Record", "Redirect"]  # ask, record turn 2
    assert stt.calls == 1 and len(kit.twilio.auth) == 3  # two 404s, then the recording
    audit = (await kit.rt.store.audit_log())[0]
    assert audit["channel"] == "twilio-voice" and audit["lang"] == "hi"
    assert audit["question"] == "how much does pm kisan pay" and audit["outcome"] == "ok"
    # The caller's choice is remembered: the next call skips the menu.
    _, body, _ = await kit.twilio_post("/twilio/voice", call_form("CA" + "2" * 32))
    assert twiml_tree(body).find("Gather") is None and twiml_tree(body).find("Record") is not None


async def test_fast_answer_plays_in_the_turn_response_and_keypad_shortcuts(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    tts = ToneSynthesizer()
    kit = await _voice_kit(aiohttp_client, aiohttp_server, tmp_path, synthesizer=tts)
    await kit.twilio_post("/twilio/voice", call_form(CALL))
    await kit.twilio_post("/twilio/voice/language?n=1", call_form(CALL, Digits="1"))
    params = call_form(CALL, RecordingUrl=kit.twilio.recording_url())
    _, body, _ = await kit.twilio_post("/twilio/voice/turn?n=1", params)
    gather = twiml_tree(body).find("Gather")
    assert gather is not None, body
    first = gather.find("Play").text  # type: ignore[union-attr]
    # 1: the same answer again.
    _, body, _ = await kit.twilio_post("/twilio/voice/keys?n=1", call_form(CALL, Digits="1"))
    assert twiml_tree(body).find("Gather").find("Play").text == first  # type: ignore[union-attr]
    # 2: slower, synthesised at the pack's slow speed.
    _, body, _ = await kit.twilio_post("/twilio/voice/keys?n=1", call_form(CALL, Digits="2"))
    slow = twiml_tree(body).find("Gather").find("Play").text  # type: ignore[union-attr]
    assert slow != first and any(speed == 0.8 for _, _, speed in tts.calls)
    assert await _play_wav(kit, slow or "") > await _play_wav(kit, first or "")
    # 9: the written answer with its source links goes to the caller's WhatsApp.
    _, body, _ = await kit.twilio_post("/twilio/voice/keys?n=1", call_form(CALL, Digits="9"))
    en = kit.services.packs.get("en")
    assert twiml_tree(body)[0].text == kit.rt.prompts.url(en, "whatsapp_sent")
    await until(lambda: len(kit.twilio.sent) == 1)
    sent = kit.twilio.sent[0]
    assert sent["To"] == f"whatsapp:{CALLER}" and sent["From"] == f"whatsapp:{OUR_NUMBER}"
    assert "https://pmkisan.gov.in" in sent["Body"]
    await kit.twilio_post("/twilio/voice/keys?n=1", call_form(CALL, Digits="9"))  # retried
    await asyncio.sleep(0.2)
    assert len(kit.twilio.sent) == 1
    # 0: back to the language menu, recording the next turn after it.
    _, body, _ = await kit.twilio_post("/twilio/voice/keys?n=1", call_form(CALL, Digits="0"))
    menu = twiml_tree(body).find("Gather")
    assert menu is not None and menu.get("action", "").endswith("/language?n=2")


async def test_empty_recordings_reprompt_then_say_goodbye(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await _voice_kit(aiohttp_client, aiohttp_server, tmp_path)
    en = kit.services.packs.get("en")
    _, body, _ = await kit.twilio_post("/twilio/voice/language?n=1", call_form(CALL, Digits="1"))
    reprompt = twiml_tree(body).find("Redirect").text or ""  # type: ignore[union-attr]
    assert reprompt.endswith("/reprompt?n=1&r=0")
    _, body, _ = await kit.twilio_post(path_of(reprompt), call_form(CALL))
    root = twiml_tree(body)
    assert root[0].text == kit.rt.prompts.url(en, "please_repeat") and root[1].tag == "Record"
    for _ in range(3):
        _, body, _ = await kit.twilio_post(
            path_of(root.find("Redirect").text or ""), call_form(CALL)
        )  # type: ignore[union-attr]
        root = twiml_tree(body)
        if root.find("Hangup") is not None:
            break
    assert [v.tag for v in root] == ["Play", "Hangup"]
    assert root[0].text == kit.rt.prompts.url(en, "goodbye")


async def test_corrupt_recording_is_answered_with_a_spoken_apology(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    stt = FakeTranscriber()
    kit = await _voice_kit(aiohttp_client, aiohttp_server, tmp_path, transcriber=stt)
    kit.twilio.recording = b"RIFF\x00\x00garbage" * 10
    await kit.twilio_post("/twilio/voice/language?n=1", call_form(CALL, Digits="1"))
    params = call_form(CALL, RecordingUrl=kit.twilio.recording_url())
    _, body, _ = await kit.twilio_post("/twilio/voice/turn?n=1", params)
    root = twiml_tree(body)
    en = kit.services.packs.get("en")
    assert root[0].tag == "Play" and root[0].text == kit.rt.prompts.url(en, "please_repeat")
    assert root.find("Record") is not None and stt.calls == 0  # and the call goes on


async def test_hang_up_mid_turn_cancels_the_work_and_deletes_media(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    stt = FakeTranscriber(delay=30)
    answerer = CannedAnswerer()
    kit = await _voice_kit(
        aiohttp_client,
        aiohttp_server,
        tmp_path,
        transcriber=stt,
        answerer=answerer,
        voice_answer_wait_seconds=0.05,
    )
    # A finished earlier turn left an answer file for this call.
    stt.delay = 0
    await kit.twilio_post("/twilio/voice/language?n=1", call_form(CALL, Digits="1"))
    _, body, _ = await kit.twilio_post(
        "/twilio/voice/turn?n=1", call_form(CALL, RecordingUrl=kit.twilio.recording_url())
    )
    await until(lambda: kit.rt.jobs.running(CALL) == 0)
    earlier = (await kit.rt.store.parked(CALL, "1")) or {}
    assert (await kit.get_media(earlier["media"]))[0] == 200
    stt.delay = 30
    _, body, _ = await kit.twilio_post(
        "/twilio/voice/turn?n=2", call_form(CALL, RecordingUrl=kit.twilio.recording_url())
    )
    assert twiml_tree(body).find("Redirect") is not None  # holding
    await until(lambda: stt.calls == 2)
    assert kit.rt.jobs.running(CALL) == 1
    status, _, seconds = await kit.twilio_post(
        "/twilio/voice/status", call_form(CALL, CallStatus="completed", CallDuration="12")
    )
    assert status == 200 and seconds < 0.5
    assert kit.rt.jobs.running(CALL) == 0
    await asyncio.sleep(0.1)
    assert len(answerer.questions) == 1  # the second turn never reached the answerer
    assert (await kit.get_media(earlier["media"]))[0] == 404
    assert await kit.rt.store.call(CALL) is None  # the caller's number is forgotten


async def test_call_language_and_topic_carry_over_to_whatsapp(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    from tests.channel_kit import whatsapp_form

    answerer = CannedAnswerer()
    kit = await _voice_kit(aiohttp_client, aiohttp_server, tmp_path, answerer=answerer)
    await kit.twilio_post("/twilio/voice", call_form(CALL))
    await kit.twilio_post("/twilio/voice/language?n=1", call_form(CALL, Digits="2"))
    await kit.twilio_post(
        "/twilio/voice/turn?n=1", call_form(CALL, RecordingUrl=kit.twilio.recording_url())
    )
    await until(lambda: len(answerer.questions) == 1)
    await kit.twilio_post("/twilio/whatsapp", whatsapp_form("SM1", "and when is it paid?"))
    await until(lambda: len(kit.twilio.sent) == 1)
    assert "स्रोत" in kit.twilio.sent[0]["Body"]  # Hindi, chosen on the call
    _, lang, history = answerer.questions[-1]
    assert (lang, history) == ("hi", 1)  # the call's exchange is the WhatsApp follow-up's context


async def test_an_internal_failure_is_an_apology_not_an_application_error(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await _voice_kit(aiohttp_client, aiohttp_server, tmp_path)

    async def broken(*args: object, **kwargs: object) -> bool:
        raise RuntimeError("disk full")

    kit.rt.store.claim = broken  # type: ignore[method-assign]
    params = call_form(CALL, RecordingUrl=kit.twilio.recording_url())
    status, body, _ = await kit.twilio_post("/twilio/voice/turn?n=1", params)
    root = twiml_tree(body)
    en = kit.services.packs.get("en")
    assert status == 200 and [v.tag for v in root] == ["Play", "Hangup"]
    assert root[0].text == kit.rt.prompts.url(en, "error")


async def test_realtime_mode_hands_the_call_to_a_media_stream_after_the_language(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    from tests.channel_kit import TOKEN
    from voicebot.channels.twilio_stream import verify_stream_token

    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path, voice_mode="realtime")
    await kit.prompts_ready()
    _, body, _ = await kit.twilio_post("/twilio/voice", call_form(CALL))
    assert twiml_tree(body).find("Gather") is not None  # greeting + language menu as usual
    _, body, _ = await kit.twilio_post("/twilio/voice/language?n=1", call_form(CALL, Digits="2"))
    stream = twiml_tree(body).find("Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://bot.example.com/twilio/stream"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params["lang"] == "hi" and verify_stream_token(CALL, params["token"] or "", TOKEN)
    # A returning caller hears the greeting (the disclosure), then goes straight to the stream.
    _, body, _ = await kit.twilio_post("/twilio/voice", call_form("CA" + "3" * 32))
    root = twiml_tree(body)
    assert [v.tag for v in root] == ["Play", "Redirect"] and "/language" in (root[1].text or "")
    # The stream's conversation memory is the caller's user key, shared with WhatsApp.
    from tests.channel_kit import CALLER
    from voicebot.channels.runtime import normalize_phone
    from voicebot.channels.twilio_stream import REALTIME
    from voicebot.realtime.config import CallInfo

    hook = kit.app[REALTIME].hooks.conversation
    assert hook is not None
    key = await hook(CallInfo(call_sid=CALL, stream_sid="MZ1", lang="hi"))
    assert key == kit.rt.store.user_key(normalize_phone(CALLER))
    assert await hook(CallInfo(call_sid="CA" + "9" * 32, stream_sid="MZ2", lang="hi")) == (
        "call:CA" + "9" * 32
    )


@pytest.mark.parametrize(("deployment", "hindi"), [("turn", "realtime"), ("realtime", "turn")])
async def test_a_pack_can_choose_its_own_voice_mode(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path, deployment: str, hindi: str
) -> None:
    from tests.channel_kit import languages

    root = languages(tmp_path, ("en", "hi"))
    pack_file = root / "hi" / "pack.toml"
    text = pack_file.read_text(encoding="utf-8")
    pack_file.write_text(
        text.replace("[realtime]\n", f'[realtime]\nvoice_mode = "{hindi}"\n', 1), encoding="utf-8"
    )
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path, voice_mode=deployment)
    await kit.prompts_ready()
    assert kit.services.packs.get("hi").voice_mode == hindi
    modes = {}
    for digit, call in (("1", "CA" + "4" * 32), ("2", "CA" + "5" * 32)):
        await kit.twilio_post("/twilio/voice", call_form(call))
        _, body, _ = await kit.twilio_post(
            "/twilio/voice/language?n=1", call_form(call, Digits=digit)
        )
        root_el = twiml_tree(body)
        modes[digit] = "realtime" if root_el.find("Connect/Stream") is not None else "turn"
        if modes[digit] == "turn":
            assert root_el.find("Record") is not None
    assert modes == {"1": deployment, "2": hindi}  # English follows the deployment


async def test_a_call_arriving_while_the_server_stops_hears_busy(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    from voicebot.drain import DRAIN

    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path)
    await kit.prompts_ready()
    drain = kit.app[DRAIN]
    drain.add("hold", lambda deadline: asyncio.sleep(0.5))
    stopping = asyncio.create_task(drain.run(1.0))
    await asyncio.sleep(0.05)
    _, body, _ = await kit.twilio_post("/twilio/voice", call_form(CALL))
    root = twiml_tree(body)
    en = kit.services.packs.get("en")
    # Embedded mode: this call's turns could reach no server until the restart.
    assert [v.tag for v in root] == ["Play", "Hangup"]
    assert root[0].text == kit.rt.prompts.url(en, "busy")
    await stopping


async def test_a_language_that_cannot_listen_moves_the_caller_to_whatsapp_text(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    from tests.channel_kit import languages, whatsapp_form

    # Odia has no recogniser (`[stt] language = ""`); give it a one-key digit for the test.
    root = languages(tmp_path, ("en", "hi", "or"))
    pack_file = root / "or" / "pack.toml"
    pack_file.write_text(
        pack_file.read_text(encoding="utf-8").replace("dtmf_digit = 12", "dtmf_digit = 3"),
        encoding="utf-8",
    )
    stt = FakeTranscriber("how much does pm kisan pay")
    kit = await _voice_kit(
        aiohttp_client, aiohttp_server, tmp_path, transcriber=stt, langs=("en", "hi", "or")
    )
    odia = kit.services.packs.get("or")
    assert not odia.can_listen and odia.dtmf_digit == 3
    _, body, _ = await kit.twilio_post("/twilio/voice", call_form(CALL))
    menu = twiml_tree(body).find("Gather")
    assert menu is not None and menu.get("numDigits") == "1"
    offered = {p.text for p in menu.findall("Play")}
    assert kit.rt.prompts.url(odia, "choose_language") not in offered and len(offered) == 2
    # A caller who presses Odia's key anyway is told, in Odia, that replies come in text; the
    # Odia greeting goes to their WhatsApp; the spoken languages are offered again.
    _, body, _ = await kit.twilio_post("/twilio/voice/language?n=1", call_form(CALL, Digits="3"))
    root_ = twiml_tree(body)
    assert [v.tag for v in root_] == ["Play", "Gather", "Redirect"]
    assert root_[0].text == kit.rt.prompts.url(odia, "text_only")
    assert root_.find("Record") is None  # never a recording nobody can understand
    await until(lambda: len(kit.twilio.sent) == 1)
    sent = kit.twilio.sent[0]
    assert sent["To"] == f"whatsapp:{CALLER}" and sent["Body"] == odia.phrase("greeting")
    await kit.twilio_post("/twilio/voice/language?n=1", call_form(CALL, Digits="3"))  # retried
    await asyncio.sleep(0.2)
    assert len(kit.twilio.sent) == 1
    # No key after that: the call goes on in a language that listens (the default), not Odia.
    _, body, _ = await kit.twilio_post("/twilio/voice/language?n=1", call_form(CALL))
    record = twiml_tree(body).find("Record")
    assert record is not None
    en = kit.services.packs.get("en")
    assert twiml_tree(body)[0].text == kit.rt.prompts.url(en, "ask_question")
    # WhatsApp now answers this number in Odia.
    await kit.twilio_post("/twilio/whatsapp", whatsapp_form("SM1", "PM kisan?"))
    await until(lambda: len(kit.twilio.sent) == 2)
    assert odia.phrase("sources") in kit.twilio.sent[1]["Body"]
    # The next call remembers Odia: it says so in Odia before the menu, and records nothing.
    _, body, _ = await kit.twilio_post("/twilio/voice", call_form("CA" + "4" * 32))
    root_ = twiml_tree(body)
    assert [v.tag for v in root_] == ["Play", "Play", "Gather", "Redirect"]
    assert root_[0].text == kit.rt.prompts.url(en, "greeting")
    assert root_[1].text == kit.rt.prompts.url(odia, "text_only")
    assert stt.calls == 0
