"""Knowledge base: one TOML file per scheme under ``knowledge/``, English pivot text.

Every entry is a short fact in our own words with the URL it comes from and the date the
figure was true (``as_of``); an entry without a source is rejected, because the bot must be
able to say where every answer comes from. ``load_knowledge`` raises ``KnowledgeError`` naming
the file and entry; ``check_knowledge`` lists every problem, one line each, for ``kb check``.

File layout (``knowledge/<scheme>.toml``)::

    id = "pm-kisan"                  # scheme id, unique across files
    kind = "scheme"                  # scheme | policy | out_of_scope
    name = "PM-KISAN (Pradhan Mantri Kisan Samman Nidhi)"
    short_name = "PM-KISAN"          # used as the source title
    aliases = ["pm kisan", "किसान सम्मान निधि", ...]   # any script; matched in questions
    helpline = "155261 / 1800-115-526"
    website = "https://pmkisan.gov.in"

    [[entries]]
    id = "pm-kisan.benefit"          # unique across the whole knowledge base
    topic = "benefit"
    text = "..."                     # the answer, 1-3 sentences
    questions = ["...", "..."]       # English paraphrases users might ask
    source = "https://..."           # required
    as_of = "2026-03-13"             # required: YYYY-MM-DD (or YYYY-MM)
    may_change = true                # optional: figures revised often
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from voicebot.errors import KnowledgeError

__all__ = [
    "KINDS",
    "Entry",
    "KnowledgeBase",
    "Scheme",
    "check_knowledge",
    "load_knowledge",
]

KINDS = ("scheme", "policy", "out_of_scope")
_ID = re.compile(r"^[a-z0-9_][a-z0-9_.\-]*$")
_DATE = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")


@dataclass(frozen=True, slots=True)
class Entry:
    """One short fact. ``scheme`` is the id of the file it lives in."""

    id: str
    scheme: str
    topic: str
    text: str
    questions: tuple[str, ...]
    source: str
    as_of: str
    may_change: bool = False


@dataclass(frozen=True, slots=True)
class Scheme:
    """A scheme (or a policy / out-of-scope referral group) and its entries."""

    id: str
    kind: str
    name: str
    short_name: str
    aliases: tuple[str, ...]
    helpline: str
    website: str
    entries: tuple[Entry, ...]
    path: Path = field(default=Path())

    @property
    def in_scope(self) -> bool:
        return self.kind != "out_of_scope"


@dataclass(frozen=True, slots=True)
class KnowledgeBase:
    """All schemes by id, plus a flat entry lookup."""

    schemes: Mapping[str, Scheme]
    _by_id: Mapping[str, Entry] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self._by_id:
            index = {e.id: e for s in self.schemes.values() for e in s.entries}
            object.__setattr__(self, "_by_id", index)

    @property
    def entries(self) -> list[Entry]:
        return [e for s in self.schemes.values() for e in s.entries]

    def entry(self, entry_id: str) -> Entry:
        return self._by_id[entry_id]

    def scheme(self, scheme_id: str) -> Scheme:
        return self.schemes[scheme_id]

    def scheme_of(self, entry: Entry) -> Scheme:
        return self.schemes[entry.scheme]

    def __iter__(self) -> Iterator[Scheme]:
        return iter(self.schemes.values())

    def __len__(self) -> int:
        return len(self._by_id)


def _valid_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and "." in parts.netloc and " " not in value


def _valid_date(value: str) -> bool:
    if not _DATE.match(value):
        return False
    try:
        dt.date.fromisoformat(value if len(value) == 10 else value + "-01")
    except ValueError:
        return False
    return True


def _str(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key, "")
    return value.strip() if isinstance(value, str) else ""


def _strs(raw: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return tuple(v.strip() for v in value if v.strip())


def _parse_file(path: Path, problems: list[str]) -> tuple[Scheme | None, list[str]]:
    """Parse one file, appending ``path: [entry] problem`` lines.

    Returns the scheme (None when anything in the file is wrong) and every entry id seen,
    so duplicates are reported even in a file with other problems.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        problems.append(f"{path}: cannot read: {err}")
        return None, []
    before = len(problems)
    scheme_id = _str(raw, "id")
    if not _ID.match(scheme_id):
        problems.append(f"{path}: 'id' must be a lower-case id like 'pm-kisan'")
    elif scheme_id != path.stem:
        problems.append(f"{path}: id {scheme_id!r} must equal the file name {path.stem!r}")
    kind = _str(raw, "kind")
    if kind not in KINDS:
        problems.append(f"{path}: 'kind' must be one of {', '.join(KINDS)}, not {kind!r}")
    for key in ("name", "short_name"):
        if not _str(raw, key):
            problems.append(f"{path}: '{key}' is required")
    aliases = _strs(raw, "aliases")
    if aliases is None:
        problems.append(f"{path}: 'aliases' must be a list of strings")
    website = _str(raw, "website")
    if website and not _valid_url(website):
        problems.append(f"{path}: website {website!r} is not an http(s) URL")
    raw_entries = raw.get("entries", [])
    if not isinstance(raw_entries, list) or not raw_entries:
        problems.append(f"{path}: needs at least one [[entries]] table")
        raw_entries = []
    entries = [
        _parse_entry(path, scheme_id, i, item, problems) for i, item in enumerate(raw_entries)
    ]
    ids = [_str(item, "id") for item in raw_entries if isinstance(item, dict) and _str(item, "id")]
    if len(problems) > before:
        return None, ids
    return Scheme(
        id=scheme_id,
        kind=kind,
        name=_str(raw, "name"),
        short_name=_str(raw, "short_name"),
        aliases=aliases or (),
        helpline=_str(raw, "helpline"),
        website=website,
        entries=tuple(e for e in entries if e is not None),
        path=path,
    ), ids


