"""Twilio WhatsApp: ``POST /twilio/whatsapp`` in, Twilio REST ``Messages.json`` out.

The webhook verifies, parses, persists and answers an empty ``<Response/>`` at once (the
webhook has 15 s, the pipeline may need more: protocols.md §3.3, §3.6); the inbox worker
answers later through the REST API: the text first, then the voice note as a media-only
message (one media per WhatsApp message, §3.3).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import aiohttp
from aiohttp import web
from yarl import URL

from voicebot.channels import twiml
from voicebot.channels.base import Inbound, Outbound, SendError
from voicebot.channels.http import download, raise_for_send
from voicebot.channels.media import MediaStore
from voicebot.channels.runtime import normalize_phone, runtime_of, timed, twilio_form
from voicebot.channels.spool import accept_inbound
from voicebot.config import Settings, TwilioSettings

__all__ = [
    "CHANNEL",
    "DEDUPE_TTL",
    "TwilioFetcher",
    "TwilioSender",
    "add_routes",
    "credentials_for",
    "parse_message",
]

_LOGGER = logging.getLogger(__name__)
CHANNEL = "twilio-whatsapp"
DEDUPE_TTL = 2 * 86_400.0  # ≥ 1 day for Twilio (§7)
_MAX_MEDIA = 10  # Twilio attaches at most 10 media to a message


def parse_message(form: Mapping[str, str]) -> Inbound:
    """Form fields → Inbound. Everything but MessageSid/From/To is optional (§3.1)."""
    sid = form.get("MessageSid") or form.get("SmsMessageSid") or ""
    sender, ours = form.get("From", ""), form.get("To", "")
    if not sid or not sender or not ours:
        raise web.HTTPBadRequest(text="MessageSid, From and To are required")
    body = form.get("Body", "")
    try:
        count = int(form.get("NumMedia") or 0)
    except ValueError:
        count = 0
    count = min(count, _MAX_MEDIA)  # "NumMedia=999999999999" must not spin the event loop
    media = media_type = ""
    for i in range(count):  # WhatsApp sends one media; take the first audio if there are more
        kind = form.get(f"MediaContentType{i}", "")
        if kind.startswith("audio/") and form.get(f"MediaUrl{i}"):
            media, media_type = form[f"MediaUrl{i}"], kind
            break
    kind = "audio" if media else "text" if body.strip() else "other"
    return Inbound(
        channel=CHANNEL,
        message_id=sid,
        phone=normalize_phone(sender),
        reply_to=sender,
        reply_from=ours,
        kind=kind,
        text=body,
        media=media,
        media_type=media_type,
    )


async def _inbound(request: web.Request) -> web.Response:
    # verify → parse → rate-limit → dedupe + persist (one transaction, else the spool) → ack
    rt = runtime_of(request)
    msg = parse_message(await twilio_form(request))
    limited = await rt.limiter.take(rt.store.user_key(msg.phone))
    payload = {**msg.to_json(), "limited": limited}
    if await accept_inbound(rt, f"{CHANNEL}:{msg.message_id}", CHANNEL, payload, ttl=DEDUPE_TTL):
        rt.wake_inbox()
    else:
        _LOGGER.info("duplicate %s message ignored", CHANNEL)
    return web.Response(text=twiml.response(), content_type=twiml.CONTENT_TYPE)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/twilio/whatsapp", timed("/twilio/whatsapp", _inbound))


def credentials_for(url: str, twilio: TwilioSettings) -> dict[str, str]:
    """Basic auth (account SID : auth token, §1.4, §3.2) — but only for Twilio's own API
    host, never for a URL that merely arrived in a payload. aiohttp drops the header when a
    redirect leaves that origin (§3.2)."""
    a, b = URL(url), URL(twilio.api_base)
    if (a.scheme, a.host, a.port) != (b.scheme, b.host, b.port):
        _LOGGER.warning("media URL is not on %s; fetching without credentials", twilio.api_base)
        return {}
    return {"Authorization": aiohttp.encode_basic_auth(twilio.account_sid, twilio.auth_token)}


class TwilioFetcher:
    """Inbound media with Basic auth (account SID : auth token, §3.2), size-capped."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._twilio = settings.twilio
        self._max = settings.max_audio_bytes

    async def fetch(self, message: Inbound) -> bytes:
        headers = credentials_for(message.media, self._twilio)
        return await download(self._session, message.media, max_bytes=self._max, headers=headers)


class TwilioSender:
    """``POST /2010-04-01/Accounts/{sid}/Messages.json`` with From, To and Body or MediaUrl."""

    def __init__(
        self, session: aiohttp.ClientSession, twilio: TwilioSettings, media: MediaStore
    ) -> None:
        self._session = session
        self._twilio = twilio
        self._media = media

    async def send(self, message: Outbound, *, ref: str = "") -> str:
        url = (
            f"{self._twilio.api_base}/2010-04-01/Accounts/{self._twilio.account_sid}/Messages.json"
        )
        form = {"From": message.sender, "To": message.to}
        if message.kind == "audio":
            form["MediaUrl"] = self._media.url(message.media)  # served as audio/ogg (§3.3)
        else:
            form["Body"] = message.text
        auth = aiohttp.encode_basic_auth(self._twilio.account_sid, self._twilio.auth_token)
        try:
            async with self._session.post(url, data=form, headers={"Authorization": auth}) as resp:
                body = await resp.text()
                raise_for_send(resp.status, body, what="Twilio Messages")
        except (aiohttp.ClientError, TimeoutError) as err:
            raise SendError(
                f"Twilio Messages unreachable: {err.__class__.__name__}",
                retryable=True,
                code="channel-send-retry",
            ) from err
        try:
            return str(json.loads(body).get("sid", ""))
        except (ValueError, AttributeError):
            return ""
