"""``voicebot packs list|check|new|eval``: operator tools for language packs.

``eval`` is the quality gate (``voicebot.packeval``): it exits non-zero when a pack misses its
``[quality]`` thresholds and records the verdict that ``list`` shows in its ``gate`` column.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from voicebot.packs import Capabilities, LanguagePack, check_pack, load_pack, load_packs

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("packs", help="list, check and scaffold packs")
    psub = p.add_subparsers(dest="packs_command", required=True, metavar="ACTION")
    ls = psub.add_parser("list", help="packs and their capability matrix")
    ls.add_argument("--no-engines", action="store_true", help="skip probing the speech engines")
    ls.set_defaults(func=list_packs)
    ck = psub.add_parser("check", help="validate a pack directory against the installed engines")
    ck.add_argument("dir", type=Path, nargs="+")
    ck.add_argument("--no-engines", action="store_true", help="schema and phrases only")
    ck.set_defaults(func=check)
    new = psub.add_parser("new", help="scaffold languages/CODE from the commented template")
    new.add_argument("code")
    new.add_argument("--root", type=Path, default=None, help="languages directory")
    new.set_defaults(func=scaffold)
    ev = psub.add_parser("eval", help="quality gate: TTS → phone line → ASR → answer → TTS → ASR")
    ev.add_argument("codes", nargs="+", metavar="CODE", help="pack codes, or 'all'")
    ev.add_argument("--out", type=Path, help="full JSON report (every question) to write")
    ev.add_argument("--chart", type=Path, help="PNG bar chart to write")
    ev.add_argument("--max", type=int, default=None, metavar="N", help="first N questions per pack")
    ev.set_defaults(func=evaluate)


def engine_capabilities(models_path: Path) -> Capabilities:
    """Probe what is installed: Whisper languages per model, voices, cached models."""
    from voicebot.engines.synth import SynthRouter
    from voicebot.errors import ModelError
    from voicebot.models import prepare_packaged, resolve_ct2, whisper_languages

    prepare_packaged(models_path)
    router = SynthRouter(cache_dir=models_path)

    def stt_languages(model: str) -> list[str]:
        try:
            return whisper_languages(model, models_path)
        except ModelError:
            return []

    def model_available(name: str) -> bool:
        try:
            resolve_ct2(name, models_path)
        except ModelError:
            return False
        return True

    return Capabilities(
        stt_languages=stt_languages,
        voice_available=router.supports,
        model_available=model_available,
    )


def _knowledge_ids(knowledge_dir: Path) -> set[str] | None:
    try:
        from voicebot.knowledge import load_knowledge
    except ImportError:
        return None
    if not knowledge_dir.is_dir():
        return None
    return {entry.id for entry in load_knowledge(knowledge_dir).entries}


def capability_row(pack: LanguagePack, caps: Capabilities | None) -> dict[str, str]:
    def mark(value: bool | None) -> str:
        return "?" if value is None else ("yes" if value else "no")

    listen = (
        caps.stt_supports(pack.stt.model, pack.stt.language) if (caps and pack.can_listen) else None
    )
    if not pack.can_listen:
        listen = False
    voice = next((v for v in pack.tts.plan if caps and caps.voice(v)), None) if caps else None
    return {
        "code": pack.code,
        "name": f"{pack.name} ({pack.native_name})",
        "enabled": "yes" if pack.enabled else "no",
        "digit": "" if pack.dtmf_digit is None else str(pack.dtmf_digit),
        "asr": f"{mark(listen)} ({pack.stt.model})" if pack.can_listen else "no",
        "tts": voice or ("?" if caps is None else "none"),
        "mt": pack.mt_model or "-",
        "kb": str(len(pack.entries)),
    }


def _with_gate(row: dict[str, str], gates: dict[str, str]) -> dict[str, str]:
    """Add the last recorded ``packs eval`` verdict ("-" when the pack was never gated)."""
    return {**row, "gate": gates.get(row["code"], "-")}


def list_packs(args: argparse.Namespace) -> int:
    from voicebot.cli import load_settings

    settings = load_settings(args)
    packs = load_packs(settings.languages_dir, default=settings.default_language)
    caps = None if args.no_engines else engine_capabilities(settings.models_path)
    from voicebot.packeval import gate_status

    gates = gate_status(settings.data_dir)
    rows = [_with_gate(capability_row(p, caps), gates) for p in packs]
    headers = list(rows[0]) if rows else []
    widths = {h: max(len(h), *(len(r[h]) for r in rows)) for h in headers}
    print("  ".join(h.ljust(widths[h]) for h in headers))
    for row in rows:
        print("  ".join(row[h].ljust(widths[h]) for h in headers))
    print(f"{len(rows)} packs")
    return 0


def check(args: argparse.Namespace) -> int:
    from voicebot.cli import load_settings
    from voicebot.errors import PackError

    settings = load_settings(args)
    caps = None if args.no_engines else engine_capabilities(settings.models_path)
    kb_ids = _knowledge_ids(settings.knowledge_dir)
    digits: dict[int, str] = {}
    if settings.languages_dir.is_dir():
        for other in settings.languages_dir.iterdir():
            try:
                o = load_pack(other)
            except PackError:
                continue
            if o.dtmf_digit is not None and o.enabled:
                digits.setdefault(o.dtmf_digit, o.code)
    failed = 0
    for directory in args.dir:
        try:
            pack = load_pack(directory)
        except PackError as err:
            print(err.message)
            failed += 1
            continue
        problems = check_pack(pack, caps, knowledge_ids=kb_ids, other_digits=digits)
        for line in problems:
            print(line)
        if problems:
            failed += 1
        else:
            row = capability_row(pack, caps)
            print(f"{directory}: ok (asr {row['asr']}, tts {row['tts']}, {row['kb']} entries)")
    return 1 if failed else 0


def scaffold(args: argparse.Namespace) -> int:
    from voicebot.cli import load_settings

    settings = load_settings(args)
    root: Path = args.root or settings.languages_dir
    if not re.match(r"^[a-z]{2,3}(-[A-Z][a-z]{3})?$", args.code):
        print(
            f"error: {args.code!r} is not a language code like 'kn' or 'hi-Latn'", file=sys.stderr
        )
        return 2
    target = root / args.code
    if target.exists():
        print(f"error: {target} already exists", file=sys.stderr)
        return 2
    template = root / "_template"
    if not template.is_dir():
        print(f"error: {template} is missing", file=sys.stderr)
        return 2
    shutil.copytree(template, target)
    pack_file = target / "pack.toml"
    pack_file.write_text(
        pack_file.read_text(encoding="utf-8").replace('code = "xx"', f'code = "{args.code}"'),
        encoding="utf-8",
    )
    print(f"created {target}; fill in every field, then run: voicebot packs check {target}")
    return 0


async def evaluate(args: argparse.Namespace) -> int:
    """Run the quality gate on the named packs; 1 when any pack fails its thresholds."""
    from voicebot.cli import load_settings
    from voicebot.engines.whisper import DETERMINISTIC
    from voicebot.packeval import (
        evaluate_pack,
        render_chart,
        render_table,
        report_path,
        save_report,
    )
    from voicebot.services import build_services

    # The gate measures quality; latency is reported, not enforced, so a busy machine must not
    # turn a slow decode into a stage timeout and an empty transcript.
    settings = load_settings(args)
    settings = settings.with_overrides(
        stage_timeout_seconds=max(settings.stage_timeout_seconds, 300.0)
    )
    # Deterministic decoding (no temperature-fallback sampling): a gate that samples would pass
    # and fail the same pack on the same audio from one run to the next.
    services = await build_services(settings, speech=True, asr_temperatures=DETERMINISTIC)
    packs = services.packs
    codes = [p.code for p in packs] if args.codes == ["all"] else args.codes
    unknown = [c for c in codes if c not in packs]
    if unknown:
        print(f"error: no pack named {', '.join(unknown)}", file=sys.stderr)
        return 2
    reports = []
    for code in codes:
        print(f"{code}: evaluating…", file=sys.stderr, flush=True)
        reports.append(await evaluate_pack(services.pipeline, packs.get(code), max_cases=args.max))
    print(render_table(reports))
    save_report(reports, report_path(settings.data_dir))
    if args.out:
        save_report(reports, args.out, merge=False)
    if args.chart:
        args.chart.parent.mkdir(parents=True, exist_ok=True)
        args.chart.write_bytes(render_chart(reports))
    failed = [r.code for r in reports if not r.passed]
    if failed:
        print(f"gate failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
