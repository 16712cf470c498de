"""Meta WhatsApp Cloud API through the real app, against a loopback Graph API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.channel_kit import (
    ACCESS,
    CALLER,
    PHONE_ID,
    VERIFY,
    Factory,
    meta_doc,
    ogg_note,
    start_kit,
    until,
)
from tests.fakes import FakeTranscriber

WA_ID = CALLER.lstrip("+")


def _text(mid: str, body: str) -> dict[str, object]:
    return {
        "from": WA_ID,
        "id": mid,
        "timestamp": "1750857384",
        "type": "text",
        "text": {"body": body},
    }


def _voice(mid: str, media: str) -> dict[str, object]:
    audio = {"mime_type": "audio/ogg; codecs=opus", "sha256": "x", "id": media, "voice": True}
    return {"from": WA_ID, "id": mid, "timestamp": "1750857384", "type": "audio", "audio": audio}


async def test_verification_handshake(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path)
    ok = await kit.client.get(
        "/whatsapp/cloud",
        params={"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"},
    )
    assert ok.status == 200 and await ok.text() == "1158201444"
    assert ok.headers["Content-Type"].startswith("text/plain")
    bad = await kit.client.get(
        "/whatsapp/cloud",
        params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"},
    )
    assert bad.status == 403


async def test_signature_over_raw_bytes(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path)
    # Meta escapes non-ASCII as \\uXXXX: the raw bytes, not a re-serialisation, are signed.
    raw = json.dumps(meta_doc(_text("wamid.1", "पीएम किसान"))).encode()
    assert b"\\u" in raw
    status, _ = await kit.meta_post(None, raw=raw)
    assert status == 200
    await until(lambda: len(kit.meta.sent) == 1)
    unsigned = await kit.client.post(
        "/whatsapp/cloud", data=raw, headers={"Content-Type": "application/json"}
    )
    tampered_raw = raw.replace(b"wamid.1", b"wamid.2")
    sig = await _signature(raw)
    tampered = await kit.client.post(
        "/whatsapp/cloud", data=tampered_raw, headers={"X-Hub-Signature-256": sig}
    )
    assert unsigned.status == 403 and tampered.status == 403
    await asyncio.sleep(0.2)
    assert len(kit.meta.sent) == 1 and await kit.rt.store.pending_inbox() == []


async def _signature(raw: bytes) -> str:
    import hashlib
    import hmac

    from tests.channel_kit import APP_SECRET

    return "sha256=" + hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()


async def test_text_reply_through_the_graph_api(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path)
    status, seconds = await kit.meta_post(meta_doc(_text("wamid.1", "pm kisan amount?")))
    assert status == 200 and seconds < 0.3
    await until(lambda: len(kit.meta.sent) == 1)
    sent = kit.meta.sent[0]
    assert (
        sent["to"] == WA_ID and sent["type"] == "text" and sent["messaging_product"] == "whatsapp"
    )
    assert "https://pmkisan.gov.in" in sent["text"]["body"]
    assert set(kit.meta.auth) == {f"Bearer {ACCESS}"}


async def test_voice_note_in_text_and_voice_out(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    stt = FakeTranscriber("pm kisan kitna milta hai")
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path, transcriber=stt)
    kit.meta.media["MEDIA1"] = ogg_note()
    status, _ = await kit.meta_post(meta_doc(_voice("wamid.v1", "MEDIA1")))
    assert status == 200
    await until(lambda: len(kit.meta.sent) == 2)
    text, voice = kit.meta.sent
    assert text["type"] == "text" and "pmkisan.gov.in" in text["text"]["body"]
    assert voice["type"] == "audio" and voice["audio"] == {"id": "media-1", "voice": True}
    upload = kit.meta.uploads[0]
    assert upload["type"] == "audio/ogg" and upload["content_type"] == "audio/ogg"
    assert upload["magic"] == "OggS" and upload["messaging_product"] == "whatsapp"
    assert stt.calls == 1


async def test_upload_is_reused_when_the_send_is_retried(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path)
    kit.meta.media["MEDIA1"] = ogg_note()
    kit.meta.fail_statuses = [429]  # the text is throttled once
    kit.meta.fail_audio = [503, 500]  # the audio message fails twice after its upload
    await kit.meta_post(meta_doc(_voice("wamid.v1", "MEDIA1")))
    await until(lambda: len(kit.meta.sent) == 2)
    assert [m["type"] for m in kit.meta.sent] == ["text", "audio"] and not kit.meta.fail_audio
    assert len(kit.meta.uploads) == 1  # the media id was kept for the retries
    rows = await kit.rt.store.outbox()
    assert [(status, attempts) for _, status, attempts in rows] == [("sent", 2), ("sent", 3)]


async def test_statuses_and_duplicates_are_acknowledged_and_ignored(
    aiohttp_client: Factory, aiohttp_server: Factory, tmp_path: Path
) -> None:
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path)
    statuses = [{"id": "wamid.out1", "status": "read", "timestamp": "1", "recipient_id": WA_ID}]
    status, _ = await kit.meta_post(meta_doc(statuses=statuses))
    assert status == 200
    doc = meta_doc(_text("wamid.1", "pm kisan?"), _text("wamid.2", "and e-kyc?"))
    results = await asyncio.gather(*[kit.meta_post(doc) for _ in range(3)])
    assert {s for s, _ in results} == {200}
    await until(lambda: len(kit.meta.sent) == 2)  # two messages in a batch, each answered once
    status, _ = await kit.meta_post({"object": "whatsapp_business_account", "entry": "junk"})
    assert status == 200
    await asyncio.sleep(0.3)
    assert len(kit.meta.sent) == 2
    assert kit.meta.sent[0]["to"] == WA_ID and PHONE_ID
