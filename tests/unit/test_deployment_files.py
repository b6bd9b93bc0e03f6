"""docker-compose.yml and the Dockerfile stay valid for users (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_names_only_services_that_exist_and_waits_on_real_healthchecks() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown service '{dependency}'"
            if rule["condition"] == "service_healthy":
                assert "test" in services[dependency].get("healthcheck", {}), dependency


def test_compose_runs_kafka_in_kraft_mode_from_the_official_image() -> None:
    kafka = _compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "bitnami" not in (ROOT / "docker-compose.yml").read_text()


def test_agent_image_is_built_here_runs_as_non_root_and_checks_readiness() -> None:
    services = _compose()["services"]
    assert services["agent"]["build"] == "."
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert user and user.group(1) not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK .*\n.*/api/v1/ready", dockerfile, re.MULTILINE)
    for copied in re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.MULTILINE):
        assert (ROOT / copied).exists(), f"Dockerfile copies missing path '{copied}'"


def test_compose_runs_the_demo_in_one_command_against_the_sim_agent_and_worker() -> None:
    services = _compose()["services"]
    demo = services["demo"]
    assert demo["command"] == ["demo", "--attach"]
    assert {name: rule["condition"] for name, rule in demo["depends_on"].items()} == {
        "agent": "service_healthy", "worker": "service_started", "sim": "service_healthy"}
    assert services["agent"]["environment"]["COORDINATOR_SUPERVISOR_URL"] == "http://sim:9001/RPC2"
    assert services["worker"]["command"][0] == "worker"


def test_compose_commands_are_accepted_by_the_real_command_lines() -> None:
    from click.testing import CliRunner

    from agent.cli import cli
    from sim.cli import build_parser

    services = _compose()["services"]
    sim = build_parser().parse_args(services["sim"]["command"])
    assert (sim.command, sim.foreground, sim.advertise_host, sim.base_port) == ("up", True, "sim", 9001)
    assert build_parser().parse_args(services["sim"]["healthcheck"]["test"][2:]).check
    for name in ("agent", "worker", "demo", "topics"):
        result = CliRunner().invoke(cli, [*services[name]["command"], "--help"])
        assert result.exit_code == 0, (name, result.output)
