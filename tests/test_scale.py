"""Scale mode for real: a redis-server, two web nodes and two workers as subprocesses.

Each node is the real app or worker (``tests/scale_node.py``: only the model stages are
fakes), talking to a real ``redis-server`` (AOF on) and a loopback fake of Twilio's REST API.
Messages are signed like Twilio signs them and spread over both web nodes. What is checked is
what an operator cares about: every message answered exactly once, also when a worker is
killed with SIGKILL mid-turn and when Redis restarts mid-burst; and throughput with one
worker process against two (printed, and written to ``$VOICEBOT_SCALE_REPORT`` if set).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from tests.channel_kit import PUBLIC, SID, TOKEN, Factory, FakeTwilio, languages, whatsapp_form

ROOT = Path(__file__).resolve().parents[1]
REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS is None, reason="redis-server is not installed (apt install redis-server)"
)
ECHO = re.compile(r"Echo: (q\d{3})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """A real redis-server on loopback with AOF, restartable on the same data dir."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS is not None
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--logfile", str(self.root / "redis.log")],
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: redis fsyncs the AOF and exits
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@dataclass
class Node:
    role: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    """Web nodes and workers sharing one Redis prefix, plus the fake Twilio they send to."""

    tmp: Path
    redis: RedisServer
    twilio: FakeTwilio
    env: dict[str, str]
    nodes: list[Node] = field(default_factory=list)

    def start(self, role: str, **extra: str) -> Node:
        port = free_port()
        n = len(self.nodes)
        log = self.tmp / f"{role}-{n}.log"
        env = {**self.env, "VOICEBOT_PORT": str(port), "VOICEBOT_DATA_DIR": str(self.tmp / f"n{n}")}
        if role == "worker":
            env["SCALE_HEALTH_PORT"] = str(port)
        env.update(extra)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.scale_node", role],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        node = Node(role, proc, port, log)
        self.nodes.append(node)
        return node

    async def ready(self, *nodes: Node, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            for node in nodes:
                while True:
                    assert node.proc.poll() is None, self.logs()
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(node.base + "/readyz") as resp:
                            if resp.status == 200:
                                break
                    assert time.monotonic() < deadline, self.logs()
                    await asyncio.sleep(0.05)

    def logs(self) -> str:
        return "\n".join(f"--- {n.log.name}\n{n.log.read_text()[-3000:]}" for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            try:
                node.proc.wait(15)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(5)

    def answered(self) -> Counter[str]:
        """How many replies each question (``qNNN``) got."""
        return Counter(
            m.group(1) for s in self.twilio.sent if (m := ECHO.search(s.get("Body", "")))
        )


@pytest.fixture
async def cluster(tmp_path: Path, redis_server: RedisServer, aiohttp_server: Factory) -> Any:
    twilio = FakeTwilio()
    twilio.server = await aiohttp_server(twilio.app())
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VOICEBOT_", "TWILIO_", "META_"))
    }
    env |= {
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        "VOICEBOT_BACKEND": "redis",
        "VOICEBOT_REDIS_URL": redis_server.url,
        "VOICEBOT_REDIS_PREFIX": f"t{uuid.uuid4().hex[:8]}",
        "VOICEBOT_PUBLIC_URL": PUBLIC,
        "VOICEBOT_LANGUAGES_DIR": str(languages(tmp_path, ["en"])),
        "VOICEBOT_WARM_MODELS": "0",
        "VOICEBOT_OUTBOX_BACKOFF_SECONDS": "0.05",
        "VOICEBOT_HTTP_TIMEOUT_SECONDS": "3",
        "VOICEBOT_WORKER_RECLAIM_SECONDS": "3",
        "VOICEBOT_WORKER_DRAIN_SECONDS": "5",
        "VOICEBOT_CHANNEL_CONCURRENCY": "4",
        "VOICEBOT_RATE_LIMIT_PER_MINUTE": "1000",
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_API_BASE": twilio.base,
    }
    c = Cluster(tmp_path, redis_server, twilio, env)
    yield c
    c.stop()


async def post(http: aiohttp.ClientSession, node: Node, i: int, *, retry_for: float = 0.0) -> None:
    """One signed WhatsApp message ``qNNN``; retried on 5xx / refused like a provider would."""
    form = whatsapp_form(f"SM{i:032d}", f"q{i:03d}", phone=f"+9198{i % 10:08d}")
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/twilio/whatsapp", form)
    deadline = time.monotonic() + retry_for
    while True:
        try:
            async with http.post(
                node.base + "/twilio/whatsapp", data=form, headers={"X-Twilio-Signature": signature}
            ) as resp:
                await resp.read()
                if resp.status == 200:
                    return
                status = resp.status
        except aiohttp.ClientError as err:
            status = err.__class__.__name__  # type: ignore[assignment]
        assert time.monotonic() < deadline, f"message {i} not accepted: {status}"
        await asyncio.sleep(0.1)


async def until(check: Any, timeout: float, c: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in time; answered {len(c.answered())}\n{c.logs()}")
        await asyncio.sleep(0.05)


async def scrape(node: Node) -> str:
    async with aiohttp.ClientSession() as http, http.get(node.base + "/metrics") as resp:
        return await resp.text()


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_burst_over_two_web_nodes_is_answered_exactly_once_by_two_workers(
    cluster: Cluster,
) -> None:
    webs = [cluster.start("web"), cluster.start("web")]
    workers = [cluster.start("worker"), cluster.start("worker")]
    await cluster.ready(*webs, *workers)
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(post(http, webs[i % 2], i) for i in range(50)))
        # Twilio redelivers some, to the other node: each is still answered once.
        await asyncio.gather(*(post(http, webs[(i + 1) % 2], i) for i in range(0, 50, 5)))
    await until(lambda: len(cluster.answered()) == 50, 30, cluster)
    await asyncio.sleep(1.0)  # anything answered twice would show up by now
    answered = cluster.answered()
    assert sorted(answered) == [f"q{i:03d}" for i in range(50)]
    assert set(answered.values()) == {1}, answered.most_common(3)
    per_worker = [metric(await scrape(w), "voicebot_turns_total") for w in workers]
    assert sum(per_worker) == 50 and min(per_worker) > 0, per_worker  # both took turns
    # The web node exports the shared queue: depth, age and live workers (from heartbeats).
    deadline = time.monotonic() + 10
    while metric(text := await scrape(webs[0]), "voicebot_workers_alive") != 2:
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.2)
    assert metric(text, "voicebot_queue_depth") == 0
    assert "voicebot_queue_oldest_seconds 0" in text


