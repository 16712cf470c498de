"""Voice on workers (issue #7): model calls from a web node to ``voicebot worker`` over Redis.

Everything here is real: a ``redis-server``, ``voicebot worker`` processes (the CLI itself)
with real models (Whisper tiny.en through a copy of the English pack, Piper
en_US-joe-medium, espeak-ng), and for the realtime call ``voicebot serve`` itself in scale
mode with ``VOICEBOT_VOICE_ENGINES=workers``, called by the loopback Twilio of
tests/test_realtime.py. The workers are started once for the module with
``VOICEBOT_RPC_CONCURRENCY=1``, so the order in which one worker serves its queue is the
order of the replies. The kill test starts a second worker and runs last.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
import statistics
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.channel_kit import PUBLIC, SID, TOKEN
from tests.conftest import Clip, read_wav
from tests.node_kit import Node, clean_env, free_port, open_call
from tests.test_realtime import SILENCE, ask, question_clip
from tests.test_scale import RedisServer, redis_server  # noqa: F401  (a fixture)
from voicebot.audio import to_pcm16
from voicebot.config import Settings
from voicebot.engines.base import Blocking
from voicebot.errors import SynthesizeError, TranscribeError
from voicebot.messages import Audio
from voicebot.metrics import Metrics
from voicebot.packs import LanguagePack, load_packs
from voicebot.priority import Priority, priority
from voicebot.scale.remote import RemoteSynthesizer, RemoteTranscriber, remote_speech
from voicebot.scale.rpc import LEASE, Reply, RpcClient, RpcKeys, pcm_bytes
from voicebot.services import build_services

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)
ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT / "var" / "test-data" / "index"  # tests/grounded_kit.py's embedding cache
TEXT = "PM-KISAN pays six thousand rupees a year, in three instalments."


# ------------------------------------------------------------------------------- no Redis


async def test_engine_gate_admits_by_priority_then_arrival() -> None:
    """In one process (a worker answering WhatsApp turns while it serves a live call's
    model calls) the engine's gate lets the call's work go next."""
    gate = Blocking(1)
    started: list[str] = []
    hold = threading.Event()

    def work(tag: str) -> str:
        started.append(tag)
        if tag == "busy":
            hold.wait(5)
        return tag

    busy = asyncio.create_task(gate.run(work, "busy"))
    while not started:
        await asyncio.sleep(0.005)
    queued = []
    order = [("m1", Priority.MESSAGE), ("b1", Priority.BULK), ("m2", Priority.MESSAGE)]
    order += [("gone", Priority.CALL), ("r1", Priority.REALTIME), ("c1", Priority.CALL)]
    for tag, level in order:
        with priority(level):  # a task keeps the priority of the code that created it
            queued.append(asyncio.create_task(gate.run(work, tag)))
        await asyncio.sleep(0)
    assert gate.waiting == 6
    queued[3].cancel()  # a caller that hung up while waiting: never runs, blocks nobody
    hold.set()
    results = await asyncio.gather(busy, *queued, return_exceptions=True)
    assert isinstance(results[4], asyncio.CancelledError)
    assert started == ["busy", "r1", "c1", "m1", "m2", "b1"]
    assert gate.waiting == 0


def test_voice_engines_setting_is_validated() -> None:
    assert Settings().voice_engines == "local"  # nothing changes for existing deployments
    env = {"VOICEBOT_BACKEND": "redis", "VOICEBOT_VOICE_ENGINES": "workers"}
    assert Settings.load(env=env).voice_engines == "workers"
    with pytest.raises(Exception, match="needs the Redis backend") as info:
        Settings.load(env={"VOICEBOT_VOICE_ENGINES": "workers"})
    assert getattr(info.value, "code", "") == "config-voice-engines"
    with pytest.raises(Exception, match="local or workers"):
        Settings(backend="redis", voice_engines="gpu")
    with pytest.raises(Exception, match="rpc_timeout_seconds"):
        Settings(rpc_timeout_seconds=0)


# ------------------------------------------------------------------------- the worker pool


def _languages(root: Path) -> Path:
    """The English pack on Whisper tiny.en (the real pack names base: slower to run here)."""
    langs = root / "languages"
    shutil.copytree(ROOT / "languages" / "en", langs / "en")
    pack = langs / "en" / "pack.toml"
    text = pack.read_text(encoding="utf-8")
    assert '\nmodel = "base"\n' in text
    pack.write_text(text.replace('\nmodel = "base"\n', '\nmodel = "tiny.en"\n', 1), "utf-8")
    return langs


def _ensure_index() -> None:
    """Workers and web nodes start on a copy of the shared embedding cache (a cold one takes
    minutes to embed)."""
    if not any(INDEX.glob("*.npz")):
        from tests.grounded_kit import real_index

        real_index()


@dataclass
class Pool:
    """``voicebot worker`` processes (and a web node) around one Redis prefix."""

    root: Path
    env: dict[str, str]
    pack: LanguagePack
    nodes: list[Node] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return Settings.load(env={k: v for k, v in self.env.items() if k.startswith("VOICEBOT_")})

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "worker" and n.proc.poll() is None]

    def start(self, role: str, **extra: str) -> Node:
        port = free_port()
        data = self.root / f"n{len(self.nodes)}"
        (data / "index").mkdir(parents=True)
        for cache in INDEX.glob("*.npz"):
            shutil.copy(cache, data / "index" / cache.name)
        env = self.env | {"VOICEBOT_PORT": str(port), "VOICEBOT_DATA_DIR": str(data)} | extra
        argv = ["-m", "voicebot", role] + (["--port", str(port)] if role == "worker" else [])
        node = Node.spawn(role, argv, env, self.root / f"{role}-{len(self.nodes)}.log")
        self.nodes.append(node)
        return node

    def wait_ready(self, node: Node, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert node.proc.poll() is None, node.logs()
            try:
                with urllib.request.urlopen(node.base + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, node.logs()
            time.sleep(0.1)

    def consumer(self, node: Node) -> str:
        return f"{socket.gethostname()}-{node.proc.pid}"

    def logs(self) -> str:
        return "\n".join(n.logs() for n in self.nodes)


@pytest.fixture(scope="module")
def pool(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,  # noqa: F811
    packaged_models: dict[str, Path],
    model_cache: Path,
) -> Iterator[Pool]:
    if "tiny.en" not in packaged_models or "piper:en_US-joe-medium" not in packaged_models:
        pytest.skip("Whisper tiny.en or the Piper voice en_US-joe-medium is not installed")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    _ensure_index()
    root = tmp_path_factory.mktemp("rpc")
    langs = _languages(root)
    env = clean_env(
        VOICEBOT_BACKEND="redis",
        VOICEBOT_REDIS_URL=redis_server.url,
        VOICEBOT_REDIS_PREFIX=f"r{uuid.uuid4().hex[:8]}",
        VOICEBOT_LANGUAGES_DIR=str(langs),
        VOICEBOT_MODEL_DIR=str(model_cache),
        VOICEBOT_DEVICE="cpu",
        VOICEBOT_RPC_CONCURRENCY="1",
        VOICEBOT_WORKER_DRAIN_SECONDS="3",
        VOICEBOT_DRAIN_SECONDS="3",
        VOICEBOT_PUBLIC_URL=PUBLIC,
    )
    p = Pool(root, env, load_packs(langs).get("en"))
    worker = p.start("worker")
    try:
        p.wait_ready(worker)
        yield p
    finally:
        for node in p.nodes:
            if node.proc.poll() is None:
                node.proc.terminate()
        for node in p.nodes:
            node.stop()


@pytest.fixture
async def rpc(pool: Pool) -> AsyncIterator[RpcClient]:
    client = RpcClient.open(pool.settings)
    yield client
    await client.close()


def _opts(pack: LanguagePack) -> dict[str, Any]:
    stt = pack.stt
    return {
        "language": stt.language,
        "prompt": stt.initial_prompt or None,
        "beam_size": stt.beam_size,
        "context_seconds": stt.context_seconds,
    }


def _long_audio(clips: list[Clip], times: int = 2) -> Audio:
    """≈50 s of real speech: a model call that keeps a worker busy for a couple of seconds."""
    return Audio(np.concatenate([read_wav(c.path).samples for c in clips] * times), 16000)


async def _transcribe(
    rpc: RpcClient, pack: LanguagePack, audio: Audio, *, level: Priority, timeout: float = 30
) -> Reply:
    args = {"pack": pack.code, **_opts(pack)}
    return await rpc.call(
        "transcribe",
        args,
        pcm_bytes(audio),
        priority=level,
        error=TranscribeError,
        stage="stt",
        timeout=timeout,
    )


async def _leases(rpc: RpcClient) -> dict[str, str]:
    """Requests being worked on: id → the worker holding it."""
    pattern = RpcKeys(rpc.prefix).lease("*")
    keys = [k async for k in rpc.redis.scan_iter(match=pattern)]
    values = [await rpc.redis.get(k) for k in keys]
    return {bytes(k).decode(): bytes(v).decode() for k, v in zip(keys, values, strict=True) if v}


async def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)
    return value


def _scrape(node: Node) -> str:
    with urllib.request.urlopen(node.base + "/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _count(text: str, name: str, **labels: str) -> float:
    """Sum of the series of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ------------------------------------------------------------------------------ (a) results


