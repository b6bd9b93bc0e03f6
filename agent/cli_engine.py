"""CLI commands that drive the engine: serve, run, submit, cancel, halt, resume, executions."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from google.protobuf import json_format

from agent.settings import Settings, get_settings

T = TypeVar("T")


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    """``('a=1', 'b=x')`` -> ``{'a': '1', 'b': 'x'}``; a pair without '=' is a usage error."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got '{pair}'", param_hint="--param")
        out[name.strip()] = value
    return out


def parse_baseline(text: str) -> Any:
    """``10:1.5`` -> a ``BaselineGate`` (runs 10, max ratio 1.5); a usage error names what is wrong."""
    from agent._proto.coordinator.v1 import events_pb2

    runs, _, ratio = text.partition(":")
    try:
        gate = events_pb2.BaselineGate(runs=int(runs), max_ratio=float(ratio))
    except ValueError:
        raise click.BadParameter(f"expected RUNS:RATIO such as 10:1.5, got {text!r}", param_hint="--baseline") from None
    if not 1 <= gate.runs <= 1000 or not 1 < gate.max_ratio <= 1000:
        raise click.BadParameter(f"RUNS must be 1..1000 and RATIO above 1, got {text!r}", param_hint="--baseline")
    return gate


@click.command()
@click.option("--http-port", type=int, default=None, help="override COORDINATOR_HTTP_PORT (0: any free port)")
@click.option("--grpc-port", type=int, default=None, help="override COORDINATOR_GRPC_PORT (0: any free port)")
def serve(http_port: int | None, grpc_port: int | None) -> None:
    """Run the agent: consume scenario requests, run them, publish results. SIGTERM aborts cleanly.

    Exits 0 after SIGTERM/SIGINT, 1 when a part of the agent failed for good. Kafka and Redis
    outages are ridden out (readiness says 503 meanwhile). COORDINATOR_FAILPOINTS arms failpoints
    (agent.failpoints), for tests of the agent's own failures."""
    from agent import failpoints

    failpoints.arm(os.environ.get(failpoints.ENV, ""))
    settings = get_settings()
    if http_port is not None:
        settings = settings.model_copy(update={"http_port": http_port})
    if grpc_port is not None:
        settings = settings.model_copy(update={"grpc_port": grpc_port})
    from agent import tracing

    tracing.configure(settings.tracing, settings.instance_id)
    try:
        code = asyncio.run(_serve(settings))
    finally:
        tracing.shutdown()  # the last spans exported
    if code:
        click.get_current_context().exit(code)


async def _serve(settings: Settings) -> int:
    from agent.logs import get_logger
    from agent.service import Service
    from agent.stopping import Watchdog

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(loop)

    def on_signal() -> None:
        if stop.is_set():
            os._exit(1)  # the second signal: stop now
        get_logger("agent.service").info("agent stopping", drain=settings.shutdown_drain, grace=settings.stop_grace)
        stop.set()

    def on_signal_anywhere(signum: int, frame: object) -> None:
        # a plain handler, not the loop's: the watchdog is armed even while the loop is blocked
        watchdog.arm(settings.shutdown_drain + settings.stop_grace)
        loop.call_soon_threadsafe(on_signal)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal_anywhere)
    service = Service(settings)
    runner = asyncio.create_task(service.run(stop))
    started = asyncio.create_task(service.http_started.wait())
    await asyncio.wait([runner, started], return_when=asyncio.FIRST_COMPLETED)
    if service.http_started.is_set():
        print(f"listening on http://{settings.http_host}:{service.http.port}", flush=True)
        print(f"grpc on {settings.grpc_host}:{service.grpc.port}", flush=True)
    started.cancel()
    await runner
    if service.stopping.left_behind:  # asyncio.run would wait for them for ever: exit from here
        from agent import tracing

        tracing.shutdown()
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(service.exit_code)
    return service.exit_code  # the watchdog stays armed: a stuck exporter at exit is bounded too


