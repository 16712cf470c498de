"""Knowledge base schema, loader and `voicebot kb check` (real files and broken ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.grounded_kit import ROOT
from voicebot.cli import main
from voicebot.errors import KnowledgeError
from voicebot.knowledge import check_knowledge, load_knowledge

GOOD_ENTRY = """
[[entries]]
id = "{scheme}.{topic}"
topic = "{topic}"
text = "A fact about {scheme}."
questions = ["What about {scheme}?"]
source = "https://example.gov.in/{scheme}"
as_of = "2026-03-13"
"""


def write_scheme(root: Path, scheme: str, body: str = "", *, entries: str | None = None) -> Path:
    header = (
        f'id = "{scheme}"\nkind = "scheme"\nname = "{scheme.upper()} scheme"\n'
        f'short_name = "{scheme.upper()}"\naliases = ["{scheme}"]\nhelpline = "1800-000-000"\n'
        f'website = "https://{scheme}.gov.in"\n'
    )
    text = (
        header
        + body
        + (GOOD_ENTRY.format(scheme=scheme, topic="benefit") if entries is None else entries)
    )
    path = root / f"{scheme}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_knowledge_base_is_valid_and_sourced() -> None:
    assert check_knowledge(ROOT / "knowledge") == []
    kb = load_knowledge(ROOT / "knowledge")
    kinds = {s.kind for s in kb}
    assert {"scheme", "policy", "out_of_scope"} <= kinds
    assert sum(1 for s in kb if s.kind == "scheme") >= 15
    for entry in kb.entries:
        assert entry.source.startswith(("http://", "https://")), entry.id
        assert len(entry.as_of) >= 7 and entry.text, entry.id
        assert kb.scheme_of(entry).id == entry.scheme
    assert kb.entry("pm-kisan.benefit").scheme == "pm-kisan"


def test_an_entry_without_a_source_is_rejected_with_file_and_entry(tmp_path: Path) -> None:
    no_source = GOOD_ENTRY.format(scheme="abc", topic="benefit").replace(
        'source = "https://example.gov.in/abc"\n', ""
    )
    path = write_scheme(tmp_path, "abc", entries=no_source)
    problems = check_knowledge(tmp_path)
    assert problems == [f"{path}: [abc.benefit] has no source URL"]
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(tmp_path)
    assert err.value.code == "kb-invalid"
    assert str(path) in err.value.message and "abc.benefit" in err.value.message


def test_every_problem_is_one_line(tmp_path: Path) -> None:
    bad = (
        GOOD_ENTRY.format(scheme="abc", topic="benefit")
        + GOOD_ENTRY.format(scheme="abc", topic="benefit")  # duplicate id
        + GOOD_ENTRY.format(scheme="abc", topic="dates").replace("2026-03-13", "2026-13-45")
        + GOOD_ENTRY.format(scheme="abc", topic="url").replace(
            "https://example.gov.in/abc", "example.gov.in/abc"
        )
        + GOOD_ENTRY.format(scheme="abc", topic="noday").replace('as_of = "2026-03-13"\n', "")
        + GOOD_ENTRY.format(scheme="xyz", topic="prefix")  # id from another file
    )
    write_scheme(tmp_path, "abc", entries=bad)
    (tmp_path / "broken.toml").write_text("id = [", encoding="utf-8")
    (tmp_path / "renamed.toml").write_text(
        (tmp_path / "abc.toml")
        .read_text(encoding="utf-8")
        .replace('kind = "scheme"', 'kind = "x"'),
        encoding="utf-8",
    )
    problems = "\n".join(check_knowledge(tmp_path))
    assert "[abc.benefit] duplicate entry id" in problems
    assert "[abc.dates] as_of '2026-13-45' is not a date" in problems
    assert "[abc.url] source 'example.gov.in/abc' is not an http(s) URL" in problems
    assert "[abc.noday] has no as_of date" in problems
    assert "[xyz.prefix] id must start with the file id" in problems
    assert "broken.toml: cannot read" in problems
    assert "renamed.toml: id 'abc' must equal the file name 'renamed'" in problems
    assert "renamed.toml: 'kind' must be one of scheme, policy, out_of_scope" in problems
    assert all(line.count(": ") >= 1 for line in problems.splitlines())


def test_kb_check_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_scheme(tmp_path, "abc")
    assert main(["kb", "check", str(tmp_path)]) == 0
    assert "ok (1 files, 1 entries)" in capsys.readouterr().out
    write_scheme(
        tmp_path,
        "def",
        entries=GOOD_ENTRY.format(scheme="def", topic="x").replace(
            'source = "https://example.gov.in/def"\n', ""
        ),
    )
    assert main(["kb", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"{tmp_path / 'def.toml'}: [def.x] has no source URL"]
    assert main(["kb", "check", str(tmp_path / "missing")]) == 1
