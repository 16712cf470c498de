"""Operator console: a static page plus a small JSON API under ``/console``, behind a token.

``setup_console`` mounts it only when ``VOICEBOT_OPERATOR_TOKEN`` is set (fail closed: without
it ``/console`` answers 404 and the log says why). The browser logs in once with the token and
gets an HttpOnly cookie holding an HMAC of it (the token itself never sits in the cookie);
scripts may send ``Authorization: Bearer <token>`` instead. Panels:

* packs: the ``packs list`` capability matrix plus the last ``packs eval`` verdict per pack;
* try it: a typed or recorded question → transcript → translation (when an MT model serves
  the pack) → retrieved sources → answer, with the reply audio as WAV;
* conversations: the audit log, redacted again on the way out;
* metrics: a JSON summary of ``/metrics``.

The page is plain HTML/JS/CSS from ``static/`` with no build step and nothing fetched from
other hosts (a strict Content-Security-Policy says so to the browser too).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from voicebot.appkeys import METRICS, SETTINGS, STATE
from voicebot.config import Settings
from voicebot.errors import VoicebotError
from voicebot.logs import redact
from voicebot.packs import Capabilities, LanguagePack
from voicebot.services import Services
from voicebot.store import AuditRecord, Store

__all__ = ["COOKIE", "setup_console"]

_LOGGER = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
COOKIE = "voicebot_console"
_STORE = web.AppKey("console_store", Store)
_CSP = (
    "default-src 'self'; img-src 'self' data:; media-src 'self' data: blob:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
)
_METRIC_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup_console(app: web.Application, settings: Settings) -> None:
    """Mount ``/console`` and its API when an operator token is configured; called by the app."""
    if not settings.operator_token:
        _LOGGER.warning("operator console is not mounted: VOICEBOT_OPERATOR_TOKEN not set")
        return
    app.router.add_get("/console", _redirect)
    app.router.add_get("/console/", _index)
    app.router.add_static("/console/static/", STATIC, show_index=False)
    app.router.add_post("/console/api/login", _login)
    app.router.add_post("/console/api/logout", _logout)
    app.router.add_get("/console/api/session", _guard(_session))
    app.router.add_get("/console/api/packs", _guard(_packs))
    app.router.add_post("/console/api/try", _guard(_try))
    app.router.add_get("/console/api/conversations", _guard(_conversations))
    app.router.add_get("/console/api/metrics", _guard(_metrics))
    app.cleanup_ctx.append(_lifecycle)


# --------------------------------------------------------------------------- auth


def _session_value(token: str) -> str:
    """What the cookie holds: a keyed hash of the token, so the cookie never leaks it."""
    return hmac.new(token.encode("utf-8"), b"voicebot-console-session", hashlib.sha256).hexdigest()


def _authorised(request: web.Request) -> bool:
    token = request.app[SETTINGS].operator_token
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return hmac.compare_digest(header[7:].strip().encode(), token.encode())
    cookie = request.cookies.get(COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie, _session_value(token))


def _guard(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if not _authorised(request):
            return web.json_response({"error": "unauthorised"}, status=401)
        response = await handler(request)
        response.headers["Cache-Control"] = "no-store"
        return response

    return guarded


async def _login(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        body = await request.json()
    except ValueError:
        body = {}
    token = str(body.get("token", "")) if isinstance(body, dict) else ""
    if not hmac.compare_digest(token.encode(), settings.operator_token.encode()):
        await asyncio.sleep(0.5)  # slow down guessing
        return web.json_response({"error": "unauthorised"}, status=401)
    response = web.json_response({"ok": True})
    response.set_cookie(
        COOKIE,
        _session_value(settings.operator_token),
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=settings.public_url.startswith("https://"),
        max_age=12 * 3600,
    )
    return response


async def _logout(request: web.Request) -> web.Response:
    response = web.json_response({"ok": True})
    response.del_cookie(COOKIE, path="/console")
    return response


async def _session(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


# --------------------------------------------------------------------------- pages


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/console/")


async def _index(request: web.Request) -> web.FileResponse:
    response = web.FileResponse(STATIC / "index.html")
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def _services(request: web.Request) -> Services | None:
    state = request.app[STATE]
    return state.services if state.ready.is_set() else None


def _require_services(request: web.Request) -> Services:
    services = _services(request)
    if services is None:
        raise web.HTTPServiceUnavailable(
            text='{"error":"loading"}', content_type="application/json"
        )
    return services


# --------------------------------------------------------------------------- packs


def _capabilities(services: Services, models_path: Path) -> Capabilities:
    """What the running engines can do, probed cheaply (no model is loaded for this)."""
    from voicebot.errors import ModelError
    from voicebot.models import whisper_languages

    synthesizer = services.synthesizer

    def stt_languages(model: str) -> list[str]:
        try:
            return whisper_languages(model, models_path)
        except ModelError:
            return []

    return Capabilities(
        stt_languages=stt_languages if services.transcribers is not None else None,
        voice_available=synthesizer.supports if synthesizer is not None else None,
    )


async def _packs(request: web.Request) -> web.Response:
    from voicebot.commands.packs import capability_row
    from voicebot.packeval import load_report, report_path

    settings = request.app[SETTINGS]
    services = _require_services(request)
    caps = _capabilities(services, settings.models_path)
    report = await asyncio.to_thread(load_report, report_path(settings.data_dir))
    rows = []
    for pack in services.packs:
        row: dict[str, Any] = dict(await asyncio.to_thread(capability_row, pack, caps))
        recorded = report.get(pack.code)
        row["gate"] = "-" if recorded is None else ("pass" if recorded.get("passed") else "fail")
        row["quality"] = _quality(recorded, pack)
        rows.append(row)
    return web.json_response({"packs": rows})


def _quality(recorded: dict[str, Any] | None, pack: LanguagePack) -> dict[str, Any]:
    keys = ("asr_cer", "answer_accuracy", "text_accuracy", "tts_cer", "cases", "measured_at")
    measured = {k: recorded.get(k) for k in keys} if recorded else {}
    return {
        **measured,
        "failures": list(recorded.get("failures", [])) if recorded else [],
        "thresholds": dict(pack.quality),
    }


# --------------------------------------------------------------------------- try it


async def _try(request: web.Request) -> web.Response:
    """Answer one typed (JSON) or recorded (multipart ``audio``) question like a real turn."""
    from voicebot.audio import decode, encode_wav

    settings = request.app[SETTINGS]
    services = _require_services(request)
    pipeline = services.pipeline
    start = time.perf_counter()
    transcript: str | None = None
    if request.content_type.startswith("multipart/"):
        form = await request.post()
        lang = str(form.get("lang", settings.default_language))
        upload = form.get("audio")
        data = upload.file.read() if isinstance(upload, web.FileField) else b""
        audio = await asyncio.to_thread(
            decode, data, max_seconds=settings.max_audio_seconds, max_bytes=settings.max_audio_bytes
        )
        heard = await pipeline.transcribe(audio, lang=lang)
        question = transcript = heard.text.strip()
    else:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not str(body.get("text", "")).strip():
            return web.json_response({"error": "question-empty"}, status=400)
        lang = str(body.get("lang", settings.default_language))
        question = str(body["text"]).strip()[:1000]
    pack = services.packs.resolve(lang)
    translation = await _translation(services, pack, question)
    answer = await pipeline.ask(question, lang=pack.code)
    audio_url = None
    with contextlib.suppress(VoicebotError):
        reply = await pipeline.speak(pipeline.speech_text(answer, pack), lang=pack.code)
        wav = await asyncio.to_thread(encode_wav, reply)
        audio_url = "data:audio/wav;base64," + base64.b64encode(wav).decode("ascii")
    latency = (time.perf_counter() - start) * 1000
    store = request.app.get(_STORE)
    if store is not None:
        await store.audit(
            AuditRecord(
                turn=f"console-{time.time_ns()}",
                channel="console",
                user="operator",
                lang=pack.code,
                question=question,
                outcome="abstained" if answer.abstained else "answered",
                latency_ms=latency,
                sources=tuple(s.entry_id for s in answer.sources),
                engines={"answerer": services.answerer.name},
            )
        )
    return web.json_response(
        {
            "lang": pack.code,
            "question": question,
            "transcript": transcript,
            "translation": translation,
            "answer": answer.text,
            "abstained": answer.abstained,
            "scheme": answer.scheme,
            "sources": [
                {"title": s.title, "url": s.url, "as_of": s.as_of, "entry": s.entry_id}
                for s in answer.sources
            ],
            "timings_ms": {**answer.timings_ms, "total": round(latency, 1)},
            "audio": audio_url,
        }
    )


async def _translation(services: Services, pack: LanguagePack, question: str) -> str | None:
    """The pivot-language question when an MT model serves this pack, else None."""
    translator = services.translators.get(pack.code)
    if translator is None or pack.code not in services.packs or "en" not in services.packs:
        return None
    try:
        return await translator.translate(
            question, source=pack.mt_code, target=services.packs.get("en").mt_code
        )
    except VoicebotError:
        return None


# --------------------------------------------------------------------------- conversations


async def _conversations(request: web.Request) -> web.Response:
    store = request.app.get(_STORE)
    if store is None:
        return web.json_response({"conversations": []})
    try:
        limit = max(1, min(int(request.query.get("limit", "50")), 500))
    except ValueError:
        limit = 50
    rows = await store.audit_log(limit)
    out = [
        {
            "ts": row["ts"],
            "channel": row["channel"],
            "user": str(row["user"])[:8],  # a pseudonymous hash; a prefix is enough to group
            "lang": row["lang"],
            "question": redact(str(row["question"])),
            "sources": row["sources"],
            "latency_ms": row["latency_ms"],
            "outcome": row["outcome"],
        }
        for row in rows
    ]
    return web.json_response({"conversations": out})


# --------------------------------------------------------------------------- metrics


def metrics_summary(text: str) -> dict[str, Any]:
    """Counters and per-stage latency means from the Prometheus text of ``/metrics``."""
    counters: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        match = _METRIC_LINE.match(line)
        if match is None or line.startswith("#"):
            continue
        name, raw_labels, raw_value = match.groups()
        try:
            value = float(raw_value)
        except ValueError:
            continue
        labels = dict(_LABEL.findall(raw_labels or ""))
        if name == "voicebot_errors_total":
            errors[labels.get("code", "?")] += value
        elif name == "voicebot_stage_seconds_sum":
            sums[labels.get("stage", "?")] = value
        elif name == "voicebot_stage_seconds_count":
            counts[labels.get("stage", "?")] = value
        elif name.endswith("_total") or not name.endswith(("_bucket", "_sum", "_count")):
            counters[name] += value
    stages = {
        stage: {"count": int(counts[stage]), "mean_ms": round(sums[stage] / counts[stage] * 1000)}
        for stage in sorted(counts)
        if counts[stage] and stage in sums
    }
    return {"counters": dict(counters), "errors": dict(errors), "stages": stages}


async def _metrics(request: web.Request) -> web.Response:
    summary = metrics_summary(request.app[METRICS].render())
    state = request.app[STATE]
    summary["ready"] = state.ready.is_set()
    summary["uptime_s"] = round(time.monotonic() - state.started)
    return web.json_response(summary)


# --------------------------------------------------------------------------- lifecycle


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Open the SQLite store for the audit log (its own connection; WAL allows several)."""
    store = await Store.open(app[SETTINGS].data_dir)
    app[_STORE] = store
    try:
        yield
    finally:
        await store.close()
