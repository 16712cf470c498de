"""Twilio's side of the loopback WhatsApp benchmarks: signed webhooks and a fake REST API.

Webhooks are signed with ``twilio.request_validator.RequestValidator`` (Twilio's library, not
our code), each from its own phone number, so the reply that reaches the fake REST API
(``Messages.json``) tells which message it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from voicebot.bench.inputs import BUILTIN_QUESTIONS

__all__ = [
    "OUR_NUMBER",
    "PUBLIC",
    "SID",
    "TOKEN",
    "WHATSAPP_PATH",
    "FakeTwilio",
    "Signer",
    "english_texts",
    "fake_twilio",
]

# The fake Twilio account the bench's servers are configured with (loopback only).
SID = "AC" + "0" * 32
TOKEN = "bench-twilio-auth-token"
PUBLIC = "https://bot.example.com"
OUR_NUMBER = "whatsapp:+14155238886"
WHATSAPP_PATH = "/twilio/whatsapp"


@dataclass
class FakeTwilio:
    """Loopback Twilio REST: records each Messages.json POST (who, when, how often)."""

    received: dict[str, float] = field(default_factory=dict)  # To → first arrival time
    counts: Counter[str] = field(default_factory=Counter)  # To → messages sent to it
    count: int = 0
    events: dict[str, asyncio.Event] = field(default_factory=dict)

    async def messages(self, request: Any) -> Any:
        from aiohttp import web

        form = await request.post()
        to = str(form.get("To", ""))
        self.count += 1
        self.counts[to] += 1
        if to not in self.received:
            self.received[to] = time.perf_counter()
            if to in self.events:
                self.events[to].set()
        return web.json_response({"sid": f"SM{self.count:032d}"}, status=201)


@contextlib.asynccontextmanager
async def fake_twilio() -> AsyncIterator[tuple[FakeTwilio, str]]:
    """A ``FakeTwilio`` listening on loopback, and its base URL (``TWILIO_API_BASE``)."""
    from aiohttp import web

    fake = FakeTwilio()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", fake.messages)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Signer:
    """Signed WhatsApp text webhooks as Twilio sends them, each from a new phone number."""

    def __init__(self, prefix: str = "+9170") -> None:
        from twilio.request_validator import RequestValidator

        self.validator = RequestValidator(TOKEN)
        self.prefix = prefix
        self._numbers = itertools.count()

    def sign(self, text: str) -> tuple[dict[str, str], dict[str, str], str]:
        """(form, headers, the ``To`` its reply will carry)."""
        n = next(self._numbers)
        phone = f"{self.prefix}{n:08d}"
        form = {
            "MessageSid": f"SM{phone.lstrip('+')}{n:020x}",
            "SmsMessageSid": f"SM{phone.lstrip('+')}{n:020x}",
            "AccountSid": SID,
            "From": f"whatsapp:{phone}",
            "To": OUR_NUMBER,
            "Body": text,
            "NumMedia": "0",
            "ProfileName": "Bench",
            "WaId": phone.lstrip("+"),
            "ApiVersion": "2010-04-01",
        }
        signature = self.validator.compute_signature(PUBLIC + WHATSAPP_PATH, form)
        return form, {"X-Twilio-Signature": signature}, f"whatsapp:{phone}"


def english_texts(questions: list[dict[str, Any]]) -> list[str]:
    """The English questions to send (the built-in ones when the list has none)."""
    return [q["question"] for q in questions if q["lang"] == "en"] or [
        q for lang, q in BUILTIN_QUESTIONS if lang == "en"
    ]
