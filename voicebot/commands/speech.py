"""``voicebot transcribe`` and ``voicebot say``: the speech engines from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    t: argparse.ArgumentParser = sub.add_parser("transcribe", help="print the transcript of audio")
    t.add_argument("file", type=Path)
    t.add_argument("--lang", default=None, help="language pack code (default: settings default)")
    t.add_argument("--format", default=None, help="force input format, e.g. ulaw for raw G.711")
    t.add_argument("--model", default=None, help="Whisper model name or directory")
    t.set_defaults(func=transcribe)
    s: argparse.ArgumentParser = sub.add_parser("say", help="synthesise text to an audio file")
    s.add_argument("--lang", required=True)
    s.add_argument("-o", "--output", required=True, type=Path, help=".wav, .ogg or .ulaw")
    s.add_argument("--slow", action="store_true", help="the pack's slower speed")
    s.add_argument("text")
    s.set_defaults(func=say)


async def transcribe(args: argparse.Namespace) -> int:
    from voicebot import audio
    from voicebot.cli import load_settings
    from voicebot.models import prepare_packaged
    from voicebot.packs import load_packs
    from voicebot.services import TranscriberPool

    settings = load_settings(args)
    packs = load_packs(settings.languages_dir, default=settings.default_language)
    pack = packs.resolve(args.lang or settings.default_language)
    if not pack.can_listen:
        print(f"error: the {pack.code} pack has no speech recogniser", file=sys.stderr)
        return 2
    fmt = args.format or audio.format_for_path(str(args.file))
    clip = audio.decode(
        args.file.read_bytes(),
        fmt=fmt,
        max_seconds=settings.max_audio_seconds,
        max_bytes=settings.max_audio_bytes,
    )
    prepare_packaged(settings.models_path)
    pool = TranscriberPool(settings)
    model = await pool.get(args.model or pack.stt.model)
    result = await model.transcribe(
        clip, language=pack.stt.language, prompt=pack.stt.initial_prompt or None
    )
    print(result.text)
    return 0


async def say(args: argparse.Namespace) -> int:
    from voicebot import audio
    from voicebot.cli import load_settings
    from voicebot.engines.synth import SynthRouter
    from voicebot.metrics import Metrics
    from voicebot.models import prepare_packaged
    from voicebot.packs import load_packs
    from voicebot.pipeline import Pipeline

    settings = load_settings(args)
    packs = load_packs(settings.languages_dir, default=settings.default_language)
    prepare_packaged(settings.models_path)
    router = SynthRouter(cache_dir=settings.models_path)

    async def no_asr(_pack: Any) -> Any:
        raise RuntimeError("not used")

    pipeline = Pipeline(
        packs=packs,
        answerer=None,  # type: ignore[arg-type]
        transcriber_for=no_asr,
        synthesizer=router,
        metrics=Metrics(),
    )
    pack = packs.resolve(args.lang)
    from voicebot.numbers import speakable

    clip = await pipeline.speak(speakable(args.text, pack.numbers), lang=pack.code, slow=args.slow)
    fmt = audio.format_for_path(str(args.output))
    args.output.write_bytes(audio.encode(clip, fmt))
    print(f"{args.output}: {clip.seconds:.2f} s ({fmt})")
    return 0
