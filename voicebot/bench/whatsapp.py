"""WhatsApp (Twilio) webhooks against a running server: ack latency, webhook → reply latency,
acknowledged throughput and the replies that follow it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from voicebot.bench.core import Log, Plan, percentile
from voicebot.bench.figures import Report
from voicebot.bench.twilio import WHATSAPP_PATH, FakeTwilio, Signer, english_texts

__all__ = ["answer_count", "get", "whatsapp_load"]


async def get(session: Any, url: str) -> str:
    async with session.get(url) as resp:
        text: str = await resp.text()
        return text


def answer_count(metrics: str) -> float:
    """Answers the server computed so far: the count of its ``answer`` stage histogram."""
    for line in metrics.splitlines():
        if line.startswith("voicebot_stage_seconds_count{") and 'stage="answer"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def whatsapp_load(
    report: Report,
    port: int,
    fake: FakeTwilio,
    plan: Plan,
    questions: list[dict[str, Any]],
    log: Log,
) -> dict[str, Any]:
    import aiohttp

    signer = Signer()
    texts = english_texts(questions)

    url = f"http://127.0.0.1:{port}{WHATSAPP_PATH}"
    statuses: dict[str, int] = {}

    async def post(session: aiohttp.ClientSession, text: str) -> tuple[float, int, str]:
        form, headers, to = signer.sign(text)
        start = time.perf_counter()
        async with session.post(url, data=form, headers=headers) as resp:
            await resp.read()
            status = resp.status
        return time.perf_counter() - start, status, to

    async def drain(targets: set[str], limit: float) -> float:
        start = time.perf_counter()
        while not targets <= fake.received.keys() and time.perf_counter() - start < limit:
            await asyncio.sleep(0.05)
        return time.perf_counter() - start

    connector = aiohttp.TCPConnector(limit=max(plan.throughput_concurrency, 8))
    async with aiohttp.ClientSession(connector=connector) as session:
        # 1. ack latency at light load: one request at a time
        log(f"whatsapp: {plan.webhook_latency_n} sequential signed webhooks")
        acks, sent = [], set()
        for i in range(plan.webhook_latency_n):
            seconds, status, to = await post(session, texts[i % len(texts)])
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            acks.append(seconds * 1000)
            sent.add(to)
        await drain(sent, 60)
        # 2. webhook → reply at the REST API, one message in flight
        log(f"whatsapp: {plan.webhook_reply_n} webhook → reply round trips")
        replies = []
        for i in range(plan.webhook_reply_n):
            form, headers, to = signer.sign(texts[i % len(texts)])
            fake.events[to] = asyncio.Event()
            start = time.perf_counter()
            async with session.post(url, data=form, headers=headers) as resp:
                await resp.read()
            async with asyncio.timeout(30):
                await fake.events[to].wait()
            replies.append((fake.received[to] - start) * 1000)
        # 3. throughput: N clients for D seconds
        log(
            f"whatsapp: throughput, {plan.throughput_concurrency} clients × "
            f"{plan.throughput_seconds:g} s"
        )
        load_acks: list[float] = []
        load_sent: set[str] = set()
        load_status: dict[str, int] = {}
        client_errors: list[str] = []
        deadline = time.perf_counter() + plan.throughput_seconds

        async def client(k: int) -> None:
            i = k
            while time.perf_counter() < deadline:
                try:
                    seconds, status, to = await post(session, texts[i % len(texts)])
                except (aiohttp.ClientError, TimeoutError) as err:
                    client_errors.append(err.__class__.__name__)
                    continue
                i += plan.throughput_concurrency
                load_status[str(status)] = load_status.get(str(status), 0) + 1
                load_acks.append(seconds * 1000)
                load_sent.add(to)

        answers_before = answer_count(await get(session, f"http://127.0.0.1:{port}/metrics"))
        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(plan.throughput_concurrency)))
        window = time.perf_counter() - start
        answered_in_window = len(load_sent & fake.received.keys())
        log(f"whatsapp: draining replies (up to {plan.drain_seconds:g} s)")
        drained = await drain(load_sent, plan.drain_seconds)
        answered = len(load_sent & fake.received.keys())
        metrics = await get(session, f"http://127.0.0.1:{port}/metrics")
    computed = answer_count(metrics) - answers_before
    ok = load_status.get("200", 0)
    errors = sum(v for k, v in load_status.items() if k != "200") + len(client_errors)
    ack_p50, ack_p99 = percentile(acks, 50), percentile(acks, 99)
    rps = ok / window if window else 0.0
    answered_rps = answered / (window + drained) if window + drained else 0.0
    report.figure("whatsapp.ack_p50_ms", ack_p50)
    report.figure("whatsapp.ack_p99_ms", ack_p99)
    report.figure("whatsapp.reply_p50_ms", percentile(replies, 50))
    report.figure("whatsapp.throughput_rps", rps)
    report.figure("whatsapp.load_ack_p99_ms", percentile(load_acks, 99))
    report.figure("whatsapp.errors", errors)
    report.figure("whatsapp.answered_rps", answered_rps)
    error_lines = [
        line for line in metrics.splitlines() if line.startswith("voicebot_errors_total{")
    ]
    return {
        "light": {
            "requests": len(acks),
            "statuses": statuses,
            "ack_p50_ms": round(ack_p50, 2),
            "ack_p99_ms": round(ack_p99, 2),
            "ack_max_ms": round(max(acks), 2) if acks else None,
        },
        "reply": {
            "requests": len(replies),
            "p50_ms": round(percentile(replies, 50), 2),
            "max_ms": round(max(replies), 2) if replies else None,
        },
        "load": {
            "clients": plan.throughput_concurrency,
            "seconds": round(window, 2),
            "acked_200": ok,
            "statuses": load_status,
            "client_errors": len(client_errors),
            "ack_per_s": round(rps, 1),
            "ack_p50_ms": round(percentile(load_acks, 50), 2),
            "ack_p99_ms": round(percentile(load_acks, 99), 2),
            "answered_in_window": answered_in_window,
            "answered_after_drain": answered,
            "drain_s": round(drained, 2),
            "answered_per_s": round(answered_rps, 2),
            "answers_computed": int(computed),
            "answers_computed_per_s": round(computed / (window + drained), 2),
            "backlog_left": len(load_sent) - answered,
        },
        "server_error_counters": error_lines,
        "signing": "twilio.request_validator.RequestValidator (not our code)",
        "replies_to": "loopback fake Twilio REST (Messages.json)",
    }
