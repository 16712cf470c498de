"""Meta WhatsApp Cloud API: ``GET/POST /whatsapp/cloud`` in, Graph API out.

GET answers Meta's verification handshake (protocols.md §5.1). POST checks
``X-Hub-Signature-256`` over the raw bytes before parsing (§5.2), persists every message of
the batch under its ``wamid`` (Meta delivers at least once, for up to 7 days), and answers
200 at once — also for status events and duplicates, or Meta keeps retrying. Replies: text
via ``/{phone-number-id}/messages``; voice via an OGG/Opus upload to
``/{phone-number-id}/media`` then ``type=audio`` with ``"voice": true`` (§5.5).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
from aiohttp import web

from voicebot.channels.base import Inbound, Outbound, SendError
from voicebot.channels.http import download, raise_for_send
from voicebot.channels.media import MediaStore
from voicebot.channels.runtime import normalize_phone, runtime_of, timed
from voicebot.channels.signatures import verify_meta
from voicebot.channels.spool import accept_inbound
from voicebot.config import MetaSettings, Settings
from voicebot.errors import AudioError, ChannelError

__all__ = ["CHANNEL", "DEDUPE_TTL", "MetaFetcher", "MetaSender", "add_routes", "parse_events"]

_LOGGER = logging.getLogger(__name__)
CHANNEL = "meta-whatsapp"
DEDUPE_TTL = 8 * 86_400.0  # Meta retries for up to 7 days (§5.2)


def _text(value: Any) -> str:
    """``str(value)`` that can be stored and sent: JSON may carry lone surrogates
    (``"\\ud800"``), which UTF-8 cannot encode; they become U+FFFD."""
    text = value if isinstance(value, str) else str(value)
    if text.isascii():
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        yield from (v for v in value if isinstance(v, dict))


def parse_events(doc: Any, *, default_phone_number_id: str = "") -> list[Inbound]:
    """Every user message in a (possibly batched) notification; statuses are skipped (§5.3)."""
    out: list[Inbound] = []
    if not isinstance(doc, dict):
        return out
    for entry in _dicts(doc.get("entry")):
        for change in _dicts(entry.get("changes")):
            value = change.get("value")
            if not isinstance(value, dict):
                continue
            metadata = value.get("metadata")
            number_id = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
            ours = _text(number_id or default_phone_number_id)
            for message in _dicts(value.get("messages")):
                msg_id, sender = _text(message.get("id", "")), _text(message.get("from", ""))
                if not msg_id or not sender or not ours:
                    continue
                kind = str(message.get("type", ""))
                body = message.get("text")
                text = body.get("body", "") if kind == "text" and isinstance(body, dict) else ""
                text = _text(text)
                audio = message.get("audio") if kind == "audio" else None
                media = _text(audio.get("id", "")) if isinstance(audio, dict) else ""
                media_type = _text(audio.get("mime_type", "")) if isinstance(audio, dict) else ""
                out.append(
                    Inbound(
                        channel=CHANNEL,
                        message_id=msg_id,
                        phone=normalize_phone(sender),
                        reply_to=sender,
                        reply_from=ours,
                        kind="audio" if media else "text" if str(text).strip() else "other",
                        text=str(text),
                        media=media,
                        media_type=media_type,
                    )
                )
    return out


async def _verify(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    query = request.query
    token = query.get("hub.verify_token", "")
    expected = rt.settings.meta.verify_token
    if (
        query.get("hub.mode") == "subscribe"
        and expected
        and hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8"))
        and "hub.challenge" in query
    ):
        return web.Response(text=query["hub.challenge"], content_type="text/plain")
    rt.metrics.inc("voicebot_errors_total", code="signature-verify-token")
    raise web.HTTPForbidden(text="verification failed")


async def _events(request: web.Request) -> web.Response:
    # verify raw bytes → parse → rate-limit → dedupe + persist each message (or spool) → 200
    rt = runtime_of(request)
    raw = await request.read()  # 413 beyond max_body_bytes, raised by aiohttp
    if not verify_meta(
        raw, request.headers.get("X-Hub-Signature-256"), rt.settings.meta.app_secret
    ):
        _LOGGER.warning("meta signature rejected (%d bytes)", len(raw))
        rt.metrics.inc("voicebot_errors_total", code="signature-invalid")
        raise web.HTTPForbidden(text="invalid signature")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        _LOGGER.warning("signed meta event is not JSON; acknowledged and dropped")
        return web.Response(text="ignored")
    accepted = 0
    for msg in parse_events(doc, default_phone_number_id=rt.settings.meta.phone_number_id):
        limited = await rt.limiter.take(rt.store.user_key(msg.phone))
        payload = {**msg.to_json(), "limited": limited}
        if await accept_inbound(
            rt, f"{CHANNEL}:{msg.message_id}", CHANNEL, payload, ttl=DEDUPE_TTL
        ):
            accepted += 1
    if accepted:
        rt.wake_inbox()
    return web.Response(text="ok")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/whatsapp/cloud", timed("/whatsapp/cloud", _verify))
    app.router.add_post("/whatsapp/cloud", timed("/whatsapp/cloud", _events))


def _bearer(meta: MetaSettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {meta.access_token}", "User-Agent": "voicebot/1"}


class MetaFetcher:
    """media id → ``GET /{media-id}`` → short-lived URL → bearer download (§5.4)."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._meta = settings.meta
        self._max = settings.max_audio_bytes

    async def fetch(self, message: Inbound) -> bytes:
        headers = _bearer(self._meta)
        try:
            async with self._session.get(
                f"{self._meta.graph_base}/{message.media}", headers=headers
            ) as resp:
                info = await resp.json(content_type=None) if resp.status < 300 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise ChannelError(f"media lookup failed: {err}", code="channel-media-failed") from err
        if not isinstance(info, dict) or not info.get("url"):
            raise ChannelError("media lookup returned no URL", code="channel-media-failed")
        size = int(info.get("file_size") or 0)
        if size > self._max:
            raise AudioError(f"media is {size} bytes (limit {self._max})", code="audio-too-large")
        # The URL lives 5 minutes: download now, never store it (§5.4).
        return await download(self._session, str(info["url"]), max_bytes=self._max, headers=headers)