@pytest.mark.model
async def test_round_trips_give_what_local_engines_give(
    pool: Pool, rpc: RpcClient, librivox_clips: list[Clip], tiny_en: Any, synth: Any
) -> None:
    pack = pool.pack
    metrics = Metrics()
    stt = RemoteTranscriber(rpc, pack, "tiny.en", default=Priority.CALL, metrics=metrics)
    tts = RemoteSynthesizer(rpc, default=Priority.CALL, metrics=metrics)
    assert stt.supports("en") and not stt.supports("hi")
    opts = _opts(pack)
    for clip in librivox_clips:
        audio = read_wav(clip.path)
        here = await tiny_en.transcribe(audio, **opts)
        there = await stt.transcribe(audio, **opts)
        assert there.text == here.text and there.text, clip.id
        assert there.avg_logprob == pytest.approx(here.avg_logprob, abs=1e-4)
        assert there.duration == pytest.approx(here.duration)

    # espeak-ng is deterministic: the same samples come back, bit for bit (16-bit PCM).
    here_voice = await synth.synthesize(TEXT, voice="espeak-ng:en-us")
    there_voice = await tts.synthesize(TEXT, voice="espeak-ng:en-us")
    assert there_voice.rate == here_voice.rate
    assert np.array_equal(to_pcm16(there_voice.samples), to_pcm16(here_voice.samples))
    # Piper samples its prosody, so only the rate, the length and the words can match.
    here_piper = await synth.synthesize(TEXT, voice="piper:en_US-joe-medium")
    there_piper = await tts.synthesize(TEXT, voice="piper:en_US-joe-medium")
    assert there_piper.rate == here_piper.rate == 22050
    assert there_piper.seconds == pytest.approx(here_piper.seconds, rel=0.2)
    heard = await tiny_en.transcribe(there_piper, language="en")
    assert "rupees a year" in heard.text.lower(), heard.text
    # A voice this worker lacks: the engine's own error comes back, class and code.
    with pytest.raises(SynthesizeError) as info:
        await tts.synthesize(TEXT, voice="piper:xx_XX-nobody-low")
    assert info.value.code == "tts-unavailable"

    # The RPC overhead: the same clip, locally and through Redis, on this machine.
    audio = read_wav(librivox_clips[0].path)
    local, remote, overhead = [], [], []
    for _ in range(5):
        t0 = time.perf_counter()
        await tiny_en.transcribe(audio, **opts)
        local.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        reply = await _transcribe(rpc, pack, audio, level=Priority.CALL)
        remote.append(time.perf_counter() - t0)
        overhead.append(remote[-1] - reply.run_ms / 1000)
    series = {"local": local, "remote": remote, "overhead": overhead}
    ms = {k: round(statistics.median(v) * 1000, 1) for k, v in series.items()}
    print(
        f"\nRPC transcription of {audio.seconds:.1f} s ({len(pcm_bytes(audio)) // 1024} KiB "
        f"of PCM), median of 5: local {ms['local']} ms, via Redis {ms['remote']} ms, "
        f"overhead (round trip less model time) {ms['overhead']} ms"
    )
    assert ms["overhead"] < 150, ms  # a few ms on loopback; generous for a loaded machine


