"""Text-channel rendering of an answer: the body, then one line per source.

Eval, ``voicebot ask`` and both WhatsApp channels use ``format_text_reply`` so a user sees
the same thing everywhere: ``Source: PM-KISAN — https://pmkisan.gov.in (as of 2026-03-13)``.
The label comes from the pack's ``sources`` phrase; the "as of" words from its optional
``as_of`` phrase (the ISO date alone reads in every language when that phrase is absent).
"""

from __future__ import annotations

from voicebot.messages import Answer, Source
from voicebot.packs import LanguagePack

__all__ = ["format_source", "format_text_reply", "sources_json"]


def format_source(source: Source, pack: LanguagePack) -> str:
    as_of = pack.phrases.get("as_of", "")
    date = f"{as_of} {source.as_of}".strip() if source.as_of else ""
    tail = f" ({date})" if date else ""
    return f"{pack.phrase('sources')}: {source.title} — {source.url}{tail}"


def format_text_reply(answer: Answer, pack: LanguagePack) -> str:
    """Answer body, then its sources (deduplicated by URL), one per line."""
    lines = [answer.text.strip()]
    seen: set[str] = set()
    for source in answer.sources:
        if source.url in seen:
            continue
        seen.add(source.url)
        lines.append(format_source(source, pack))
    return "\n".join(line for line in lines if line)


def sources_json(answer: Answer) -> list[dict[str, str]]:
    """Sources as plain dicts for ``--json`` output and eval files."""
    return [
        {"entry_id": s.entry_id, "title": s.title, "url": s.url, "as_of": s.as_of}
        for s in answer.sources
    ]
