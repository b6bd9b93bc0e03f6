"""``sim``: run one sim service, or the whole sim under supervisord.

    sim run trading-engine --grpc-port 50061 --http-port 8061 [--stall] ...
    sim up --dir /tmp/sim [--rate 20]     # every service under supervisord; prints the agent's settings
    sim status --dir /tmp/sim
    sim down --dir /tmp/sim

Connections come from the environment: SIM_KAFKA_BOOTSTRAP, SIM_REDIS_URL, SIM_TOXIPROXY_URL;
SIM_AUDIT_TOPIC (default audit.events.v1) names the audit topic, SIM_ORDERS_TOPIC (default
orders.inbound.v1) the topic the load generator writes orders to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from sim.knobs import Knobs
from sim.telemetry import AUDIT, OTEL, parse_modes

SERVICE_NAMES = ("exchange", "risk-monitor", "trading-engine", "load-generator")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def _otlp_endpoint() -> str | None:
    return _env("SIM_OTLP_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_ENDPOINT")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sim", description="the simulated trading ecosystem")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one service in the foreground")
    run.add_argument("service", choices=SERVICE_NAMES)
    run.add_argument("--grpc-port", type=int, required=True)
    run.add_argument("--http-port", type=int, required=True)
    run.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    run.add_argument("--advertise-host", help="the host written to the registry (default: --host; 'ip': this "
                     "host's own address toward Redis, so peers need no name lookup)")
    knobs = run.add_argument_group("knobs (also SIM_<NAME> in the environment, and SIM_KNOBS_FILE)")
    knobs.add_argument("--start-delay", type=float, help="seconds from start to ready")
    knobs.add_argument("--never-ready", action="store_const", const=True, help="never report ready")
    knobs.add_argument("--crash-after", type=float, help="exit with status 3 after this many seconds")
    knobs.add_argument("--audit-drop", type=float, help="fraction of audit events not sent")
    knobs.add_argument("--audit-duplicate", type=float, help="fraction of audit events sent twice")
    knobs.add_argument("--stall", action="store_const", const=True, help="stop working while staying healthy")
    knobs.add_argument("--last-words", help="audit event types sent once more while stopping (comma-separated)")
    knobs.add_argument("--no-instance", action="store_const", const=True,
                       help="audit events do not say which process sent them")
    knobs.add_argument("--error-rate", type=float, help="fraction of API calls answered with INTERNAL")
    knobs.add_argument("--forget-when-both-down", action="store_const", const=True,
                       help="trading engine: forget orders when the exchange and the risk monitor fail together")
    run.add_argument("--telemetry", help="where events go: audit (Kafka), otel (OTLP logs and spans), or audit,otel "
                     "(also SIM_TELEMETRY; OTLP to SIM_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT)")
    options = run.add_argument_group("service options")
    options.add_argument("--exchange-address", help="trading engine: the exchange's host:port (e.g. a proxy)")
    options.add_argument("--order-timeout", type=float, default=10.0, help="trading engine: seconds before order_lost")
    options.add_argument("--report-interval", type=float, default=1.0, help="risk monitor: seconds between reports")
    options.add_argument("--rate", type=float, default=20.0, help="load generator: orders per second")
    options.add_argument("--loss-timeout", type=float, default=15.0,
                         help="load generator: seconds without a fill before order_lost")

    for name in ("up", "down", "status"):
        command = sub.add_parser(name, help=f"{name} the sim under supervisord")
        command.add_argument("--dir", required=True, type=Path, help="the sim's directory")
        if name == "up":
            command.add_argument("--rate", type=float, default=20.0)
            command.add_argument("--order-timeout", type=float, default=10.0)
            command.add_argument("--loss-timeout", type=float, default=15.0)
            command.add_argument("--no-wait", action="store_true", help="do not wait for the services to be ready")
            command.add_argument("--bind", default="127.0.0.1", help="where services listen (0.0.0.0 in a container)")
            command.add_argument("--advertise-host", help="the host others reach the services at")
            command.add_argument("--base-port", type=int, help="fixed ports: supervisord here, services after it")
            command.add_argument("--proxy-listen", help="the Toxiproxy proxy's listen address")
            command.add_argument("--proxy-address", help="the address the engine dials to reach the proxy")
            command.add_argument("--telemetry", help="audit, otel or audit,otel (SIM_TELEMETRY)")
            command.add_argument("--otlp-endpoint", help="where otel telemetry goes (SIM_OTLP_ENDPOINT, "
                                 "OTEL_EXPORTER_OTLP_ENDPOINT)")
            command.add_argument("--foreground", action="store_true",
                                 help="run supervisord in the foreground (containers); no waiting")
        if name == "status":
            command.add_argument("--check", action="store_true", help="exit 1 unless every service is ready")
    return parser


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    kafka = _env("SIM_KAFKA_BOOTSTRAP", "127.0.0.1:9092") or ""
    redis_url = _env("SIM_REDIS_URL", "redis://127.0.0.1:6379/0") or ""
    if opts.command == "run":
        return _run(opts, kafka, redis_url)
    from sim.launch import Sim, SimOptions
    from sim.services import INBOUND_TOPIC

    sim = Sim(opts.dir)
    try:
        if opts.command == "up":
            options = SimOptions(kafka=kafka, redis_url=redis_url, toxiproxy_url=_env("SIM_TOXIPROXY_URL"),
                                 rate=opts.rate, order_timeout=opts.order_timeout, loss_timeout=opts.loss_timeout,
                                 bind_host=opts.bind, advertise_host=opts.advertise_host, base_port=opts.base_port,
                                 proxy_listen=opts.proxy_listen, proxy_address=opts.proxy_address,
                                 audit_topic=_env("SIM_AUDIT_TOPIC", "audit.events.v1") or "audit.events.v1",
                                 orders_topic=_env("SIM_ORDERS_TOPIC", INBOUND_TOPIC) or INBOUND_TOPIC,
                                 telemetry=opts.telemetry or _env("SIM_TELEMETRY", AUDIT) or AUDIT,
                                 otlp_endpoint=opts.otlp_endpoint or _otlp_endpoint())
            if opts.foreground:
                from sim.launch import supervisord_binary

                config, info = sim.prepare(options)
                info.supervisord_pid = os.getpid()  # exec keeps the pid
                sim.state.write_text(json.dumps(asdict(info), indent=2))
                os.execv(supervisord_binary(), [supervisord_binary(), "-c", str(config)])  # noqa: S606
            info = sim.up(options, wait_ready=not opts.no_wait)
            print(f"sim running from {info.directory}; supervisord {info.supervisor_url}")
            for key, value in info.agent_env().items():
                print(f"export {key}='{value}'")
        elif opts.command == "down":
            sim.down()
            print("sim stopped")
        else:
            status = sim.status()
            print(json.dumps(status, indent=2))
            if opts.check and not (status["running"] and all(p["ready"] for p in status["processes"].values())):
                return 1
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        print(f"sim {opts.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(opts: argparse.Namespace, kafka: str, redis_url: str) -> int:
    from sim.loadgen import LoadGenerator
    from sim.runtime import Config
    from sim.services import SERVICES

    level = os.environ.get("SIM_LOG_LEVEL", "INFO").upper()  # DEBUG shows each failed call to a peer
    logging.basicConfig(level=level, format=f"%(asctime)s {opts.service} %(levelname)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    flags = {name: getattr(opts, name) for name in Knobs.names()}
    try:
        knobs = Knobs.load(opts.service, flags)
        telemetry = parse_modes(opts.telemetry or _env("SIM_TELEMETRY"))
        endpoint = _otlp_endpoint() or ""
        if OTEL in telemetry and not endpoint:
            raise ValueError("telemetry 'otel' needs an OTLP endpoint: set SIM_OTLP_ENDPOINT or "
                             "OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://127.0.0.1:4317)")
    except ValueError as exc:
        print(f"sim run {opts.service}: {exc}", file=sys.stderr)
        return 4
    extra = {"exchange_address": opts.exchange_address, "order_timeout": opts.order_timeout,
             "report_interval": opts.report_interval, "rate": opts.rate, "loss_timeout": opts.loss_timeout,
             "orders_topic": _env("SIM_ORDERS_TOPIC") or ""}
    config = Config(name=opts.service, kafka=kafka, redis_url=redis_url, grpc_port=opts.grpc_port,
                    http_port=opts.http_port, host=opts.host, advertise_host=opts.advertise_host,
                    registry_ttl=float(_env("SIM_REGISTRY_TTL", "10") or 10),
                    audit_topic=_env("SIM_AUDIT_TOPIC", "audit.events.v1") or "audit.events.v1",
                    telemetry=telemetry, otlp_endpoint=endpoint, extra=extra)
    cls = LoadGenerator if opts.service == "load-generator" else SERVICES[opts.service]

    async def serve() -> int:
        return await cls(config, knobs).run()

    return asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
