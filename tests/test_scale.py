"""Scale mode for real: a redis-server, two web nodes and two workers as subprocesses.

Each node is the real app or worker (``tests/scale_node.py``: only the model stages are
fakes), talking to a real ``redis-server`` (AOF on) and a loopback fake of Twilio's REST API.
Messages are signed like Twilio signs them and spread over both web nodes. What is checked is
what an operator cares about: every message answered exactly once, also when a worker is
killed with SIGKILL mid-turn and when Redis restarts mid-burst; throughput with one worker
process against two (printed, and written to ``$VOICEBOT_SCALE_REPORT`` if set); and a
rolling restart of one web node while realtime calls are live on both.
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
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.channel_kit import PUBLIC, SID, TOKEN, Factory, FakeTwilio, languages
from tests.node_kit import Node, clean_env, free_port, open_call, post_whatsapp
from tests.test_realtime import Starvation, _reply_done, ask, question_clip, wait_greeting
from voicebot.channels.base import Outbound
from voicebot.channels.twilio_whatsapp import CHANNEL
from voicebot.config import Settings
from voicebot.store import OutboxItem

REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS is None, reason="redis-server is not installed (apt install redis-server)"
)
ECHO = re.compile(r"Echo: (q\d{3})")


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
class SlowTwilio(FakeTwilio):
    """Takes ``delay`` seconds to accept each message: a send is in flight that long."""

    delay: float = 0.0
    arrived: int = 0

    async def _messages(self, request: web.Request) -> web.Response:
        self.arrived += 1
        await asyncio.sleep(self.delay)
        return await super()._messages(request)


@dataclass
class Cluster:
    """Web nodes and workers sharing one Redis prefix, plus the fake Twilio they send to."""

    tmp: Path
    redis: RedisServer
    twilio: SlowTwilio
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
        node = Node.spawn(role, ["-m", "tests.scale_node", role], env, log)
        self.nodes.append(node)
        return node

    async def ready(self, *nodes: Node, timeout: float = 30.0) -> None:
        for node in nodes:
            await node.ready(timeout)

    def logs(self) -> str:
        return "\n".join(n.logs() for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:  # all drain at once
            if node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            node.stop()

    def answered(self) -> Counter[str]:
        """How many replies each question (``qNNN``) got."""
        return Counter(
            m.group(1) for s in self.twilio.sent if (m := ECHO.search(s.get("Body", "")))
        )


@pytest.fixture
async def cluster(tmp_path: Path, redis_server: RedisServer, aiohttp_server: Factory) -> Any:
    twilio = SlowTwilio()
    twilio.server = await aiohttp_server(twilio.app())
    env = clean_env()
    env |= {
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
        "VOICEBOT_DRAIN_SECONDS": "5",
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
    await post_whatsapp(http, node.base, i, retry_for=retry_for)


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


async def test_rolling_restart_of_a_web_node_during_realtime_calls(cluster: Cluster) -> None:
    """A realtime call stays on the web node holding its socket. Two nodes, a call on each,
    both mid-answer: SIGTERM node B and start its replacement B' (what a rolling update
    does). B drains — /readyz 503, its reply plays to the end, it exits 0 once its caller
    hangs up — while the call on A goes on at real-time pace, and a new call on B' works."""
    realtime = {"VOICEBOT_VOICE_MODE": "realtime", "SCALE_TONE_PER_CHAR": "0.01"}
    long_a, long_b = 13, 7  # sentences of the answers (with the source): ≈6.9 s and ≈3.7 s
    a = cluster.start("web", SCALE_ANSWER_SENTENCES=str(long_a - 1), **realtime)
    b = cluster.start(
        "web", SCALE_ANSWER_SENTENCES=str(long_b - 1), VOICEBOT_DRAIN_SECONDS="20", **realtime
    )
    await cluster.ready(a, b)
    starvation = Starvation()  # how long the OS kept this test process off the CPU
    watch = asyncio.create_task(starvation.watch())
    speech = question_clip()
    async with aiohttp.ClientSession() as http:
        on_a, on_b = await open_call(http, a, 1), await open_call(http, b, 2)
        await asyncio.gather(wait_greeting(on_a), wait_greeting(on_b))
        await asyncio.gather(ask(on_a, speech), ask(on_b, speech))
        line_a = asyncio.create_task(on_a.silence_until(lambda: _reply_done(on_a, 2, long_a), 30))
        line_b = asyncio.create_task(on_b.silence_until(lambda: _reply_done(on_b, 2, long_b), 30))
        deadline = time.monotonic() + 10
        while not on_b.heard(2):  # B is mid-answer
            assert time.monotonic() < deadline, on_b.summary()
            await asyncio.sleep(0.01)
        b.signal(signal.SIGTERM)
        replacement = cluster.start("web", SCALE_ANSWER_SENTENCES="1", **realtime)
        while (await b.status()) != 503:
            assert time.monotonic() - b.signalled < 1.0, cluster.logs()
        unready = time.monotonic() - b.signalled
        assert await a.status() == 200  # A is not disturbed: still taking calls
        await cluster.ready(replacement)
        ready = time.monotonic() - b.signalled
        assert on_a.heard(2) and not _reply_done(on_a, 2, long_a)  # A's reply spans all this
        new = await open_call(http, replacement, 3)
        await wait_greeting(new)
        await ask(new, speech)
        await new.silence_until(lambda: _reply_done(new, 2, 1), 15)
        await line_b
        hung_up = time.monotonic()
        await on_b.finish()
        code, drained = await b.exit_code(10)
        await line_a
        await asyncio.gather(on_a.finish(), new.finish())
    watch.cancel()
    raw = on_a.reply_gaps()[2]
    ours = on_a.reply_gaps(starvation.ours)[2]
    after_hangup = drained - (hung_up - b.signalled)
    b_done = max(t for t, kind, name in on_b.events if kind == "heard" and name.startswith("r2."))
    print(
        f"\nSCALE rolling restart: B /readyz 503 after {unready * 1000:.0f} ms, its reply done "
        f"{b_done - b.signalled:.2f} s after SIGTERM, exit {after_hangup:.2f} s after its "
        f"caller hung up; B' ready after {ready:.2f} s; A's widest frame gap "
        f"{raw * 1000:.0f} ms ({ours * 1000:.0f} ms less this process's CPU waits)"
    )
    _report(rolling_gap_ms=round(raw * 1000), rolling_gap_ours_ms=round(ours * 1000))
    # The call on A: every sentence heard, nothing cleared.
    assert len(on_a.heard(2)) == long_a and not on_a.times("clear"), on_a.summary()
    # B finished its reply during the drain, then exited cleanly.
    assert len(on_b.heard(2)) == long_b and not on_b.times("clear"), on_b.summary()
    assert code == 0, cluster.logs()
    # The replacement answered a new call.
    assert len(new.heard(2)) == 1 and a.proc.poll() is None
    # No hole a caller on A would hear: the pacer keeps ≤ 100 ms queued at Twilio, so a gap
    # up to 120 ms (that plus one frame) still plays continuously. Measured where Twilio
    # would be — this process, minus the time the OS kept it off the CPU (test_realtime.py).
    load = os.getloadavg()[0]
    if ours > 0.12 and load > 2 * (os.cpu_count() or 1):
        pytest.skip(f"pacing not judged: other processes keep this machine at load {load:.1f}")
    assert ours <= 0.12, (raw, ours)


