"""Fuzz the Meta webhook path: raw bytes → signature check → JSON → ``parse_events``.

    python fuzz/fuzz_meta_event.py -runs=20000

Bytes that are not JSON (or nest too deep to parse) are dropped, exactly as the handler does;
everything that parses must give well-formed, UTF-8-encodable ``Inbound`` messages.
"""

from __future__ import annotations

import json
import sys

import atheris

with atheris.instrument_imports(include=["voicebot"]):
    from voicebot.channels.meta_whatsapp import parse_events
    from voicebot.channels.signatures import meta_signature, verify_meta

SECRET = "meta-app-secret"
SEED = json.dumps(
    {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "metadata": {"phone_number_id": "106540352242922"},
                            "messages": [
                                {
                                    "from": "919812345678",
                                    "id": "wamid.1",
                                    "type": "text",
                                    "text": {"body": "pm kisan?"},
                                },
                                {
                                    "from": "919812345678",
                                    "id": "wamid.2",
                                    "type": "audio",
                                    "audio": {"id": "M1", "mime_type": "audio/ogg"},
                                },
                            ],
                        },
                    }
                ],
            }
        ],
    }
).encode()


def test_one_input(data: bytes) -> None:
    raw = data
    if data[:1] == b"\x00":  # mutate inside a real envelope
        raw = SEED[: len(data) % len(SEED)] + data[1:] + SEED[len(data) % len(SEED) :]
    header = "sha256=" + data[1:33].hex() if len(data) > 32 else None
    assert verify_meta(raw, header, SECRET) in (True, False)
    assert verify_meta(raw, meta_signature(raw, SECRET), SECRET)
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return
    for msg in parse_events(doc, default_phone_number_id="1"):
        assert msg.message_id and msg.phone and msg.reply_to and msg.reply_from
        for value in (msg.message_id, msg.phone, msg.text, msg.media, msg.media_type):
            assert isinstance(value, str)
            value.encode("utf-8")  # storable in SQLite and sendable to the Graph API
        assert msg.kind in {"text", "audio", "other"}


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
