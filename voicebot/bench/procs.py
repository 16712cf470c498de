"""Processes the bench starts: a throw-away ``redis-server``, ``voicebot`` nodes, and stopping
them (SIGTERM, then SIGKILL) or killing them outright."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicebot.bench.core import process_cpu_seconds

__all__ = ["Node", "redis_server", "settle", "start_node", "stop_process", "wait_ready"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def stop_process(proc: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    """SIGTERM (let it drain), then SIGKILL if it is still there after ``timeout``."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(timeout):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


@contextlib.asynccontextmanager
async def redis_server(root: Path) -> AsyncIterator[str]:
    """A ``redis-server`` on a free loopback port with its files in ``root``: its URL.

    No persistence (the bench measures message flow, not durability). Raises
    ``FileNotFoundError`` when ``redis-server`` is not installed.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError("redis-server is not installed (apt install redis-server)")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        exe,
        *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(root)),
        *("--save", "", "--appendonly", "no", "--logfile", str(root / "redis.log")),
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            break
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        await stop_process(proc, 10)


@dataclass
class Node:
    """A ``voicebot`` subprocess with an HTTP port (``/readyz``, ``/metrics``)."""

    name: str
    proc: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye (what a crash or the OOM killer does)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def tail(self, chars: int = 1500) -> str:
        return f"--- {self.name}\n" + self.log.read_text(errors="replace")[-chars:]


async def start_node(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    log_dir: Path,
    config: Path | None = None,
) -> Node:
    """``python -m voicebot [--config C] <argv> --port <free port>``, its output in a log."""
    port = free_port()
    log = log_dir / f"{name}.log"
    global_args = ["--config", str(config)] if config else []
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "voicebot", *global_args, *argv, "--port", str(port)),
            env=dict(env),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    return Node(name, proc, port, log)


async def wait_ready(http: Any, nodes: Sequence[Node], timeout: float) -> None:
    """Until every node's ``/readyz`` says 200; raises with the logs if one dies or is late."""
    import aiohttp

    deadline = time.monotonic() + timeout
    for node in nodes:
        while True:
            if node.proc.returncode is not None:
                raise RuntimeError(f"{node.name} exited ({node.proc.returncode})\n{node.tail()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(node.base + "/readyz") as resp:
                    if resp.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} not ready in {timeout:g} s\n{node.tail()}")
            await asyncio.sleep(0.1)


async def settle(
    nodes: Sequence[Node], limit: float, idle: float = 0.05, window: float = 1.0
) -> float:
    """Until no node (with its child processes) uses more than ``idle`` of a core over
    ``window`` seconds — start-up work such as synthesising voice prompts is done — or
    ``limit`` seconds passed; how long that took."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = [process_cpu_seconds(n.proc.pid) for n in nodes]
        await asyncio.sleep(window)
        after = [process_cpu_seconds(n.proc.pid) for n in nodes]
        if all((b - a) / window <= idle for a, b in zip(before, after, strict=True)):
            break
    return time.monotonic() - start