class MetaSender:
    def __init__(
        self, session: aiohttp.ClientSession, meta: MetaSettings, media: MediaStore
    ) -> None:
        self._session = session
        self._meta = meta
        self._media = media

    async def send(self, message: Outbound, *, ref: str = "") -> str:
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.to,
        }
        if message.kind == "audio":
            media_id = ref or await self._upload(message)
            body |= {"type": "audio", "audio": {"id": media_id, "voice": True}}
        else:
            media_id = ""
            body |= {"type": "text", "text": {"body": message.text, "preview_url": False}}
        try:
            reply = await self._post(f"{message.sender}/messages", json_body=body)
        except SendError as err:
            err.ref = media_id  # keep the upload: retries reuse it (§7)
            raise
        messages = reply.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[0], dict):
            return str(messages[0].get("id", ""))
        return ""

    async def _upload(self, message: Outbound) -> str:
        data = await self._media.read(message.media)
        if data is None:
            raise SendError(
                "voice note expired before upload", retryable=False, code="channel-media-expired"
            )
        form = aiohttp.FormData()
        form.add_field("messaging_product", "whatsapp")
        form.add_field("type", "audio/ogg")
        form.add_field("file", data, filename="answer.ogg", content_type="audio/ogg")
        reply = await self._post(f"{message.sender}/media", form=form)
        media_id = str(reply.get("id", ""))
        if not media_id:
            raise SendError(
                "media upload returned no id", retryable=True, code="channel-send-retry"
            )
        return media_id

    async def _post(
        self,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        form: aiohttp.FormData | None = None,
    ) -> dict[str, Any]:
        url = f"{self._meta.graph_base}/{path}"
        try:
            async with self._session.post(
                url, json=json_body, data=form, headers=_bearer(self._meta)
            ) as resp:
                text = await resp.text()
                raise_for_send(resp.status, text, what="Meta Graph API")
        except (aiohttp.ClientError, TimeoutError) as err:
            raise SendError(
                f"Meta Graph API unreachable: {err.__class__.__name__}",
                retryable=True,
                code="channel-send-retry",
            ) from err
        try:
            reply = json.loads(text)
        except ValueError:
            return {}
        return reply if isinstance(reply, dict) else {}
