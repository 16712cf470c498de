"""Loopback fakes of Twilio (REST + recording/media URLs) and Meta's Graph API, and a kit that
runs the real app against them with fake engines.

The fakes are real aiohttp servers on 127.0.0.1: the app talks to them over HTTP exactly as it
would to api.twilio.com / graph.facebook.com, through ``TWILIO_API_BASE`` / ``META_GRAPH_BASE``.
Requests are signed here with twilio's own ``RequestValidator`` (not our code), and Meta
bodies with an independent HMAC, so signature tests do not grade our code against itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit
from xml.etree import ElementTree

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from twilio.request_validator import RequestValidator

from tests.fakes import CannedAnswerer, FakeTranscriber, ToneSynthesizer, fake_services, tone
from voicebot import audio
from voicebot.app import create_app
from voicebot.channels import RUNTIME, Runtime
from voicebot.config import MetaSettings, Settings, TwilioSettings
from voicebot.services import Services

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = "https://bot.example.com"
SID = "AC" + "0" * 32
TOKEN = "twilio-auth-token"
APP_SECRET = "meta-app-secret"
VERIFY = "meta-verify-token"
ACCESS = "meta-access-token"
PHONE_ID = "106540352242922"
CALLER = "+919812345678"
OUR_NUMBER = "+14155238886"


def ogg_note(seconds: float = 1.2) -> bytes:
    return audio.encode_ogg_opus(tone(seconds))


def wav_8k(seconds: float = 1.5) -> bytes:
    return audio.encode_wav(tone(seconds), 8000)


@dataclass
class FakeTwilio:
    """Messages.json, recordings and inbound media, with switchable failures."""

    sent: list[dict[str, str]] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # time.monotonic() of each accepted send
    auth: list[str] = field(default_factory=list)
    fail_statuses: list[int] = field(default_factory=list)  # popped per Messages.json call
    recording: bytes = b""
    recording_404s: int = 0
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    server: TestServer | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._messages)
        app.router.add_get("/2010-04-01/Accounts/{sid}/Recordings/{rid}", self._recording)
        app.router.add_get("/2010-04-01/Accounts/{sid}/Messages/{mid}/Media/{me}", self._media)
        return app

    @property
    def base(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def media_url(self, name: str) -> str:
        return f"{self.base}/2010-04-01/Accounts/{SID}/Messages/MM1/Media/{name}"

    def recording_url(self, name: str = "RE1") -> str:
        return f"{self.base}/2010-04-01/Accounts/{SID}/Recordings/{name}"

    async def _messages(self, request: web.Request) -> web.Response:
        self.auth.append(request.headers.get("Authorization", ""))
        form = {k: str(v) for k, v in (await request.post()).items()}
        if self.fail_statuses:
            return web.json_response({"code": 20500}, status=self.fail_statuses.pop(0))
        self.sent.append(form)
        self.sent_at.append(time.monotonic())
        return web.json_response({"sid": f"SM{len(self.sent):032d}"}, status=201)

    async def _recording(self, request: web.Request) -> web.Response:
        self.auth.append(request.headers.get("Authorization", ""))
        if self.recording_404s > 0:
            self.recording_404s -= 1
            raise web.HTTPNotFound()
        return web.Response(body=self.recording, content_type="audio/x-wav")

    async def _media(self, request: web.Request) -> web.Response:
        self.auth.append(request.headers.get("Authorization", ""))
        data, kind = self.media[request.match_info["me"]]
        return web.Response(body=data, content_type=kind)


@dataclass
class FakeMeta:
    """Graph API: media lookup + download, media upload, messages."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[dict[str, str]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    media: dict[str, bytes] = field(default_factory=dict)
    fail_statuses: list[int] = field(default_factory=list)
    fail_audio: list[int] = field(default_factory=list)  # only for type=audio sends
    server: TestServer | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/{number}/messages", self._messages)
        app.router.add_post("/{number}/media", self._upload)
        app.router.add_get("/download/{media}", self._download)
        app.router.add_get("/{media}", self._lookup)
        return app

    @property
    def base(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def _bearer(self, request: web.Request) -> None:
        self.auth.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != f"Bearer {ACCESS}":
            raise web.HTTPUnauthorized()

    async def _lookup(self, request: web.Request) -> web.Response:
        self._bearer(request)
        media = request.match_info["media"]
        if media not in self.media:
            raise web.HTTPNotFound()
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "url": f"{self.base}/download/{media}",
                "mime_type": "audio/ogg",
                "file_size": str(len(self.media[media])),
                "id": media,
            }
        )

    async def _download(self, request: web.Request) -> web.Response:
        self._bearer(request)
        return web.Response(body=self.media[request.match_info["media"]], content_type="audio/ogg")

    async def _upload(self, request: web.Request) -> web.Response:
        self._bearer(request)
        form = await request.post()
        file = form["file"]
        assert isinstance(file, web.FileField)
        data = file.file.read()
        self.uploads.append(
            {
                "messaging_product": str(form["messaging_product"]),
                "type": str(form["type"]),
                "content_type": file.content_type,
                "size": str(len(data)),
                "magic": data[:4].decode("latin-1"),
            }
        )
        return web.json_response({"id": f"media-{len(self.uploads)}"})

    async def _messages(self, request: web.Request) -> web.Response:
        self._bearer(request)
        body = await request.json()
        failures = self.fail_audio if body.get("type") == "audio" else []
        for pending in (self.fail_statuses, failures):
            if pending:
                return web.json_response({"error": {"code": 2}}, status=pending.pop(0))
        self.sent.append(body)
        return web.json_response({"messages": [{"id": f"wamid.out{len(self.sent)}"}]})