# ----------------------------------------------------------------------------- (b) priority


@pytest.mark.model
async def test_a_realtime_call_is_served_before_queued_lower_priority_work(
    pool: Pool, rpc: RpcClient, librivox_clips: list[Clip]
) -> None:
    assert len(pool.workers) == 1, "this test needs the single worker of the module"
    worker = pool.workers[0]
    before = _scrape(worker)
    blocker = asyncio.create_task(
        _transcribe(rpc, pool.pack, _long_audio(librivox_clips), level=Priority.BULK)
    )
    await _until(lambda: _leases(rpc), 10, "the worker never took the long transcription")
    served: list[str] = []

    async def speak(tag: str, level: Priority, timeout: float = 30) -> None:
        args = {"text": f"Request {tag}.", "voice": "espeak-ng:en-us", "speed": 1.0}
        await rpc.call(
            "synthesize",
            args,
            priority=level,
            error=SynthesizeError,
            stage="tts",
            timeout=timeout,
        )
        served.append(tag)

    async def queue(tag: str, level: Priority, timeout: float = 30) -> asyncio.Task[None]:
        """Queue one request and return once Redis holds it (so arrival order is known)."""
        key = RpcKeys(rpc.prefix).queue(level)
        length = int(await rpc.redis.llen(key))
        task = asyncio.create_task(speak(tag, level, timeout))
        await _until(lambda: _longer(rpc, key, length), 5, f"{tag} was not queued")
        return task

    low = [await queue(f"bulk{i}", Priority.BULK) for i in range(2)]
    low += [await queue(f"message{i}", Priority.MESSAGE) for i in range(2)]
    hung_up = await queue("hung-up", Priority.MESSAGE)
    timed_out = await queue("timed-out", Priority.CALL, timeout=0.3)
    on_hold = await queue("call", Priority.CALL)
    live = await queue("realtime", Priority.REALTIME)
    hung_up.cancel()  # the caller went away while its request waited
    t0 = time.monotonic()
    with pytest.raises(SynthesizeError) as info:
        await timed_out
    assert info.value.code == "tts-worker-timeout" and time.monotonic() - t0 < 1.0
    assert not blocker.done(), "the worker finished before the queue was built"
    await asyncio.gather(blocker, *low, on_hold, live)
    with pytest.raises(asyncio.CancelledError):
        await hung_up
    # Highest priority first, first come first served within one; abandoned calls skipped.
    assert served == ["realtime", "call", "message0", "message1", "bulk0", "bulk1"]
    after = _scrape(worker)
    skipped = _count(after, "voicebot_rpc_total", outcome="skipped")
    assert skipped - _count(before, "voicebot_rpc_total", outcome="skipped") == 2
    assert _count(after, "voicebot_rpc_total", outcome="ok", priority="realtime") >= 1
    assert "voicebot_rpc_queue_depth" in after and "voicebot_rpc_queue_oldest_seconds" in after