@click.command()
@click.argument("scenario")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="override a parameter")
@click.option("--dry-run", is_flag=True, help="validate and plan through the agent; touch nothing")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE")
@click.option("--timeout", type=float, default=1800.0, help="seconds to wait for the result")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="also write the result as JUnit XML here (one test case per expectation and steady-state check)")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="also write the single-file HTML report here")
@click.option("--baseline", default=None, metavar="RUNS:RATIO",
              help="a regression gate for this run (replaces the scenario's): fail when a time to recover is worse "
                   "than the median of the last RUNS passed runs by more than RATIO, e.g. 10:1.5")
@click.pass_context
def run(ctx: click.Context, scenario: str, params: tuple[str, ...], dry_run: bool, labels: tuple[str, ...],
        timeout: float, output: str, junit_path: str | None, html_path: str | None, baseline: str | None) -> None:
    """Run SCENARIO (a catalog name or a YAML file) and follow it to its result.

    Exit codes: 0 passed, 1 failed or timed out, 2 aborted, 3 error, 4 rejected.
    """
    from agent import client
    from agent._proto.coordinator.v1 import events_pb2

    settings = get_settings()
    _quiet_clients(ctx)
    request = client.build_request(scenario, parse_params(params), dry_run=dry_run, labels=parse_params(labels))
    if baseline is not None:
        request.baseline.CopyFrom(parse_baseline(baseline))
    _check_before_sending(ctx, request, scenario, output)

    executions: list[str] = []

    def progress(p: Any) -> None:
        if output == "text" and p.execution_id not in executions:
            executions.append(p.execution_id)
            click.echo(f"execution {p.execution_id} (coordinator report {p.execution_id})")
        if output == "text":
            click.echo(f"  [{p.phase}] {p.message}")

    if output == "text":
        click.echo(f"request {request.request_id}: {scenario}")
    result = asyncio.run(client.run_and_follow(settings, request, timeout=timeout, on_progress=progress))
    if result is None:
        click.echo(f"no result within {timeout:.0f}s (is an agent running?)", err=True)
        ctx.exit(3)
    assert result is not None
    _write_reports(result, {"junit": junit_path, "html": html_path})
    if output == "json":
        click.echo(json_format.MessageToJson(result))
    else:
        click.echo(f"{client.status_name(result.status)}: {result.reason}")
        click.echo(f"  execution {result.execution_id}")
        if result.trace_id:
            link = settings.tracing.link.replace("{trace_id}", result.trace_id)
            click.echo(f"  trace {result.trace_id}" + (f"  {link}" if link else ""))
        for injection in result.injections:
            click.echo(f"  fault {injection.fault} on {injection.target}  correlation id {injection.correlation_id}")
        for verdict in result.verdicts:
            status = events_pb2.VerdictStatus.Name(verdict.status).removeprefix("VERDICT_STATUS_")
            click.echo(f"  expectation {verdict.expectation_name}: {status} {verdict.reason}")
    ctx.exit(client.EXIT_CODES.get(result.status, 3))


@click.command()
@click.argument("scenario")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE")
@click.option("--dry-run", is_flag=True)
@click.option("--request-id", default=None, help="idempotency key (default: a new UUID)")
@click.option("--wait", type=float, default=10.0, show_default=True,
              help="seconds to wait for an agent to accept it and name the execution (0: do not wait)")
