"""``coordinator``: the command line.

Exit codes follow pytest: 0 success, 1 failed (a check or a scenario), 3 internal error, 4 usage.
Errors print one line; ``-v`` adds the traceback.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from agent import __version__
from agent.errors import CoordinatorError
from agent.logs import configure_logging, get_logger
from agent.settings import get_settings

EXIT_OK, EXIT_FAILED, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 3, 4


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CoordinatorError as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                traceback.print_exc()
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_FAILED if getattr(exc, "retryable", False) else EXIT_INTERNAL)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="coordinator")
@click.option("-v", "--verbose", is_flag=True, help="tracebacks and debug logs")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Kafka-native chaos-testing agent."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    settings = get_settings()
    configure_logging(settings.log_format, "debug" if verbose else settings.log_level)


# -- devstack ---------------------------------------------------------------------------------------
_DIR = click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
                    help="stack directory (default: $COORDINATOR_DEVSTACK_DIR or ./.devstack)")


def _stack(directory: Path | None) -> Any:
    from agent.devstack import Stack, default_dir

    return Stack(directory or default_dir())


@cli.group()
def devstack() -> None:
    """The local stack: real Kafka (KRaft), Redis and Toxiproxy on loopback."""


@devstack.command("install")
def devstack_install() -> None:
    """Install what the stack needs (Kafka jars, redis-server, toxiproxy-server); idempotent."""
    from agent.devstack import ensure_all

    for name, where in ensure_all().items():
        click.echo(f"{name:<10} {where}")


@devstack.command("up")
@_DIR
@click.option("--only", multiple=True, type=click.Choice(["kafka", "redis", "toxiproxy"]))
def devstack_up(directory: Path | None, only: tuple[str, ...]) -> None:
    """Start the stack (or the parts not running) and wait until each part answers."""
    stack = _stack(directory)
    timings = stack.up(only or ("kafka", "redis", "toxiproxy"))
    _print_status(stack, timings)
    click.echo(f"\nuse it:  eval \"$(coordinator devstack env --dir {stack.dir})\"")


@devstack.command("down")
@_DIR
def devstack_down(directory: Path | None) -> None:
    """Stop every process of the stack."""
    stack = _stack(directory)
    stack.down()
    click.echo(f"stack in {stack.dir} stopped")


@devstack.command("start")
@_DIR
@click.argument("part", type=click.Choice(["kafka", "redis", "toxiproxy"]))
def devstack_start(directory: Path | None, part: str) -> None:
    """Start one part."""
    stack = _stack(directory)
    stack.start(part)
    _print_status(stack, {})


@devstack.command("stop")
@_DIR
@click.argument("part", type=click.Choice(["kafka", "redis", "toxiproxy"]))
def devstack_stop(directory: Path | None, part: str) -> None:
    """Stop one part (the others keep running)."""
    _stack(directory).stop(part)


@devstack.command("status")
@_DIR
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def devstack_status(ctx: click.Context, directory: Path | None, output: str) -> None:
    """What runs where; exits 1 when a part is down."""
    stack = _stack(directory)
    parts = stack.status()
    if output == "json":
        click.echo(json.dumps({"dir": str(stack.dir), "parts": [p.__dict__ for p in parts]}, indent=2))
    else:
        _print_status(stack, {})
    ctx.exit(EXIT_OK if all(p.running for p in parts) else EXIT_FAILED)


@devstack.command("env")
@_DIR
def devstack_env(directory: Path | None) -> None:
    """Print shell exports that point the agent and tools at the stack."""
    for name, value in _stack(directory).env().items():
        click.echo(f"export {name}={value}")


def _print_status(stack: Any, timings: dict[str, float]) -> None:
    click.echo(f"stack {stack.dir}")
    for part in stack.status():
        state = "running" if part.running else "stopped"
        took = f"  (ready in {timings[part.name]:.1f}s)" if part.name in timings else ""
        click.echo(f"  {part.name:<10} {state:<8} {part.address:<28} pid {part.pid or '-':<8} log {part.log}{took}")


# -- topics ------------------------------------------------------------------------------------------
@cli.group()
def topics() -> None:
    """The topics contract (topics/asyncapi.yaml)."""


@topics.command("apply")
@click.option("--contract", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
def topics_apply(contract: Path | None) -> None:
    """Create the contract's topics that do not exist; report any drift. Idempotent."""
    from agent import topics as topics_mod

    settings = get_settings()
    specs = topics_mod.load_contract(contract, settings)
    outcomes = asyncio.run(topics_mod.apply(settings, specs))
    for o in outcomes:
        click.echo(f"{o.action:<8} {o.topic}  {o.detail}")


@topics.command("list")
@click.option("--contract", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
def topics_list(contract: Path | None) -> None:
    """The topics the contract declares, with their configured names."""
    from agent import topics as topics_mod

    for spec in topics_mod.load_contract(contract, get_settings()):
        config = ", ".join(f"{k}={v}" for k, v in spec.config.items())
        click.echo(f"{spec.name:<36} partitions={spec.partitions} replicas={spec.replicas} "
                   f"messages={','.join(spec.messages)} {config}")


# -- serve / demo --------------------------------------------------------------------------------
@cli.command()
@click.option("--http-port", type=int, default=None, help="override COORDINATOR_HTTP_PORT (0: any free port)")
def serve(http_port: int | None) -> None:
    """Run the agent: HTTP health, readiness and metrics (the engine joins in a later release)."""
    settings = get_settings()
    if http_port is not None:
        settings = settings.model_copy(update={"http_port": http_port})
    asyncio.run(_serve(settings))


async def _serve(settings: Any) -> None:
    from agent.http import HttpServer

    log = get_logger("agent.serve")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = HttpServer(settings)
    await server.start()
    log.info("serving", http=f"http://{settings.http_host}:{server.port}", kafka=settings.kafka_bootstrap_servers)
    print(f"listening on http://{settings.http_host}:{server.port}", flush=True)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await server.aclose()


@cli.command()
@click.option("--keep", is_flag=True, help="leave the stack running afterwards")
@_DIR
@click.pass_context
def demo(ctx: click.Context, keep: bool, directory: Path | None) -> None:
    """Bring up the local stack, exercise it end to end, print what happened, tear down."""
    from agent.demo import run_demo

    ctx.exit(run_demo(sys.stdout, keep=keep, stack_dir=directory))


def main() -> None:
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":
    main()
