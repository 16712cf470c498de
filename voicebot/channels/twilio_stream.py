"""``GET /twilio/stream``: Twilio Media Streams over WebSocket, bidirectional (protocols.md §2).

The voice webhook answers in realtime mode with ``stream_twiml``: ``<Connect><Stream>`` to our
``wss://`` URL with the call's language and a per-call token as ``<Parameter>``s, because the
stream URL cannot carry a query string (§2.1). Here we

* authenticate: the token must equal HMAC-SHA256(auth token, CallSid) and each CallSid may
  open one stream (§2.6, defence in depth). ``X-Twilio-Signature`` on the upgrade is checked
  too, over the ``wss://`` URL with no parameters, but on its own it proves little: the URL
  is the same for every call, so one captured signature would open streams forever; and
  whether Twilio signs exactly that URL is still to be confirmed on real traffic (appendix
  A.1). It is required only with ``RealtimeConfig.require_signature``. A socket that does not
  authenticate is closed with 1008 before any of its audio is looked at;
* parse Twilio's JSON (§2.2) strictly but without ever failing: a malformed message is
  counted under ``voicebot_stream_bad_messages_total{reason=…}`` and skipped;
* speak Twilio's outbound JSON (§2.3) for the call's ``CallSession``;
* drain when the process stops (voicebot/drain.py): a stream that starts now hears the
  pack's ``busy`` phrase and is hung up; live calls go on until the deadline, then hear
  ``goodbye`` and the socket closes (closing it ends the call, §2.7). A call stays on the
  process that holds its socket, so this is all a rolling restart can do for it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

from aiohttp import WSCloseCode, WSMsgType, web

from voicebot.appkeys import METRICS, STATE
from voicebot.channels.signatures import verify_twilio
from voicebot.channels.twiml import Verb, response
from voicebot.config import Settings
from voicebot.drain import DRAIN, FAREWELL_SECONDS, until
from voicebot.metrics import Metrics
from voicebot.priority import Priority, priority
from voicebot.realtime.config import CallInfo, Hooks, RealtimeConfig
from voicebot.realtime.session import CallSession, SessionFactory

__all__ = [
    "REALTIME",
    "STREAM_PATH",
    "Connected",
    "Dtmf",
    "MarkEcho",
    "Media",
    "Start",
    "Stop",
    "StreamHub",
    "parse_message",
    "setup_stream",
    "stream_token",
    "stream_twiml",
    "stream_url",
    "verify_stream_token",
]

_LOGGER = logging.getLogger(__name__)

STREAM_PATH = "/twilio/stream"
_TOKEN_CONTEXT = b"voicebot/twilio-stream/v1\n"  # domain separation from other HMACs
_CLAIM_TTL = 6 * 3600.0  # longer than any call: a CallSid opens one stream
_MAX_MESSAGE = 64 * 1024  # a 20 ms media message is ~280 bytes (§2.4)
DRAIN_PHRASE = "goodbye"  # calls still on when the drain's deadline comes (warm: no delay)

# --- TwiML and tokens -------------------------------------------------------------------


def stream_url(public_url: str) -> str:
    """The stream's URL from the public base: ``https://h/p`` → ``wss://h/p/twilio/stream``.

    Twilio only connects to ``wss://`` (§2.1); ``http://`` bases (local development) map
    to ``ws://``.
    """
    base = public_url.rstrip("/")
    scheme, sep, rest = base.partition("://")
    ws_scheme = {"https": "wss", "http": "ws"}.get(scheme.lower(), scheme)
    return f"{ws_scheme}{sep}{rest}{STREAM_PATH}"


def stream_token(call_sid: str, auth_token: str) -> str:
    """The per-call token: base64url HMAC-SHA256 of the CallSid under the auth token."""
    mac = hmac.new(
        auth_token.encode("utf-8"), _TOKEN_CONTEXT + call_sid.encode("utf-8"), hashlib.sha256
    )
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def verify_stream_token(call_sid: str, token: str, auth_token: str) -> bool:
    """Constant-time check; no auth token, CallSid or token never validates."""
    if not (auth_token and call_sid and token):
        return False
    expected = stream_token(call_sid, auth_token).encode("ascii")
    return hmac.compare_digest(expected, token.encode("utf-8", "replace"))


def stream_twiml(public_url: str, call_sid: str, lang: str, auth_token: str) -> str:
    """``<Response><Connect><Stream url="wss://…/twilio/stream">`` with ``lang`` and ``token``
    parameters (§2.1: custom parameters come back in ``start.customParameters``).

    ``<Connect>`` blocks until we close the socket; nothing follows it, so closing the socket
    ends the call (§2.7).
    """
    params = {"lang": lang, "token": stream_token(call_sid, auth_token)}
    inner = "".join(
        f"<Parameter name={quoteattr(name)} value={quoteattr(value)} />"
        for name, value in params.items()
    )
    stream = f"<Stream url={quoteattr(stream_url(public_url))}>{inner}</Stream>"
    return response(Verb(f"<Connect>{stream}</Connect>"))


# --- inbound messages (§2.2) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    params: dict[str, str]
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class Media:
    payload: bytes
    track: str
    chunk: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class MarkEcho:
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    call_sid: str


Message = Connected | Start | Media | Dtmf | MarkEcho | Stop


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, default: int = 0) -> int:
    # Twilio sends numbers as strings ("chunk": "2"), except sampleRate and channels (§2.2).
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    # isascii: "²".isdigit() is true but int("²") raises.
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return default


def parse_message(text: str) -> tuple[Message | None, str]:
    """One Twilio text frame → ``(message, "")``, or ``(None, reason)`` when it is unusable."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None, "json"
    if not isinstance(data, dict):
        return None, "shape"
    event = data.get("event")
    if event == "media":
        media = _obj(data.get("media"))
        raw = media.get("payload")
        if not isinstance(raw, str):
            return None, "payload"
        try:
            payload = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return None, "base64"
        track = _str(media.get("track"))
        return Media(payload, track, _int(media.get("chunk")), _int(media.get("timestamp"))), ""
    if event == "start":
        start = _obj(data.get("start"))
        fmt = _obj(start.get("mediaFormat"))
        params = {
            str(k): v for k, v in _obj(start.get("customParameters")).items() if isinstance(v, str)
        }
        stream_sid = _str(start.get("streamSid")) or _str(data.get("streamSid"))
        call_sid = _str(start.get("callSid"))
        if not stream_sid or not call_sid:
            return None, "start-fields"
        return (
            Start(
                stream_sid=stream_sid,
                call_sid=call_sid,
                account_sid=_str(start.get("accountSid")),
                params=params,
                encoding=_str(fmt.get("encoding")) or "audio/x-mulaw",
                sample_rate=_int(fmt.get("sampleRate"), 8000),
                channels=_int(fmt.get("channels"), 1),
            ),
            "",
        )
    if event == "dtmf":
        digit = _str(_obj(data.get("dtmf")).get("digit"))
        return (Dtmf(digit), "") if digit else (None, "dtmf")
    if event == "mark":
        name = _str(_obj(data.get("mark")).get("name"))
        return (MarkEcho(name), "") if name else (None, "mark")
    if event == "stop":
        return Stop(_str(_obj(data.get("stop")).get("callSid"))), ""
    if event == "connected":
        return Connected(_str(data.get("protocol"))), ""
    return None, "event"


