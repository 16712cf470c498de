"""Tracked background tasks, grouped by key (a CallSid) so a hang-up can cancel them all.

Webhook handlers spawn here instead of awaiting work, so a client disconnect never cancels a
turn half-way (aiohttp cancels the handler, not these tasks), and shutdown drains them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["Jobs"]

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")


class Jobs:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._by_key: defaultdict[str, set[asyncio.Task[Any]]] = defaultdict(set)
        self._named: dict[tuple[str, str], asyncio.Task[Any]] = {}

    def spawn(
        self, coro: Coroutine[Any, Any, T], *, key: str = "", name: str = ""
    ) -> asyncio.Task[T]:
        """Start ``coro``; ``(key, name)`` also makes it findable with ``get``."""
        task = asyncio.create_task(coro, name=f"{key}:{name}" if key else name or None)
        self._tasks.add(task)
        if key:
            self._by_key[key].add(task)
            if name:
                self._named[(key, name)] = task
        task.add_done_callback(lambda t: self._done(t, key, name))
        return task

    def get(self, key: str, name: str) -> asyncio.Task[Any] | None:
        return self._named.get((key, name))

    def _done(self, task: asyncio.Task[Any], key: str, name: str) -> None:
        self._tasks.discard(task)
        if key:
            group = self._by_key.get(key)
            if group is not None:
                group.discard(task)
                if not group:
                    del self._by_key[key]
            if self._named.get((key, name)) is task:
                del self._named[(key, name)]  # its result is parked in the store by then
        if not task.cancelled() and task.exception() is not None:
            _LOGGER.error("background job %s failed", task.get_name(), exc_info=task.exception())

    async def cancel(self, key: str) -> int:
        """Cancel every task of ``key`` and wait until they have stopped."""
        tasks = list(self._by_key.pop(key, ()))
        for named in [k for k in self._named if k[0] == key]:
            del self._named[named]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return len(tasks)

    def running(self, key: str | None = None) -> int:
        if key is None:
            return len(self._tasks)
        return len(self._by_key.get(key, ()))

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._by_key.clear()
        self._named.clear()
