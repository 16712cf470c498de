"""Scale mode (issue 7): throughput with 1 and 2 worker processes, and messages lost when a
worker is killed mid-burst.

Everything is real but Twilio: a throw-away ``redis-server``, the real ``voicebot serve`` in
scale mode (``VOICEBOT_BACKEND=redis``) as the web node and real ``voicebot worker``
processes, answering with the configured answerer (text questions: retrieval + composition,
no speech). Signed Twilio WhatsApp text messages, each from its own number, go to the web
node; replies arrive at a loopback fake Twilio REST API. Throughput is a burst's messages ÷
the time from its first webhook to its last reply, first with one worker, then (in the same
run, after the second has started and answered once) with two. Then a burst with both
workers, the first one killed with SIGKILL while it holds unacknowledged turns: lost is how
many messages never got a reply, duplicated how many got one twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicebot.bench.core import Budget, Log, Plan, process_cpu_seconds
from voicebot.bench.figures import Report
from voicebot.bench.procs import Node, redis_server, settle, start_node, stop_process, wait_ready
from voicebot.bench.twilio import (
    PUBLIC,
    SID,
    TOKEN,
    WHATSAPP_PATH,
    FakeTwilio,
    Signer,
    english_texts,
    fake_twilio,
)
from voicebot.config import Settings, child_env

__all__ = ["bench_scale"]

FIGURES = (
    "scale.one_worker_msgs_s",
    "scale.two_workers_msgs_s",
    "scale.ratio",
    "scale.kill_lost",
    "scale.kill_duplicated",
)


def _not_measured(report: Report, reason: str) -> dict[str, Any]:
    for key in FIGURES:
        report.figure(key, None, note=f"not measured: {reason}")
    return {"status": "not measured", "reason": reason}


async def bench_scale(
    report: Report,
    settings: Settings,
    plan: Plan,
    questions: list[dict[str, Any]],
    config: Path | None,
    budget: Budget,
    log: Log,
) -> dict[str, Any]:
    if shutil.which("redis-server") is None:
        return _not_measured(report, "redis-server is not installed")
    if not budget.allows("scale mode", plan.scale_estimate_s):
        return _not_measured(report, "time budget")
    import aiohttp

    with tempfile.TemporaryDirectory(prefix="voicebot-bench-scale-") as tmp:
        root = Path(tmp)
        async with (
            redis_server(root) as redis_url,
            fake_twilio() as (fake, twilio_base),
            aiohttp.ClientSession() as http,
        ):
            env = _env(settings, redis_url, twilio_base, plan)
            config = config.resolve() if config else None
            cluster = _Cluster(root, env, config, http, fake, english_texts(questions), settings)
            try:
                return await _measure(report, cluster, plan, log)
            except Exception as err:
                raise RuntimeError(f"{err}\n{cluster.tails()}") from err
            finally:
                await cluster.stop()


def _env(settings: Settings, redis_url: str, twilio_base: str, plan: Plan) -> dict[str, str]:
    """The nodes' settings: scale mode on this Redis, this run's models, knowledge and
    languages, the fake Twilio, and nothing inherited from the bench's own environment."""
    return child_env(
        {
            "HF_HUB_OFFLINE": "1",
            "VOICEBOT_BACKEND": "redis",
            "VOICEBOT_REDIS_URL": redis_url,
            "VOICEBOT_REDIS_PREFIX": f"bench{uuid.uuid4().hex[:8]}",
            "VOICEBOT_PUBLIC_URL": PUBLIC,
            "VOICEBOT_MODEL_DIR": str(Path(settings.models_path).resolve()),
            "VOICEBOT_LANGUAGES_DIR": str(Path(settings.languages_dir).resolve()),
            "VOICEBOT_KNOWLEDGE_DIR": str(Path(settings.knowledge_dir).resolve()),
            "VOICEBOT_DEVICE": settings.device,
            "VOICEBOT_ANSWERER": settings.answerer,
            "VOICEBOT_DEFAULT_LANGUAGE": settings.default_language,
            "VOICEBOT_WARM_MODELS": "0",  # text only: no Whisper or voice to warm
            "VOICEBOT_RATE_LIMIT_PER_MINUTE": "100000",
            "VOICEBOT_CHANNEL_CONCURRENCY": str(settings.channel_concurrency),
            "VOICEBOT_WORKER_RECLAIM_SECONDS": f"{plan.scale_reclaim_s:g}",
            "TWILIO_ACCOUNT_SID": SID,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_API_BASE": twilio_base,
        }
    )


