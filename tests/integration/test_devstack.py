"""The local stack as a user drives it: `coordinator devstack up|status|down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agent.devstack import Stack, engine
from agent.devstack.procs import alive


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=180, check=False)


def test_a_second_stack_does_not_collide_and_down_leaves_nothing_running(stack: Stack, tmp_path: Path) -> None:
    other = tmp_path / "second"
    up = _cli("devstack", "up", "--dir", str(other))
    assert up.returncode == 0, up.stderr

    status = _cli("devstack", "status", "--dir", str(other), "--output", "json")
    assert status.returncode == 0
    parts = {p["name"]: p for p in json.loads(status.stdout)["parts"]}
    assert all(p["running"] for p in parts.values())
    mine = {p.name: p.address for p in stack.status()}
    assert {n: p["address"] for n, p in parts.items()}.keys() == mine.keys()
    assert not set(mine.values()) & {p["address"] for p in parts.values()}
    pids = [p["pid"] for p in parts.values()]
    container = _container(other / "docker")  # made by a test or a user through the engine's API

    down = _cli("devstack", "down", "--dir", str(other))
    assert down.returncode == 0, down.stderr
    assert not any(alive(pid) for pid in pids)
    assert not alive(container), "down removes every container its engine made"
    assert stack.is_up(), "stopping one stack must not touch another"

    after = _cli("devstack", "status", "--dir", str(other))
    assert after.returncode == 1
    assert "stopped" in after.stdout


def test_env_points_tools_at_the_stack(stack: Stack) -> None:
    out = _cli("devstack", "env", "--dir", str(stack.dir))
    assert out.returncode == 0
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    assert exports["COORDINATOR_KAFKA_BOOTSTRAP_SERVERS"].startswith("127.0.0.1:")
    assert exports["COORDINATOR_REDIS_URL"].startswith("redis://127.0.0.1:")


def test_an_unknown_part_is_a_usage_error() -> None:
    out = _cli("devstack", "stop", "zookeeper")
    assert out.returncode == 4
    assert "zookeeper" in out.stderr


def _container(home: Path) -> int:
    """Start a container on the stack's engine (Docker API over its socket); its process id."""
    sock = engine.socket_path(home)
    status, made = engine.call(sock, "POST", "/containers/create", {"name": "left-running"}, body=json.dumps({
        "Image": engine.BASE_IMAGE, "Cmd": ["/bin/sleep", "3600"], "HostConfig": {"NetworkMode": "host"}}).encode())
    assert status == 201, made
    status, _ = engine.call(sock, "POST", f"/containers/{made['Id']}/start")
    assert status == 204
    status, info = engine.call(sock, "GET", f"/containers/{made['Id']}/json")
    assert info["State"]["Running"], info["State"]
    return int(info["State"]["Pid"])
