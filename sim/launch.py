"""``sim up|down|status``: run the sim under a real supervisord (autorestart on, so a killed service
comes back as it would in production), with the Toxiproxy proxy ``engine-to-exchange`` between the
trading engine and the exchange.

Everything lives in one directory: ``supervisord.conf``, ``sim.json`` (ports, pids, the supervisor
URL), ``knobs.json`` (see ``sim.knobs``) and one log per program.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xmlrpc.client
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sim import kafka_security
from sim.runtime import ensure_topics
from sim.services import INBOUND_TOPIC, ORDERS_TOPIC
from sim.telemetry import AUDIT, OTEL, parse_modes

PROGRAMS = ("exchange", "risk-monitor", "trading-engine", "load-generator")
PROXY = "engine-to-exchange"

CONFIG_HEAD = """\
[supervisord]
nodaemon=true
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
childlogdir={dir}
loglevel=info

[inet_http_server]
port={host}:{port}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=http://127.0.0.1:{port}
"""

PROGRAM = """
[program:{name}]
command={command}
environment={environment}
autostart=true
autorestart=true
startsecs=1
startretries=1000
stopsignal=TERM
stopwaitsecs=10
redirect_stderr=true
stdout_logfile={dir}/{name}.log
stdout_logfile_maxbytes=10MB
"""


@dataclass
class SimOptions:
    kafka: str
    redis_url: str
    toxiproxy_url: str | None = None
    rate: float = 20.0
    order_timeout: float = 10.0
    loss_timeout: float = 15.0
    report_interval: float = 1.0
    registry_ttl: float = 10.0
    audit_topic: str = "audit.events.v1"
    #: where the load generator writes orders, for the coordinator's relay to forward to orders.v1. Sims
    #: sharing one Kafka one after another each need their own: a relay with a new consumer group reads
    #: its source from the start, and would forward every earlier sim's orders to this sim's engine at once
    orders_topic: str = INBOUND_TOPIC
    #: where services and supervisord listen; 0.0.0.0 in a container
    bind_host: str = "127.0.0.1"
    #: the host others reach the services at (registry entries); default: bind_host
    advertise_host: str | None = None
    #: fixed ports instead of free ones: supervisord on this, services on the next ones
    base_port: int | None = None
    #: the Toxiproxy proxy's listen address, and the address the engine dials to reach it
    proxy_listen: str | None = None
    proxy_address: str | None = None
    #: Kafka security for every service (``SIM_KAFKA_*``: see ``sim.kafka_security``); those in the
    #: launcher's environment apply too
    kafka_env: dict[str, str] = field(default_factory=dict)
    #: where the services' events go (``sim.telemetry``): audit, otel or audit,otel
    telemetry: str = AUDIT
    #: the OTLP/gRPC endpoint for ``otel`` (an OpenTelemetry Collector)
    otlp_endpoint: str | None = None

    def kafka_security(self) -> dict[str, str]:
        return {**{k: os.environ[k] for k in kafka_security.NAMES if os.environ.get(k)}, **self.kafka_env}


@dataclass
class SimInfo:
    directory: str
    supervisor_url: str
    supervisord_pid: int
    ports: dict[str, dict[str, int]] = field(default_factory=dict)
    proxy: dict[str, str] = field(default_factory=dict)
    audit_topic: str = "audit.events.v1"
    orders_topic: str = INBOUND_TOPIC

    def agent_env(self) -> dict[str, str]:
        """What the coordinator needs to act on this sim."""
        return {"COORDINATOR_SUPERVISOR_URL": self.supervisor_url, "COORDINATOR_TOPICS__AUDIT_EVENTS": self.audit_topic,
                "COORDINATOR_RELAYS": json.dumps([{"source": self.orders_topic, "topic": ORDERS_TOPIC}])}


class Sim:
    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory).resolve()
        self.state = self.directory / "sim.json"
        self.knobs_file = self.directory / "knobs.json"
        #: the services' /metrics for Prometheus (``file_sd_configs``), written by ``prepare``
        self.scrape_targets = self.directory / "prometheus-targets.json"
        self._process: subprocess.Popen[bytes] | None = None  # when started by this object

    # -- up ---------------------------------------------------------------------------------------
    def prepare(self, options: SimOptions) -> tuple[Path, SimInfo]:
        """Topics, ports, the Toxiproxy proxy and supervisord.conf: everything but starting it."""
        if self.running():
            raise RuntimeError(f"a sim is already running from {self.directory}; run: sim down --dir {self.directory}")
        if OTEL in parse_modes(options.telemetry) and not options.otlp_endpoint:
            raise ValueError("telemetry 'otel' needs an OTLP endpoint (--otlp-endpoint, SIM_OTLP_ENDPOINT)")
        self.directory.mkdir(parents=True, exist_ok=True)
        asyncio.run(ensure_topics(options.kafka, options.audit_topic, security=options.kafka_security(),
                                  orders_topic=options.orders_topic))
        base = options.base_port
        free = iter(_free_ports(2 * len(PROGRAMS) + 2))
        ports = {name: {"grpc": base + 1 + 2 * i, "http": base + 2 + 2 * i} if base else
                 {"grpc": next(free), "http": next(free)} for i, name in enumerate(PROGRAMS)}
        supervisor_port = base or next(free)
        exchange = f"{options.advertise_host or options.bind_host}:{ports['exchange']['grpc']}"
        if options.bind_host == "0.0.0.0" and not options.advertise_host:  # noqa: S104 - a comparison
            raise ValueError("binding 0.0.0.0 needs an advertise host (the name others reach the sim by)")
        proxy: dict[str, str] = {}
        if options.toxiproxy_url:
            listen = options.proxy_listen or f"127.0.0.1:{next(free)}"
            _toxiproxy_proxy(options.toxiproxy_url, PROXY, listen, exchange)
            proxy = {"name": PROXY, "listen": listen, "upstream": exchange, "api": options.toxiproxy_url}
        if not self.knobs_file.exists():
            self.knobs_file.write_text("{}\n")
        # Prometheus file service discovery: where each service's /metrics is, labelled by service
        host = options.advertise_host or options.bind_host
        self.scrape_targets.write_text(json.dumps(
            [{"targets": [f"{host}:{ports[name]['http']}"], "labels": {"service": name}} for name in PROGRAMS],
            indent=2) + "\n")
        config = self.directory / "supervisord.conf"
        dial = options.proxy_address or proxy.get("listen", exchange)
        config.write_text(self._config(options, ports, supervisor_port, dial))
        config.chmod(0o600)  # the environment lines may carry a Redis password
        info = SimInfo(str(self.directory), f"http://127.0.0.1:{supervisor_port}/RPC2", 0, ports, proxy,
                       options.audit_topic, options.orders_topic)
        return config, info

    def up(self, options: SimOptions, *, wait_ready: bool = True, timeout: float = 60.0) -> SimInfo:
        config, info = self.prepare(options)
        with open(self.directory / "supervisord.out", "ab") as out:
            process = self._process = subprocess.Popen([supervisord_binary(), "-c", str(config)], stdout=out,
                                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                       start_new_session=True)
        info.supervisord_pid = process.pid
        self.state.write_text(json.dumps(asdict(info), indent=2))
        try:
            self._wait(info, options, wait_ready, timeout)
        except BaseException:
            self.down()
            raise
        return info

    def _config(self, options: SimOptions, ports: dict[str, dict[str, int]], supervisor_port: int,
                exchange_address: str) -> str:
        env = {"SIM_KAFKA_BOOTSTRAP": options.kafka, "SIM_REDIS_URL": options.redis_url,
               "SIM_KNOBS_FILE": str(self.knobs_file), "SIM_REGISTRY_TTL": str(options.registry_ttl),
               "SIM_AUDIT_TOPIC": options.audit_topic, "SIM_ORDERS_TOPIC": options.orders_topic,
               **options.kafka_security(),
               "SIM_TELEMETRY": options.telemetry, "PYTHONUNBUFFERED": "1"}
        if options.otlp_endpoint:
            env["SIM_OTLP_ENDPOINT"] = options.otlp_endpoint
        environment = ",".join(f'{k}="{_escape(v)}"' for k, v in env.items())
        extra = {"trading-engine": ["--exchange-address", exchange_address, "--order-timeout",
                                    str(options.order_timeout)],
                 "risk-monitor": ["--report-interval", str(options.report_interval)],
                 "load-generator": ["--rate", str(options.rate), "--loss-timeout", str(options.loss_timeout)],
                 "exchange": []}
        text = CONFIG_HEAD.format(dir=self.directory, host=options.bind_host, port=supervisor_port)
        hosts = ["--host", options.bind_host, "--advertise-host", options.advertise_host or options.bind_host]
        for name in PROGRAMS:
            command = [sys.executable, "-m", "sim", "run", name, "--grpc-port", str(ports[name]["grpc"]),
                       "--http-port", str(ports[name]["http"]), *hosts, *extra[name]]
            text += PROGRAM.format(name=name, command=" ".join(command), environment=environment, dir=self.directory)
        return text

    def _wait(self, info: SimInfo, options: SimOptions, wait_ready: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = set(PROGRAMS)
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"sim services not ready within {timeout:g}s: {', '.join(sorted(pending))} "
                                   f"(logs in {self.directory})")
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                with xmlrpc.client.ServerProxy(info.supervisor_url) as proxy:
                    states = {p["name"]: p["statename"] for p in proxy.supervisor.getAllProcessInfo()}  # type: ignore[union-attr]
                for name in list(pending):
                    if states.get(name) != "RUNNING":
                        continue
                    if not wait_ready or _http_ok(info.ports[name]["http"], "/api/v1/ready"):
                        pending.discard(name)
            time.sleep(0.2)

    # -- down / status ------------------------------------------------------------------------------
    def info(self) -> SimInfo | None:
        if not self.state.exists():
            return None
        return SimInfo(**json.loads(self.state.read_text()))

    def running(self) -> bool:
        info = self.info()
        return info is not None and _alive(info.supervisord_pid)

    def status(self) -> dict[str, Any]:
        info = self.info()
        if info is None or not _alive(info.supervisord_pid):
            return {"running": False, "directory": str(self.directory)}
        with xmlrpc.client.ServerProxy(info.supervisor_url) as proxy:
            processes = {p["name"]: {"state": p["statename"], "pid": p["pid"]}
                         for p in proxy.supervisor.getAllProcessInfo()}  # type: ignore[union-attr]
        for name, entry in processes.items():
            entry["ready"] = _http_ok(info.ports[name]["http"], "/api/v1/ready")
        return {"running": True, "directory": str(self.directory), "supervisor_url": info.supervisor_url,
                "processes": processes, "proxy": info.proxy}

    def down(self, timeout: float = 20.0) -> None:
        info = self.info()
        if info is None:
            return
        if _alive(info.supervisord_pid):
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                with xmlrpc.client.ServerProxy(info.supervisor_url) as proxy:
                    proxy.supervisor.shutdown()
            deadline = time.monotonic() + timeout
            while _alive(info.supervisord_pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(info.supervisord_pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(info.supervisord_pid, signal.SIGKILL)
        # a child that outlived supervisord (it should not) goes with the process group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(info.supervisord_pid, signal.SIGKILL)
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
            self._process = None
        if info.proxy:
            with contextlib.suppress(OSError):
                _toxiproxy_request(info.proxy["api"], "DELETE", f"/proxies/{info.proxy['name']}")
        self.state.unlink(missing_ok=True)


def _toxiproxy_proxy(api: str, name: str, listen: str, upstream: str) -> None:
    with contextlib.suppress(urllib.error.HTTPError):
        _toxiproxy_request(api, "DELETE", f"/proxies/{name}")
    _toxiproxy_request(api, "POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream,
                                                 "enabled": True})


def _toxiproxy_request(api: str, method: str, path: str, body: Any = None) -> Any:
    if not api.startswith(("http://", "https://")):
        raise ValueError(f"toxiproxy url must be http(s): {api}")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(api.rstrip("/") + path, data=data, method=method,  # noqa: S310 - scheme checked
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - scheme checked
        raw = response.read()
    return json.loads(raw) if raw else None


def _http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:  # noqa: S310
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def supervisord_binary() -> str:
    return str(Path(sys.executable).parent / "supervisord")


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports: the sockets stay open until all are chosen, so the
    kernel cannot hand the same port out twice."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
