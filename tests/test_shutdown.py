"""Graceful stop with real processes and real signals (issues #7 and #8).

Each test starts a real server process on a free loopback port — ``tests.scale_node web``:
the real app and the real ``voicebot.drain.serve`` with fake model stages, or
``python -m voicebot serve`` itself — with a loopback fake of Twilio's REST API, then sends it
SIGTERM (or SIGINT) while a realtime call is mid-answer or a WhatsApp message is being
answered, and checks what a caller, the provider and an operator see: ``/readyz`` 503 at
once, the reply finishing (or the pack's goodbye, then the socket closed), the WhatsApp reply
delivered before exit or answered exactly once after a restart, and exit status 0.

The realtime caller is tests/test_realtime.py's ``LoopbackTwilio`` over a real socket,
speaking a real LibriVox recording (the server's VAD is the real Silero model).
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.channel_kit import PUBLIC, SID, TOKEN, Factory, FakeTwilio, languages
from tests.node_kit import (
    Node,
    clean_env,
    first_event,
    free_port,
    open_call,
    post_whatsapp,
    sentence_frames,
    tone_frames,
)
from tests.test_realtime import LoopbackTwilio, _reply_done, ask, question_clip, wait_greeting
from voicebot.config import Settings
from voicebot.drain import stop_budget
from voicebot.packs import load_pack
from voicebot.realtime.speaker import sentences

ROOT = Path(__file__).resolve().parents[1]
PER_CHAR = 0.01  # seconds of tone per character: the greeting takes ≈2.3 s
ECHO = re.compile(r"Echo: (q\d{3})")


@dataclass
class Site:
    """Server processes sharing one data dir, and the fake Twilio they send to."""

    tmp: Path
    twilio: FakeTwilio
    nodes: list[Node] = field(default_factory=list)

    def start(self, **extra: str) -> Node:
        env = clean_env(
            VOICEBOT_PORT=str(free_port()),
            VOICEBOT_DATA_DIR=str(self.tmp / "var"),
            VOICEBOT_PUBLIC_URL=PUBLIC,
            VOICEBOT_LANGUAGES_DIR=str(self.tmp / "languages"),
            VOICEBOT_WARM_MODELS="0",
            VOICEBOT_VOICE_MODE="realtime",
            VOICEBOT_OUTBOX_BACKOFF_SECONDS="0.05",
            VOICEBOT_HTTP_TIMEOUT_SECONDS="3",
            SCALE_TONE_PER_CHAR=str(PER_CHAR),
            TWILIO_ACCOUNT_SID=SID,
            TWILIO_AUTH_TOKEN=TOKEN,
            TWILIO_API_BASE=self.twilio.base,
            **extra,
        )
        node = Node.web(env, self.tmp / f"web-{len(self.nodes)}.log")
        self.nodes.append(node)
        return node

    def answered(self) -> Counter[str]:
        """How many replies each WhatsApp question (``qNNN``) got."""
        return Counter(
            m.group(1) for s in self.twilio.sent if (m := ECHO.search(s.get("Body", "")))
        )


@pytest.fixture
async def site(tmp_path: Path, aiohttp_server: Factory) -> AsyncIterator[Site]:
    twilio = FakeTwilio()
    twilio.server = await aiohttp_server(twilio.app())
    languages(tmp_path, ["en"])
    s = Site(tmp_path, twilio)
    yield s
    for node in s.nodes:
        node.stop()


def phrase_frames(key: str) -> list[int]:
    pack = load_pack(ROOT / "languages" / "en")
    return [tone_frames(text, PER_CHAR) for text in sentences(pack.phrase(key))]


def close_to(counts: list[int], expected: list[int]) -> bool:
    """Same sentences, each within a frame (resampling rounds the last one)."""
    return len(counts) == len(expected) and all(
        abs(a - b) <= 1 for a, b in zip(counts, expected, strict=True)
    )


async def readyz_503(node: Node, timeout: float = 2.0) -> float:
    """Seconds from the signal until /readyz answered 503."""
    deadline = time.monotonic() + timeout
    while await node.status() != 503:
        assert time.monotonic() < deadline, node.logs()
        await asyncio.sleep(0.02)
    return time.monotonic() - node.signalled


async def log_line(node: Node, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in node.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {text!r} in the log\n{node.logs()}"
        await asyncio.sleep(0.02)


async def mid_answer(call: LoopbackTwilio) -> None:
    """Greeting heard, question asked, the reply's first sentence heard."""
    await wait_greeting(call)
    await ask(call, question_clip())
    await call.silence_until(lambda: len(call.heard(2)) >= 1, 10)


