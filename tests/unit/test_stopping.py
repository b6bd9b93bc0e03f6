"""A bounded stop: parts and clients that do not end are left behind, named with where they wait;
the ``hang`` and ``block`` failpoints that tests use to make them so."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent import failpoints
from agent.errors import ConfigError
from agent.stopping import Stopping, waits_at


async def _stuck_on_a_lock(release: asyncio.Event) -> None:
    while not release.is_set():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue  # a part that swallows its cancellation


async def _outer(release: asyncio.Event) -> None:
    await asyncio.ensure_future(_stuck_on_a_lock(release))


async def test_a_part_that_ignores_cancellation_is_left_behind_in_time_and_named_with_where_it_waits() -> None:
    release = asyncio.Event()
    polite = asyncio.create_task(asyncio.sleep(3600), name="polite")
    stuck = asyncio.create_task(_outer(release), name="stuck")
    await asyncio.sleep(0.05)
    assert "_outer" in waits_at(stuck) and "_stuck_on_a_lock" in waits_at(stuck)  # through the task it awaits

    stopping = Stopping()
    began = time.monotonic()
    await stopping.cancel([polite, stuck], seconds=0.5)
    assert 0.5 <= time.monotonic() - began < 2
    assert polite.cancelled() and not stuck.done()
    assert stopping.left_behind == ["stuck"]
    release.set()  # the test's own clean-up: the agent would exit instead
    stuck.cancel()
    await asyncio.wait_for(stuck, 1)


async def test_a_task_that_drops_its_first_cancellation_is_cancelled_again_and_not_left_behind() -> None:
    """As asyncio.wait_for does on Python 3.11 when a cancellation meets the end of the call it waits for."""
    rounds = 0

    async def drops_one() -> None:
        nonlocal rounds
        while True:
            try:
                rounds += 1
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if rounds > 1:
                    raise
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    task = asyncio.create_task(drops_one(), name="drops-one")
    await asyncio.sleep(0.01)
    stopping = Stopping()
    began = time.monotonic()
    await stopping.cancel([task], seconds=5)
    assert task.cancelled() and stopping.left_behind == [] and rounds == 2
    assert time.monotonic() - began < 3


async def test_a_bounded_step_returns_its_result_raises_its_error_or_is_left_behind() -> None:
    stopping = Stopping()

    async def answer() -> int:
        return 42

    async def fails() -> None:
        raise RuntimeError("broker gone")

    assert await stopping.within("answer", answer(), 1) == 42
    with pytest.raises(RuntimeError, match="broker gone"):
        await stopping.within("fails", fails(), 1)
    assert await stopping.within("slow close", asyncio.sleep(5), 0.2) is None
    assert stopping.left_behind == ["slow close"]


def test_hang_and_block_failpoints_are_parsed_and_block_needs_seconds() -> None:
    armed = failpoints.parse("part-stopping=1*hang;after-claim=block(0.5)")
    assert {n: (a.action, a.arg, a.remaining) for n, a in armed.items()} == {
        "part-stopping": ("hang", None, 1), "after-claim": ("block", "0.5", None)}
    with pytest.raises(ConfigError, match=r"block needs seconds, e.g. block\(2.5\)"):
        failpoints.parse("after-claim=block")


async def test_a_hanging_failpoint_outlives_cancellation_and_a_blocking_one_stops_the_loop() -> None:
    try:
        failpoints.arm("part-stopping=hang")
        hanging = asyncio.ensure_future(failpoints.point("part-stopping"))
        await asyncio.sleep(0.05)
        for _ in range(3):
            hanging.cancel()
            await asyncio.sleep(0.05)
        assert not hanging.done()
        failpoints.arm("after-claim=block(0.3)")  # disarmed: the next wake-up ends it
        hanging.cancel()
        await asyncio.wait_for(hanging, 1)

        began = time.monotonic()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        counting = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        await failpoints.point("after-claim")
        assert time.monotonic() - began >= 0.3 and ticks <= 1  # nothing else ran meanwhile
        counting.cancel()
    finally:
        failpoints.arm("")