@dataclass
class _Cluster:
    """One run's web node and workers (one Redis prefix), and the fake Twilio they reply to."""

    root: Path
    env: dict[str, str]
    config: Path | None
    http: Any
    fake: FakeTwilio
    texts: list[str]
    settings: Settings
    nodes: list[Node] = field(default_factory=list)
    signer: Signer = field(default_factory=lambda: Signer("+9180"))

    async def start(
        self, name: str, argv: list[str], *, core: int | None = None, **extra: str
    ) -> Node:
        """Start a node; ``core`` pins it to one CPU (its threads are created later, at model
        load, and inherit the pin), as each GPU worker of a real pool has its own GPU."""
        data = self.root / name
        index = Path(self.settings.data_dir) / "index"
        if index.is_dir():  # the embedding cache, so the node does not re-embed the KB
            shutil.copytree(index, data / "index")
        data.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "VOICEBOT_DATA_DIR": str(data), **extra}
        node = await start_node(name, argv, env, self.root, self.config)
        if core is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(node.proc.pid, {core % (os.cpu_count() or 1)})
        self.nodes.append(node)
        return node

    async def post(self, web: Node, text: str, retry_for: float = 10.0) -> str:
        """One signed message; retried like Twilio would on a 5xx or refused connection."""
        import aiohttp

        form, headers, to = self.signer.sign(text)
        deadline = time.monotonic() + retry_for
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.post(
                    web.base + WHATSAPP_PATH, data=form, headers=headers
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        return to
            if time.monotonic() > deadline:
                raise RuntimeError(f"the web node did not accept message {to}")
            await asyncio.sleep(0.1)

    async def burst(self, web: Node, n: int) -> set[str]:
        """``n`` messages at once; the numbers their replies will go to."""
        tos = await asyncio.gather(
            *(self.post(web, self.texts[i % len(self.texts)]) for i in range(n))
        )
        return set(tos)

    async def replied(self, tos: set[str], timeout: float) -> bool:
        """Until every one of ``tos`` got a reply (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while not tos <= self.fake.received.keys():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def turns(self, node: Node) -> float:
        """Turns a worker has answered (its ``voicebot_turns_total``)."""
        async with self.http.get(node.base + "/metrics") as resp:
            text: str = await resp.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("voicebot_turns_total")
        )

    async def stop(self) -> None:
        await asyncio.gather(*(stop_process(n.proc, 15) for n in self.nodes))

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.proc.returncode is None]

    def tails(self) -> str:
        return "\n".join(n.tail() for n in self.nodes)


async def _warm(cluster: _Cluster, web: Node, workers: list[Node], n: int) -> None:
    """Small bursts until every worker has answered at least once (retrieval model loaded)."""
    for _ in range(5):
        if not await cluster.replied(await cluster.burst(web, n), 120):
            raise RuntimeError("warm-up messages were not answered in 120 s")
        if all([await cluster.turns(w) > 0 for w in workers]):
            return
    raise RuntimeError("a worker took no turn in five warm-up bursts")


async def _throughput(cluster: _Cluster, web: Node, n: int) -> dict[str, Any]:
    """A burst of ``n``: messages answered per second, and the cores each node used for it."""
    cpu0 = {node.name: process_cpu_seconds(node.proc.pid) for node in cluster.live()}
    start = time.perf_counter()
    tos = await cluster.burst(web, n)
    acked = time.perf_counter() - start
    if not await cluster.replied(tos, 120 + n):
        raise RuntimeError(f"a burst of {n} was not answered in {120 + n} s")
    seconds = time.perf_counter() - start
    return {
        "messages": n,
        "acked_s": round(acked, 3),
        "seconds": round(seconds, 3),
        "msgs_per_s": round(n / seconds, 2),
        "replies_per_message": max(cluster.fake.counts[to] for to in tos),
        "cores_used": {
            name: round((process_cpu_seconds(node.proc.pid) - cpu0[name]) / seconds, 2)
            for node in cluster.live()
            if (name := node.name) in cpu0
        },
    }


async def _measure(report: Report, cluster: _Cluster, plan: Plan, log: Log) -> dict[str, Any]:
    import redis.asyncio as redis

    threads = str(plan.scale_worker_threads)
    log("scale: redis-server, `voicebot serve` (scale mode) and one `voicebot worker`")
    t0 = time.perf_counter()
    web = await cluster.start("web", ["serve"])
    first = await cluster.start("worker-1", ["worker"], core=0, VOICEBOT_CPU_THREADS=threads)
    await wait_ready(cluster.http, [web, first], 180)
    startup = time.perf_counter() - t0
    await _warm(cluster, web, [first], plan.scale_warm_messages)
    settled = await settle([web, first], plan.scale_settle_s)
    log(f"scale: {plan.scale_messages} messages, 1 worker")
    before = await _throughput(cluster, web, plan.scale_messages)
    log("scale: second worker")
    second = await cluster.start("worker-2", ["worker"], core=1, VOICEBOT_CPU_THREADS=threads)
    await wait_ready(cluster.http, [second], 180)
    await _warm(cluster, web, [first, second], plan.scale_warm_messages)
    settled += await settle([web, first, second], plan.scale_settle_s)
    log(f"scale: {plan.scale_messages} messages, 2 workers")
    two = await _throughput(cluster, web, plan.scale_messages)

    log(f"scale: {plan.scale_kill_messages} messages, one worker killed (SIGKILL) mid-burst")
    client = redis.Redis.from_url(cluster.env["VOICEBOT_REDIS_URL"], decode_responses=True)
    try:
        kill = await _kill_burst(cluster, client, web, first, plan, before["replies_per_message"])
    finally:
        await client.aclose()

    settled += await settle([web, second], plan.scale_settle_s)
    log(f"scale: {plan.scale_messages} messages, 1 worker again (the survivor)")
    after = await _throughput(cluster, web, plan.scale_messages)
    one = (before["msgs_per_s"] + after["msgs_per_s"]) / 2  # before and after: drift cancels
    ratio = two["msgs_per_s"] / one
    report.figure("scale.one_worker_msgs_s", one)
    report.figure("scale.two_workers_msgs_s", two["msgs_per_s"])
    report.figure("scale.ratio", ratio)
    report.figure("scale.kill_lost", kill["lost"])
    report.figure("scale.kill_duplicated", kill["duplicated"])
    return {
        "answerer": cluster.settings.answerer,
        "startup_s": round(startup, 2),
        "settle_s": round(settled, 2),
        "worker_cpu_threads": plan.scale_worker_threads,
        "channel_concurrency": cluster.settings.channel_concurrency,
        "cores": os.cpu_count() or 0,
        "one_worker": [before, after],
        "one_worker_msgs_per_s": round(one, 2),
        "two_workers": two,
        "ratio": round(ratio, 3),
        "kill": kill,
    }


async def _kill_burst(
    cluster: _Cluster, client: Any, web: Node, victim: Node, plan: Plan, per_reply: int
) -> dict[str, Any]:
    """A burst; SIGKILL ``victim`` once it holds unacknowledged turns; count what comes back."""
    stream = f"{cluster.env['VOICEBOT_REDIS_PREFIX']}:in"
    consumer_suffix = f"-{victim.proc.pid}"
    start = time.perf_counter()
    sending = asyncio.create_task(cluster.burst(web, plan.scale_kill_messages))
    held = 0
    deadline = time.monotonic() + 30
    while held == 0 and time.monotonic() < deadline:
        summary = await client.xpending(stream, "workers")
        held = sum(
            int(c["pending"])
            for c in summary.get("consumers") or []
            if str(c["name"]).endswith(consumer_suffix)
        )
        if held == 0:
            await asyncio.sleep(0.005)
    victim.kill()
    killed_at = time.perf_counter() - start
    await victim.proc.wait()
    tos = await sending
    limit = plan.scale_reclaim_s + 60
    await cluster.replied(tos, limit)
    await asyncio.sleep(1.0)  # a reply sent twice would show up by now
    answered = tos & cluster.fake.received.keys()
    duplicated = sum(max(0, cluster.fake.counts[to] - per_reply) for to in answered)
    return {
        "messages": len(tos),
        "victim_held": held,
        "killed_after_s": round(killed_at, 3),
        "answered": len(answered),
        "lost": len(tos) - len(answered),
        "duplicated": duplicated,
        "all_answered_s": round(time.perf_counter() - start - 1.0, 2),
        "reclaim_after_s": plan.scale_reclaim_s,
    }
