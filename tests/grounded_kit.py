"""The real knowledge index, built once per test session and shared by the answering tests.

Passage embeddings are cached under ``var/test-data/index`` (git-ignored), so a second run
only embeds what changed; ``VOICEBOT_DATA_DIR=var/test-data`` lets CLI tests reuse it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicebot.answering.grounded import GroundedAnswerer
from voicebot.engines.base import Blocking
from voicebot.knowledge import KnowledgeBase, load_knowledge
from voicebot.packs import PackSet, load_packs
from voicebot.retrieval import E5Embedder, KnowledgeIndex

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA_DIR = ROOT / "var" / "test-data"
CACHE_DIR = DATA_DIR / "index"


@functools.cache
def real_packs() -> PackSet:
    return load_packs(ROOT / "languages")


@functools.cache
def real_kb() -> KnowledgeBase:
    return load_knowledge(ROOT / "knowledge")


@functools.cache
def embedder() -> E5Embedder:
    return E5Embedder()


@functools.cache
def real_index() -> KnowledgeIndex:
    """Built synchronously (no event loop needed); tests call it sequentially."""
    return KnowledgeIndex.build_blocking(
        real_kb(), real_packs(), embedder=embedder(), cache_dir=CACHE_DIR, blocking=Blocking(1)
    )


def real_answerer() -> GroundedAnswerer:
    return GroundedAnswerer(real_index(), packs=real_packs())


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``voicebot.cli.main`` installs a stderr handler on the root logger (bound to the
    test's captured stream); put the previous handlers back so later tests log cleanly."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