# --- outbound messages (§2.3) ---------------------------------------------------------------


class _TwilioOut:
    """``Outbound`` for one stream: Twilio's media/mark/clear JSON, silent once closed."""

    def __init__(self, ws: web.WebSocketResponse, stream_sid: str) -> None:
        self._ws = ws
        self._sid = json.dumps(stream_sid)

    async def _send(self, text: str) -> None:
        if self._ws.closed:
            return
        with contextlib.suppress(ConnectionError):
            await self._ws.send_str(text)

    async def media(self, ulaw: bytes) -> None:
        payload = base64.b64encode(ulaw).decode("ascii")
        await self._send(
            f'{{"event":"media","streamSid":{self._sid},"media":{{"payload":"{payload}"}}}}'
        )

    async def mark(self, name: str) -> None:
        await self._send(
            f'{{"event":"mark","streamSid":{self._sid},"mark":{{"name":{json.dumps(name)}}}}}'
        )

    async def clear(self) -> None:
        await self._send(f'{{"event":"clear","streamSid":{self._sid}}}')

    async def hangup(self) -> None:
        # Closing the socket ends <Connect>; with no TwiML after it the call ends (§2.7).
        await self._ws.close(code=WSCloseCode.OK, message=b"goodbye")


# --- the route ------------------------------------------------------------------------------


