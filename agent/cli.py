"""``coordinator``: the command line.

Exit codes follow pytest: 0 success, 1 failed (a check or a scenario), 3 internal error, 4 usage.
Errors print one line; ``-v`` adds the traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from agent import __version__
from agent.errors import CoordinatorError, NotFound
from agent.logs import configure_logging
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
            ctx.exit(exc.exit_code)
        except Exception as exc:
            unreachable = _unreachable(exc)
            if unreachable is None:
                raise
            if ctx.obj and ctx.obj.get("verbose"):
                traceback.print_exc()
            click.echo(f"error: {unreachable}", err=True)
            ctx.exit(EXIT_INTERNAL)


def _unreachable(exc: BaseException) -> str | None:
    """A dependency that could not be reached, in one line naming it and the setting to check; None
    for any other error. (Exit 3, as ``Unavailable``: a broken set-up, not a failed experiment.)"""
    import asyncio

    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    from agent.kafkaio import diagnose
    from agent.logs import redact
    from agent.store import TRANSIENT

    settings = get_settings()
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError):
        servers = settings.kafka_bootstrap_servers
        why = asyncio.run(diagnose(servers, settings.kafka)) or str(exc)
        return f"kafka unreachable at {servers} (COORDINATOR_KAFKA_BOOTSTRAP_SERVERS): {why}"
    if isinstance(exc, TRANSIENT):
        url = redact(settings.redis_url.get_secret_value())
        return f"redis unreachable at {url} (COORDINATOR_REDIS_URL): {exc}"
    return None


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


#: the stack's parts (``agent.devstack.stack.COMPONENTS``, without importing it for every command)
_PARTS = ("kafka", "kafka-2", "kafka-3", "redis", "toxiproxy", "docker", "kubernetes", "otel", "prometheus")
#: the parts a stack has only when asked (``agent.devstack.stack.EXTRAS``)
_EXTRAS = ("kubernetes", "otel", "prometheus")


@devstack.command("up")
@_DIR
@click.option("--only", multiple=True, type=click.Choice(_PARTS))
@click.option("--secure", is_flag=True, default=None,
              help="Kafka over SASL_SSL (SCRAM) and mTLS, Redis over TLS with an ACL user, from a throwaway CA "
                   "(a new stack only; `devstack env` then carries the credentials)")
@click.option("--brokers", type=click.Choice(["1", "3"]), default=None,
              help="Kafka nodes: 3 makes a KRaft cluster (controller quorum of three; topics with 3 replicas, "
                   "2 in sync) (a new stack only)")
@click.option("--with", "extras", multiple=True, type=click.Choice(_EXTRAS),
              help="an optional part, kept from then on: kubernetes (a real control plane with fake nodes; "
                   "built from its Go modules the first time, about ten minutes), otel (an OpenTelemetry "
                   "Collector writing OTLP to Kafka for the worker; built the first time, a few minutes), "
                   "prometheus (Debian's Prometheus, scraping what <dir>/prometheus/targets/*.json name)")
def devstack_up(directory: Path | None, only: tuple[str, ...], secure: bool | None, brokers: str | None,
                extras: tuple[str, ...]) -> None:
    """Start the stack (or the parts not running) and wait until each part answers. The container
    engine (docker) is left out when DOCKER_HOST names one already."""
    stack = _stack(directory)
    timings = stack.up(only or None, secure=secure, brokers=int(brokers) if brokers else None, extras=extras)
    _print_status(stack, timings)
    click.echo(f"\nuse it:  eval \"$(coordinator devstack env --dir {stack.dir})\"")


@devstack.command("down")
@_DIR
def devstack_down(directory: Path | None) -> None:
    """Stop every process of the stack, and remove every container its engine made."""
    stack = _stack(directory)
    stack.down()
    click.echo(f"stack in {stack.dir} stopped")


@devstack.command("start")
@_DIR
@click.argument("part", type=click.Choice(_PARTS))
def devstack_start(directory: Path | None, part: str) -> None:
    """Start one part."""
    stack = _stack(directory)
    stack.start(part)
    _print_status(stack, {})


@devstack.command("stop")
@_DIR
@click.argument("part", type=click.Choice(_PARTS))
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
@click.option("--listener", type=click.Choice(["sasl", "mtls"]), default="sasl",
              help="a --secure stack: Kafka's SASL_SSL listener (SCRAM), or its mTLS one (client certificate)")
def devstack_env(directory: Path | None, listener: str) -> None:
    """Print shell exports that point the agent and tools at the stack."""
    import shlex

    for name, value in _stack(directory).env(listener).items():
        click.echo(f"export {name}={shlex.quote(value)}")


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


# -- scenarios -------------------------------------------------------------------------------------
from agent.cli_engine import parse_params  # noqa: E402 - shared with the engine commands


def _scenario_files(paths: tuple[Path, ...]) -> list[Path]:
    from agent.scenario.catalog import SUFFIXES

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file()))
        else:
            files.append(path)
    return files


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="override a parameter")
@click.option("--plan", "show_plan", is_flag=True, help="also print the dry-run plan of each valid scenario")
@click.pass_context
def validate(ctx: click.Context, paths: tuple[Path, ...], output: str, params: tuple[str, ...],
             show_plan: bool) -> None:
    """Validate scenario files (or directories of them). Exit 0 when all are valid, 1 otherwise."""
    from agent.errors import ScenarioError
    from agent.scenario import load_scenario_file, render

    overrides = parse_params(params)
    settings = get_settings()
    allowed = settings.allowed_targets if settings.allowed_targets != ["*"] else None
    report: list[dict[str, Any]] = []
    files = _scenario_files(paths)
    if not files:
        raise click.UsageError("no scenario files found in the given paths")
    for file in files:
        try:
            scenario = load_scenario_file(file, overrides=overrides or None, overrides_from_text=True,
                                          allowed_targets=allowed, require_parameters=False)
        except ScenarioError as exc:
            report.append({"file": str(file), "valid": False, "errors": [i.as_dict() for i in exc.issues]})
            if output == "text":
                for issue in exc.issues:
                    click.echo(str(issue), err=True)
            continue
        report.append({"file": str(file), "valid": True, "name": scenario.name, "errors": []})
        if output == "text":
            click.echo(f"{file}: valid ({scenario.name})")
            if show_plan:
                click.echo(render(scenario))
    invalid = [r for r in report if not r["valid"]]
    if output == "json":
        click.echo(json.dumps({"valid": not invalid, "files": report}, indent=2))
    elif invalid:
        count = sum(len(r["errors"]) for r in invalid)
        click.echo(f"{len(invalid)} of {len(report)} file(s) invalid, {count} problem(s)", err=True)
    ctx.exit(EXIT_FAILED if invalid else EXIT_OK)


@cli.group()
def scenarios() -> None:
    """The scenario catalog (scenarios/ and COORDINATOR_SCENARIO_DIRS)."""


def _catalog() -> Any:
    from agent.scenario import Catalog, default_directories

    return Catalog.load(default_directories(get_settings().scenario_dirs))


@scenarios.command("list")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def scenarios_list(ctx: click.Context, output: str) -> None:
    """Every scenario in the catalog; problems (invalid files, duplicate names) go to stderr, exit 1."""
    catalog = _catalog()
    rows = []
    for name in catalog.names():
        entry = catalog.entries[name]
        spec = entry.scenario.spec
        faults = sorted({s.fault for s in entry.scenario.fault_steps()})
        rows.append({"name": name, "description": entry.scenario.metadata.description, "file": str(entry.path),
                     "targets": sorted(spec.targets), "faults": faults})
    if output == "json":
        click.echo(json.dumps({"scenarios": rows, "problems": [p.as_dict() for p in catalog.problems]}, indent=2))
    else:
        for row in rows:
            click.echo(f"{row['name']:<40} {','.join(row['faults']):<28} {row['description']}")
        for problem in catalog.problems:
            click.echo(str(problem), err=True)
    ctx.exit(EXIT_FAILED if catalog.problems else EXIT_OK)


@scenarios.command("show")
@click.argument("name")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE")
def scenarios_show(name: str, params: tuple[str, ...]) -> None:
    """The dry-run plan of a catalog scenario (nothing is touched)."""
    from agent.scenario import load_scenario_file, render

    try:
        entry = _catalog().get(name)
    except NotFound as exc:
        raise click.UsageError(str(exc)) from None
    scenario = load_scenario_file(entry.path, overrides=parse_params(params) or None, overrides_from_text=True)
    click.echo(render(scenario))


@cli.command()
def schema() -> None:
    """Print the JSON Schema of the scenario format (for editors)."""
    from agent.scenario.schema import scenario_schema

    click.echo(json.dumps(scenario_schema(), indent=2))


# -- serve / demo --------------------------------------------------------------------------------
@cli.command()
@click.option("--keep", is_flag=True, help="leave the stack running afterwards")
@click.option("--attach", is_flag=True,
              help="start nothing: run the flagship against the agent, worker and sim already running "
                   "(COORDINATOR_* settings; e.g. in docker compose)")
@click.option("--scenario", default=None,
              help="with --attach: the scenario to run instead of the flagship (it takes the flagship's parameters; "
                   "docker compose runs restart-risk-monitor-container)")
@_DIR
@click.pass_context
def demo(ctx: click.Context, keep: bool, attach: bool, scenario: str | None, directory: Path | None) -> None:
    """The flagship demo: local stack, trading sim, agent and worker up; restart the risk monitor
    during trading; show faults, recovery and verdicts live; print the verdict; tear down.

    Exit codes: 0 passed, 1 failed, 3 the demo could not run."""
    from agent.demo import attach_demo, run_demo

    if attach:
        ctx.exit(attach_demo(sys.stdout, get_settings(), scenario=scenario) if scenario else
                 attach_demo(sys.stdout, get_settings()))
    if scenario:
        raise click.UsageError("--scenario goes with --attach (the local demo runs the flagship on its own sim)")
    ctx.exit(run_demo(sys.stdout, keep=keep, stack_dir=directory))


def _add_engine_commands() -> None:
    from agent.cli_engine import COMMANDS
    from agent.cli_explore import explore
    from agent.cli_history import history_command
    from agent.cli_schedule import schedule

    for command in (*COMMANDS, explore, history_command, schedule):
        cli.add_command(command)


_add_engine_commands()


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
