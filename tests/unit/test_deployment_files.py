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