async def _settled(worker: Node, web: Node, quiet: float = 1.0, timeout: float = 60) -> float:
    """Wait until the web node's prompts are ready and the worker has served no realtime
    synthesis for ``quiet`` seconds; returns how many it served."""
    deadline = time.monotonic() + timeout
    count, since = -1.0, time.monotonic()
    while True:
        now = _count(_scrape(worker), "voicebot_rpc_total", kind="synthesize", priority="realtime")
        if now != count:
            count, since = now, time.monotonic()
        ready = "voice prompts ready" in web.log.read_text(errors="replace")
        if ready and time.monotonic() - since >= quiet:
            return count
        assert time.monotonic() < deadline, web.logs()
        await asyncio.sleep(0.1)


async def _history(pool: Pool, key: str) -> list[str]:
    import redis.asyncio as redis

    client = redis.Redis.from_url(pool.settings.redis_url, decode_responses=True)
    try:
        return [json.loads(row)["q"] for row in await client.lrange(key, 0, -1)]
    finally:
        await client.aclose()


async def _longer(rpc: RpcClient, key: str, length: int) -> bool:
    return int(await rpc.redis.llen(key)) > length


# ----------------------------------------------------- the apology path when nobody answers


async def test_no_worker_in_time_is_a_coded_error_and_a_spoken_apology(
    redis_server: RedisServer,  # noqa: F811
    librivox_clips: list[Clip],
) -> None:
    """Calls on a web node whose workers are all gone: each stage fails with its code
    within the RPC timeout, and the turn becomes the pack's apology (text, since the voice
    is on the workers too) instead of silence. A voice that timed out is not followed by the
    next voice of the plan: the time is spent."""
    settings = Settings(
        backend="redis",
        redis_url=redis_server.url,
        redis_prefix=f"empty{uuid.uuid4().hex[:6]}",
        voice_engines="workers",
        rpc_timeout_seconds=0.5,
        languages_dir=ROOT / "languages",
        data_dir=ROOT / "var" / "test-data",
    )
    services = await build_services(settings)
    try:
        pipeline = services.pipeline
        assert services.transcribers is None and services.rpc is not None
        t0 = time.monotonic()
        turn = await pipeline.voice_turn(read_wav(librivox_clips[0].path), lang="en")
        took = time.monotonic() - t0
        assert turn.error == "stt-worker-timeout"
        assert turn.answer.text == pipeline.packs.get("en").phrase("error")
        assert turn.audio is None  # speech failed as well: the channel falls back
        assert 1.0 <= took < 3.0, took
        # Two requests were queued (and are left to expire): one transcription and one
        # synthesis, not one per voice of the pack's plan.
        queued = await services.rpc.redis.llen(RpcKeys(settings.redis_prefix).queue(Priority.CALL))
        assert queued == 2
        assert services.metrics.counter_value("voicebot_errors_total", code="tts-worker-timeout")
    finally:
        await services.close()


