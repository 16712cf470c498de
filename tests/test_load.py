"""Bounded loopback load: signed WhatsApp webhooks against a real port (issue 8).

Many concurrent senders post signed Twilio WhatsApp texts to the real app (fake engines) on
127.0.0.1 for ``DURATION`` seconds (10 s in CI, 60 s with ``VOICEBOT_SLOW=1``); the replies
go to the loopback fake Twilio REST server. Reported: requests/s, errors (target 0), webhook
ack latency p50/p99, time for the queue to drain, and RSS growth after warm-up (target flat).
Client, server and fake Twilio share one process and one event loop, so the figures are a
floor for what the server alone can do on this machine, not a capacity claim.

Realtime (Media Streams) calls are not loaded here: that module is not merged yet.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import socket
import statistics
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from tests.channel_kit import PUBLIC, TOKEN, Factory, kit_settings, start_fakes, whatsapp_form
from tests.fakes import fake_services
from voicebot.app import create_app
from voicebot.channels import RUNTIME

SLOW = os.environ.get("VOICEBOT_SLOW") == "1"
DURATION = 60.0 if SLOW else 10.0
WARMUP = 2.0
SENDERS = 16  # concurrent connections
PHONES = 500  # distinct users, so per-user ordering does not serialise the load
# Measured on this machine (shared cores): +9 MB of RSS from the end of warm-up to the end of a
# 10 s run of ~7,600 messages (SQLite page cache, allocator arenas). A leak of 2 KB per message
# would add 15 MB per 7,600 messages on top, and 60 s runs send ~6x as many.
RSS_BOUND_MB = 40.0 + (15.0 if SLOW else 0.0)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_signed_whatsapp_webhooks_under_load(aiohttp_server: Factory, tmp_path: Path) -> None:
    twilio, meta = await start_fakes(aiohttp_server)
    settings = kit_settings(
        tmp_path,
        twilio,
        meta,
        langs=("en",),
        rate_limit_per_minute=1_000_000,
        channel_concurrency=8,
    )
    app = create_app(settings, fake_services(settings))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.wait_for(app[RUNTIME].workers.wait(), 5)
    url = f"http://127.0.0.1:{port}/twilio/whatsapp"
    validator = RequestValidator(TOKEN)

    latencies: list[tuple[float, float]] = []  # (start, seconds)
    errors: list[str] = []
    rss: list[tuple[float, float]] = []
    counter = 0
    t0 = time.monotonic()
    deadline = t0 + DURATION

    async def sender(http: aiohttp.ClientSession, k: int) -> None:
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

    connector = aiohttp.TCPConnector(limit=SENDERS)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(sample_rss(), *(sender(http, k) for k in range(SENDERS)))
    sent_requests = len(latencies)
    load_end = time.monotonic()
    drain_deadline = load_end + 60
    while len(twilio.sent) < sent_requests - len(errors) and time.monotonic() < drain_deadline:
        await asyncio.sleep(0.05)
    drained = time.monotonic() - load_end
    gc.collect()
    final_rss = _rss_mb()
    answered = len(twilio.sent)
    pending = await app[RUNTIME].store.count_pending()
    await runner.cleanup()

    steady = sorted(s for at, s in latencies if at >= WARMUP)
    p50 = statistics.median(steady)
    p99 = steady[int(len(steady) * 0.99) - 1]
    base_rss = next(mb for at, mb in rss if at >= WARMUP)
    growth = max(final_rss, rss[-1][1]) - base_rss
    rate = sent_requests / DURATION
    print(
        f"\nload {DURATION:.0f}s x {SENDERS} senders: {sent_requests} webhooks "
        f"({rate:.0f} req/s), errors {len(errors)}, ack p50 {p50 * 1000:.1f} ms "
        f"p99 {p99 * 1000:.1f} ms, replies {answered} (queue drained {drained:.1f}s after), "
        f"RSS {base_rss:.0f} -> {final_rss:.0f} MB after warm-up (growth {growth:+.1f} MB)"
    )
    assert errors == [], errors[:5]
    assert sent_requests > 200  # the load was real
    assert answered == sent_requests and pending == (0, 0)  # every message answered, once
    assert len({m["Body"] for m in twilio.sent}) >= 1
    assert p99 < 0.5, p99
    assert growth < RSS_BOUND_MB, (growth, rss)
