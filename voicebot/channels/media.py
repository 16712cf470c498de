"""Synthesised audio at unguessable, expiring URLs: ``GET /media/{token}``.

Twilio fetches ``<Play>`` and WhatsApp ``MediaUrl`` files without authenticating, so the
token in the path is the only protection (protocols.md §1.3, §3.3): 256 random bits, an
expiry, and 404 for anything unknown or expired. Twilio checks that Content-Type matches the
bytes (§1.3, §3.3), so each file is served with the type it was stored with.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import time
from pathlib import Path

from aiohttp import web

from voicebot.state import StateStore
from voicebot.store import MediaRecord

__all__ = ["MediaStore", "respond_media"]

_LOGGER = logging.getLogger(__name__)
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")


class MediaStore:
    """Files under ``root`` indexed in the SQLite store (so tokens survive a restart), plus
    in-memory pinned files (cached voice prompts) that live as long as the process."""

    def __init__(self, store: StateStore, root: Path, *, public_url: str, ttl: float) -> None:
        self._store = store
        self.root = Path(root)
        self._public = public_url.rstrip("/")
        self._ttl = ttl
        self._pinned: dict[str, tuple[Path, str]] = {}

    def url(self, token: str) -> str:
        return f"{self._public}/media/{token}"

    async def put(
        self, data: bytes, content_type: str, *, ext: str, owner: str = "", ttl: float | None = None
    ) -> str:
        """Store bytes; returns ``<token><ext>``, the last path segment of the public URL."""
        token = secrets.token_urlsafe(32)
        path = self.root / f"{token}{ext}"
        await asyncio.to_thread(_write_atomic, path, data)
        expires = time.time() + (self._ttl if ttl is None else ttl)
        await self._store.add_media(MediaRecord(token, str(path), content_type, expires, owner))
        return f"{token}{ext}"

    def pin(self, path: Path, content_type: str, *, ext: str) -> str:
        token = secrets.token_urlsafe(32)
        self._pinned[token] = (Path(path), content_type)
        return f"{token}{ext}"

    async def lookup(self, name: str) -> tuple[Path, str, bool] | None:
        """(path, content type, pinned) for a live token, else None."""
        token = name.partition(".")[0]
        if not _TOKEN.match(token):
            return None
        if token in self._pinned:
            path, content_type = self._pinned[token]
            return path, content_type, True
        rec = await self._store.media(token)
        if rec is None or rec.expires < time.time():
            return None
        return Path(rec.path), rec.content_type, False

    async def read(self, name: str) -> bytes | None:
        found = await self.lookup(name)
        if found is None:
            return None
        try:
            return await asyncio.to_thread(found[0].read_bytes)
        except FileNotFoundError:
            return None

    async def delete_owner(self, owner: str) -> int:
        """Delete every file stored for ``owner`` (a call that hung up)."""
        return await _unlink(await self._store.drop_media(owner))

    async def purge_expired(self) -> int:
        return await _unlink(await self._store.drop_expired_media(time.time()))

    async def serve(self, name: str) -> web.StreamResponse:
        """``GET /media/{token}``: the file with its stored Content-Type, or 404."""
        found = await self.lookup(name)
        if found is None or not found[0].is_file():
            raise web.HTTPNotFound()
        path, content_type, pinned = found
        # Answers are unique per URL (no-store); prompts never change within a process, so
        # Twilio may cache them and start them faster (§1.3).
        cache = "public, max-age=3600" if pinned else "no-store"
        return web.FileResponse(
            path, headers={"Content-Type": content_type, "Cache-Control": cache}
        )


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. ENOSPC: don't leave a partial file filling the disk
        raise


async def _unlink(paths: list[str]) -> int:
    def run() -> int:
        for p in paths:
            Path(p).unlink(missing_ok=True)
        return len(paths)

    return await asyncio.to_thread(run)


async def respond_media(media: MediaStore, name: str) -> web.StreamResponse:
    """``GET /media/{token}``: whatever the media store serves for it, or 404."""
    return await media.serve(name)
