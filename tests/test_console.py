"""Operator console: auth and JSON API over HTTP, then end to end in headless Chromium.

Speech engines are the fakes (a tone voice, a fixed transcript); the answerer is the real
grounded one over the real knowledge index, so the browser shows real answers and sources.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.fakes import ROOT, FakeTranscriber, fake_services
from voicebot.app import create_app
from voicebot.config import Settings
from voicebot.console import metrics_summary
from voicebot.packeval import PackReport, report_path, save_report
from voicebot.store import AuditRecord, Store

TOKEN = "operator-test-token"
PHONE = "9876543210"


def _settings(tmp_path: Path, token: str = TOKEN) -> Settings:
    return Settings(
        languages_dir=ROOT / "languages",
        knowledge_dir=ROOT / "knowledge",
        data_dir=tmp_path,
        operator_token=token,
    )


def _gate_report(tmp_path: Path) -> None:
    def report(code: str, passed: bool) -> PackReport:
        return PackReport(
            code=code,
            name=code,
            asr=True,
            voice="espeak-ng:x",
            cases=1,
            asr_cer=0.2 if passed else 0.9,
            answer_accuracy=1.0,
            text_accuracy=1.0,
            tts_cer=0.3,
            latency_ms={},
            thresholds={"asr_cer_max": 0.5, "answer_accuracy_min": 0.5, "tts_cer_max": 0.6},
            passed=passed,
            failures=[] if passed else ["asr cer 0.90 > 0.50"],
        )

    save_report([report("hi", True), report("ur", False)], report_path(tmp_path))


async def _seed_audit(tmp_path: Path) -> None:
    store = await Store.open(tmp_path)
    await store.audit(
        AuditRecord(
            turn="t1",
            channel="twilio-whatsapp",
            user=store.user_key("+919876543210"),
            lang="hi",
            question=f"मेरा नंबर {PHONE} है, पीएम किसान का पैसा कब आएगा",
            outcome="answered",
            latency_ms=812.0,
            sources=("pm-kisan.status",),
        )
    )
    await store.close()


@pytest.fixture(scope="module")
def answerer() -> Any:
    from tests.grounded_kit import real_answerer

    return real_answerer()


# --------------------------------------------------------------------------- HTTP


async def test_console_is_not_mounted_without_a_token(
    aiohttp_client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="voicebot.console"):
        app = create_app(_settings(tmp_path, token=""), fake_services())
    assert "VOICEBOT_OPERATOR_TOKEN not set" in caplog.text
    client = await aiohttp_client(app)
    assert (await client.get("/console/")).status == 404
    assert (await client.get("/console/api/packs")).status == 404


async def test_api_needs_the_token(aiohttp_client: Any, tmp_path: Path, answerer: Any) -> None:
    _gate_report(tmp_path)
    await _seed_audit(tmp_path)
    client = await aiohttp_client(create_app(_settings(tmp_path), fake_services(answerer=answerer)))
    index = await client.get("/console/")
    assert index.status == 200 and "script-src 'self'" in index.headers["Content-Security-Policy"]
    assert (await client.get("/console/api/packs")).status == 401
    bad = {"Authorization": "Bearer wrong"}
    assert (await client.get("/console/api/packs", headers=bad)).status == 401
    assert (await client.post("/console/api/login", json={"token": "nope"})).status == 401

    login = await client.post("/console/api/login", json={"token": TOKEN})
    assert login.status == 200
    cookie = login.cookies["voicebot_console"]
    assert TOKEN not in cookie.value and cookie["httponly"]
    packs = await (await client.get("/console/api/packs")).json()  # the cookie is enough
    rows = {row["code"]: row for row in packs["packs"]}
    assert len(rows) >= 13
    assert rows["hi"]["gate"] == "pass" and rows["ur"]["gate"] == "fail"
    assert rows["ur"]["quality"]["failures"] == ["asr cer 0.90 > 0.50"]
    assert rows["or"]["asr"] == "no"

    headers = {"Authorization": f"Bearer {TOKEN}"}
    reply = await client.post(
        "/console/api/try",
        json={"lang": "en", "text": f"how much money pm kisan gives in a year? my no {PHONE}"},
        headers=headers,
    )
    body = await reply.json()
    assert "6,000" in body["answer"] and body["sources"][0]["url"].startswith("https://")
    assert body["audio"].startswith("data:audio/wav;base64,")
    assert body["transcript"] is None and body["translation"] is None

    talk = await (await client.get("/console/api/conversations", headers=headers)).json()
    questions = [row["question"] for row in talk["conversations"]]
    assert len(questions) == 2 and all(PHONE not in q for q in questions)
    assert all("<phone>" in q for q in questions)
    metrics = await (await client.get("/console/api/metrics", headers=headers)).json()
    assert metrics["stages"]["answer"]["count"] >= 1 and metrics["ready"] is True


async def test_recorded_question_is_transcribed(aiohttp_client: Any, tmp_path: Path) -> None:
    from aiohttp import FormData

    from tests.fakes import tone
    from voicebot.audio import encode_wav

    services = fake_services(transcriber=FakeTranscriber("how much does pm kisan pay"))
    client = await aiohttp_client(create_app(_settings(tmp_path), services))
    form = FormData()
    form.add_field("lang", "en")
    form.add_field("audio", encode_wav(tone(1.0)), filename="q.wav", content_type="audio/wav")
    reply = await client.post(
        "/console/api/try", data=form, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    body = await reply.json()
    assert reply.status == 200 and body["transcript"] == "how much does pm kisan pay"


def test_metrics_summary_reads_prometheus_text() -> None:
    text = (
        "# TYPE voicebot_errors_total counter\n"
        'voicebot_errors_total{code="stt-empty"} 2\n'
        'voicebot_stage_seconds_sum{stage="stt"} 3\n'
        'voicebot_stage_seconds_count{stage="stt"} 4\n'
        'voicebot_http_requests_total{route="/x",status="200"} 5\n'
    )
    summary = metrics_summary(text)
    assert summary["errors"] == {"stt-empty": 2.0}
    assert summary["stages"] == {"stt": {"count": 4, "mean_ms": 750}}
    assert summary["counters"]["voicebot_http_requests_total"] == 5.0


# --------------------------------------------------------------------------- browser


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian chromium and chromium-driver are not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _drive(driver: Any, base: str, screenshot: Path) -> dict[str, Any]:
    """The operator's path through the console; returns what the page showed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(driver, 30)
    driver.get(base + "/console")
    wait.until(ec.visibility_of_element_located((By.ID, "login-form")))
    driver.find_element(By.ID, "token").send_keys("wrong")
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "login-error"), "Wrong token"))
    token = driver.find_element(By.ID, "token")
    token.clear()
    token.send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait.until(ec.visibility_of_element_located((By.ID, "packs-panel")))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#packs tbody tr")) >= 13)
    matrix = {
        row.get_attribute("data-code"): row.text
        for row in driver.find_elements(By.CSS_SELECTOR, "#packs tbody tr")
    }
    Select(driver.find_element(By.ID, "try-lang")).select_by_value("hi")
    driver.find_element(By.ID, "try-text").send_keys(
        f"अंत्योदय राशन कार्ड पर हर महीने कितने किलो अनाज मिलता है? मेरा नंबर {PHONE}"
    )
    driver.find_element(By.ID, "try-ask").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "try-status"), "Done"))
    sources = driver.find_elements(By.CSS_SELECTOR, "#r-sources a.source")
    wait.until(
        lambda d: (
            PHONE not in d.find_element(By.ID, "conversations").text
            and len(d.find_elements(By.CSS_SELECTOR, "#conversations tbody tr")) >= 2
        )
    )
    wait.until(lambda d: "answer (" in d.find_element(By.ID, "metrics").text)
    driver.save_screenshot(str(screenshot))
    return {
        "matrix": matrix,
        "answer": driver.find_element(By.ID, "r-answer").text,
        "links": [a.get_attribute("href") for a in sources],
        "audio": driver.find_element(By.ID, "r-audio").get_attribute("src") or "",
        "conversations": driver.find_element(By.ID, "conversations").text,
        "cookie": driver.get_cookie("voicebot_console"),
    }


async def test_console_in_headless_chromium(
    browser: Any, tmp_path: Path, answerer: Any, unused_tcp_port: int
) -> None:
    _gate_report(tmp_path)
    await _seed_audit(tmp_path)
    app = create_app(_settings(tmp_path), fake_services(answerer=answerer))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", unused_tcp_port)
    await site.start()
    shot = tmp_path / "console.png"
    try:
        seen = await asyncio.to_thread(_drive, browser, f"http://127.0.0.1:{unused_tcp_port}", shot)
    finally:
        await runner.cleanup()
    keep = ROOT / "var" / "test-data" / "console.png"  # for a human look after the run
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, keep)

    assert "pass" in seen["matrix"]["hi"] and "fail" in seen["matrix"]["ur"]
    assert "espeak-ng:or" in seen["matrix"]["or"]
    assert "35" in seen["answer"]  # the reviewed Hindi NFSA entry
    assert seen["links"] and all(link.startswith("https://") for link in seen["links"])
    assert seen["audio"].startswith("data:audio/wav;base64,")
    assert "<phone>" in seen["conversations"] and PHONE not in seen["conversations"]
    assert seen["cookie"]["httpOnly"] and TOKEN not in seen["cookie"]["value"]
    assert shot.stat().st_size > 10_000
