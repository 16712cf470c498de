"""Pick the CTranslate2 device and compute type: CUDA float16 when a GPU is there, else CPU int8."""

from __future__ import annotations

from voicebot.errors import ConfigError

__all__ = ["choose", "pick_device"]


def choose(pref: str, cuda_count: int) -> tuple[str, str]:
    """Pure selection, testable without a GPU: ``pref`` is ``auto``, ``cpu`` or ``cuda``."""
    if pref not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, not {pref!r}", code="config-device")
    if pref == "cuda" and cuda_count <= 0:
        raise ConfigError("device=cuda but no CUDA device is visible", code="config-device")
    if pref == "cuda" or (pref == "auto" and cuda_count > 0):
        return "cuda", "float16"
    # int8 on CPU: about 2x faster than float32 for Whisper base with no measurable WER loss.
    return "cpu", "int8"


def pick_device(pref: str = "auto") -> tuple[str, str]:
    """(device, compute_type) for this machine."""
    import ctranslate2

    try:
        count = int(ctranslate2.get_cuda_device_count())
    except Exception:  # a broken CUDA install must not stop the CPU path
        count = 0
    return choose(pref, count)