async def test_a_draining_web_node_finishes_the_send_in_flight(cluster: Cluster) -> None:
    """A reply being sent is leased in Redis for 2 × the HTTP timeout (6 s here), longer than
    the drain (4 s; 30 s against 25 s by default), so the outbox does not show it as due: the
    drain counts the provider calls in flight. Cut off, the send would go out twice."""
    from voicebot.scale.redis_store import RedisStore

    prefix = cluster.env["VOICEBOT_REDIS_PREFIX"]
    settings = Settings(backend="redis", redis_url=cluster.redis.url, redis_prefix=prefix)
    store = await RedisStore.open(settings)
    try:
        reply = Outbound(CHANNEL, "whatsapp:+919800000901", "whatsapp:+14155238886", "text")
        item = OutboxItem("ob-q901", "in-q901", 0, CHANNEL, {**reply.to_json(), "text": "q901"})
        await store.enqueue([item])
        cluster.twilio.delay = 1.5
        node = cluster.start("web", VOICEBOT_DRAIN_SECONDS="4")
        deadline = time.monotonic() + 20
        while not cluster.twilio.arrived:  # the node took the reply and is sending it
            assert time.monotonic() < deadline and node.proc.poll() is None, cluster.logs()
            await asyncio.sleep(0.01)
        node.signal(signal.SIGTERM)
        code, took = await node.exit_code(15)
        print(f"\nSCALE drain with a send in flight: exit {took:.2f} s after SIGTERM")
        assert code == 0 and 1.0 < took < 4.0, cluster.logs()  # waited for it, not the 4 s
        assert [m["Body"] for m in cluster.twilio.sent] == ["q901"]
        assert await store.next_outbox_time() is None  # recorded as sent: nobody resends it
    finally:
        await store.close()


def _report(**values: Any) -> None:
    path = os.environ.get("VOICEBOT_SCALE_REPORT")
    if not path:
        return
    target = Path(path)
    data = json.loads(target.read_text()) if target.exists() else {}
    data.update(values)
    target.write_text(json.dumps(data, indent=2) + "\n")