def submit(scenario: str, params: tuple[str, ...], dry_run: bool, request_id: str | None, wait: float) -> None:
    """Publish a scenario request; print its request id, then the execution id an agent gave it
    (``execution ID``), or ``execution unknown`` when none accepted it within --wait (or, with
    --wait 0, nothing more). It does not wait for the result: ``coordinator report ID`` does."""
    from agent import client

    settings = get_settings()
    _quiet_clients(click.get_current_context())
    request = client.build_request(scenario, parse_params(params), dry_run=dry_run, request_id=request_id)
    _check_before_sending(click.get_current_context(), request, scenario, "text")
    if not wait:
        asyncio.run(client.submit(settings, request))
        click.echo(request.request_id)
        return
    seen: list[str] = []
    result = asyncio.run(client.run_and_follow(settings, request, timeout=wait, until_accepted=True,
                                               on_progress=lambda p: seen.append(p.execution_id)))
    click.echo(request.request_id)
    execution = seen[0] if seen else (result.execution_id if result is not None else "")
    click.echo(f"execution {execution or 'unknown'}")


def _check_before_sending(ctx: click.Context, request: Any, scenario: str, output: str) -> None:
    """A scenario sent inline is validated here first (``agent.submission.check``): every problem at
    once, with file, line and field path, nothing sent, exit 4 (as the agent's REJECTED would be)."""
    from agent import submission
    from agent.errors import ScenarioError

    try:
        submission.check(request, scenario)
    except ScenarioError as exc:
        if output == "json":
            click.echo(json.dumps({"status": "REJECTED", "sent": False,
                                   "errors": [issue.as_dict() for issue in exc.issues]}, indent=2))
        else:
            for issue in exc.issues:
                click.echo(str(issue), err=True)
            click.echo(f"{scenario}: {len(exc.issues)} problem(s); the request was not sent", err=True)
        ctx.exit(4)


def _quiet_clients(ctx: click.Context) -> None:
    """A one-shot command says itself what it could not reach (one line, exit 3): the client
    library's own connection warnings are kept for -v."""
    import logging

    if not (ctx.find_root().obj or {}).get("verbose"):
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def _write_reports(result: Any, paths: dict[str, str | None]) -> None:
    from agent import reports

    for fmt, path in paths.items():
        if path:
            Path(path).write_text(reports.render(result, fmt, get_settings().tracing.link), encoding="utf-8")
            click.echo(f"{fmt} report written to {path}", err=True)


@click.command()
@click.argument("execution_id")
@click.option("--format", "fmt", type=click.Choice(["junit", "json", "html"]), default="junit", show_default=True)
@click.option("--output", "-o", "path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="write here instead of standard output")
@click.pass_context
def report(ctx: click.Context, execution_id: str, fmt: str, path: str | None) -> None:
    """The report of an ended execution (JUnit XML, JSON journal or single-file HTML).

    Exit codes: 0 written, 4 no result for this execution (unknown, or still running).
    """
    from agent import reports
    from agent.errors import NotFound

    try:
        execution = _command(lambda engine: engine.get(execution_id))
    except NotFound:
        execution = None
    if execution is None or not execution.HasField("result"):
        click.echo(f"no result for execution '{execution_id}' (unknown, or still running)", err=True)
        ctx.exit(4)
    result = execution.result
    text = reports.render(result, fmt, get_settings().tracing.link)
    if path:
        Path(path).write_text(text, encoding="utf-8")
        click.echo(f"{fmt} report written to {path}", err=True)
    else:
        click.echo(text, nl=False)


def _command(call: Callable[[Any], Awaitable[T]]) -> T:
    """Run one engine command or query; a typed error becomes its message and exit code."""
    from agent.engine import Engine
    from agent.errors import CoordinatorError, NotFound

    async def go() -> T:
        async with Engine.open(get_settings(), owner=f"{get_settings().instance_id}/cli") as engine:
            return await call(engine)

    try:
        return asyncio.run(go())
    except NotFound:
        raise
    except CoordinatorError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(exc.exit_code) from exc


@click.command()
@click.argument("execution_id")
@click.option("--reason", default="cancelled from the command line")
def cancel(execution_id: str, reason: str) -> None:
    """Cancel one execution: its faults are reverted, rollbacks run, ABORTED is published.

    Exit codes: 0 requested, 1 unknown or already ended, 3 Redis unreachable."""
    from agent.errors import NotFound

    try:
        _command(lambda engine: engine.cancel(execution_id, reason))
    except NotFound as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"cancel requested for {execution_id}")