@dataclass
class StreamHub:
    """Per-app state of the stream route: settings, the session factory once the models are
    ready, and the CallSids that already opened a stream."""

    settings: Settings
    config: RealtimeConfig
    hooks: Hooks
    factory: SessionFactory | None = None
    claimed: dict[str, float] = field(default_factory=dict)
    warmed: asyncio.Event = field(default_factory=asyncio.Event)  # the phrase cache is ready

    def factory_for(self, app: web.Application) -> SessionFactory | None:
        if self.factory is None:
            state = app[STATE]
            if state.services is None or not state.ready.is_set():
                return None
            self.factory = SessionFactory(state.services, self.config, hooks=self.hooks)
            self.factory.draining = app[DRAIN].active
        return self.factory

    def claim(self, call_sid: str) -> bool:
        """True the first time a CallSid opens a stream (a token is single-use)."""
        now = time.monotonic()
        for sid in [s for s, expiry in self.claimed.items() if expiry < now]:
            del self.claimed[sid]
        if call_sid in self.claimed:
            return False
        self.claimed[call_sid] = now + _CLAIM_TTL
        return True


REALTIME = web.AppKey("realtime-stream", StreamHub)


def _upgrade_signed(request: web.Request, settings: Settings) -> bool:
    """X-Twilio-Signature over ``wss://host/path`` with no parameters (§2.6, §4.4). The
    ``https://`` form is accepted too until appendix A.1 is confirmed on real traffic."""
    header = request.headers.get("X-Twilio-Signature")
    if not header:
        return False
    token = settings.twilio.auth_token
    base = settings.public_url.rstrip("/")
    path = request.raw_path
    ws_base = stream_url(base)[: -len(STREAM_PATH)]
    return any(verify_twilio(url, {}, header, token) for url in (ws_base + path, base + path))


async def _stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[REALTIME]
    metrics = request.app[METRICS]
    signed = _upgrade_signed(request, hub.settings)
    metrics.inc("voicebot_stream_auth_total", check="signature", result=str(signed).lower())
    if hub.config.require_signature and not signed:
        metrics.inc("voicebot_errors_total", code="signature-invalid")
        raise web.HTTPForbidden(text="invalid signature")
    ws = web.WebSocketResponse(max_msg_size=_MAX_MESSAGE)
    await ws.prepare(request)
    with priority(Priority.REALTIME):  # the call's model work goes first, everywhere
        await _serve(request.app, hub, ws, metrics)
    return ws


async def _serve(
    app: web.Application, hub: StreamHub, ws: web.WebSocketResponse, metrics: Metrics
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + hub.config.start_timeout
    session: CallSession | None = None

    def bad(reason: str) -> None:
        metrics.inc("voicebot_stream_bad_messages_total", reason=reason)

    try:
        while not ws.closed:
            timeout = None if session is not None else max(deadline - loop.time(), 0.001)
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                metrics.inc("voicebot_stream_auth_total", check="token", result="timeout")
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"no start")
                break
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                break
            if msg.type is WSMsgType.ERROR:
                _LOGGER.info("stream socket error: %s", ws.exception())
                break
            if msg.type is not WSMsgType.TEXT:
                bad("binary")
                continue
            message, reason = parse_message(msg.data)
            if message is None:
                bad(reason)
                continue
            if isinstance(message, Start):
                if session is not None:
                    bad("duplicate-start")
                    continue
                session = await _open(app, hub, ws, message, metrics)
                if session is None:
                    break
            elif isinstance(message, Stop):
                break  # the call or stream ended (§2.7)
            elif session is None:
                bad("before-start")  # nothing is processed before authentication
            else:
                await _deliver(session, message, metrics)
    finally:
        if session is not None:
            await session.close()
        if not ws.closed:
            await ws.close()


async def _deliver(session: CallSession, message: Message, metrics: Metrics) -> None:
    """Hand one message to the call; a bug in handling it is logged, not fatal to the call."""
    try:
        if isinstance(message, Media):
            if message.track in ("inbound", ""):
                await session.audio(message.payload)
        elif isinstance(message, MarkEcho):
            await session.mark(message.name)
        elif isinstance(message, Dtmf):
            await session.dtmf(message.digit)
    except Exception:
        _LOGGER.exception("call %s: %s failed", session.info.call_sid, type(message).__name__)
        metrics.inc("voicebot_errors_total", code="stream-internal")


