"""Hostile input through the webhook parsers and the real app (issue 8).

Property tests (hypothesis) hit the pure parsers directly and the running app over real HTTP:
random and malformed Twilio forms and Meta JSON, wrong types, deep nesting, unicode edge cases,
SQL-ish text, oversized bodies, absurd audio. Every case must end in a clear answer (a 2xx
ack, 400, 403 or 413 — never a 500 or a hang), and a normal message right after is still
answered. The app runs once per module on a real port in a background thread so that
synchronous hypothesis tests can drive it with plain ``urllib``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import socket
import sqlite3
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import wave
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from tests.channel_kit import (
    APP_SECRET,
    CALLER,
    PUBLIC,
    TOKEN,
    FakeMeta,
    FakeTwilio,
    kit_settings,
    meta_doc,
    whatsapp_form,
)
from tests.fakes import fake_services
from voicebot import audio
from voicebot.app import STATE, create_app
from voicebot.channels import RUNTIME, Runtime
from voicebot.channels.meta_whatsapp import parse_events
from voicebot.channels.twilio_whatsapp import parse_message
from voicebot.messages import Audio

T = TypeVar("T")
MAX_BODY = 64 * 1024
MAX_AUDIO_SECONDS = 30.0
WA_ID = CALLER.lstrip("+")
PROPS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- a live app on a real port, driven synchronously -------------------------------------------


@dataclass
class Live:
    loop: asyncio.AbstractEventLoop
    base: str
    app: web.Application
    twilio: FakeTwilio
    meta: FakeMeta
    data_dir: Path
    counter: int = 0

    @property
    def rt(self) -> Runtime:
        return self.app[RUNTIME]

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter:030d}"

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, float]:
        request = urllib.request.Request(self.base + path, data=body, headers=headers)
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=20) as resp:
                return resp.status, resp.read(), time.perf_counter() - start
        except urllib.error.HTTPError as err:
            return err.code, err.read(), time.perf_counter() - start

    def twilio_post(self, form: dict[str, str], path: str = "/twilio/whatsapp") -> int:
        sig = RequestValidator(TOKEN).compute_signature(PUBLIC + path, form)
        body = urllib.parse.urlencode(form).encode()
        headers = {
            "X-Twilio-Signature": sig,
            "Content-Type": "application/x-www-form-urlencoded",
        }
        return self.post(path, body, headers)[0]

    def meta_post(self, raw: bytes) -> int:
        sig = "sha256=" + hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        headers = {"X-Hub-Signature-256": sig, "Content-Type": "application/json"}
        return self.post("/whatsapp/cloud", raw, headers)[0]

    def wait(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "condition not met in time"
            time.sleep(0.01)

    def twilio_reply_to(self, phone: str, n: int = 1) -> list[dict[str, str]]:
        """Wait for ``n`` Twilio sends to ``phone`` and return them."""
        to = f"whatsapp:{phone}"
        self.wait(lambda: len([m for m in self.twilio.sent if m["To"] == to]) >= n)
        return [m for m in self.twilio.sent if m["To"] == to]

    def still_serving(self) -> None:
        """A normal text message right now is acked and answered with its source."""
        phone = f"+9199{self.counter:08d}"
        sid = self.next_id("SMok")
        assert self.twilio_post(whatsapp_form(sid, "pm kisan?", phone=phone)) == 200
        reply = self.twilio_reply_to(phone)[-1]
        assert "pmkisan.gov.in" in reply["Body"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("hostile")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[Live, web.AppRunner, list[TestServer]]:
        twilio, meta = FakeTwilio(), FakeMeta()
        twilio.server, meta.server = TestServer(twilio.app()), TestServer(meta.app())
        await twilio.server.start_server()
        await meta.server.start_server()
        settings_ = kit_settings(
            tmp,
            twilio,
            meta,
            langs=("en",),
            max_body_bytes=MAX_BODY,
            max_audio_seconds=MAX_AUDIO_SECONDS,
            rate_limit_per_minute=1_000_000,
        )
        app = create_app(settings_, fake_services(settings_))
        runner = web.AppRunner(app, shutdown_timeout=2)
        await runner.setup()
        port = _free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.wait_for(app[RUNTIME].workers.wait(), 10)
        base = f"http://127.0.0.1:{port}"
        return (
            Live(loop, base, app, twilio, meta, settings_.data_dir),
            runner,
            [
                twilio.server,
                meta.server,
            ],
        )

    live_, runner, servers = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    yield live_

    async def stop() -> None:
        await runner.cleanup()
        for server in servers:
            await server.close()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()
    db = sqlite3.connect(live_.data_dir / "voicebot.sqlite3")
    try:  # after everything thrown at it, the database is intact
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()


# -- strategies ----------------------------------------------------------------------------

# Names and messages people (and attackers) send: RTL, zero-width joiners, combining marks,
# emoji with skin tones, Indic conjuncts, NUL and control characters, lone surrogates.
NASTY = st.sampled_from(
    [
        "",
        " ",
        "\u202eevil\u202c",
        "\u200d\u200c\ufeff",
        "राम\u094d\u200d",
        "👨‍👩‍👧‍👦🏽",
        "ﷺ" * 50,
        "Z̸̢̛̖a̵l̴g̵o̶",
        "\x00\x01\x1b[31m",
        "\ud800",
        "\udfff\ud83d",
        "Robert'); DROP TABLE inbox;--",
        "' OR 1=1 --",
        "\"; DELETE FROM outbox WHERE '1'='1",
        "%s%s%n{0}{}",
        "<Response><Hangup/></Response>",
        "9" * 400,
    ]
)
TEXT = st.one_of(NASTY, st.text(max_size=200))
FORM_KEYS = st.one_of(
    st.sampled_from(
        ["MessageSid", "From", "To", "Body", "NumMedia", "MediaUrl0", "MediaContentType0"]
    ),
    st.text(min_size=1, max_size=20),
)
JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT, st.just([])
)
JSON = st.recursive(
    JSON_LEAF,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.one_of(FORM_KEYS, TEXT), kids, max_size=4)
    ),
    max_leaves=30,
)


def _meta_message(draw_id: str, body: Any, kind: Any = "text", sender: Any = WA_ID) -> Any:
    return {"from": sender, "id": draw_id, "timestamp": "1", "type": kind, "text": {"body": body}}


# -- pure parsers --------------------------------------------------------------------------


@PROPS
@given(st.dictionaries(FORM_KEYS, TEXT, max_size=12))
def test_twilio_form_parser_accepts_or_refuses_never_crashes(form: dict[str, str]) -> None:
    try:
        msg = parse_message(form)
    except web.HTTPBadRequest:
        sid = form.get("MessageSid") or form.get("SmsMessageSid")
        assert not sid or not form.get("From") or not form.get("To")
        return
    assert msg.kind in {"text", "audio", "other"} and msg.message_id


@PROPS
@given(JSON)
def test_meta_parser_takes_only_well_formed_messages(doc: Any) -> None:
    for msg in parse_events(doc, default_phone_number_id="1"):
        assert msg.message_id and msg.phone and msg.reply_from
        for value in (msg.text, msg.phone, msg.message_id, msg.media, msg.media_type):
            value.encode("utf-8")  # storable and sendable: no lone surrogates


@PROPS
@given(st.lists(st.one_of(JSON, TEXT), max_size=3), TEXT, st.one_of(TEXT, JSON))
def test_meta_parser_wrong_types_inside_a_real_envelope(extra: Any, body: str, kind: Any) -> None:
    doc = meta_doc(_meta_message("wamid.1", body, kind), _meta_message("wamid.2", extra))
    for msg in parse_events(doc):
        assert isinstance(msg.text, str)
        msg.text.encode("utf-8")


def test_twilio_form_huge_num_media_is_bounded() -> None:
    start = time.perf_counter()
    msg = parse_message(
        {"MessageSid": "SM1", "From": "whatsapp:+1", "To": "x", "NumMedia": "9" * 12}
    )
    assert msg.kind == "other" and time.perf_counter() - start < 0.1


# -- Media Streams frames (voicebot.channels.twilio_stream.parse_message) ------------------------

ASCII_NUMBER = st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=12), JSON).filter(
    lambda v: not (isinstance(v, str) and v.isdigit() and not v.isascii())  # known bug, below
)
B64ISH = st.one_of(
    st.binary(max_size=400).map(lambda b: base64.b64encode(b).decode()),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef+/=-_ \n\x00é", max_size=300),
    JSON,
)


def _frame(event: Any, payload: Any, chunk: Any, rate: Any) -> str:
    return json.dumps(
        {
            "event": event,
            "streamSid": "MZ1",
            "media": {"track": "inbound", "chunk": chunk, "timestamp": chunk, "payload": payload},
            "start": {
                "streamSid": "MZ1",
                "callSid": "CA1",
                "customParameters": payload,
                "mediaFormat": {"encoding": payload, "sampleRate": rate, "channels": rate},
            },
            "dtmf": {"digit": payload},
            "mark": {"name": payload},
            "stop": payload,
        }
    )


@PROPS
@given(
    event=st.one_of(st.sampled_from(["media", "start", "dtmf", "mark", "stop", "connected"]), JSON),
    payload=B64ISH,
    chunk=ASCII_NUMBER,
    rate=st.one_of(st.integers(-(2**64), 2**64), st.floats(allow_nan=True), TEXT, JSON),
)
def test_media_stream_frames_parse_or_give_a_reason(
    event: Any, payload: Any, chunk: Any, rate: Any
) -> None:
    from voicebot.channels import twilio_stream

    message, reason = twilio_stream.parse_message(_frame(event, payload, chunk, rate))
    assert (message is None) == bool(reason)
    if isinstance(message, twilio_stream.Media):
        assert isinstance(message.payload, bytes) and isinstance(message.chunk, int)


@PROPS
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.hex())))
def test_media_stream_garbage_text_frames_give_a_reason(text: str) -> None:
    from voicebot.channels import twilio_stream

    message, reason = twilio_stream.parse_message(text)
    assert (message is None) == bool(reason)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ('{"event": "media", "media": {"payload": "!!!not base64!!!"}}', "base64"),
        ('{"event": "media", "media": {"payload": "QUJ"}}', "base64"),
        ('{"event": "media", "media": {"payload": 12}}', "payload"),
        ("[" * 50_000, "json"),
        ('{"event": "start", "start": {}}', "start-fields"),
        ("null", "shape"),
    ],
)
def test_media_stream_bad_frames_are_named(frame: str, reason: str) -> None:
    from voicebot.channels import twilio_stream

    assert twilio_stream.parse_message(frame) == (None, reason)


def test_media_stream_unicode_digit_chunk_is_not_a_crash() -> None:
    from voicebot.channels import twilio_stream

    frame = json.dumps({"event": "media", "media": {"payload": "AAAA", "chunk": "²"}})
    message, _ = twilio_stream.parse_message(frame)
    assert message is not None


# -- the live app ----------------------------------------------------------------------------


@PROPS
@given(form=st.dictionaries(FORM_KEYS, TEXT, max_size=10), sid=st.booleans())
def test_random_signed_twilio_forms_get_a_clear_status(
    live: Live, form: dict[str, str], sid: bool
) -> None:
    if sid:
        form = {**form, "MessageSid": live.next_id("SMh"), "From": "whatsapp:+919800000001"}
        form.setdefault("To", "whatsapp:+14155238886")
    try:
        urllib.parse.urlencode(form).encode()
    except UnicodeEncodeError:
        return  # a lone surrogate cannot even be put on the wire as a form
    status = live.twilio_post(form)
    assert status in {200, 400}, (status, form)


def test_twilio_forms_then_a_normal_message(live: Live) -> None:
    live.still_serving()


@PROPS
@given(doc=st.one_of(JSON, st.lists(JSON, max_size=3).map(lambda ms: meta_doc(*ms))))
def test_random_signed_meta_json_is_acked_never_500(live: Live, doc: Any) -> None:
    raw = json.dumps(doc).encode()
    if len(raw) > MAX_BODY:
        return
    assert live.meta_post(raw) == 200


@PROPS
@given(raw=st.binary(max_size=2048))
def test_random_signed_meta_bytes_are_acked_never_500(live: Live, raw: bytes) -> None:
    assert live.meta_post(raw) == 200


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 60_000,
        b'{"entry":' * 6000 + b"1" + b"}" * 6000,
        b'{"entry": [{"changes": [{"value": {"messages": [{"id": "\\ud800"',
        b"\xff\xfe\x00{",
        b'{"a": 1e999999}',
        b"null",
        b'"entry"',
    ],
    ids=["deep-list", "deep-dict", "truncated", "bad-utf8", "huge-float", "null", "string"],
)
def test_malformed_signed_meta_bodies_are_acked_and_nothing_breaks(live: Live, raw: bytes) -> None:
    assert live.meta_post(raw) == 200
    live.still_serving()


@pytest.mark.parametrize("name", ["\ud800", "\u202eevil\u202c", "👨‍👩‍👧‍👦", "\x00", "\ufeff"])
def test_unicode_edge_cases_in_meta_messages_are_answered(live: Live, name: str) -> None:
    phone = f"91990{live.counter:07d}"
    mid = live.next_id("wamid.u")
    doc = meta_doc({"from": phone, "id": mid, "timestamp": "1", "type": "text"})
    doc["entry"][0]["changes"][0]["value"]["messages"][0]["text"] = {"body": f"{name} pm kisan?"}
    doc["entry"][0]["changes"][0]["value"]["contacts"] = [{"profile": {"name": name}}]
    before = len(live.meta.sent)
    assert live.meta_post(json.dumps(doc).encode()) == 200  # \ud800 travels as an escape
    live.wait(lambda: any(m["to"] == phone for m in live.meta.sent[before:]))
    reply = next(m for m in live.meta.sent[before:] if m["to"] == phone)
    assert "pmkisan.gov.in" in reply["text"]["body"]


@pytest.mark.parametrize("name", ["\u202eevil\u202c", "👨‍👩‍👧‍👦🏽", "\x00\x1b", "राम\u200d"])
def test_unicode_edge_cases_in_twilio_profile_names_are_answered(live: Live, name: str) -> None:
    phone = f"+9198{live.counter:08d}"
    form = whatsapp_form(live.next_id("SMu"), "pm kisan?", phone=phone, ProfileName=name)
    assert live.twilio_post(form) == 200
    assert "pmkisan.gov.in" in live.twilio_reply_to(phone)[-1]["Body"]


SQLISH = [
    "'; DROP TABLE inbox; --",
    "Robert'); DELETE FROM outbox; --",
    "1; UPDATE users SET lang='xx'",
    '" OR ""="',
    "x' UNION SELECT token, path FROM media --",
]


@pytest.mark.parametrize("text", SQLISH)
def test_sql_ish_text_is_stored_and_answered_literally(live: Live, text: str) -> None:
    phone = f"+9197{live.counter:08d}"
    assert live.twilio_post(whatsapp_form(live.next_id("SMq"), text, phone=phone)) == 200
    assert "pmkisan.gov.in" in live.twilio_reply_to(phone)[-1]["Body"]
    user = live.rt.store.user_key(phone)
    questions = [r["question"] for r in live.run(live.rt.store.audit_log(50)) if r["user"] == user]
    assert questions == [text]  # stored literally, not executed and not mangled
    db = sqlite3.connect(live.data_dir / "voicebot.sqlite3")
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"inbox", "outbox", "users", "audit", "media", "dedupe"} <= tables
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] > 0
        assert db.execute("SELECT COUNT(DISTINCT lang) FROM users WHERE lang='xx'").fetchone() == (
            0,
        )
    finally:
        db.close()


@pytest.mark.parametrize("channel", ["twilio", "meta"])
def test_oversized_bodies_are_413_and_nothing_is_stored(live: Live, channel: str) -> None:
    pending = live.run(live.rt.store.count_pending())
    if channel == "twilio":
        form = whatsapp_form(live.next_id("SMbig"), "x" * (MAX_BODY + 1))
        assert live.twilio_post(form) == 413
    else:
        text = _meta_message(live.next_id("wamid.big"), "x" * (MAX_BODY + 1))
        assert live.meta_post(json.dumps(meta_doc(text)).encode()) == 413
    assert live.run(live.rt.store.count_pending()) == pending
    live.still_serving()


# -- hostile audio through the channels ---------------------------------------------------------


def _wav_rate(rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 8000)
    data = bytearray(out.getvalue())
    struct.pack_into("<I", data, 24, rate)  # sample rate
    struct.pack_into("<I", data, 28, (rate * 2) & 0xFFFFFFFF)  # byte rate
    return bytes(data)


def _opus_silence(seconds: float) -> bytes:
    """A long, tiny voice note: Opus silence compresses >100:1 against its decoded PCM."""
    return audio.encode_ogg_opus(
        Audio(np.zeros(int(8000 * seconds), np.float32), 8000), rate=8000, bitrate=6000
    )


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _ogg_claiming(hours: float) -> bytes:
    """A real 1 s Ogg/Opus note whose last page's granule position claims ``hours``."""
    data = bytearray(_opus_silence(1.0))
    last = data.rfind(b"OggS")
    struct.pack_into("<q", data, last + 6, int(hours * 3600 * 48000))
    struct.pack_into("<I", data, last + 22, 0)
    struct.pack_into("<I", data, last + 22, _ogg_crc(bytes(data[last:])))
    return bytes(data)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _opus_silence(MAX_AUDIO_SECONDS * 8)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("ten-hours-ogg", "audio-too-long"),
        ("zip-bomb-ogg", "audio-too-long"),
        ("rate-0", "audio-corrupt"),
        ("rate-1", "audio-too-long"),
        ("rate-2^31", "audio-unsupported"),
        ("garbage-ogg", "audio-corrupt"),
        ("base64-text", "audio-unsupported"),
    ],
)
def test_hostile_voice_notes_get_a_polite_apology_and_nothing_else_is_affected(
    live: Live, bomb: bytes, case: str, code: str
) -> None:
    data = {
        "ten-hours-ogg": lambda: _ogg_claiming(10),
        "zip-bomb-ogg": lambda: bomb,
        "rate-0": lambda: _wav_rate(0),
        "rate-1": lambda: _wav_rate(1),
        "rate-2^31": lambda: _wav_rate(2**31 - 1),
        "garbage-ogg": lambda: b"OggS" + bytes(range(256)) * 8,
        "base64-text": lambda: base64.b64encode(b"not audio at all" * 10),
    }[case]()
    if case == "zip-bomb-ogg":
        assert len(data) * 50 < MAX_AUDIO_SECONDS * 8 * 16000 * 4  # tiny file, huge PCM
    phone = f"+9196{live.counter:08d}"
    name = live.next_id("ME")
    live.twilio.media[name] = (data, "audio/ogg")
    media_url = f"{live.twilio.base}/2010-04-01/Accounts/AC/Messages/MM1/Media/{name}"
    form = whatsapp_form(
        live.next_id("MMh"),
        phone=phone,
        NumMedia="1",
        MediaUrl0=media_url,
        MediaContentType0="audio/ogg",
    )
    start = time.perf_counter()
    assert live.twilio_post(form) == 200
    replies = live.twilio_reply_to(phone)
    took = time.perf_counter() - start
    services = live.app[STATE].services
    assert services is not None
    outcome = live.run(live.rt.store.audit_log(1))[0]["outcome"]
    assert outcome == code
    apology = services.pipeline.apology(code, services.packs.get("en"))
    assert replies[-1]["Body"] == apology and len(replies) == 1  # text only, no voice note
    assert took < 5.0, took  # bounded work, whatever the file claims
    live.still_serving()
