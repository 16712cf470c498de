from typing import Any

from tests.fakes import fake_services
from voicebot.app import create_app
from voicebot.config import Settings


async def test_health_ready_metrics(aiohttp_client: Any) -> None:
    services = fake_services()
    client = await aiohttp_client(create_app(services.settings, services))
    resp = await client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    resp = await client.get("/readyz")
    assert resp.status == 200
    await services.pipeline.ask("pm kisan", lang="en")
    body = await (await client.get("/metrics")).text()
    assert 'voicebot_stage_seconds_bucket{stage="answer",le="+Inf"} 1' in body
    assert 'voicebot_http_requests_total{route="/healthz",status="200"} 1' in body


async def test_not_ready_until_models_load(aiohttp_client: Any, tmp_path: Any) -> None:
    # A languages dir with no packs fails loading: the process lives, /readyz says why.
    settings = Settings(languages_dir=tmp_path / "missing", data_dir=tmp_path)
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/healthz")).status == 200
    for _ in range(50):
        resp = await client.get("/readyz")
        body = await resp.json()
        if body["status"] == "error":
            break
        import asyncio

        await asyncio.sleep(0.02)
    assert resp.status == 503 and body == {"status": "error", "error": "pack-missing"}