@click.command()
@click.option("--reason", default="halted from the command line")
def halt(reason: str) -> None:
    """Kill switch: abort every execution, revert every active fault, refuse new ones until resume."""
    outcome = _command(lambda engine: engine.halt(reason))
    click.echo(f"halted: {outcome.reverted_faults} fault(s) reverted here; agents abort their executions. "
               "Run 'coordinator resume' to allow faults again.")


@click.command()
def resume() -> None:
    """Lift the kill switch."""
    _command(lambda engine: engine.resume())
    click.echo("resumed")


@click.group()
def executions() -> None:
    """Executions recorded in Redis."""


@executions.command("list")
@click.option("--limit", type=int, default=20)
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
def executions_list(limit: int, output: str) -> None:
    """The most recent executions, newest first."""
    from agent import vocabulary

    page, _ = _command(lambda engine: engine.list(limit=limit))
    if output == "json":
        click.echo(json.dumps([json_format.MessageToDict(e) for e in page], indent=2))
        return
    for e in page:
        started = (datetime.fromtimestamp(e.started_at.seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
                   if e.started_at.seconds else "-")
        status = vocabulary.status_name(e.status)
        click.echo(f"{e.execution_id}  {status:<9} {started}  {e.scenario_name or '-':<38} {e.result.reason[:60]}")


@click.command()
@click.argument("source")
@click.argument("topic")
def relay(source: str, topic: str) -> None:
    """Relay events from SOURCE to TOPIC, applying active relay faults (duplicate, delay, drop, corrupt)."""
    from agent.relay import Relay

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(Relay(get_settings(), source, topic).run())
        await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())


@click.command()
@click.option("--loglevel", type=click.Choice(["debug", "info", "warning", "error"]), default="warning")
def worker(loglevel: str) -> None:
    """Run the stream worker: join audit events to injections and publish verdicts (faust)."""
    from faust.worker import Worker

    from agent import failpoints
    from agent.worker.app import create_app, ensure_topics

    failpoints.arm(os.environ.get(failpoints.ENV, ""))
    settings = get_settings()
    asyncio.run(ensure_topics(settings))
    app = create_app(settings)
    process = _worker_class(Worker)(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    # faust's start-up spinner sets the root logger to DEBUG for good, so that every library's debug
    # line is built and then dropped (7% of the worker's CPU at 2,000 audit events/s)
    process.spinner = None
    process.execute_from_commandline()


#: seconds the worker has to stop after SIGTERM before it exits anyway (faust waits for its Kafka
#: clients to close, which never happens while the broker is away)
WORKER_STOP_GRACE_S = 3.0


def _worker_class(base: type) -> type:
    """faust's Worker, with the agent's hold-back of repeated client-library lines on the handlers
    faust installs, and a bounded stop: SIGTERM exits within WORKER_STOP_GRACE_S whatever it waits for."""
    import logging
    import threading

    from agent.logs import RepeatFilter

    class CoordinatorWorker(base):  # type: ignore[misc]
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            for handler in logger.handlers:
                if not any(isinstance(f, RepeatFilter) for f in handler.filters):
                    handler.addFilter(RepeatFilter())

        def _on_sigterm(self) -> None:
            def give_up() -> None:
                print(f"worker not stopped {WORKER_STOP_GRACE_S:g}s after SIGTERM (Kafka away?); exiting",
                      file=sys.stderr, flush=True)
                os._exit(0)

            timer = threading.Timer(WORKER_STOP_GRACE_S, give_up)
            timer.daemon = True
            timer.start()
            super()._on_sigterm()

    return CoordinatorWorker


COMMANDS = [serve, run, submit, cancel, halt, resume, executions, report, relay, worker]

