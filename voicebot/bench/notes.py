"""The "How each figure was measured" part of ``BENCHMARKS.md``: per section, what was run,
on which inputs, and the raw numbers behind its figures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from voicebot.bench.figures import TARGETS

__all__ = ["how_measured"]


def how_measured(result: dict[str, Any]) -> list[str]:
    s = result["sections"]
    out = ["## How each figure was measured", ""]
    for key, title, lines in _SECTIONS:
        section = s.get(key, {})
        if section.get("status") == "measured":
            out += lines(section)
        elif section.get("status") == "not measured":
            out.append(f"- **{title}**: not measured: {section.get('reason', '')}.")
    meta = result["meta"]
    skipped = meta.get("skipped_for_time") or []
    if skipped:
        out.append(
            f"- **Skipped to stay within the {meta['budget_seconds']:.0f} s budget**: "
            + ", ".join(skipped)
            + "."
        )
    errors = [(k, v["error"]) for k, v in s.items() if v.get("status") == "error"]
    if errors:
        out += ["", "## Sections that failed", ""]
        out += [f"- **{k}**: `{e}`" for k, e in errors]
    return out


def _asr(asr: dict[str, Any]) -> list[str]:
    """ASR: the clip, the raw call, our path; per model and per fresh process."""
    clip = asr["clip"]
    out = [
        f"- **ASR**: the same {clip['seconds']} s LibriVox clip ({' + '.join(clip['ids'])}); "
        f"median of {asr['reps']} timed run(s)"
        f"{' after one warm-up' if asr['warmup'] else ' (no warm-up)'}, raw and ours "
        "interleaved. Raw: "
        f"`{asr['raw_call']}`. Ours: WAV bytes → `audio.decode` → `Pipeline.transcribe` "
        "(pack prompt, our decoding options). *Plumbing* compares ours with a raw call "
        "given our decoding options (the pack's prompt and beam size), so it isolates decode "
        "+ thread hop + checks — and our engine's trimming of the 30 s window's zero padding "
        "to the pack's `context_seconds`, which a raw call cannot do: a ratio below 1 is that."
    ]
    for name, r in asr.get("models", {}).items():
        if "wer" in r:
            out.append(
                f"  - {name}: WER raw {r['wer']['raw']}, ours {r['wer']['ours']}; "
                f"medians raw {r['median_s']['raw']} s, matched {r['median_s']['matched']} s, "
                f"ours {r['median_s']['ours']} s."
            )
        hi = r.get("hindi", {})
        if "cer" in hi:
            out.append(
                f"  - Hindi ({hi['seconds']} s of {hi['voice']}): ours heard "
                f"“{hi['transcript']['ours']}” (CER {hi['cer']['ours']})."
            )
    for name, p in asr.get("fresh_process", {}).items():
        if "rss_added_mb" in p:
            out.append(
                f"  - {name} in a fresh process: import {p['import_s']} s, "
                f"load {p['load_s']} s, "
                f"first call {p['first_call_s']} s, RSS +{p['rss_added_mb']} MB "
                f"(peak {p['vm_hwm_mb']} MB)."
            )
    return out


def _tts(tts: dict[str, Any]) -> list[str]:
    """TTS: raw Piper vs our paths; Festival and espeak-ng."""
    seconds = tts["piper"]["audio_seconds"].get("raw")
    return [
        f"- **TTS**: a 2-sentence answer ({seconds} s of audio). "
        "Raw: `PiperVoice.load` + `synthesize` (first chunk = first sentence). Ours: "
        "`SynthRouter.stream` for first audio, `Pipeline.speak` for the whole reply. "
        "Festival/espeak: `Pipeline.speak` of a 2-sentence text ÷ sentences (one process "
        "per call), first audio from `stream` (one process per sentence)."
    ]


def _answers(ans: dict[str, Any]) -> list[str]:
    """Answers: the questions, cold start, stages, pass rate."""
    acc = ans.get("accuracy", {})
    out = [
        f"- **Answers**: `Pipeline.ask` over {ans['questions']} questions from "
        f"{ans.get('source')} × {ans['reps']}, after one cold question "
        f"({ans['first_ms']} ms: the retrieval model loads on first use). Retrieval p50 "
        f"{ans['retrieve_p50_ms']} ms, composition p50 {ans['compose_p50_ms']} ms; "
        f"{ans['abstained']} abstentions."
    ]
    if "by_language" in acc:
        per = ", ".join(f"{k} {v['passed']}/{v['n']}" for k, v in acc["by_language"].items())
        out.append(f"  - Pass rate by language ({acc['scorer']}): {per}.")
    elif acc:
        out.append(f"  - Accuracy not measured here: {acc.get('reason')}.")
    return out


def _voice_turn(vt: dict[str, Any]) -> list[str]:
    """Voice turn: the spoken question, what was heard, the stages."""
    stages = ", ".join(f"{k} {v} s" for k, v in vt["stages_median_s"].items())
    return [
        f"- **Voice turn**: a {vt['question_seconds']} s spoken question ({vt['input']}); "
        f"heard “{vt['transcript']}” (WER {vt['wer']}); reply {vt['reply_seconds']} s of "
        f"audio. Stages, called one by one: {stages}."
    ]


def _concurrency(conc: dict[str, Any]) -> list[str]:
    """Voice turns and questions at rising concurrency."""
    rows = "; ".join(
        f"{v['concurrent']}: p50 {v['p50_s']} s, max {v['max_s']} s" for v in conc["voice_turns"]
    )
    asks = "; ".join(
        f"{v['concurrent']}: p50 {v['p50_ms']} ms, {v['per_s']}/s" for v in conc["asks"]
    )
    return [f"- **Concurrency**: voice turns at once → {rows}. Questions → {asks}."]


def _serve(serve: dict[str, Any]) -> list[str]:
    """The serve child: memory, then the WhatsApp load against it."""
    out: list[str] = []
    mem = serve.get("memory", {})
    if mem:
        warm = mem.get("warm", {})
        out.append(
            f"- **Memory**: a child process ran `build_services` + warm like `serve` "
            f"(build {mem.get('build_s')} s, warm {mem.get('warm_s')} s; Whisper loaded: "
            f"{', '.join(mem.get('whisper_loaded', []))}), then VmHWM from /proc/self/status."
        )
        if warm.get("services_warm", "ok") != "ok":
            out.append(
                f"  - `Services.warm()` {warm['services_warm']}: the peak RSS is that of a "
                "partly warm server."
            )
    wa = serve.get("whatsapp", {})
    if "load" in wa:
        load = wa["load"]
        out.append(
            f"- **WhatsApp**: the serve child mounted the real channels; requests signed with "
            f"{wa['signing']}, replies sent to a {wa['replies_to']}. Light load: "
            f"{wa['light']['requests']} sequential webhooks. Load: {load['clients']} aiohttp "
            f"clients for {load['seconds']} s → {load['acked_200']} acks ({load['statuses']}); "
            f"{load['answered_in_window']} replies reached Twilio during the window, "
            f"{load['answered_after_drain']} after {load['drain_s']} s of draining "
            f"(backlog {load['backlog_left']}); the server computed "
            f"{load['answers_computed']} answers meanwhile "
            f"({load['answers_computed_per_s']}/s). Server error counters: "
            f"{wa['server_error_counters'] or 'none'}."
        )
    elif wa:
        out.append(f"- **WhatsApp**: {wa.get('status')}: {wa.get('reason')}.")
    return out


def _realtime(rt: dict[str, Any]) -> list[str]:
    """Realtime: how the simulated callers talk, what is timed where, each level's verdict."""
    levels = rt["levels"]
    first = levels[0]["asks_per_call"] if levels else 0
    later = (
        f"; at higher levels each call asks {levels[1]['asks_per_call']} times, the calls "
        f"starting {rt['stagger_s']} s apart"
        if len(levels) > 1
        else ""
    )
    out = [
        "- **Realtime**: simulated Media Streams callers drive `CallSession`s from "
        "`voicebot.realtime` in this process (20 ms μ-law frames paced in real time, marks "
        f"echoed as Twilio does). Each hears the greeting (`{rt['greeting_phrase']}`), asks "
        f"the {rt['question_seconds']} s question and, {rt['barge_after_s']} s into each "
        "answer but the last, asks it again over the bot (a barge-in); it listens "
        f"{rt['listen_s']} s to the last answer. The single call asks {first} times{later}. "
        "Latencies are timed on the line (the simulated Twilio side): `start` → first greeting "
        "frame; the frame with the last of the caller's speech (louder than -30 dBFS) → first "
        "reply frame, so the end-of-turn silence is included; the frame with the first of the "
        "caller's speech over the bot → `clear`. p50/p95 are nearest-rank over the single "
        f"call's replies. *Answered* means {rt['criterion']}; *within the targets* adds, at "
        f"that level, reply p50 {_bound('realtime.reply_p50_s')}, every greeting "
        f"{_bound('realtime.greeting_ms')} and every `clear` {_bound('realtime.clear_ms')}.",
    ]
    for lv in levels:
        verdict = (
            "within the targets"
            if lv["within_targets"]
            else "answered, not within the targets"
            if lv["answered_all"]
            else "not sustained"
        )
        out.append(
            f"  - {lv['calls']} call(s) × {lv['asks_per_call']} questions: "
            f"{lv['replies']} replies, p50 {lv['reply_p50_s']} s, p95 {lv['reply_p95_s']} s; "
            f"greeting worst {lv['greeting_max_ms']} ms; `clear` worst {lv['clear_max_ms']} ms "
            f"({lv['cleared']}/{lv['barge_ins']} barge-ins cleared); {lv['dead_air_gaps']} "
            f"dead-air gaps → {verdict}. The session's own timings (from the VAD's first "
            f"voiced window): reply p50 {lv['session_reply_p50_s']} s, `clear` worst "
            f"{lv['session_clear_max_ms']} ms."
        )
    return out