async def _open(
    app: web.Application,
    hub: StreamHub,
    ws: web.WebSocketResponse,
    start: Start,
    metrics: Metrics,
) -> CallSession | None:
    """Authenticate a ``start`` and begin the call; ``None`` (socket closed) on refusal."""
    token_ok = verify_stream_token(
        start.call_sid, start.params.get("token", ""), hub.settings.twilio.auth_token
    )
    if not token_ok or not hub.claim(start.call_sid):
        result = "reused" if token_ok else "invalid"
        metrics.inc("voicebot_stream_auth_total", check="token", result=result)
        metrics.inc("voicebot_errors_total", code="signature-invalid")
        _LOGGER.warning("stream for call %r refused: token %s", start.call_sid[:64], result)
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"unauthorised")
        return None
    metrics.inc("voicebot_stream_auth_total", check="token", result="ok")
    if start.encoding != "audio/x-mulaw" or start.sample_rate != 8000 or start.channels != 1:
        # Only μ-law/8000 mono is documented for Media Streams (§2.2); anything else is noise.
        _LOGGER.warning("stream %s has unsupported media %s", start.stream_sid, start.encoding)
        await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"media format")
        return None
    factory = hub.factory_for(app)
    if factory is None:  # models still loading: the caller gets the TwiML after <Connect>
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"loading")
        return None
    info = CallInfo(
        call_sid=start.call_sid,
        stream_sid=start.stream_sid,
        lang=start.params.get("lang", ""),
        account_sid=start.account_sid,
    )
    session = factory.create(info, _TwilioOut(ws, start.stream_sid))
    await session.start()
    return session


def setup_stream(
    app: web.Application,
    settings: Settings,
    *,
    config: RealtimeConfig | None = None,
    hooks: Hooks | None = None,
) -> None:
    """Mount ``GET /twilio/stream`` (only with a Twilio auth token: fail closed) and warm the
    per-pack phrase cache once the models are ready."""
    if not settings.twilio.auth_token:
        _LOGGER.warning("%s is not mounted: TWILIO_AUTH_TOKEN is not set", STREAM_PATH)
        return
    app[REALTIME] = StreamHub(settings, config or RealtimeConfig(), hooks or Hooks())
    app.router.add_get(STREAM_PATH, _stream)
    app.cleanup_ctx.append(_warm)
    app.on_shutdown.append(_hang_up_all)
    app[DRAIN].add("realtime calls", lambda deadline: _drain(app, deadline))
    metrics = app[METRICS]
    metrics.describe("voicebot_stream_auth_total", "counter", "Stream authentication results")
    metrics.describe(
        "voicebot_stream_bad_messages_total", "counter", "Unusable Media Streams messages"
    )


async def _warm(app: web.Application) -> AsyncIterator[None]:
    async def warm() -> None:
        await app[STATE].ready.wait()
        hub = app[REALTIME]
        factory = hub.factory_for(app)
        if factory is not None:
            with priority(Priority.BULK):  # never ahead of a live call's model work
                await factory.warm()
        hub.warmed.set()

    task = asyncio.create_task(warm(), name="realtime-warm")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        hub = app[REALTIME]
        if hub.factory is not None:
            for session in list(hub.factory.sessions):
                await session.close()


async def _drain(app: web.Application, deadline: float) -> None:
    """The process is stopping: refuse new calls politely, let live ones run until
    ``deadline``, then say goodbye to those still on and hang up."""
    factory = app[REALTIME].factory_for(app)
    if factory is None:  # models not loaded: streams are closed with "loading" anyway
        return
    factory.draining = True
    if factory.sessions:
        _LOGGER.info("draining: %d live call(s)", len(factory.sessions))
    if await until(lambda: not factory.sessions, deadline):
        return
    await factory.farewell(DRAIN_PHRASE, FAREWELL_SECONDS)


async def _hang_up_all(app: web.Application) -> None:
    """The listener closed with calls still on (no drain, or a second signal cut it short):
    end them now, or the server would wait for their sockets."""
    factory = app[REALTIME].factory
    for session in list(factory.sessions if factory is not None else ()):
        with contextlib.suppress(Exception):
            await session.out.hangup()