# ---------------------------------------------------------------------------- realtime calls


async def test_sigterm_mid_answer_lets_the_reply_finish_refuses_new_calls_and_exits_0(
    site: Site,
) -> None:
    answer = 7  # sentences: six of the answer and its source, ≈3.7 s of speech
    node = site.start(VOICEBOT_DRAIN_SECONDS="20", SCALE_ANSWER_SENTENCES=str(answer - 1))
    await node.ready()
    async with aiohttp.ClientSession() as http:
        call = await open_call(http, node, 1)
        await mid_answer(call)
        node.signal(signal.SIGTERM)

        async def meanwhile() -> tuple[float, LoopbackTwilio]:
            unready = await readyz_503(node)
            late = await open_call(http, node, 2)  # a call routed here while draining
            await late.silence_until(lambda: late.closed.is_set(), 10)
            return unready, late

        during = asyncio.create_task(meanwhile())
        await call.silence_until(lambda: _reply_done(call, 2, answer), 15)
        finished = time.monotonic() - node.signalled
        unready, late = await during
        await asyncio.sleep(0.3)
        still_running = node.proc.poll() is None  # the call is live: the drain waits for it
        hung_up = time.monotonic()
        await call.finish()
        code, took = await node.exit_code(10)
    after_hangup = time.monotonic() - hung_up
    gap = call.reply_gaps()[2]
    print(
        f"\nSHUTDOWN mid-answer: /readyz 503 {unready * 1000:.0f} ms after SIGTERM; reply "
        f"finished {finished:.2f} s after it (widest frame gap {gap * 1000:.0f} ms); exit "
        f"{after_hangup * 1000:.0f} ms after the caller hung up, {took:.2f} s after SIGTERM"
    )
    assert unready < 1.0
    # The reply went on to its last sentence, none of it cleared, at real-time pace.
    assert len(call.heard(2)) == answer and not call.times("clear"), call.summary()
    assert gap < 0.3, gap
    assert still_running, node.logs()
    # The new call heard "busy" (its two sentences, whole) and was hung up by the server.
    assert close_to(sentence_frames(late, 1), phrase_frames("busy")), late.summary()
    assert len(late.heard(1)) == 2 and late.close_code == aiohttp.WSCloseCode.OK
    assert code == 0 and after_hangup < 3.0, node.logs()
    assert "drain: realtime calls done" in node.log.read_text()


async def test_grace_shorter_than_the_reply_ends_with_the_goodbye_then_closes(
    site: Site,
) -> None:
    grace = 1.0
    node = site.start(VOICEBOT_DRAIN_SECONDS=str(grace), SCALE_ANSWER_SENTENCES="10")
    await node.ready()
    async with aiohttp.ClientSession() as http:
        call = await open_call(http, node, 1)
        await mid_answer(call)
        node.signal(signal.SIGTERM)
        await call.silence_until(lambda: call.closed.is_set(), 10)
        closed = time.monotonic()
        code, took = await node.exit_code(10)
    cleared = first_event(call, "clear", after=node.signalled)
    assert cleared is not None, call.summary()
    resumed = first_event(call, "media", after=cleared)
    assert resumed is not None, call.summary()
    goodbye = sentence_frames(call, 3)  # greeting r1, answer r2, goodbye r3
    print(
        f"\nSHUTDOWN grace {grace:.1f} s: clear {cleared - node.signalled:.2f} s after SIGTERM, "
        f"goodbye's first frame {(resumed - cleared) * 1000:.0f} ms later ({goodbye} frames), "
        f"exit {took:.2f} s after SIGTERM"
    )
    # At the deadline the answer is cut (clear) and the goodbye follows without a silence.
    assert grace <= cleared - node.signalled < grace + 0.6
    assert len(call.heard(2)) < 11 and resumed - cleared < 0.3
    assert close_to(goodbye, phrase_frames("goodbye")), call.summary()
    # The goodbye was heard to its end; only then did the server close the socket.
    heard = [t for t, kind, name in call.events if kind == "heard" and name.startswith("r3.")]
    assert len(heard) == 2 and heard[-1] <= closed and call.close_code == aiohttp.WSCloseCode.OK
    assert code == 0, node.logs()
    assert took < stop_budget(Settings(drain_seconds=grace))


