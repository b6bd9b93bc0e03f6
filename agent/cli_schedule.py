"""``coordinator schedule``: declare recurring experiments on the schedules topic (``agent.schedules``)."""

from __future__ import annotations

import asyncio
import getpass
import json
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from google.protobuf import json_format

from agent.settings import Settings, get_settings

T = TypeVar("T")


def _run(call: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Run one command; Kafka or Redis unreachable is exit 3 with the error."""
    from aiokafka.errors import KafkaError
    from redis.exceptions import RedisError

    try:
        return asyncio.run(call(get_settings()))
    except (KafkaError, RedisError, OSError, LookupError) as exc:
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise click.exceptions.Exit(3) from exc


def _engine(call: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """One engine command (the same the gRPC API runs); an unknown schedule is exit 1."""
    from agent.engine import Engine
    from agent.errors import NotFound

    async def go(settings: Settings) -> T:
        async with Engine.open(settings, owner=f"{settings.instance_id}/cli") as engine:
            return await call(engine)

    try:
        return _run(go)
    except NotFound as exc:
        click.echo(f"{exc} (coordinator schedule list shows them)", err=True)
        raise click.exceptions.Exit(1) from exc


@click.group()
def schedule() -> None:
    """Recurring experiments: a scenario on an interval or a cron expression, fired by the agents."""


@schedule.command("apply")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def schedule_apply(files: tuple[Path, ...]) -> None:
    """Publish each ``kind: Schedule`` FILE (a new version replaces the schedule of the same name).
    Every file is checked first; one invalid file publishes none (exit 1, every problem listed)."""
    from agent import schedules
    from agent.errors import ScenarioError

    loaded, problems = [], []
    for file in files:
        try:
            loaded.append(schedules.load_schedule(file.read_bytes(), str(file), requester=f"cli:{getpass.getuser()}",
                                                  base=file.parent))
        except ScenarioError as exc:
            problems += exc.issues
    if problems:
        for issue in problems:
            click.echo(str(issue), err=True)
        click.echo(f"{len(problems)} problem(s); nothing applied", err=True)
        raise click.exceptions.Exit(1)

    async def go(engine: Any) -> None:
        for one in loaded:
            await engine.publish_schedule(one)
            upcoming = schedules.ticks(one, time.time(), time.time() + 366 * 86400, limit=1)
            nxt = f"; next tick {_when(upcoming[0])}" if upcoming else ""
            click.echo(f"schedule {one.name} applied: {schedules.describe(one)}"
                       f"{' (paused)' if one.paused else ''}{nxt}")

    _engine(go)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@schedule.command("list")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
def schedule_list(output: str) -> None:
    """Every schedule on the topic, with its next tick and what its last ticks did."""
    from agent import schedules

    async def go(engine: Any) -> list[dict[str, Any]]:
        rows = []
        for one in await engine.list_schedules():
            last = await schedules.outcomes(engine.store.redis, engine.settings.redis_key_prefix, one.name, 20)
            upcoming = schedules.ticks(one, time.time(), time.time() + 366 * 86400, limit=1)
            rows.append({"schedule": json_format.MessageToDict(one), "when": schedules.describe(one),
                         "next_tick": upcoming[0] if upcoming else None,
                         "recent_ticks": [o.as_dict() for o in last]})
        return rows

    rows = _engine(go)
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no schedules")
    for row in rows:
        one, recent = row["schedule"], row["recent_ticks"]
        scenario = one.get("scenarioName") or "(inline scenario)"
        state = "paused" if one.get("paused") else "active"
        click.echo(f"{one['name']:<32} {state:<7} {row['when']:<28} {scenario}")
        if row["next_tick"] and not one.get("paused"):
            click.echo(f"  next tick {_when(row['next_tick'])}")
        fired = sum(o["fired"] for o in recent)
        if recent:
            click.echo(f"  last {len(recent)} tick(s): {fired} fired, {len(recent) - fired} skipped")
        for o in recent[:5]:
            said = f"fired {o['request_id']}" if o["fired"] else f"skipped: {o['reason']}"
            click.echo(f"  {_when(o['tick'])}  {said}")


def _change(name: str, paused: bool) -> None:
    _engine(lambda engine: engine.pause_schedule(name, paused))
    click.echo(f"schedule {name} {'paused: its ticks are skipped until resumed' if paused else 'resumed'}")


@schedule.command("pause")
@click.argument("name")
def schedule_pause(name: str) -> None:
    """Skip NAME's ticks (each reported) until ``resume``."""
    _change(name, True)


@schedule.command("resume")
@click.argument("name")
def schedule_resume(name: str) -> None:
    """Fire NAME's ticks again."""
    _change(name, False)


@schedule.command("delete")
@click.argument("name")
def schedule_delete(name: str) -> None:
    """Remove NAME (a tombstone on the topic): no agent fires it again."""
    _engine(lambda engine: engine.delete_schedule(name))
    click.echo(f"schedule {name} deleted")