def _bound(key: str) -> str:
    spec = TARGETS[key]
    return spec.target.text(spec.unit) if spec.target else "(no target)"


def _scale(sc: dict[str, Any]) -> list[str]:
    """Scale mode: the processes, the bursts, the kill, and what limits the ratio."""
    before, after = sc["one_worker"]
    two, kill = sc["two_workers"], sc["kill"]

    def cores(phase: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in phase["cores_used"].items())

    return [
        "- **Scale mode**: a `redis-server` (no persistence) in a temporary directory, the real "
        "`voicebot serve` with `VOICEBOT_BACKEND=redis` as the web node and real `voicebot "
        f"worker` processes (`VOICEBOT_CPU_THREADS={sc['worker_cpu_threads']}` each — what a "
        "worker really used is measured below — and "
        f"{sc['channel_concurrency']} turns at a time), answering with the `{sc['answerer']}` "
        "answerer (text questions: retrieval + composition, no speech). Signed Twilio WhatsApp "
        "text webhooks (Twilio's `RequestValidator`), each from its own number, all sent at "
        "once to the web node; replies counted at a loopback fake Twilio REST API. Throughput "
        "is a burst's messages ÷ the time from its first webhook to its last reply; each "
        "worker answered before it was timed.",
        f"  - 1 worker: {before['messages']} messages in {before['seconds']} s "
        f"({before['msgs_per_s']} msg/s; cores used: {cores(before)}), and again after the "
        f"kill {after['msgs_per_s']} msg/s ({cores(after)}): the figure is their mean, "
        f"{sc['one_worker_msgs_per_s']} msg/s. 2 workers: {two['msgs_per_s']} msg/s (cores "
        f"used: {cores(two)}); ratio {sc['ratio']}. Each worker is pinned to a core of its own "
        "(`sched_setaffinity`, worker 1 on core 0, worker 2 on core 1), as each worker of a real "
        "pool has its own GPU or cores; the web node, Redis and this bench's client float over "
        f"the machine's {sc['cores']} cores, so the ratio stays under 2 by what they take "
        f"(busiest worker: {_worker_cores(before, after, two)} cores).",
        f"  - Kill: {kill['messages']} messages to 2 workers; one was killed with SIGKILL "
        f"{kill['killed_after_s']} s into the burst while holding {kill['victim_held']} "
        "unacknowledged turn(s), which the survivor retook after "
        f"`VOICEBOT_WORKER_RECLAIM_SECONDS={kill['reclaim_after_s']:g}`: {kill['answered']}/"
        f"{kill['messages']} answered within {kill['all_answered_s']} s, lost {kill['lost']}, "
        f"answered twice {kill['duplicated']}.",
    ]


def _worker_cores(*phases: dict[str, Any]) -> float:
    used = [float(v) for p in phases for k, v in p["cores_used"].items() if k.startswith("worker")]
    return max(used, default=0.0)


_SECTIONS: tuple[tuple[str, str, Callable[[dict[str, Any]], list[str]]], ...] = (
    ("asr", "ASR", _asr),
    ("tts", "TTS", _tts),
    ("answers", "Answers", _answers),
    ("voice_turn", "Voice turn", _voice_turn),
    ("serve", "Memory and WhatsApp", _serve),
    ("realtime", "Realtime", _realtime),
    ("scale", "Scale mode", _scale),
    ("concurrency", "Concurrency", _concurrency),
)