def _parse_entry(
    path: Path, scheme_id: str, index: int, raw: Any, problems: list[str]
) -> Entry | None:
    if not isinstance(raw, dict):
        problems.append(f"{path}: entry #{index + 1} must be a table")
        return None
    entry_id = _str(raw, "id")
    where = f"{path}: [{entry_id or f'entry #{index + 1}'}]"
    before = len(problems)
    if not _ID.match(entry_id):
        problems.append(f"{where} 'id' must be a lower-case id like 'pm-kisan.benefit'")
    elif not entry_id.startswith(f"{scheme_id}."):
        problems.append(f"{where} id must start with the file id: '{scheme_id}.<topic>'")
    if not _str(raw, "text"):
        problems.append(f"{where} 'text' is required")
    source = _str(raw, "source")
    if not source:
        problems.append(f"{where} has no source URL")
    elif not _valid_url(source):
        problems.append(f"{where} source {source!r} is not an http(s) URL")
    as_of = raw.get("as_of", "")
    if isinstance(as_of, dt.date):  # a bare TOML date parses to datetime.date
        as_of = as_of.isoformat()
    if not as_of:
        problems.append(f"{where} has no as_of date")
    elif not isinstance(as_of, str) or not _valid_date(as_of):
        problems.append(f"{where} as_of {as_of!r} is not a date like 2026-03-13")
    questions = _strs(raw, "questions")
    if questions is None:
        problems.append(f"{where} 'questions' must be a list of strings")
    if not isinstance(raw.get("may_change", False), bool):
        problems.append(f"{where} 'may_change' must be true or false")
    if len(problems) > before:
        return None
    return Entry(
        id=entry_id,
        scheme=scheme_id,
        topic=_str(raw, "topic"),
        text=_str(raw, "text"),
        questions=questions or (),
        source=source,
        as_of=str(as_of),
        may_change=bool(raw.get("may_change", False)),
    )


def _scan(directory: Path) -> tuple[KnowledgeBase, list[str]]:
    directory = Path(directory)
    problems: list[str] = []
    if not directory.is_dir():
        return KnowledgeBase(schemes={}), [f"{directory}: knowledge directory not found"]
    files = sorted(directory.glob("*.toml"))
    if not files:
        problems.append(f"{directory}: no knowledge files (*.toml)")
    schemes: dict[str, Scheme] = {}
    seen: dict[str, Path] = {}
    for path in files:
        scheme, ids = _parse_file(path, problems)
        for entry_id in ids:
            if entry_id in seen:
                problems.append(
                    f"{path}: [{entry_id}] duplicate entry id (also in {seen[entry_id]})"
                )
            seen.setdefault(entry_id, path)
        if scheme is None:
            continue
        if scheme.id in schemes:
            problems.append(
                f"{path}: scheme id {scheme.id!r} is also used by {schemes[scheme.id].path}"
            )
            continue
        schemes[scheme.id] = scheme
    return KnowledgeBase(schemes=schemes), problems


def check_knowledge(directory: Path) -> list[str]:
    """Every problem in the knowledge directory, one line each (empty: valid)."""
    return _scan(directory)[1]


def load_knowledge(directory: Path) -> KnowledgeBase:
    """Load and validate; raises KnowledgeError with the first problem (and a count)."""
    kb, problems = _scan(directory)
    if problems:
        more = (
            f" (and {len(problems) - 1} more; run `voicebot kb check`)" if len(problems) > 1 else ""
        )
        raise KnowledgeError(problems[0] + more, code="kb-invalid")
    return kb