# ------------------------------------------------------- (d) a realtime call through the app


@pytest.mark.model
async def test_realtime_call_runs_its_model_work_on_the_worker(pool: Pool) -> None:
    web = pool.start(
        "serve",
        VOICEBOT_VOICE_ENGINES="workers",
        VOICEBOT_VOICE_MODE="realtime",
        VOICEBOT_WARM_MODELS="0",
        TWILIO_ACCOUNT_SID=SID,
        TWILIO_AUTH_TOKEN=TOKEN,
        TWILIO_API_BASE=f"http://127.0.0.1:{free_port()}",  # nothing is sent in this test
    )
    await asyncio.to_thread(pool.wait_ready, web)
    worker = pool.workers[0]
    # Once ready, the node synthesises its voice prompts and phrase cache on the worker (at
    # the node's priority, see docs/scaling.md): let that finish, so the figure below is the
    # call's own.
    warmups = await _settled(worker, web)
    before = _scrape(worker)
    speech = question_clip()
    async with aiohttp.ClientSession() as http:
        twilio = await open_call(http, web, 1)
        await twilio.silence_until(lambda: bool(twilio.media_times), 15)  # the greeting
        await twilio.play([SILENCE] * 25)
        end = await ask(twilio, speech)
        await twilio.silence_until(lambda: twilio.first_media_after(end + 0.1) is not None, 30)
        reply = (twilio.first_media_after(end) or 1e9) - end
        await twilio.play([SILENCE] * 25)
        await twilio.finish()
    after = _scrape(worker)
    done = {
        kind: _count(after, "voicebot_rpc_total", kind=kind, priority="realtime", outcome="ok")
        - _count(before, "voicebot_rpc_total", kind=kind, priority="realtime", outcome="ok")
        for kind in ("transcribe", "synthesize")
    }
    print(
        f"\nrealtime call, voice on the worker: end of speech → first reply frame {reply:.2f} s"
        f" ({warmups:.0f} syntheses warmed the web node first)"
    )
    assert done["transcribe"] >= 1 and done["synthesize"] >= 1, (done, pool.logs())
    web_log = web.log.read_text(errors="replace")
    assert "loading whisper model" not in web_log and "loaded Piper voice" not in web_log
    assert re.search(r"stage=stt ms=\d+ code=ok", web_log), web_log[-3000:]
    # What the worker heard is what the caller said: the call's memory holds the question.
    key = f"{pool.env['VOICEBOT_REDIS_PREFIX']}:mem:call:{twilio.call_sid}"
    rows = await _until(lambda: _history(pool, key), 10, "the call remembered nothing")
    assert "dashwood" in rows[0].lower(), rows
    await asyncio.to_thread(web.stop)


