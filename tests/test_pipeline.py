import asyncio

import pytest

from tests.fakes import CannedAnswerer, FakeTranscriber, ToneSynthesizer, fake_services, tone
from voicebot.errors import AnswerError, SynthesizeError, TranscribeError
from voicebot.messages import Audio


async def test_voice_turn_happy_path_remembers_the_exchange() -> None:
    services = fake_services()
    turn = await services.pipeline.voice_turn(tone(1.5), lang="hi", conversation="u1")
    assert turn.transcript.text == "how much does pm kisan pay"
    assert "6,000" in turn.answer.text and turn.answer.sources
    assert turn.audio is not None and turn.audio.seconds > 0.5
    history = await services.pipeline.memory.history("u1")
    assert history[-1].scheme == "pm-kisan"
    # The spoken form carries the source name and pack number words, not raw symbols.
    spoken = services.synthesizer.calls[-1][0]  # type: ignore[union-attr]
    assert "₹" not in spoken and "हज़ार" in spoken and "स्रोत" in spoken


async def test_each_pack_decodes_with_its_own_stt_options() -> None:
    transcriber = FakeTranscriber()
    services = fake_services(transcriber=transcriber)
    for lang in ("en", "hi"):
        await services.pipeline.transcribe(tone(1.5), lang=lang)
    en, hi = services.packs.resolve("en").stt, services.packs.resolve("hi").stt
    assert transcriber.options == [
        (en.beam_size, en.context_seconds),
        (hi.beam_size, hi.context_seconds),
    ]
    assert transcriber.options[0] != transcriber.options[1]  # the packs do differ (pack.toml)


async def test_empty_recording_gets_please_repeat_in_the_callers_language() -> None:
    services = fake_services()
    silent = Audio(samples=tone(0.05).samples, rate=16000)
    turn = await services.pipeline.voice_turn(silent, lang="hi")
    assert turn.answer.abstained
    assert turn.answer.text == services.packs.get("hi").phrase("please_repeat")
    assert turn.audio is not None


async def test_blank_transcript_is_not_sent_to_the_answerer() -> None:
    answerer = CannedAnswerer()
    services = fake_services(transcriber=FakeTranscriber(text="  "), answerer=answerer)
    turn = await services.pipeline.voice_turn(tone(), lang="en")
    assert answerer.questions == []
    assert turn.answer.text == services.packs.get("en").phrase("please_repeat")
    with pytest.raises(TranscribeError) as err:
        await services.pipeline.transcribe(tone(), lang="en")
    assert err.value.code == "stt-empty"


async def test_answer_failure_becomes_apology_and_is_counted() -> None:
    services = fake_services(answerer=CannedAnswerer(fail=True))
    turn = await services.pipeline.voice_turn(tone(), lang="hi")
    assert turn.answer.text == services.packs.get("hi").phrase("error")
    assert turn.error == "answer-failed"
    assert services.metrics.counter_value("voicebot_errors_total", code="answer-failed") == 1
    with pytest.raises(AnswerError):
        await services.pipeline.ask("x", lang="hi")


async def test_stage_timeout_has_its_own_code() -> None:
    services = fake_services(answerer=CannedAnswerer(delay=1.0), stage_timeout=0.05)
    with pytest.raises(AnswerError) as err:
        await services.pipeline.ask("slow question", lang="en")
    assert err.value.code == "answer-timeout"
    turn = await services.pipeline.voice_turn(tone(), lang="en")
    assert turn.answer.text == services.packs.get("en").phrase("error")


async def test_voice_plan_falls_back_to_the_next_voice() -> None:
    tts = ToneSynthesizer(fail_voices=["festival:voice_hindi_NSK_diphone"])
    services = fake_services(synthesizer=tts)
    audio = await services.pipeline.speak("नमस्ते", lang="hi")
    assert audio.seconds > 0
    assert [c[1] for c in tts.calls] == ["festival:voice_hindi_NSK_diphone", "espeak-ng:hi"]
    broken = fake_services(
        synthesizer=ToneSynthesizer(fail_voices=["piper:en_US-joe-medium", "espeak-ng:en-us"])
    )
    with pytest.raises(SynthesizeError):
        await broken.pipeline.speak("hello", lang="en")
    turn = await broken.pipeline.voice_turn(tone(), lang="en")
    assert turn.audio is None and turn.answer.text  # text still available to the channel


async def test_slow_speech_uses_the_pack_slow_speed() -> None:
    tts = ToneSynthesizer()
    services = fake_services(synthesizer=tts)
    await services.pipeline.speak("hello", lang="en", slow=True)
    assert tts.calls[-1][2] == services.packs.get("en").tts.slow_speed


async def test_cancellation_propagates() -> None:
    services = fake_services(transcriber=FakeTranscriber(delay=5.0))
    task = asyncio.create_task(services.pipeline.voice_turn(tone(), lang="en"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_blocking_keeps_the_slot_until_a_cancelled_thread_ends() -> None:
    import threading

    from voicebot.engines.base import Blocking

    gate = threading.Event()
    running = []
    blocking = Blocking(1)

    def work(tag: str) -> str:
        running.append(tag)
        gate.wait(2)
        return tag

    first = asyncio.create_task(blocking.run(work, "a"))
    await asyncio.sleep(0.05)
    first.cancel()
    second = asyncio.create_task(blocking.run(work, "b"))
    await asyncio.sleep(0.1)
    assert running == ["a"]  # "b" waits: the cancelled call's thread still holds the slot
    gate.set()
    assert await second == "b"


async def test_warm_up_survives_a_broken_voice_and_uses_each_packs_own_phrase() -> None:
    # Festival's Indic diphone voices segfault on Latin text; warm-up must not take the
    # server down with them, and each pack warms with its own (native) phrase.
    broken = ["festival:voice_hindi_NSK_diphone", "espeak-ng:hi"]
    tts = ToneSynthesizer(fail_voices=broken)
    services = fake_services(synthesizer=tts)
    await services.warm()
    hi = services.packs.get("hi")
    assert (hi.phrase("please_wait"), "espeak-ng:hi", hi.tts.speed) in tts.calls
    assert not any(text == "Namaste." for text, _, _ in tts.calls)
