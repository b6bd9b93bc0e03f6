"""The Toxiproxy driver against the stack's real Toxiproxy."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp

from agent.devstack.procs import free_port
from agent.drivers.base import FaultRequest
from agent.drivers.toxiproxy import ToxiproxyDriver, ToxiproxySettings


async def test_simultaneous_first_faults_on_a_proxy_it_creates_all_go_in_and_all_come_out(
    stack_env: dict[str, str],
) -> None:
    url = stack_env["COORDINATOR_TOXIPROXY_URL"]
    proxy = f"burst-{uuid.uuid4().hex[:6]}"
    selector = {"proxy": proxy, "listen": f"127.0.0.1:{free_port()}", "upstream": f"127.0.0.1:{free_port()}"}
    driver = ToxiproxyDriver(ToxiproxySettings(url=url))
    requests = [FaultRequest(correlation_id=str(uuid.uuid4()), execution_id=f"e-{i}", fault="latency",
                             target_name="link", service="link", selector=selector,
                             parameters={"latency": 0.01, "jitter": 0.0}, duration=1.0) for i in range(20)]
    try:
        # each would find the proxy missing and try to make it: one does, none fails
        await asyncio.gather(*(driver.inject(r) for r in requests))
        async with aiohttp.ClientSession() as http, http.get(f"{url}/proxies/{proxy}/toxics") as response:
            assert len(await response.json()) == 20
        await asyncio.gather(*(driver.revert(driver.recipe(r)) for r in requests))
        async with aiohttp.ClientSession() as http, http.get(f"{url}/proxies/{proxy}/toxics") as response:
            assert await response.json() == []
    finally:
        async with aiohttp.ClientSession() as http, http.delete(f"{url}/proxies/{proxy}"):
            pass
        await driver.aclose()