async def test_a_second_signal_stops_at_once(site: Site) -> None:
    node = site.start(VOICEBOT_DRAIN_SECONDS="20")
    await node.ready()
    async with aiohttp.ClientSession() as http:
        call = await open_call(http, node, 1)
        await call.silence_until(lambda: bool(call.media_times), 5)  # the greeting is playing
        node.signal(signal.SIGTERM)
        await readyz_503(node)
        node.signal(signal.SIGINT)  # the operator insists
        await call.silence_until(lambda: call.closed.is_set(), 5)
        code, took = await node.exit_code(5)
    print(f"\nSHUTDOWN second signal: exit {took:.2f} s after it")
    assert code == 0 and took < 2.0, node.logs()  # not the 20 s drain, nor a 5 s socket wait
    assert call.close_code == aiohttp.WSCloseCode.OK
    assert "SIGINT again: stopping without waiting" in node.log.read_text()


# ---------------------------------------------------------------------------- WhatsApp turns


async def sigterm_mid_turn(
    site: Site, http: aiohttp.ClientSession, *, drain: float, turn: float
) -> tuple[Node, float]:
    """A node answering WhatsApp message q001 (``turn`` s per answer) when SIGTERM comes;
    returns it and how soon /readyz answered 503."""
    node = site.start(VOICEBOT_DRAIN_SECONDS=str(drain), SCALE_TURN_DELAY=str(turn))
    await node.ready()
    await post_whatsapp(http, node.base, 1)
    await log_line(node, "answering 'q001'")
    node.signal(signal.SIGTERM)
    return node, await readyz_503(node)


async def test_sigterm_during_a_whatsapp_turn_delivers_the_reply_before_exit(site: Site) -> None:
    async with aiohttp.ClientSession() as http:
        node, unready = await sigterm_mid_turn(site, http, drain=10, turn=1.5)
    code, took = await node.exit_code(15)
    print(f"\nSHUTDOWN WhatsApp turn in flight: reply sent, exit {took:.2f} s after SIGTERM")
    assert site.answered() == Counter({"q001": 1}), site.twilio.sent
    assert code == 0 and unready < 1.0 and took < 5, node.logs()  # not the whole 10 s


async def test_turn_cut_by_the_deadline_is_answered_exactly_once_after_restart(
    site: Site,
) -> None:
    async with aiohttp.ClientSession() as http:
        node, _ = await sigterm_mid_turn(site, http, drain=1, turn=5)
        await post_whatsapp(http, node.base, 2)  # still accepted (and persisted) while draining
        code, took = await node.exit_code(15)
        assert code == 0 and took < stop_budget(Settings(drain_seconds=1)), node.logs()
        assert not site.twilio.sent  # q001 was cut at the deadline, q002 never started
        restarted = site.start()  # same data dir, answers at once
        await restarted.ready()
        deadline = time.monotonic() + 15
        while len(site.answered()) < 2:
            assert time.monotonic() < deadline, restarted.logs()
            await asyncio.sleep(0.05)
        await post_whatsapp(http, restarted.base, 1)  # Twilio redelivers: still answered once
        await asyncio.sleep(1.0)  # a second answer would show up by now
    print(f"\nSHUTDOWN WhatsApp turn cut: exit {took:.2f} s after SIGTERM; {site.answered()}")
    assert site.answered() == Counter({"q001": 1, "q002": 1}), site.twilio.sent


# ---------------------------------------------------------------------------- the real CLI


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_voicebot_serve_itself_drains_and_exits_0(tmp_path: Path, sig: Any) -> None:
    """``python -m voicebot serve`` as deployed; no language packs, so no models load and
    the test stays light: this checks the command's own signal handling and exit status."""
    env = clean_env(
        VOICEBOT_PORT=str(free_port()),
        VOICEBOT_DATA_DIR=str(tmp_path / "var"),
        VOICEBOT_LANGUAGES_DIR=str(tmp_path / "none"),
        VOICEBOT_DRAIN_SECONDS="5",
    )
    node = Node.spawn("serve", ["-m", "voicebot", "serve"], env, tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + 20
        while True:
            assert node.proc.poll() is None and time.monotonic() < deadline, node.logs()
            try:
                if await node.status("/healthz") == 200:
                    break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        assert await node.status() == 503  # loading failed: no packs
        node.signal(sig)
        code, took = await node.exit_code(10)
    finally:
        node.stop()
    print(f"\nSHUTDOWN voicebot serve, {sig.name}: exit {code} after {took:.2f} s")
    assert code == 0 and took < 5, node.logs()
    assert "stopping: draining for up to 5s" in node.log.read_text()
