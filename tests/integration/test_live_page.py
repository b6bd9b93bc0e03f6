"""The live results page in a real headless Chromium: opened before a run, it shows the run's
injection with its correlation id, the audit event joined to it, the verdict and the result, as they
happen, without a reload; and links the HTML report."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from agent import client
from agent.devstack.install import ensure_chromium
from agent.devstack.procs import free_port
from agent.kafkaio import client_options
from agent.settings import Settings
from tests.helpers.agent import AgentProcess, worker_and_agent
from tests.helpers.engine import applied_settings, chaos, engine_env, read_all

pytestmark = pytest.mark.timeout(300)

WATCHED = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: a-watched-link}}
spec:
  targets:
    link: {{driver: toxiproxy, selector: {{proxy: {proxy}, listen: "127.0.0.1:{listen}", upstream: "127.0.0.1:{up}"}}}}
  steps:
    - {{name: slow-link, fault: latency, target: link, duration: 4s, parameters: {{latency: 50ms}}}}
  expectations:
    - {{name: watcher-notices, after: slow-link, attribution: correlation-id,
       event: {{type: link_slow, service: watcher}}, appears: {{within: 20s}}}}
"""
#: the flags a root sandbox needs for a quiet headless Chromium (no sandbox, no network chatter)
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> dict[str, str]:
    base = engine_env(stack_env, "http://127.0.0.1:9/RPC2")
    return {**base, "COORDINATOR_WORKER_APP_ID": f"{base['COORDINATOR_REDIS_KEY_PREFIX']}-worker",
            "COORDINATOR_WORKER_TICK_INTERVAL": "0.2", "COORDINATOR_VERDICT_GRACE": "2",
            "COORDINATOR_PLATFORM_EVENTS": "false"}


@pytest.fixture(scope="module")
async def settings(env: dict[str, str]) -> Settings:
    return await applied_settings(env)


@pytest.fixture(scope="module")
def running(env: dict[str, str], settings: Settings, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[AgentProcess]:
    with worker_and_agent(env, tmp_path_factory.mktemp("live")) as (_, agent):
        yield agent


async def _notice(settings: Settings, request_id: str) -> str:
    """Play the watching service: once the injection is out, send an audit event with its id."""
    while True:
        events = [e for e in chaos(await read_all(settings.kafka_bootstrap_servers, settings.topics.chaos_events,
                                                  settings=settings)) if e.scenario_name == "a-watched-link"]
        if events:
            break
        await asyncio.sleep(0.3)
    correlation_id = events[-1].correlation_id
    producer = AIOKafkaProducer(**client_options(settings))
    await producer.start()
    try:
        body = {"id": str(uuid.uuid4()), "service_name": "watcher", "event_type": "link_slow",
                "timestamp": datetime.now(UTC).isoformat(), "correlation_id": correlation_id}
        await producer.send_and_wait(settings.topics.audit_events, json.dumps(body).encode(), key=b"watcher",
                                     headers=[("content-type", b"application/json")])
    finally:
        await producer.stop()
    return correlation_id


async def test_the_live_page_shows_a_run_as_it_happens_in_a_real_browser(
        running: AgentProcess, settings: Settings, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=ensure_chromium(), args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 700})
            await page.goto(f"{running.url}/live")
            await page.wait_for_selector("#state:text('live')", timeout=30_000)
            scenario = tmp_path / "watched.yaml"
            scenario.write_text(WATCHED.format(proxy=f"live-{uuid.uuid4().hex[:6]}", listen=free_port(),
                                               up=free_port()))
            request = client.build_request(str(scenario), {})
            following = asyncio.create_task(client.run_and_follow(settings, request, timeout=120))
            correlation_id = await asyncio.wait_for(_notice(settings, request.request_id), 60)

            await page.wait_for_selector(f"li.injection:has-text('{correlation_id}')", timeout=30_000)
            await page.wait_for_selector("li.audit:has-text('watcher: link_slow')", timeout=30_000)
            await page.wait_for_selector("li.verdict:has-text('watcher-notices: PASSED')", timeout=60_000)
            result = await following
            assert result is not None and result.execution_id
            run = page.locator(f"#run-{result.execution_id}")
            await run.locator(".status:text('PASSED')").wait_for(timeout=30_000)
            assert await page.evaluate("performance.getEntriesByType('navigation').length") == 1, "no reload"
            await page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
            if os.environ.get("LIVE_PAGE_SCREENSHOT"):  # the README's picture
                await page.screenshot(path=os.environ["LIVE_PAGE_SCREENSHOT"], full_page=True)

            report = await page.request.get(f"{running.url}/api/v1/executions/{result.execution_id}/report.html")
            assert report.status == 200 and "watcher-notices" in await report.text()

            # opened after the run: the backlog (four topics, read in any order) is shown in order
            late = await browser.new_page(viewport={"width": 1200, "height": 700})
            problems: list[str] = []
            late.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            late.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            await late.goto(f"{running.url}/live")
            lines = late.locator(f"#run-{result.execution_id} li")
            await late.locator(f"#run-{result.execution_id} li.result").wait_for(timeout=30_000)
            await late.wait_for_timeout(1000)  # the rest of the backlog
            rows = await lines.evaluate_all("els => els.map(e => [Number(e.dataset.at), e.className, e.textContent])")
            assert [at for at, _, _ in rows] == sorted(at for at, _, _ in rows), rows
            kinds = [cls.split()[0] for _, cls, _ in rows]
            assert "[start]" in rows[0][2], rows
            passed = next(i for i, (_, cls, t) in enumerate(rows) if "watcher-notices: PASSED" in t)
            assert kinds.index("injection") < kinds.index("audit") < passed < kinds.index("result"), rows
            assert rows[passed][1] == "verdict PASSED" and rows[kinds.index("result")][1] == "result PASSED"
            text = " ".join(t for _, _, t in rows)
            assert not re.search(r"\d\.\d{4,}s", text), f"times are rounded: {text}"
            assert problems == [], problems
            await late.screenshot(path=str(tmp_path / "live-late.png"), full_page=True)
        finally:
            await browser.close()