async def test_killed_worker_turns_are_retaken_and_answered_once(cluster: Cluster) -> None:
    webs = [cluster.start("web"), cluster.start("web")]
    slow = {"SCALE_TURN_DELAY": "1.0"}
    victim, survivor = cluster.start("worker", **slow), cluster.start("worker", **slow)
    await cluster.ready(*webs, victim, survivor)
    import redis.asyncio as redis

    r = redis.Redis.from_url(cluster.redis.url, decode_responses=True)
    stream = f"{cluster.env['VOICEBOT_REDIS_PREFIX']}:in"
    consumer = f"{socket.gethostname()}-{victim.proc.pid}"
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(post(http, webs[i % 2], i) for i in range(16)))
        held = 0
        deadline = time.monotonic() + 10
        while held == 0 and time.monotonic() < deadline:
            rows = await r.xpending_range(stream, "workers", "-", "+", 100, consumername=consumer)
            held = len(rows)
            await asyncio.sleep(0.02)
        assert held > 0, "the victim never took a turn"
        victim.proc.send_signal(signal.SIGKILL)  # mid-turn: its turns are pending, unacked
        victim.proc.wait(5)
        await until(lambda: len(cluster.answered()) == 16, 40, cluster)
        await asyncio.sleep(1.0)
        answered = cluster.answered()
        lost = 16 - len(answered)
        duplicated = sum(n - 1 for n in answered.values())
        print(f"\nSCALE kill -9: victim held {held} turns; lost={lost} duplicated={duplicated}")
        _report(kill_held=held, kill_lost=lost, kill_duplicated=duplicated)
        assert lost == 0 and duplicated == 0
        summary = await r.xpending(stream, "workers")
        assert summary["pending"] == 0  # everything acked, nothing left behind
    finally:
        await r.aclose()


async def test_redis_restart_mid_burst_loses_nothing(cluster: Cluster) -> None:
    webs = [cluster.start("web"), cluster.start("web")]
    workers = [cluster.start("worker", SCALE_TURN_DELAY="0.2"), cluster.start("worker")]
    await cluster.ready(*webs, *workers)
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(post(http, webs[i % 2], i) for i in range(25)))
        await asyncio.to_thread(cluster.redis.restart)  # AOF replays what was acknowledged
        await asyncio.gather(*(post(http, webs[i % 2], i, retry_for=20) for i in range(25, 50)))
    await until(lambda: len(cluster.answered()) == 50, 40, cluster)
    await asyncio.sleep(1.0)
    answered = cluster.answered()
    assert len(answered) == 50 and set(answered.values()) == {1}, answered.most_common(3)
    assert all(n.proc.poll() is None for n in cluster.nodes), cluster.logs()


async def test_throughput_one_versus_two_worker_processes(cluster: Cluster) -> None:
    """Each worker is one accelerator: one turn at a time, 100 ms of device time per turn.

    (CPU-bound fake turns measure this machine's cores instead: with two web nodes, the
    fake Twilio and Redis on the same two cores there is no idle core for a second worker.)
    """
    webs = [cluster.start("web"), cluster.start("web")]
    gpu_like = {"SCALE_TURN_DELAY": "0.1", "VOICEBOT_CHANNEL_CONCURRENCY": "1"}
    first = cluster.start("worker", **gpu_like)
    await cluster.ready(*webs, first)
    n = 40

    async def burst(offset: int, total: int) -> float:
        start = time.perf_counter()
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(post(http, webs[i % 2], offset + i) for i in range(n)))
        await until(lambda: len(cluster.answered()) == total, 40, cluster)
        return n / (time.perf_counter() - start)

    one = await burst(0, n)
    second = cluster.start("worker", **gpu_like)
    await cluster.ready(second)
    two = await burst(100, 2 * n)
    ratio = two / one
    print(f"\nSCALE throughput: 1 worker {one:.1f} msg/s, 2 workers {two:.1f} msg/s, x{ratio:.2f}")
    _report(one_worker_msgs_per_s=round(one, 1), two_workers_msgs_per_s=round(two, 1))
    _report(ratio=round(ratio, 2), cpus=os.cpu_count() or 1)
    assert ratio > 1.5, (one, two)


def _report(**values: Any) -> None:
    path = os.environ.get("VOICEBOT_SCALE_REPORT")
    if not path:
        return
    target = Path(path)
    data = json.loads(target.read_text()) if target.exists() else {}
    data.update(values)
    target.write_text(json.dumps(data, indent=2) + "\n")
