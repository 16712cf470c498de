"""Scale mode: state and turn queues on Redis, web nodes and ``voicebot worker`` processes.

``settings.backend`` selects the implementation of ``voicebot.state`` that the channels use:
``sqlite`` (the embedded default: one process answers and sends) or ``redis`` (web nodes
accept and send, workers answer). See docs/scaling.md.
"""

from __future__ import annotations

from pathlib import Path

from voicebot.channels.media import MediaStore
from voicebot.channels.ratelimit import RateLimiter
from voicebot.config import Settings
from voicebot.state import Limiter, StateStore

__all__ = ["open_backend"]


async def open_backend(settings: Settings) -> tuple[StateStore, MediaStore, Limiter]:
    """The store, media store and rate limiter for ``settings.backend``."""
    media_root = Path(settings.data_dir) / "media"
    if settings.backend == "redis":
        from voicebot.scale.redis_store import RedisLimiter, RedisMediaStore, RedisStore

        redis_store = await RedisStore.open(settings)
        media: MediaStore = RedisMediaStore(
            redis_store,
            root=media_root,
            public_url=settings.public_url,
            ttl=settings.media_ttl_seconds,
        )
        return redis_store, media, RedisLimiter(redis_store, settings.rate_limit_per_minute)
    from voicebot.store import Store

    store = await Store.open(settings.data_dir)
    media = MediaStore(
        store, media_root, public_url=settings.public_url, ttl=settings.media_ttl_seconds
    )
    return store, media, RateLimiter(settings.rate_limit_per_minute)