def languages(tmp: Path, codes: Iterable[str]) -> Path:
    """A languages dir holding only some packs (fewer prompts to synthesise per test)."""
    root = tmp / "languages"
    for code in codes:
        shutil.copytree(ROOT / "languages" / code, root / code)
    return root


@dataclass
class Kit:
    """The real app (fake engines) + the fakes + helpers to sign and post like the providers."""

    client: TestClient[Any, Any]
    services: Services
    settings: Settings
    twilio: FakeTwilio
    meta: FakeMeta

    @property
    def app(self) -> web.Application:
        app = self.client.server.app
        assert app is not None
        return app

    @property
    def rt(self) -> Runtime:
        return self.app[RUNTIME]

    def twilio_headers(self, path_qs: str, params: dict[str, str]) -> dict[str, str]:
        signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path_qs, params)
        return {"X-Twilio-Signature": signature}

    async def twilio_post(
        self, path_qs: str, params: dict[str, str], *, signed: bool = True
    ) -> tuple[int, str, float]:
        """POST like Twilio does; returns (status, body, seconds to the full response)."""
        headers = self.twilio_headers(path_qs, params) if signed else {}
        start = time.perf_counter()
        resp = await self.client.post(path_qs, data=params, headers=headers)
        body = await resp.text()
        return resp.status, body, time.perf_counter() - start

    async def meta_post(self, doc: Any, *, raw: bytes | None = None) -> tuple[int, float]:
        body = raw if raw is not None else json.dumps(doc).encode()
        signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
        start = time.perf_counter()
        resp = await self.client.post(
            "/whatsapp/cloud",
            data=body,
            headers={"X-Hub-Signature-256": signature, "Content-Type": "application/json"},
        )
        await resp.read()
        return resp.status, time.perf_counter() - start

    async def get_media(self, url: str) -> tuple[int, str, bytes]:
        resp = await self.client.get(path_of(url))
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()

    async def prompts_ready(self) -> None:
        await asyncio.wait_for(self.rt.prompts.complete.wait(), 20)


def path_of(url: str) -> str:
    """A public URL from TwiML → the path to request from the test client."""
    parts = urlsplit(url)
    assert url.startswith(PUBLIC), url
    return parts.path + (f"?{parts.query}" if parts.query else "")


