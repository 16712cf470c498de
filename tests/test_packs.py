import shutil
from pathlib import Path

import pytest

from voicebot.cli import main
from voicebot.errors import PackError
from voicebot.numbers import speakable
from voicebot.packs import REQUIRED_PHRASES, Capabilities, check_pack, load_pack, load_packs

ROOT = Path(__file__).resolve().parents[1]
LANGUAGES = ROOT / "languages"


def test_every_shipped_pack_is_valid() -> None:
    packs = load_packs(LANGUAGES)
    assert {"en", "hi"} <= {p.code for p in packs}
    digits: dict[int, str] = {}
    for pack in packs:
        assert check_pack(pack) == [], pack.code
        for key in REQUIRED_PHRASES:
            assert pack.phrase(key)
        if pack.dtmf_digit is not None:
            assert pack.dtmf_digit not in digits, f"{pack.code} reuses a keypad digit"
            digits[pack.dtmf_digit] = pack.code


def test_resolve_prefers_exact_then_base_then_default() -> None:
    packs = load_packs(LANGUAGES)
    assert packs.resolve("hi").code == "hi"
    assert packs.resolve("hi-Latn").code == "hi"
    assert packs.resolve("xx").code == "en"
    assert packs.resolve(None).code == "en"
    assert packs.by_digit("2") is not None and packs.by_digit("2").code == "hi"  # type: ignore[union-attr]


def _broken_copy(tmp_path: Path, edit: str, replacement: str) -> Path:
    target = tmp_path / "hi"
    shutil.copytree(LANGUAGES / "hi", target)
    text = (target / "pack.toml").read_text(encoding="utf-8")
    assert edit in text
    (target / "pack.toml").write_text(text.replace(edit, replacement), encoding="utf-8")
    return target


def test_check_reports_one_line_per_problem(tmp_path: Path) -> None:
    target = _broken_copy(tmp_path, 'sources = "स्रोत"\n', 'sorces = "स्रोत"\n')
    problems = check_pack(load_pack(target))
    assert any("sources is missing" in p for p in problems)
    assert any("sorces is not a known phrase" in p for p in problems)


def test_check_bounds_the_encoder_window(tmp_path: Path) -> None:
    target = _broken_copy(tmp_path, "beam_size = 5\n", "beam_size = 5\ncontext_seconds = 45\n")
    problems = check_pack(load_pack(target))
    assert any("context_seconds must be between 1 and 30" in p for p in problems)


def test_check_uses_engine_capabilities(tmp_path: Path) -> None:
    pack = load_pack(LANGUAGES / "hi")
    caps = Capabilities(stt_languages=lambda model: ["en"], voice_available=lambda v: False)
    problems = check_pack(pack, caps)
    assert any("cannot recognise 'hi'" in p for p in problems)
    assert any("no voice" in p for p in problems)
    ok = Capabilities(stt_languages=lambda model: ["en", "hi"], voice_available=lambda v: True)
    assert check_pack(pack, ok) == []


def test_malformed_pack_raises_with_file_name(tmp_path: Path) -> None:
    target = _broken_copy(tmp_path, "[stt]", "[stt")
    with pytest.raises(PackError) as err:
        load_pack(target)
    assert "pack.toml" in str(err.value) and err.value.code == "pack-toml"


def test_cli_packs_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["packs", "check", "--no-engines", str(LANGUAGES / "hi")]) == 0
    bad = _broken_copy(tmp_path, "dtmf_digit = 2", "dtmf_digit = 0")
    assert main(["packs", "check", "--no-engines", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "dtmf_digit must be 1-99" in out


def test_packs_new_scaffolds_a_checkable_pack(tmp_path: Path) -> None:
    root = tmp_path / "languages"
    shutil.copytree(LANGUAGES / "_template", root / "_template")
    assert main(["packs", "new", "kok", "--root", str(root)]) == 0
    pack = load_pack(root / "kok")
    assert pack.code == "kok" and not pack.enabled
    assert main(["packs", "new", "kok", "--root", str(root)]) == 2  # refuses to overwrite


def test_speakable_uses_pack_words() -> None:
    hi = load_pack(LANGUAGES / "hi")
    text = speakable("हर साल ₹6,000, कवर ₹5 lakh, प्रीमियम 1.5%, हेल्पलाइन 155261", hi.numbers)
    assert "6 हज़ार रुपये" in text
    assert "5 लाख रुपये" in text
    assert "1.5 प्रतिशत" in text
    assert "एक पाँच पाँच दो छह एक" in text
    en = load_pack(LANGUAGES / "en")
    assert "1.2 lakh rupees" in speakable("₹1,20,000", en.numbers)


def test_speakable_native_scale_words_sentence_ends_and_commas() -> None:
    hi = load_pack(LANGUAGES / "hi")
    text = speakable("₹2 लाख का कवर, ₹6,000, हेल्पलाइन 155261। फिर 1800-115-526.", hi.numbers)
    assert text.startswith("2 लाख रुपये का कवर, 6 हज़ार रुपये, हेल्पलाइन एक पाँच पाँच दो छह एक।")
    assert text.endswith("एक आठ शून्य शून्य एक एक पाँच पाँच दो छह.")
    en = load_pack(LANGUAGES / "en")
    # A big crore figure is one amount, not a phone number read digit by digit.
    assert speakable("₹3,06,137 crore", en.numbers) == "306137 crore rupees"
