"""docker-compose.yml and the Dockerfile stay valid for users: their structure here, and the compose
file as compose itself reads it when a compose binary is there (``test_compose_config``)."""

from __future__ import annotations

import json
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


def test_compose_runs_the_demo_in_one_command_against_the_containers_of_the_sim() -> None:
    services = _compose()["services"]
    demo = services["demo"]
    assert demo["command"] == ["demo", "--attach", "--scenario", "restart-risk-monitor-container"]
    assert {name: rule["condition"] for name, rule in demo["depends_on"].items()} == {
        "agent": "service_healthy", "worker": "service_healthy", "load-generator": "service_healthy"}
    assert services["worker"]["command"][0] == "worker"
    assert "test" in services["worker"]["healthcheck"], "the worker has a healthcheck of its own"
    assert services["worker"]["environment"]["COORDINATOR_WORKER_ALIVE_FILE"] in \
        services["worker"]["healthcheck"]["test"][-1]


def test_each_sim_service_is_its_own_compose_service_without_supervisord() -> None:
    from sim.cli import build_parser
    from sim.launch import PROGRAMS

    services = _compose()["services"]
    for name in PROGRAMS:
        service = services[name]
        parsed = build_parser().parse_args(service["command"])
        # registered by its container's address: a peer reaches it after a restart without a name lookup
        assert (parsed.command, parsed.service, parsed.advertise_host) == ("run", name, "ip"), name
        assert service["entrypoint"] == ["sim"] and service["restart"] == "unless-stopped"
        assert str(parsed.http_port) in service["healthcheck"]["test"][-1], f"{name} checks its own ready port"
    assert "supervisor" not in (ROOT / "docker-compose.yml").read_text().lower()


def test_the_agent_reaches_docker_only_through_a_proxy_limited_to_containers() -> None:
    services = _compose()["services"]
    mounts = {name: [v for v in s.get("volumes", []) if "docker.sock" in v] for name, s in services.items()}
    assert {name: v for name, v in mounts.items() if v} == {
        "docker-proxy": ["${DOCKER_SOCKET:-/var/run/docker.sock}:/var/run/docker.sock:ro"]}
    proxy = services["docker-proxy"]["environment"]
    assert (proxy["CONTAINERS"], proxy["POST"]) == (1, 1)
    assert all(proxy[refused] == 0 for refused in ("IMAGES", "EXEC", "VOLUMES", "NETWORKS", "BUILD", "SWARM"))
    assert services["agent"]["environment"]["COORDINATOR_DOCKER_URL"] == "tcp://docker-proxy:2375"


