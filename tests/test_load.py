"""Bounded loopback load: signed WhatsApp webhooks and realtime calls at once (issue 8).

Many concurrent senders post signed Twilio WhatsApp texts to the real app on 127.0.0.1 for
``DURATION`` seconds while ``CALLS`` simulated Twilio Media Streams calls talk to the same
app over its real WebSocket route (``/twilio/stream``): each call authenticates, hears the
greeting, then asks a spoken question (a real LibriVox recording as 20 ms μ-law frames, sent
at real time, with silence between turns like a phone line) and takes the reply frames,
echoing marks like Twilio. Replies to WhatsApp go to the loopback fake Twilio REST server.

Reported: webhooks/s, errors (target 0), webhook ack p50/p99, time for the queue to drain,
per call the turns, errors (target 0) and the widest gap between reply frames (raw, and
less the time the OS gave the CPU to other processes), and RSS growth after warm-up (target:
flat — no leak). Client, server and fakes share one process and one event loop, so the
figures are a floor for what the server alone can do on this machine, not a capacity claim.

Model stages are fakes (``Scripted`` STT, ``Tone`` TTS, canned answers); the VAD is the real
Silero model. Real Whisper and Piper for several calls next to a webhook flood would need
more than this machine's 2 cores and would time the models (BENCHMARKS.md does), not the
HTTP/WebSocket path, the stores and the workers that this test is about.

Duration: 10 s by default; ``VOICEBOT_LOAD_SECONDS=60`` (or ``VOICEBOT_SLOW=1``) for the
issue's 60 s run; ``VOICEBOT_LOAD_CALLS`` sets the number of calls (default 2).
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import socket
import sqlite3
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from tests.channel_kit import (
    PUBLIC,
    TOKEN,
    Factory,
    FakeMeta,
    FakeTwilio,
    kit_settings,
    whatsapp_form,
)
from tests.fakes import CannedAnswerer, fake_services
from tests.test_realtime import (
    WSS,
    LoopbackTwilio,
    Scripted,
    Speech,
    Starvation,
    Tone,
    _reply_done,
    ask,
    question_clip,
    quick,
    wait_greeting,
)
from voicebot.app import create_app
from voicebot.channels import RUNTIME
from voicebot.channels.twilio_stream import REALTIME, stream_token

SLOW = os.environ.get("VOICEBOT_SLOW") == "1"
DURATION = float(os.environ.get("VOICEBOT_LOAD_SECONDS") or (60.0 if SLOW else 10.0))
CALLS = int(os.environ.get("VOICEBOT_LOAD_CALLS") or 2)
WARMUP = 2.0
SENDERS = 16  # concurrent connections
PHONES = 500  # distinct users, so per-user ordering does not serialise the load
# Measured on this machine (shared cores), from the end of warm-up to the end: +3 to +13 MB over
# 10 s runs of 8-11k messages, +16 MB over a 60 s run of 42k (SQLite page cache, allocator
# arenas, this test's own latency list); the count of gc-tracked objects did not grow (30 s
# run, 27k messages). A leak of 1 KB per message would add 10 MB per 10,000 messages on top.
RSS_BOUND_MB = 30.0 + 20.0 * max(0.0, DURATION - 10.0) / 50.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CountingTwilio(FakeTwilio):
    """Messages.json that keeps only when each message was accepted and to whom: holding
    every form (≈1 KB each) would grow this process by ~10 MB per run and hide a leak."""

    def __init__(self) -> None:
        super().__init__()
        self.recipients: set[str] = set()

    async def _messages(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.recipients.add(str(form["To"]))
        self.sent_at.append(time.monotonic())
        return web.json_response({"sid": f"SM{len(self.sent_at):032d}"}, status=201)


def _turns_before(data_dir: Path, wall: float) -> int:
    """WhatsApp turns answered (replies queued) before ``wall`` (``time.time()``)."""
    db = sqlite3.connect(data_dir / "voicebot.sqlite3")
    try:
        sql = "SELECT COUNT(*) FROM audit WHERE channel='twilio-whatsapp' AND ts<?"
        return int(db.execute(sql, (wall,)).fetchone()[0])
    finally:
        db.close()


@dataclass
class CallReport:
    sid: str
    turns: int = 0
    errors: list[str] = field(default_factory=list)
    gap: float = 0.0  # widest gap between two frames of one reply (s)
    gap_ours: float = 0.0  # the same, less time the process waited for the CPU
    latency: list[float] = field(default_factory=list)  # end of speech → first reply frame


async def _call(
    port: int, k: int, speech: Speech, deadline: float, starvation: Starvation
) -> CallReport:
    """One caller: greeting, then questions at real time until ``deadline``, then hang up."""
    sid = f"CA{k:032d}"
    report = CallReport(sid)
    headers = {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(WSS, {})}
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"ws://127.0.0.1:{port}/twilio/stream", headers=headers)
        twilio = LoopbackTwilio(ws, sid, f"MZ{k:032d}")
        try:
            await twilio.begin(lang="en", token=stream_token(sid, TOKEN))
            await wait_greeting(twilio)
            reply = 1
            while time.monotonic() < deadline:  # the last turn may end after it
                reply += 1
                end = await ask(twilio, speech, realtime_tail=speech.end)  # all of it paced
                await twilio.silence_until(lambda r=reply: _reply_done(twilio, r, 2), 20)
                if twilio.closed.is_set():
                    report.errors.append(f"closed by the server ({twilio.close_code})")
                    break
                report.latency.append((twilio.first_media_after(end) or 1e9) - end)
                report.turns += 1
        except AssertionError as err:  # silence_until timed out: a reply never finished
            report.errors.append(str(err)[:300])
        finally:
            await twilio.finish()
    gaps, ours = twilio.reply_gaps(), twilio.reply_gaps(starvation.ours)
    report.gap = max(gaps.values(), default=0.0)
    report.gap_ours = max(ours.values(), default=0.0)
    return report


async def test_webhooks_and_realtime_calls_under_load(
    aiohttp_server: Factory, tmp_path: Path
) -> None:
    speech = question_clip()  # skips when pocketsphinx-testdata is missing
    twilio, meta = CountingTwilio(), FakeMeta()
    twilio.server = await aiohttp_server(twilio.app())
    meta.server = await aiohttp_server(meta.app())
    settings = kit_settings(
        tmp_path,
        twilio,
        meta,
        langs=("en",),
        rate_limit_per_minute=1_000_000,
        channel_concurrency=8,
        voice_mode="realtime",
    )
    services = fake_services(  # the realtime tests' engines: scripted STT, a tone for TTS
        settings, transcriber=Scripted(), synthesizer=Tone(), answerer=CannedAnswerer()
    )
    app = create_app(settings, services)
    app[REALTIME].config = quick(max_calls=max(16, CALLS))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.wait_for(app[RUNTIME].workers.wait(), 5)
    await asyncio.wait_for(app[REALTIME].warmed.wait(), 30)
    url = f"http://127.0.0.1:{port}/twilio/whatsapp"
    validator = RequestValidator(TOKEN)
    starvation = Starvation()
    watcher = asyncio.create_task(starvation.watch())

    latencies: list[tuple[float, float]] = []  # (start, seconds)
    errors: list[str] = []
    rss: list[tuple[float, float]] = []
    counter = 0
    t0 = time.monotonic()
    deadline = t0 + DURATION
    wall_deadline = time.time() + DURATION  # for the audit log's timestamps

    async def sender(http: aiohttp.ClientSession) -> None:
        nonlocal counter
        while time.monotonic() < deadline:
            counter += 1
            i = counter
            form = whatsapp_form(
                f"SM{i:032d}", "pm kisan kitna milta hai?", phone=f"+9198{i % PHONES:08d}"
            )
            headers = {
                "X-Twilio-Signature": validator.compute_signature(
                    PUBLIC + "/twilio/whatsapp", form
                ),
                "Content-Type": "application/x-www-form-urlencoded",
            }
            start = time.monotonic()
            try:
                async with http.post(url, data=urlencode(form), headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors.append(f"HTTP {resp.status}")
            except (aiohttp.ClientError, TimeoutError) as err:
                errors.append(repr(err))
            latencies.append((start - t0, time.monotonic() - start))

    async def sample_rss() -> None:
        while time.monotonic() < deadline:
            rss.append((time.monotonic() - t0, _rss_mb()))
            await asyncio.sleep(0.5)

    async def webhooks() -> None:
        connector = aiohttp.TCPConnector(limit=SENDERS)
        async with aiohttp.ClientSession(connector=connector) as http:
            await asyncio.gather(*(sender(http) for _ in range(SENDERS)))

    try:
        *_, calls = await asyncio.gather(
            sample_rss(),
            webhooks(),
            asyncio.gather(*(_call(port, k, speech, deadline, starvation) for k in range(CALLS))),
        )
        sent_requests = len(latencies)
        in_window = sum(1 for at in twilio.sent_at if at < deadline)
        load_end = time.monotonic()
        drain_deadline = load_end + max(60.0, 4 * DURATION)  # the flood outpaces answering
        while len(twilio.sent_at) < sent_requests and time.monotonic() < drain_deadline:
            await asyncio.sleep(0.05)
        drained = time.monotonic() - deadline  # the webhooks stopped then
        gc.collect()
        final_rss = _rss_mb()
        answered = len(twilio.sent_at)
        pending = await app[RUNTIME].store.count_pending()
        answered_in_window = _turns_before(settings.data_dir, wall_deadline)
    finally:
        watcher.cancel()
        await runner.cleanup()

    steady = sorted(s for at, s in latencies if at >= WARMUP)
    p50 = statistics.median(steady)
    p99 = steady[int(len(steady) * 0.99) - 1]
    base_rss = next(mb for at, mb in rss if at >= WARMUP)
    half_rss = next(mb for at, mb in rss if at >= WARMUP + (DURATION - WARMUP) / 2)
    growth = max(final_rss, rss[-1][1]) - base_rss
    late_growth = max(final_rss, rss[-1][1]) - half_rss
    rate = sent_requests / DURATION
    turns = sum(c.turns for c in calls)
    reply_ms = sorted(lat * 1000 for c in calls for lat in c.latency)
    print(
        f"\nload {DURATION:.0f}s x {SENDERS} senders + {CALLS} calls: {sent_requests} webhooks "
        f"({rate:.0f} req/s), errors {len(errors)}, ack p50 {p50 * 1000:.1f} ms "
        f"p99 {p99 * 1000:.1f} ms, replies {answered} ({in_window} sent within the "
        f"{DURATION:.0f}s, of {answered_in_window} answered by then; "
        f"all out {drained:.1f}s after it); "
        f"calls: {turns} turns, errors {[len(c.errors) for c in calls]}, widest reply-frame gap "
        f"per call {[round(c.gap * 1000) for c in calls]} ms (less CPU waits "
        f"{[round(c.gap_ours * 1000) for c in calls]} ms), end of speech → reply "
        f"{[round(ms) for ms in reply_ms]} ms; RSS {base_rss:.0f} -> {final_rss:.0f} MB after "
        f"warm-up (growth {growth:+.1f} MB, second half {late_growth:+.1f} MB); "
        f"{starvation.lost(t0, load_end) * 1000:.0f} ms waiting for the CPU"
    )
    assert errors == [], errors[:5]
    assert sent_requests > 200  # the load was real
    assert answered == sent_requests and pending == (0, 0)  # every message answered, once
    assert len(twilio.recipients) == min(PHONES, sent_requests)  # to the user who asked
    assert p99 < 0.5, p99
    # Replies kept pace with answers during the flood (issue #4: they queued behind it).
    assert in_window >= 0.8 * answered_in_window, (in_window, answered_in_window)
    assert [c.errors for c in calls] == [[] for _ in calls]
    assert all(c.turns >= 1 for c in calls), [c.turns for c in calls]
    assert growth < RSS_BOUND_MB, (growth, rss)
    widest = max(c.gap_ours for c in calls)
    load = os.getloadavg()[0]
    if widest > 0.3 and load > 2 * (os.cpu_count() or 1):
        pytest.skip(f"frame gaps not judged: other processes keep this machine at load {load:.1f}")
    assert widest <= 0.3  # Twilio buffers 0.1 s ahead (max_lead): more is an audible gap
