"""Fuzz the Twilio webhook path: urlencoded body → signature check → ``parse_message``.

    python fuzz/fuzz_twilio_form.py -runs=20000

A form either parses into an ``Inbound`` or is refused with 400 (``HTTPBadRequest``); the
signature check answers True/False and never raises, whatever the fields hold.
"""

from __future__ import annotations

import sys
from urllib.parse import parse_qsl

import aiohttp  # noqa: F401
import atheris
from aiohttp import web

with atheris.instrument_imports(include=["voicebot"]):
    from voicebot.channels.signatures import verify_twilio
    from voicebot.channels.twilio_whatsapp import parse_message

URL = "https://bot.example.com/twilio/whatsapp"
TOKEN = "twilio-auth-token"


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    header = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        params.setdefault(name, []).append(value)
    assert verify_twilio(URL, params, header or None, TOKEN) in (True, False)
    form = {name: values[-1] for name, values in params.items()}
    try:
        msg = parse_message(form)
    except web.HTTPBadRequest:
        return
    assert msg.kind in {"text", "audio", "other"}
    assert msg.message_id and msg.reply_to and msg.reply_from
    msg.text.encode("utf-8")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