def test_kafka_answers_the_compose_network_and_the_host_on_their_own_listeners() -> None:
    compose = _compose()
    kafka = compose["services"]["kafka"]["environment"]
    advertised = dict(item.split("://") for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised == {"INTERNAL": "kafka:19092", "EXTERNAL": "localhost:9092"}
    assert "127.0.0.1:9092:9092" in compose["services"]["kafka"]["ports"]
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        for key in ("COORDINATOR_KAFKA_BOOTSTRAP_SERVERS", "SIM_KAFKA_BOOTSTRAP"):
            assert env.get(key) in (None, "kafka:19092"), (name, key)


def test_the_container_scenario_targets_compose_services_that_exist_and_the_allow_list_admits() -> None:
    from agent.scenario import load_scenario_file
    from agent.scenario.checks import refused_by_allow_list

    compose = _compose()
    allowed = json.loads(compose["services"]["agent"]["environment"]["COORDINATOR_ALLOWED_TARGETS"])
    scenario = load_scenario_file(ROOT / "scenarios" / "restart-risk-monitor-container.yaml",
                                  allowed_targets=allowed)
    for name, target in scenario.spec.targets.items():
        selector = target.selector.model_dump(mode="python")
        assert selector["compose"]["project"] == compose["name"]
        assert selector["compose"]["service"] in compose["services"], name
        chosen = {**selector, "chosen": [{"id": "x", "name": f"{compose['name']}-{selector['compose']['service']}-1"}]}
        assert refused_by_allow_list(target.service or name, "docker", chosen, allowed) is None
    proxy = json.loads((ROOT / "deploy" / "toxiproxy.json").read_text())
    assert [p["name"] for p in proxy] == ["engine-to-exchange"]
    engine = compose["services"]["trading-engine"]["command"]
    assert engine[engine.index("--exchange-address") + 1] == "toxiproxy:" + proxy[0]["listen"].rpartition(":")[2]


def test_compose_commands_are_accepted_by_the_real_command_lines() -> None:
    from click.testing import CliRunner

    from agent.cli import cli

    services = _compose()["services"]
    for name in ("agent", "worker", "demo", "topics"):
        result = CliRunner().invoke(cli, [*services[name]["command"], "--help"])
        assert result.exit_code == 0, (name, result.output)


def test_compose_config_reads_the_file_as_compose_does_with_every_service_and_the_demo() -> None:
    """compose-go, the loader of `docker compose config`: the compose schema, merges and references."""
    import subprocess

    from agent.devstack.install import ensure_composecheck

    checker = ensure_composecheck()
    done = subprocess.run([checker, "-profile", "demo", str(ROOT / "docker-compose.yml")], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    project = json.loads(done.stdout)
    assert project["name"] == "chaos-coordinator"
    assert set(project["services"]) == set(_compose()["services"])
    risk = project["services"]["risk-monitor"]
    assert risk["restart"] == "unless-stopped" and risk["entrypoint"] == ["sim"], "the x-sim defaults were merged"
    broken = ROOT / "docker-compose.yml"
    bad = subprocess.run([checker, "/dev/stdin"], input=broken.read_text().replace("restart: unless-stopped",
                                                                                  "restrat: unless-stopped"),
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 1 and "restrat" in bad.stderr, "a misspelt key is refused, not ignored"


def _python_of(shell: str) -> str:
    """The program of a ``python -c '...'`` shell command, as a shell would pass it."""
    import shlex

    words = shlex.split(shell)
    assert words[:2] == ["python", "-c"] and len(words) == 3, words
    return words[2]


def test_healthchecks_are_shell_form_where_an_argument_has_spaces_and_each_parses() -> None:
    # podman splits an exec-form argument on spaces; shell form works on Docker and podman alike
    for name, service in _compose()["services"].items():
        test = service.get("healthcheck", {}).get("test")
        if not test:
            continue
        if test[0] == "CMD":
            assert not any(" " in arg for arg in test[1:]), f"{name}: exec form with spaces in an argument"
        elif test[0] == "CMD-SHELL" and test[1].startswith("python "):
            compile(_python_of(test[1]), f"{name} healthcheck", "exec")
    dockerfile = (ROOT / "Dockerfile").read_text()
    check = re.search(r"^HEALTHCHECK .*\\\n\s+CMD (.*)$", dockerfile, re.M)
    assert check is not None and not check.group(1).startswith("["), "the image's healthcheck is shell form"
    compile(_python_of(check.group(1)), "Dockerfile healthcheck", "exec")


def test_the_image_takes_its_base_as_an_argument_and_the_context_leaves_out_what_it_does_not_need() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.11-slim$", dockerfile, re.M)
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == ["${BASE}", "${BASE}"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"**/node_modules", "**/*.egg-info", ".venv", ".git", "tests"} <= set(ignored)


def test_every_image_the_compose_file_names_has_a_stand_in_for_machines_without_a_registry() -> None:
    from agent.devstack.composehost import STANDINS, STANDINS_DIR, canonical

    named = {canonical(s["image"]) for s in _compose()["services"].values() if "image" in s}
    base = re.search(r"^ARG BASE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert base, "the Dockerfile's base is a build argument"
    assert named | {canonical(base.group(1))} == set(STANDINS)
    for directory in filter(None, STANDINS.values()):
        assert (STANDINS_DIR / directory / "Dockerfile").exists(), directory


def test_image_references_are_completed_as_the_engine_stores_them() -> None:
    from agent.devstack.composehost import canonical

    assert canonical("redis:7.4-alpine") == "docker.io/library/redis:7.4-alpine"
    assert canonical("apache/kafka:4.1.1") == "docker.io/apache/kafka:4.1.1"
    assert canonical("ghcr.io/shopify/toxiproxy:2.12.0") == "ghcr.io/shopify/toxiproxy:2.12.0"
    assert canonical("localhost/coordinator-debian:bookworm") == "localhost/coordinator-debian:bookworm"
