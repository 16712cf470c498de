"""Conversation memory: the last few exchanges per conversation, for follow-up questions."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Protocol

from voicebot.messages import Exchange

__all__ = ["InMemoryMemory", "Memory"]


class Memory(Protocol):
    async def history(self, conversation: str) -> list[Exchange]: ...

    async def remember(self, conversation: str, exchange: Exchange) -> None: ...


class InMemoryMemory:
    """Bounded in-process memory (LRU over conversations, last ``turns`` exchanges each)."""

    def __init__(self, *, turns: int = 6, conversations: int = 10_000) -> None:
        self._turns = turns
        self._max = conversations
        self._data: OrderedDict[str, deque[Exchange]] = OrderedDict()

    async def history(self, conversation: str) -> list[Exchange]:
        return list(self._data.get(conversation, ()))

    async def remember(self, conversation: str, exchange: Exchange) -> None:
        turns = self._data.setdefault(conversation, deque(maxlen=self._turns))
        turns.append(exchange)
        self._data.move_to_end(conversation)
        while len(self._data) > self._max:
            self._data.popitem(last=False)
