"""Builds the configured answerer once per process: ``grounded`` | ``ct2-llm`` | ``openai``.

Every answerer stands on the same knowledge index (loaded from ``settings.knowledge_dir``,
embeddings cached under ``settings.data_dir / "index"``); the LLM answerers wrap the grounded
one, which plans every turn and is their fallback.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from voicebot.answering.base import Answerer
from voicebot.answering.grounded import GroundedAnswerer
from voicebot.config import Settings
from voicebot.engines.base import Blocking
from voicebot.errors import ConfigError
from voicebot.knowledge import load_knowledge
from voicebot.packs import PackSet
from voicebot.retrieval import KnowledgeIndex

__all__ = ["build_answerer", "build_grounded"]

_LOGGER = logging.getLogger(__name__)


async def build_grounded(settings: Settings, packs: PackSet) -> GroundedAnswerer:
    kb = await asyncio.to_thread(load_knowledge, Path(settings.knowledge_dir))
    index = await KnowledgeIndex.build(
        kb, packs, cache_dir=Path(settings.data_dir) / "index", blocking=Blocking(1)
    )
    _LOGGER.info("knowledge: %d schemes, %d entries", len(kb.schemes), len(kb))
    return GroundedAnswerer(index, packs=packs)


async def build_answerer(settings: Settings, packs: PackSet) -> Answerer:
    """The answerer named by ``settings.answerer``; LLM ones fall back to the grounded one."""
    grounded = await build_grounded(settings, packs)
    if settings.answerer == "grounded":
        return grounded
    if settings.answerer == "ct2-llm":
        if not settings.llm_model:
            raise ConfigError("answerer ct2-llm needs llm_model (a CT2 generator directory)")
        from voicebot.answering.llm import Ct2GeneratorAnswerer

        return await asyncio.to_thread(
            Ct2GeneratorAnswerer.load,
            Path(settings.llm_model),
            grounded=grounded,
            device=settings.device,
            threads=settings.cpu_threads,
        )
    if settings.answerer == "openai":
        if not settings.llm_base_url:
            raise ConfigError("answerer openai needs llm_base_url (e.g. http://127.0.0.1:8000/v1)")
        from voicebot.answering.llm import OpenAICompatAnswerer

        return OpenAICompatAnswerer(
            settings.llm_base_url, model=settings.llm_model or "default", grounded=grounded
        )
    raise ConfigError(f"unknown answerer {settings.answerer!r}")
