"""Value types shared by engines, the pipeline and channels (frozen; no provider shapes)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["Answer", "Audio", "Exchange", "Source", "Transcript"]

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True, eq=False)
class Audio:
    """Mono float32 samples in [-1, 1] at ``rate`` Hz."""

    samples: Samples
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate if self.rate else 0.0


@dataclass(frozen=True, slots=True)
class Transcript:
    """What the recogniser heard; the pipeline decides whether it counts as understood."""

    text: str
    language: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class Source:
    """Where a fact comes from: shown as a link in text channels, named briefly in speech."""

    entry_id: str
    title: str
    url: str
    as_of: str


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer in the user's language with its evidence.

    ``abstained`` is true when the bot declined (weak evidence, out of scope) and referred
    the user to a helpline instead of answering.
    """

    text: str
    language: str
    sources: tuple[Source, ...] = ()
    abstained: bool = False
    scheme: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One question/answer pair kept in conversation memory."""

    question: str
    answer: str
    scheme: str | None = None
