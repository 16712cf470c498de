"""Signatures and TwiML, checked against the twilio library itself and independent HMACs."""

from __future__ import annotations

import hashlib
import hmac
import json
from xml.etree import ElementTree

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Gather, VoiceResponse

from voicebot.channels import twiml
from voicebot.channels.signatures import (
    meta_signature,
    public_url,
    twilio_signature,
    verify_meta,
    verify_twilio,
)

DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}


def _multi(params: dict[str, str]) -> dict[str, list[str]]:
    return {k: [v] for k, v in params.items()}


def test_documented_twilio_example() -> None:
    sig = twilio_signature(DOC_URL, _multi(DOC_PARAMS), "12345")
    assert (
        sig
        == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        == RequestValidator("12345").compute_signature(DOC_URL, DOC_PARAMS)
    )
    assert verify_twilio(DOC_URL, _multi(DOC_PARAMS), sig, "12345")
    assert verify_twilio(
        "https://mycompany.com:443/myapp.php?foo=1&bar=2", _multi(DOC_PARAMS), sig, "12345"
    )
    assert verify_twilio(DOC_URL + "#rc=2&rp=all", _multi(DOC_PARAMS), sig, "12345")  # §1.2
    assert not verify_twilio(
        "http://mycompany.com/myapp.php?foo=1&bar=2", _multi(DOC_PARAMS), sig, "12345"
    )
    assert not verify_twilio(
        "https://127.0.0.1:8080/myapp.php?foo=1&bar=2", _multi(DOC_PARAMS), sig, "12345"
    )
    assert not verify_twilio(DOC_URL, _multi({**DOC_PARAMS, "Digits": "1235"}), sig, "12345")


def test_fails_closed() -> None:
    sig = twilio_signature(DOC_URL, _multi(DOC_PARAMS), "12345")
    assert not verify_twilio(DOC_URL, _multi(DOC_PARAMS), None, "12345")
    assert not verify_twilio(DOC_URL, _multi(DOC_PARAMS), "", "12345")
    assert not verify_twilio(DOC_URL, _multi(DOC_PARAMS), sig, "")
    assert not verify_twilio(DOC_URL, {}, twilio_signature(DOC_URL, {}, ""), "")
    assert not verify_meta(b"{}", meta_signature(b"{}", ""), "")
    assert not verify_meta(b"{}", None, "s")
    assert not verify_meta(b"{}", meta_signature(b"{}", "s")[7:], "s")  # no sha256= prefix


def test_public_url_keeps_prefix_and_raw_query() -> None:
    assert public_url("https://bot.example.com/bot/", "/twilio/voice?n=1&x=%20") == (
        "https://bot.example.com/bot/twilio/voice?n=1&x=%20"
    )


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    params=st.lists(st.tuples(st.text(min_size=1, max_size=8), _text), max_size=6),
    token=st.text(min_size=1, max_size=20),
    port=st.sampled_from(["", ":443", ":8443"]),
)
def test_same_signature_and_verdict_as_twilios_validator(
    params: list[tuple[str, str]], token: str, port: str
) -> None:
    url = f"https://bot.example.com{port}/twilio/whatsapp?n=1"
    multi: MultiDict[str] = MultiDict(params)  # repeated names too, as aiohttp parses them
    ours = {k: multi.getall(k) for k in multi}
    validator = RequestValidator(token)
    theirs = validator.compute_signature(url, multi)
    assert twilio_signature(url, ours, token) == theirs
    for candidate in (url, url.replace(port, "") if port else url + "x"):
        assert verify_twilio(candidate, ours, theirs, token) == validator.validate(
            candidate, multi, theirs
        )


def test_meta_signature_is_over_raw_bytes() -> None:
    doc = {"entry": [{"changes": [{"value": {"contacts": [{"profile": {"name": "राम"}}]}}]}]}
    raw = json.dumps(doc).encode()  # \\u escapes, like Meta sends
    header = "sha256=" + hmac.new(b"secret", raw, hashlib.sha256).hexdigest()
    assert verify_meta(raw, header, "secret")
    assert not verify_meta(json.dumps(doc, ensure_ascii=False).encode(), header, "secret")
    assert not verify_meta(raw, header, "other")


def _canon(xml: str) -> list[tuple[str, dict[str, str], str]]:
    root = ElementTree.fromstring(xml)
    return [(e.tag, dict(e.attrib), (e.text or "").strip()) for e in root.iter()]


def test_twiml_matches_twilios_builder_and_escapes() -> None:
    nasty = "a & b < c > \"d\" 'e' </Say><Hangup/>"
    url = "https://bot.example.com/twilio/voice/turn?n=1&x=<y>"
    ours = twiml.response(
        twiml.say(nasty),
        twiml.gather(twiml.play(url), action=url, num_digits=2, timeout=3),
        twiml.record(url, timeout=2, max_length=30),
        twiml.pause(2),
        twiml.redirect(url),
        twiml.hangup(),
    )
    ref = VoiceResponse()
    ref.say(nasty)
    gather = Gather(action=url, method="POST", input="dtmf", num_digits=2, timeout=3)
    gather.play(url)
    ref.append(gather)
    ref.record(
        action=url,
        method="POST",
        timeout=2,
        max_length=30,
        play_beep=True,
        trim="trim-silence",
        finish_on_key="#",
    )
    ref.pause(length=2)
    ref.redirect(url, method="POST")
    ref.hangup()
    assert _canon(ours) == _canon(str(ref))
    assert twiml.response() == '<?xml version="1.0" encoding="UTF-8"?><Response />'