# ------------------------------------------------------------------ (c) a worker is killed


@pytest.mark.model
async def test_a_worker_killed_mid_call_is_a_coded_error_and_the_next_call_is_served(
    pool: Pool, rpc: RpcClient, librivox_clips: list[Clip]
) -> None:
    """Runs last: it kills one of two workers (SIGKILL, mid-transcription)."""
    second = pool.start("worker")
    await asyncio.to_thread(pool.wait_ready, second)
    assert len(pool.workers) == 2
    call = asyncio.create_task(
        _transcribe(rpc, pool.pack, _long_audio(librivox_clips), level=Priority.REALTIME)
    )
    leases = await _until(lambda: _leases(rpc), 10, "no worker took the transcription")
    holder = next(iter(leases.values()))
    victim = next(n for n in pool.workers if pool.consumer(n) == holder)
    survivor = next(n for n in pool.workers if n is not victim)
    victim.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    with pytest.raises(TranscribeError) as info:
        await call  # its timeout is 30 s: the lost lease is what ends the wait
    waited = time.monotonic() - killed
    assert info.value.code == "stt-worker-lost"
    assert waited < LEASE + 2.0, waited
    reply = await _transcribe(
        rpc, pool.pack, read_wav(librivox_clips[0].path), level=Priority.REALTIME
    )
    assert reply.worker == pool.consumer(survivor)
    assert reply.result["text"].strip()
    print(f"\nRPC worker killed mid-call: the caller knew after {waited:.1f} s")


# -------------------------------------------------------------------------- wiring checks


async def test_remote_engines_take_what_they_support_from_the_packs() -> None:
    settings = Settings(backend="redis", voice_engines="workers")
    packs = load_packs(ROOT / "languages")
    rpc, transcriber_for, synthesizer = remote_speech(settings, Metrics())
    try:
        en, hi = packs.get("en"), packs.get("hi")
        transcriber = await transcriber_for(en)
        assert transcriber is await transcriber_for(en)  # one per pack
        assert transcriber.name == f"workers:{en.stt.model}" and transcriber.supports("en")
        assert not transcriber.supports("hi") and (await transcriber_for(hi)).supports("hi")
        assert synthesizer.supports("piper:en_US-joe-medium")
        assert synthesizer.supports("espeak-ng:hi") and not synthesizer.supports("nonsense")
    finally:
        await rpc.close()
