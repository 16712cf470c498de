"""Streaming voice activity detection with the Silero VAD v6 model that ships in faster-whisper.

faster-whisper 1.2.1 carries ``faster_whisper/assets/silero_vad_v6.onnx`` for its own
``vad_filter``; we load the same file with onnxruntime, so there is nothing to download. The
model reads 16 kHz audio in 512-sample windows (32 ms), each prefixed with the last 64 samples
of the window before it, and carries an LSTM state (``h``, ``c``: 1×1×128) from window to window
(faster_whisper/vad.py ``SileroVADModel.__call__``). Several windows may go into one run: the
model treats the batch as consecutive windows and returns one speech probability for each.

``SileroModel`` is the loaded network, shared by every call (the session factory owns it).
``StreamingVad`` is one call's state (LSTM memory, context, partial window): it turns chunks of
any length of 16 kHz samples into one probability per completed window.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from voicebot.errors import ModelError

__all__ = ["CONTEXT", "RATE", "WINDOW", "SileroModel", "StreamingVad", "silero_path"]

RATE: Final = 16_000
WINDOW: Final = 512  # samples per probability at 16 kHz: 32 ms
CONTEXT: Final = 64  # samples of the previous window the model sees before each window
_STATE_SHAPE: Final = (1, 1, 128)

Samples = npt.NDArray[np.float32]


def silero_path() -> Path:
    """Where faster-whisper keeps its Silero VAD, found without importing faster-whisper
    (its package import pulls in CTranslate2, PyAV and tokenizers)."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("faster-whisper is not installed; it carries the Silero VAD model")
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "silero_vad_v6.onnx"
    if not path.is_file():
        raise ModelError(f"{path} is missing from the faster-whisper install", code="model-missing")
    return path


class SileroModel:
    """The ONNX network, loaded once per process; ``run`` is safe to call from any thread.

    One intra-op thread: a 32 ms window takes ~0.1 ms, and a thread pool per run would only
    compete with Whisper for the same two cores.
    """

    def __init__(self, path: Path | None = None) -> None:
        ort: Any = importlib.import_module("onnxruntime")
        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 4
        self.path = path or silero_path()
        try:
            self._session = ort.InferenceSession(
                str(self.path), providers=["CPUExecutionProvider"], sess_options=options
            )
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load {self.path}: {err}", code="model-corrupt") from err

    def run(
        self, windows: Samples, h: Samples, c: Samples
    ) -> tuple[npt.NDArray[np.float32], Samples, Samples]:
        """``windows``: (n, CONTEXT + WINDOW) → (n probabilities, new h, new c)."""
        probs, h, c = self._session.run(None, {"input": windows, "h": h, "c": c})
        return (
            np.asarray(probs, dtype=np.float32).reshape(-1),
            np.asarray(h, dtype=np.float32),
            np.asarray(c, dtype=np.float32),
        )


class StreamingVad:
    """Speech probability per 32 ms window for one audio stream (one call)."""

    def __init__(self, model: SileroModel) -> None:
        self.model = model
        self.windows = 0  # windows scored so far: the stream's clock, in WINDOW units
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, samples: Samples) -> npt.NDArray[np.float32]:
        """Feed 16 kHz float samples; returns a probability for each window completed."""
        data = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        count = len(data) // WINDOW
        self._pending = data[count * WINDOW :]
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        body = data[: count * WINDOW].reshape(count, WINDOW)
        # Each window is preceded by the tail of the one before it, as in faster_whisper/vad.py.
        tails = np.vstack([self._context[None, :], body[:-1, -CONTEXT:]])
        batch = np.ascontiguousarray(np.concatenate([tails, body], axis=1), dtype=np.float32)
        probs, self._h, self._c = self.model.run(batch, self._h, self._c)
        self._context = body[-1, -CONTEXT:].copy()
        self.windows += count
        return probs

    def reset(self) -> None:
        """Forget the LSTM memory (the stream clock keeps counting)."""
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
