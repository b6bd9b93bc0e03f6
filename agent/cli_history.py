"""``coordinator history``: a scenario's runs over time, its pass rate, resilience score and time to
recover per expectation, from the run history (``agent.history``); ``--rebuild`` records again every
result the results topic still holds."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import click

from agent.settings import Settings, get_settings

#: one character per run, lowest to highest time to recover
BARS = "▁▂▃▄▅▆▇█"


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S") if epoch else "-"


def _secs(value: float | None) -> str:
    return f"{value:.3f}s" if value is not None else "-"


def sparkline(values: list[float | None]) -> str:
    """Oldest first; a gap (no time measured) is a space."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    return "".join(" " if v is None else BARS[min(len(BARS) - 1, int((v - low) / span * (len(BARS) - 1) + 0.5))]
                   for v in values)


def render(found: dict[str, Any]) -> list[str]:
    """The text of one scenario's history (``agent.history.as_dict`` with its runs)."""
    runs = found["recent"]
    rate = found["pass_rate"]
    lines = [f"{found['scenario']}: {found['runs']} run(s), {_when(found['first_at'])} .. "
             f"{_when(found['last_at'])} UTC",
             f"  pass rate {rate * 100:.1f}% ({found['passed']} of {found['runs']})"
             + (f"   resilience score {found['score']:.2f} (share of expectation verdicts passed)"
                if found["score"] is not None else "")]
    if found["targets"]:
        lines.append("  per target: " + ", ".join(f"{t} {s:.2f}" for t, s in found["targets"].items()))
    if found["expectations"]:
        width = max(len(n) for n in found["expectations"])
        lines.append(f"  {'expectation':<{width}}  passed     ttr p50    ttr p95    last       trend (oldest first)")
        for name, e in found["expectations"].items():
            trend = sparkline([r["expectations"].get(name, {}).get("ttr") for r in reversed(runs)])
            lines.append(f"  {name:<{width}}  {e['passed']:>3}/{e['runs']:<5} {_secs(e['ttr_p50']):<10} "
                         f"{_secs(e['ttr_p95']):<10} {_secs(e['ttr_last']):<10} {trend}")
    lines.append("  runs, newest first:")
    for r in runs:
        times = " ".join(f"{n}={_secs(o['ttr'])}" for n, o in r["expectations"].items() if o["ttr"] is not None)
        lines.append(f"  {_when(r['ended_at'])}  {r['status']:<9} {r['execution_id']}  {times}")
    return lines


async def rebuild(settings: Settings, runs: Any) -> tuple[int, int]:
    """Record every ScenarioResult the results topic holds, from its start to its end as it is now:
    (results recorded, results read that are not runs: dry runs and rejections)."""
    from agent import history
    from agent.follow import RESULT, Follower

    recorded = skipped = 0
    async with Follower(settings, [settings.topics.scenario_results], purpose="history") as follower:
        await follower.since(0)
        ends = await follower.consumer.end_offsets(follower.partitions)
        while any([await follower.consumer.position(tp) < end for tp, end in ends.items()]):
            for update in await follower.poll(timeout_ms=1000):
                if update.kind != RESULT:
                    continue
                run = history.RunSummary.of(update.message)
                if run is None:
                    skipped += 1
                    continue
                await runs.record(run)
                recorded += 1
    return recorded, skipped


@click.command("history")
@click.argument("scenario", required=False)
@click.option("--last", type=click.IntRange(1, 100_000), default=50, show_default=True,
              help="runs to take the figures over (and to list)")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--rebuild", "rebuild_", is_flag=True,
              help="first record again every result the results topic holds (after a loss of Redis)")
@click.pass_context
def history_command(ctx: click.Context, scenario: str | None, last: int, output: str, rebuild_: bool) -> None:
    """The run history: without SCENARIO, every scenario with its pass rate and resilience score;
    with it, that scenario's runs over time and the time to recover p50/p95 per expectation.

    Exit codes: 0 shown, 1 no runs of SCENARIO, 3 Redis or Kafka unreachable."""
    from agent import history
    from agent.engine import Engine

    settings = get_settings()

    async def go() -> int:
        async with Engine.open(settings, owner=f"{settings.instance_id}/cli") as engine:
            store = engine.history  # the agents' own: in Redis, with their retention
            if rebuild_:
                began = time.monotonic()
                recorded, skipped = await rebuild(settings, store)
                click.echo(f"rebuilt: {recorded} result(s) recorded from {settings.topics.scenario_results} "
                           f"({skipped} dry run(s) or rejection(s) left out) in {time.monotonic() - began:.1f}s",
                           err=output == "json")
            if scenario is None:
                found = [await history.overview(store, name, last, with_runs=False) for name in await store.scenarios()]
                if output == "json":
                    click.echo(json.dumps({"scenarios": found}, indent=2))
                for f in found if output == "text" else []:
                    score = f"{f['score']:.2f}" if f["score"] is not None else "-"
                    click.echo(f"{f['scenario']:<40} {f['runs']:>6} run(s)  pass rate {f['pass_rate'] * 100:5.1f}%  "
                               f"score {score}  last {_when(f['last_at'])}")
                if not found and output == "text":
                    click.echo("no runs in the history yet")
                return 0
            one = await history.overview(store, scenario, last)
            if not one["recent"]:
                click.echo(f"no runs of '{scenario}' in the history (coordinator history lists the scenarios "
                           "that have some)", err=True)
                return 1
            click.echo(json.dumps(one, indent=2) if output == "json" else "\n".join(render(one)))
            return 0

    from aiokafka.errors import KafkaError
    from redis.exceptions import RedisError

    try:
        code = asyncio.run(go())
    except (OSError, RedisError, KafkaError, LookupError) as exc:
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        code = 3
    ctx.exit(code)