def whatsapp_form(sid: str, body: str = "", *, phone: str = CALLER, **extra: str) -> dict[str, str]:
    form = {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "AccountSid": SID,
        "From": f"whatsapp:{phone}",
        "To": f"whatsapp:{OUR_NUMBER}",
        "Body": body,
        "NumMedia": "0",
        "ProfileName": "राम",
        "WaId": phone.lstrip("+"),
        "ApiVersion": "2010-04-01",
    }
    form.update(extra)
    return form


def voice_note_form(twilio: FakeTwilio, sid: str, note: bytes | None = None) -> dict[str, str]:
    """A WhatsApp voice note as Twilio posts it; the fake serves ``note`` (default: 1.2 s of
    OGG/Opus) as media ME1."""
    twilio.media["ME1"] = (ogg_note() if note is None else note, "audio/ogg")
    return whatsapp_form(
        sid, NumMedia="1", MediaUrl0=twilio.media_url("ME1"), MediaContentType0="audio/ogg"
    )


def call_form(call: str = "CA" + "1" * 32, phone: str = CALLER, **extra: str) -> dict[str, str]:
    form = {
        "CallSid": call,
        "AccountSid": SID,
        "From": phone,
        "To": OUR_NUMBER,
        "CallStatus": "in-progress",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }
    form.update(extra)
    return form


def meta_doc(
    *messages: dict[str, Any], statuses: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_ID},
        "contacts": [{"profile": {"name": "राम"}, "wa_id": CALLER.lstrip("+")}],
    }
    if messages:
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = statuses
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}],
    }


def twiml_tree(body: str) -> ElementTree.Element:
    root = ElementTree.fromstring(body)
    assert root.tag == "Response"
    return root


async def until(check: Callable[[], bool], *, timeout: float = 5.0, step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


async def until_async(check: Callable[[], Awaitable[bool]], *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def encode_query(path: str, **query: object) -> str:
    return f"{path}?{urlencode({k: str(v) for k, v in query.items()})}"


Factory = Callable[..., Awaitable[Any]]


async def start_fakes(aiohttp_server: Factory) -> tuple[FakeTwilio, FakeMeta]:
    twilio, meta = FakeTwilio(), FakeMeta()
    twilio.server = await aiohttp_server(twilio.app())
    meta.server = await aiohttp_server(meta.app())
    return twilio, meta


def kit_settings(
    tmp: Path,
    twilio: FakeTwilio | None,
    meta: FakeMeta | None,
    *,
    langs: Iterable[str] = ("en", "hi"),
    **overrides: Any,
) -> Settings:
    values: dict[str, Any] = {
        "languages_dir": languages(tmp, langs)
        if not (tmp / "languages").exists()
        else tmp / "languages",
        "data_dir": tmp / "var",
        "public_url": PUBLIC,
        "warm_models": False,
        "outbox_backoff_seconds": 0.01,
        "voice_answer_wait_seconds": 2.0,
        "voice_poll_wait_seconds": 0.2,
        "twilio": TwilioSettings(SID, TOKEN, twilio.base) if twilio else TwilioSettings(),
        "meta": MetaSettings(APP_SECRET, VERIFY, ACCESS, PHONE_ID, meta.base)
        if meta
        else MetaSettings(),
    }
    values.update(overrides)
    return Settings(**values)


async def start_kit(
    aiohttp_client: Factory,
    aiohttp_server: Factory,
    tmp: Path,
    *,
    fakes: tuple[FakeTwilio, FakeMeta] | None = None,
    transcriber: FakeTranscriber | None = None,
    synthesizer: ToneSynthesizer | None = None,
    answerer: CannedAnswerer | None = None,
    services: Services | None = None,
    **overrides: Any,
) -> Kit:
    twilio, meta = fakes or await start_fakes(aiohttp_server)
    settings = services.settings if services else kit_settings(tmp, twilio, meta, **overrides)
    if services is None:
        services = fake_services(
            settings, transcriber=transcriber, synthesizer=synthesizer, answerer=answerer
        )
    client = await aiohttp_client(create_app(settings, services))
    kit = Kit(client=client, services=services, settings=settings, twilio=twilio, meta=meta)
    await asyncio.wait_for(kit.rt.workers.wait(), 5)
    return kit
