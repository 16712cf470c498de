"""The SQLite store: identity, memory, atomic dedupe, inbox/outbox, audit and retention."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from voicebot.channels.ratelimit import ALLOW, DROP, REFUSE, RateLimiter
from voicebot.messages import Exchange
from voicebot.store import AuditRecord, OutboxItem, Store


async def test_user_key_is_stable_per_install_and_private(tmp_path: Path) -> None:
    store = await Store.open(tmp_path)
    key = store.user_key("+919812345678")
    assert key == store.user_key("+919812345678") != store.user_key("+919812345679")
    assert "9812345678" not in key and len(key) == 32
    await store.close()
    reopened = await Store.open(tmp_path)
    assert reopened.user_key("+919812345678") == key  # the secret is kept in data_dir
    assert (tmp_path / "install.key").stat().st_mode & 0o077 == 0
    other = await Store.open(tmp_path / "other")
    assert other.user_key("+919812345678") != key  # and differs per install
    await reopened.close()
    await other.close()


async def test_memory_is_persistent_bounded_and_redacted(tmp_path: Path) -> None:
    store = await Store.open(tmp_path)
    for i in range(8):
        await store.remember(
            "u1",
            Exchange(question=f"q{i} aadhaar 1234 5678 9012", answer=f"a{i}", scheme="pm-kisan"),
        )
    await store.set_language("u1", "hi")
    await store.close()
    store = await Store.open(tmp_path)
    history = await store.history("u1")
    assert [h.answer for h in history] == [f"a{i}" for i in range(2, 8)]
    assert "1234" not in history[-1].question and history[-1].scheme == "pm-kisan"
    assert await store.language("u1") == "hi" and await store.history("u2") == []
    await store.close()


async def test_claims_are_atomic_under_concurrency(tmp_path: Path) -> None:
    store = await Store.open(tmp_path)
    results = await asyncio.gather(*[store.claim("CA1:1", ttl=60) for _ in range(20)])
    assert results.count(True) == 1
    accepted = await asyncio.gather(*[store.accept("m1", "c", {"x": 1}, ttl=60) for _ in range(10)])
    assert accepted.count(True) == 1 and len(await store.pending_inbox()) == 1
    assert await store.claim("short", ttl=-1) and await store.claim("short", ttl=60)  # expired
    await store.close()


async def test_outbox_order_retry_and_dead_letter(tmp_path: Path) -> None:
    store = await Store.open(tmp_path)
    await store.accept("in1", "c", {}, ttl=60)
    items = [OutboxItem(f"in1#{i}", "in1", i, "c", {"n": i}) for i in range(2)]
    audit = AuditRecord(
        turn="t", channel="c", user="u", lang="en", question="my phone 9812345678", outcome="ok"
    )
    await store.finish("in1", items, audit)
    await store.finish("in1", items, None)  # a re-run cannot queue a second copy
    assert await store.pending_inbox() == [] and len(await store.outbox()) == 2
    due = await store.due_outbox()
    assert [i.id for i in due] == ["in1#0"]  # the voice note waits for the text
    await store.outbox_retry("in1#0", delay=60, error="503", provider_ref="media-7")
    assert await store.due_outbox() == []
    assert (await store.next_outbox_time() or 0) > time.time() + 50
    await store.outbox_retry("in1#0", delay=-1, error="503")
    due = await store.due_outbox()
    assert due[0].provider_ref == "media-7" and due[0].attempts == 2
    await store.outbox_dead(
        "in1#0", error="400", audit=AuditRecord("t", "c", "u", "", "", "dead-letter:x")
    )
    assert [i.id for i in await store.due_outbox()] == ["in1#1"]
    log = await store.audit_log()
    assert log[0]["outcome"] == "dead-letter:x" and log[1]["question"] == "my phone <phone>"
    assert await store.count_pending() == (0, 1)
    await store.close()


async def test_retention_purge(tmp_path: Path) -> None:
    store = await Store.open(tmp_path)
    await store.audit(AuditRecord("t", "c", "u", "en", "q", "ok"))
    await store.claim("old", ttl=-5)
    purged = await store.purge(audit_days=1)
    assert purged["audit"] == 0 and purged["dedupe"] == 1
    purged = await store.purge(audit_days=0)
    assert purged["audit"] == 1 and await store.audit_log() == []
    await store.close()


def test_rate_limiter_bucket_refuses_once_then_drops() -> None:
    now = [0.0]
    limiter = RateLimiter(3, clock=lambda: now[0])
    assert [limiter.check("a") for _ in range(3)] == [ALLOW] * 3
    assert limiter.check("a") == REFUSE and limiter.check("a") == DROP
    assert limiter.check("b") == ALLOW
    now[0] += 20.0  # one token back (3 per minute)
    assert limiter.check("a") == ALLOW and limiter.check("a") == DROP
    now[0] += 60.0
    assert [limiter.check("a") for _ in range(3)] == [ALLOW] * 3 and limiter.check("a") == REFUSE
    assert RateLimiter(0).check("x") == ALLOW
