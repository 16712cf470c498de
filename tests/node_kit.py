"""Real server processes for tests: ``tests.scale_node`` (the real app, worker and drain with
fake model stages) or ``voicebot serve`` itself, on a free loopback port with a log file; and
what the providers send them: signed Twilio WhatsApp webhooks and realtime calls (the
``LoopbackTwilio`` of tests/test_realtime.py over a real socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from twilio.request_validator import RequestValidator

from tests.channel_kit import PUBLIC, TOKEN, whatsapp_form
from tests.test_realtime import FRAME, LoopbackTwilio
from voicebot.channels.twilio_stream import stream_token

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**values: str) -> dict[str, str]:
    """This environment without any voicebot, Twilio or Meta setting, plus ``values``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VOICEBOT_", "TWILIO_", "META_"))
    }
    return env | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)} | values


@dataclass
class Node:
    role: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    signalled: float = 0.0  # time.monotonic() of the last signal sent
    dumps_stacks: bool = False  # tests.scale_node: SIGUSR2/SIGUSR1 write its stacks to the log

    @classmethod
    def spawn(cls, role: str, argv: Sequence[str], env: dict[str, str], log: Path) -> Node:
        """Run ``argv`` (with ``sys.executable``) on ``env["VOICEBOT_PORT"]``."""
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *argv], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        return cls(
            role, proc, int(env["VOICEBOT_PORT"]), log, dumps_stacks="tests.scale_node" in argv
        )

    @classmethod
    def web(cls, env: dict[str, str], log: Path) -> Node:
        """A web node: the real app and ``voicebot.drain.serve`` with fake model stages."""
        return cls.spawn("web", ["-m", "tests.scale_node", "web"], env, log)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return f"--- {self.log.name}\n{self.log.read_text(errors='replace')[-4000:]}"

    async def status(self, path: str = "/readyz") -> int:
        async with aiohttp.ClientSession() as http, http.get(self.base + path) as resp:
            return resp.status

    async def ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.logs()
            with contextlib.suppress(aiohttp.ClientError):
                if await self.status() == 200:
                    return
            assert time.monotonic() < deadline, self.logs()
            await asyncio.sleep(0.05)

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        self.signalled = time.monotonic()
        self.proc.send_signal(sig)

    async def exit_code(self, timeout: float) -> tuple[int, float]:
        """Wait for the process to end: (exit code, seconds since the last signal)."""
        try:
            code = await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired as err:
            message = f"{self.role} still running after {timeout} s\n{self.logs()}"
            raise AssertionError(message) from err
        return code, time.monotonic() - self.signalled

    def stop(self) -> None:
        """Terminate (SIGTERM, then SIGKILL after 15 s) and reap. A node still running after
        15 s is hung: tests.scale_node writes its task and thread stacks to its log first."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            if self.dumps_stacks:
                for sig in (signal.SIGUSR2, signal.SIGUSR1):
                    self.proc.send_signal(sig)
                    time.sleep(0.5)
            print(f"\n{self.role} on port {self.port} hung on SIGTERM; stacks in {self.log}")
            self.proc.kill()
            self.proc.wait(5)


async def post_whatsapp(
    http: aiohttp.ClientSession, base: str, i: int, *, retry_for: float = 0.0
) -> None:
    """One signed WhatsApp message ``qNNN``; retried on 5xx / refused like a provider would."""
    form = whatsapp_form(f"SM{i:032d}", f"q{i:03d}", phone=f"+9198{i % 10:08d}")
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + "/twilio/whatsapp", form)
    deadline = time.monotonic() + retry_for
    while True:
        try:
            async with http.post(
                base + "/twilio/whatsapp", data=form, headers={"X-Twilio-Signature": signature}
            ) as resp:
                await resp.read()
                if resp.status == 200:
                    return
                status = resp.status
        except aiohttp.ClientError as err:
            status = err.__class__.__name__  # type: ignore[assignment]
        assert time.monotonic() < deadline, f"message {i} not accepted: {status}"
        await asyncio.sleep(0.1)


async def open_call(http: aiohttp.ClientSession, node: Node, n: int) -> LoopbackTwilio:
    """Twilio's side of realtime call ``n`` to ``node``: socket, ``connected``, ``start``."""
    sid = f"CA{n:032d}"
    ws = await http.ws_connect(f"ws://127.0.0.1:{node.port}/twilio/stream")
    twilio = LoopbackTwilio(ws, sid, f"MZ{n:032d}")
    await twilio.begin(lang="en", token=stream_token(sid, TOKEN))
    return twilio


def sentence_frames(twilio: LoopbackTwilio, reply: int) -> list[int]:
    """Frames of each sentence of ``reply`` as sent (a sentence's frames precede its mark)."""
    counts: list[int] = []
    frames = 0
    for _, kind, detail in twilio.events:
        if kind == "media":
            frames += 1
        elif kind == "clear":
            frames = 0
        elif kind == "mark":
            if detail.startswith(f"r{reply}."):
                counts.append(frames)
            frames = 0
    return counts


def tone_frames(text: str, per_char: float) -> int:
    """Frames of tests.fakes.ToneSynthesizer's tone for ``text`` on the phone line."""
    seconds = min(0.2 + per_char * len(text), 8.0)
    return -(-int(22050 * seconds) * 8000 // 22050 // FRAME)


def first_event(twilio: LoopbackTwilio, kind: str, after: float = 0.0) -> float | None:
    return next((t for t, k, _ in twilio.events if k == kind and t > after), None)
