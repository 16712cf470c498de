"""Who is served first when model work queues: live calls, then turns, then bulk work.

A ``ContextVar`` carries the priority of the work in hand, so it follows a call into every
task the call spawns without being passed around. ``engines.base.Blocking`` (the gate in
front of every model) admits its waiters by (priority, arrival), and the scale-mode RPC
(voicebot/scale/rpc.py) queues a request on its priority's list. Work that sets nothing runs
at ``MESSAGE``, so where nothing sets a priority (the embedded mode) the order stays plain
first come, first served.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import IntEnum

__all__ = ["Priority", "current", "explicit", "priority"]


class Priority(IntEnum):
    """Lower is served first."""

    REALTIME = 0  # a live Media Streams call: the caller hears silence while it waits
    CALL = 1  # a <Record> turn: the caller is on hold
    MESSAGE = 2  # WhatsApp turns, and any work that does not say
    BULK = 3  # warm-ups, prompt caches, evaluations


_CURRENT: ContextVar[Priority | None] = ContextVar("voicebot_priority", default=None)


def explicit() -> Priority | None:
    """The priority set for the work in hand, or None when nothing set one."""
    return _CURRENT.get()


def current(default: Priority = Priority.MESSAGE) -> Priority:
    value = _CURRENT.get()
    return default if value is None else value


@contextmanager
def priority(level: Priority) -> Iterator[None]:
    """Run the block (and the tasks it creates) at ``level``."""
    token = _CURRENT.set(level)
    try:
        yield
    finally:
        _CURRENT.reset(token)
