"""``coordinator explore``: search a space of fault schedules for a failure and shrink it."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path
from typing import Any

import click

from agent.settings import get_settings, to_seconds

#: exit codes: like a test run, a failure found is 1
EXIT = {"NO_FAILURE": 0, "FAILURE_FOUND": 1, "HALTED": 2, "ERROR": 3}


@click.command()
@click.argument("exploration", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--seed", type=int, default=None,
              help="the schedules' seed (default: the document's, else a new one, printed)")
@click.option("--runs", type=int, default=None, help="override spec.budget.runs: schedules tried while searching")
@click.option("--time", "time_budget", default=None, metavar="DURATION", help="override spec.budget.time (e.g. 20m)")
@click.option("--no-shrink", is_flag=True, help="stop at the first confirmed failure, as found")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where minimal.yaml, report.json and report.html go (default: explore-NAME-SEED)")
@click.option("--run-timeout", type=float, default=600.0, show_default=True,
              help="seconds to wait for each run's result")
@click.option("--dry-run", is_flag=True, help="validate, print the schedules the seed draws; send nothing")
@click.pass_context
def explore(ctx: click.Context, exploration: Path, seed: int | None, runs: int | None, time_budget: str | None,
            no_shrink: bool, out_dir: Path | None, run_timeout: float, dry_run: bool) -> None:
    """Run random fault schedules from EXPLORATION (a ``kind: Exploration`` document) until one
    breaks a property, then shrink it to the smallest schedule that still fails k of n runs.

    Each run is an ordinary scenario request: agents, leases, the allow-list and the kill switch
    apply. Halting the agents (``coordinator halt``) or Ctrl-C stops it after the run in flight.
    Writes minimal.yaml (``coordinator run`` reproduces the failure), report.json and report.html;
    publishes an ExplorationResult on the results topic. Exit codes: 0 no failure found, 1 failure
    found, 2 halted, 3 error, 4 invalid document."""
    from agent.errors import ScenarioError
    from agent.explore import load_exploration_file

    try:
        space = load_exploration_file(exploration)
    except ScenarioError as exc:
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        click.echo(f"{exploration}: {len(exc.issues)} problem(s)", err=True)
        ctx.exit(4)
    budget: dict[str, Any] = {}
    if runs is not None:
        budget["runs"] = runs
    if time_budget is not None:
        budget["time"] = to_seconds(time_budget)
    if budget:
        space = space.with_budget(**budget)
    chosen = seed if seed is not None else space.spec.seed
    if chosen is None:
        chosen = random.SystemRandom().randrange(1, 2**31)
    if dry_run:
        ctx.exit(_dry_run(space, chosen))
    ctx.exit(asyncio.run(_explore(space, chosen, shrink=not no_shrink, run_timeout=run_timeout,
                                  out_dir=out_dir or Path(f"explore-{space.name}-{chosen}"))))


def _dry_run(space: Any, seed: int) -> int:
    from agent import scenario
    from agent.explore import Explorer, schedule

    explorer = Explorer(space, runner=None, seed=seed)  # type: ignore[arg-type]
    click.echo(f"seed {seed}: the first {space.spec.budget.runs} schedules, each checked as the scenario it runs as")
    for number, drawn in zip(range(1, space.spec.budget.runs + 1), schedule.draws(seed, space.spec), strict=False):
        scenario.load_scenario(explorer.scenario_yaml(drawn), f"{space.source} (schedule {number})")
        click.echo(f"  {number}: {schedule.describe(drawn)}")
    return 0


async def _explore(space: Any, seed: int, *, shrink: bool, run_timeout: float, out_dir: Path) -> int:
    from agent import client
    from agent.explore import Explorer, KafkaRunner, kafka

    settings = get_settings()
    exploration_id = kafka.new_id()
    requester = f"explore:{client._user()}"
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        click.echo("interrupted: stopping after the run in flight (again to quit now)", err=True)
        interrupted.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    limit = space.spec.budget.time
    click.echo(f"exploring {space.name} (seed {seed}, exploration {exploration_id}): up to "
               f"{space.spec.budget.runs} runs" + (f" or {limit:g}s" if limit else ""))
    started = time.time()
    explorer = Explorer(space, KafkaRunner(settings, requester=requester, run_timeout=run_timeout), seed=seed,
                        shrink=shrink, on_progress=lambda text: click.echo(f"  {text}"), interrupted=interrupted,
                        exploration_id=exploration_id)
    found = await explorer.explore()
    written = _write(out_dir, found)
    event = kafka.result_event(found, exploration_id=exploration_id, requester=requester, started=started,
                               ended=time.time())
    try:
        await asyncio.wait_for(kafka.publish(settings, event), timeout=30)
    except Exception as exc:  # noqa: BLE001 - the files hold the report either way
        click.echo(f"the exploration's result event was not published: {exc}", err=True)
    click.echo(f"{found.outcome}: {found.reason}")
    click.echo(f"  {len(found.runs)} runs ({found.count('search')} searching, {found.count('confirm', 'shrink')} "
               f"confirming and shrinking) in {found.wall_seconds:.0f}s; seed {seed}")
    click.echo(f"  wrote {', '.join(str(out_dir / name) for name in written)}")
    if found.minimal_yaml:
        click.echo(f"  reproduce: coordinator run {out_dir / 'minimal.yaml'}")
    return EXIT.get(found.outcome, 3)


def _write(out_dir: Path, found: Any) -> list[str]:
    from agent.explore import report

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"report.json": report.to_json(found), "report.html": report.to_html(found)}
    if found.minimal_yaml:
        files = {"minimal.yaml": found.minimal_yaml, **files}
    for name, text in files.items():
        (out_dir / name).write_text(text, encoding="utf-8")
    return list(files)
