"""``serve`` as a child process: ``build_services`` + warm like ``serve`` (peak RSS), then, when
the channels are mounted, the WhatsApp benchmarks against it (``voicebot.bench.whatsapp``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from voicebot.bench.core import Log, Plan, proc_status
from voicebot.bench.figures import Report
from voicebot.bench.procs import stop_process
from voicebot.bench.twilio import PUBLIC, SID, TOKEN, FakeTwilio, fake_twilio
from voicebot.bench.whatsapp import whatsapp_load
from voicebot.config import MetaSettings, Settings, TwilioSettings
from voicebot.services import Services

__all__ = ["bench_serve", "serve_child", "warm_like_serve"]


def _emit(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


async def warm_like_serve(services: Services) -> dict[str, Any]:
    """``Services.warm`` as serve runs it (a voice that cannot speak is only logged there),
    then one question, as after a server's first caller."""
    out: dict[str, Any] = {"services_warm": "ok"}
    try:
        await services.warm()
    except Exception as err:  # recorded: the peak RSS is then that of a partly warm server
        out["services_warm"] = f"failed: {err.__class__.__name__}: {err}"
    default = services.packs.resolve(services.settings.default_language)
    await services.pipeline.ask("pm kisan amount", lang=default.code)
    return out


def serve_child() -> None:
    """Child process: build services like ``serve``, warm, report peak RSS; then serve."""
    spec = json.loads(sys.argv[1])
    asyncio.run(_serve_child(spec))


async def _serve_child(spec: dict[str, Any]) -> None:
    from aiohttp import web

    from voicebot.app import create_app
    from voicebot.logs import setup_logging
    from voicebot.services import build_services

    setup_logging()
    config = Path(spec["config"]) if spec.get("config") else None
    settings = Settings.load(config).with_overrides(
        data_dir=Path(spec["data_dir"]),
        model_dir=Path(spec["model_dir"]),
        languages_dir=Path(spec["languages_dir"]),
        knowledge_dir=Path(spec["knowledge_dir"]),
        host="127.0.0.1",
        public_url=PUBLIC,
        twilio=TwilioSettings(SID, TOKEN, spec["twilio_base"]),
        meta=MetaSettings(),
        warm_models=True,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    services = await build_services(settings)
    t1 = time.perf_counter()
    warm = await warm_like_serve(services)
    t2 = time.perf_counter()
    _emit(
        {
            "event": "memory",
            "build_s": round(t1 - t0, 2),
            "warm_s": round(t2 - t1, 2),
            "warm": warm,
            "whisper_loaded": sorted(services.transcribers.loaded) if services.transcribers else [],
            **proc_status(),
        }
    )
    app = create_app(settings, services)
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    from voicebot.channels import RUNTIME

    async with asyncio.timeout(60):
        await app[RUNTIME].workers.wait()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    _emit({"event": "listening", "port": port})
    await stop.wait()
    await runner.cleanup()


async def bench_serve(
    report: Report,
    settings: Settings,
    plan: Plan,
    questions: list[dict[str, Any]],
    config: Path | None,
    log: Log,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="voicebot-bench-") as tmp:
        data_dir = Path(tmp) / "var"
        data_dir.mkdir()
        index = Path(settings.data_dir) / "index"
        if index.is_dir():  # the embedding cache, so the child does not re-embed the KB
            shutil.copytree(index, data_dir / "index")
        async with fake_twilio() as (fake, base):
            spec = {
                "config": str(config.resolve()) if config else None,
                "data_dir": str(data_dir),
                "model_dir": str(Path(settings.models_path).resolve()),
                "languages_dir": str(Path(settings.languages_dir).resolve()),
                "knowledge_dir": str(Path(settings.knowledge_dir).resolve()),
                "twilio_base": base,
            }
            stderr_path = Path(tmp) / "serve.log"
            with stderr_path.open("wb") as stderr:
                log("serve: child process: build_services + warm")
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    "from voicebot.bench.serve import serve_child; serve_child()",
                    json.dumps(spec),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stderr,
                )
                try:
                    out = await _drive_serve(report, proc, fake, plan, questions, log)
                except Exception as err:
                    tail = stderr_path.read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"{err}; serve log tail: {tail}") from err
                finally:
                    await stop_process(proc, 30)
            log_text = stderr_path.read_text(errors="replace")
            out["serve_log_errors"] = sum(1 for line in log_text.splitlines() if " ERROR " in line)
    return out


async def _read_event(proc: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout):
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"serve child exited (code {await proc.wait()})")
            with contextlib.suppress(ValueError):
                event: dict[str, Any] = json.loads(line)
                if isinstance(event, dict) and "event" in event:
                    return event


async def _drive_serve(
    report: Report,
    proc: asyncio.subprocess.Process,
    fake: FakeTwilio,
    plan: Plan,
    questions: list[dict[str, Any]],
    log: Log,
) -> dict[str, Any]:
    memory = await _read_event(proc, 300)
    report.figure("serve.vm_hwm_mb", memory.get("VmHWM"))
    out: dict[str, Any] = {"memory": memory}
    listening = await _read_event(proc, 120)
    port = int(listening["port"])
    out["whatsapp"] = await whatsapp_load(report, port, fake, plan, questions, log)
    after = proc_status(proc.pid)
    out["memory_after_load"] = after
    report.figure("serve.vm_hwm_after_load_mb", after.get("VmHWM"))
    return out
