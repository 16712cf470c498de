"""Outbound HTTP helpers shared by the providers: capped downloads and send-error triage."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from voicebot.channels.base import SendError
from voicebot.errors import AudioError, ChannelError

__all__ = ["MediaMissing", "download", "raise_for_send"]

_CHUNK = 64 * 1024


class MediaMissing(ChannelError):
    """The provider answered 404: a recording that is not ready yet, or media that is gone."""

    default_code = "channel-media-missing"


async def download(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """GET ``url`` into memory, refusing anything over ``max_bytes`` before reading it all.

    Redirects are followed; aiohttp drops the credentials on a cross-origin redirect, which
    is what Twilio's signed CDN URLs expect (protocols.md §3.2).
    """
    try:
        async with session.get(url, headers=headers) as resp:
            if resp.status == 404:
                raise MediaMissing(f"media not found ({resp.status})")
            if resp.status >= 400:
                raise ChannelError(
                    f"media download failed with HTTP {resp.status}", code="channel-media-failed"
                )
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise AudioError(
                    f"media is {resp.content_length} bytes (limit {max_bytes})",
                    code="audio-too-large",
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise AudioError(f"media exceeds {max_bytes} bytes", code="audio-too-large")
                chunks.append(chunk)
            return b"".join(chunks)
    except (TimeoutError, aiohttp.ClientError) as err:
        raise ChannelError(
            f"media download failed: {err.__class__.__name__}", code="channel-media-failed"
        ) from err


def raise_for_send(status: int, body: str, *, what: str) -> None:
    """Turn a provider's answer into a SendError: 429/5xx retry later, other 4xx never
    (e.g. Twilio 63016 / Meta 131047 "outside the 24 h window", protocols.md §7)."""
    if status < 300:
        return
    retryable = status == 429 or status >= 500
    code = "channel-send-retry" if retryable else "channel-send-rejected"
    raise SendError(f"{what} answered HTTP {status}: {body[:300]}", retryable=retryable, code=code)
