"""Agent settings, read from the environment with the prefix ``COORDINATOR_``.

Nested groups use ``__`` as the delimiter, e.g. ``COORDINATOR_TOPICS__RESULTS=my.results``.
Durations accept seconds (``30``, ``0.5``) or ``"250ms"``/``"30s"``/``"5m"``/``"1h"`` and are
normalised once, here, to float seconds.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def to_seconds(value: object) -> float:
    """Normalise ``30``, ``"30"``, ``"250ms"``, ``"5m"`` to seconds; raise ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value!r}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(f"expected a duration such as '250ms', '30s' or '5m', got {value!r}")


Seconds = Annotated[float, BeforeValidator(to_seconds)]


class TopicNames(BaseModel):
    """Every topic the project reads or writes; change them here or by environment."""

    scenario_requests: str = "coordinator.scenario-requests.v1"
    chaos_events: str = "coordinator.chaos-events.v1"
    audit_events: str = "audit.events.v1"
    scenario_results: str = "coordinator.scenario-results.v1"
    verdicts: str = "coordinator.verdicts.v1"
    dead_letters: str = "coordinator.dead-letters.v1"
    schedules: str = "coordinator.schedules.v1"

    def by_channel(self) -> dict[str, str]:
        """Map the AsyncAPI channel ids (``topics/asyncapi.yaml``) to the configured names."""
        return {
            "scenarioRequests": self.scenario_requests,
            "chaosEvents": self.chaos_events,
            "auditEvents": self.audit_events,
            "scenarioResults": self.scenario_results,
            "verdicts": self.verdicts,
            "deadLetters": self.dead_letters,
            "schedules": self.schedules,
        }


class RelaySpec(BaseModel):
    """A relay the agent runs: events from ``source`` copied to ``topic`` (see agent.relay)."""

    source: str
    topic: str


class KafkaSecurity(BaseModel):
    """How every Kafka client of the project connects (``COORDINATOR_KAFKA__...``): the agent, the
    worker, relays, the CLI, ``topics apply``. Secrets are ``SecretStr``: never logged. Built once
    into client options (``agent.kafkaio.client_options``)."""

    model_config = ConfigDict(frozen=True)

    #: PLAINTEXT, SSL (TLS, with a client certificate for mTLS), SASL_PLAINTEXT or SASL_SSL
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    #: the CA that signed the brokers' certificates (PEM; empty: the system's CAs)
    ssl_cafile: str = ""
    #: a client certificate and its key (PEM), for brokers that require one (mTLS)
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_key_password: SecretStr = SecretStr("")
    #: check that the broker's certificate names the host connected to (keep it on)
    ssl_check_hostname: bool = True

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")


LOGS = "logs"
SPANS = "spans"


class OtlpSettings(BaseModel):
    """Where OpenTelemetry data comes from and how it maps to audit events
    (``COORDINATOR_OTLP__LOGS_TOPICS='["otlp_logs"]'`` and so on). No topic: nothing is read."""

    #: topics the Collector's Kafka exporter writes logs to (its default name is ``otlp_logs``)
    logs_topics: list[str] = Field(default_factory=list)
    #: topics it writes spans to (its default: ``otlp_spans``)
    spans_topics: list[str] = Field(default_factory=list)
    #: the attribute naming an event, for log records without an event name and for spans
    event_attribute: str = "event.name"
    #: the attribute carrying the injection's correlation id (record, span or resource)
    correlation_attribute: str = "coordinator.correlation_id"
    #: resource attributes naming the emitting incarnation, the first present wins
    instance_attributes: list[str] = Field(
        default_factory=lambda: ["service.instance.id", "k8s.pod.uid", "process.pid"])
    #: spans become audit events too (their events always do when spans are read)
    spans_as_events: bool = True

    def topics(self) -> list[str]:
        return [*self.logs_topics, *self.spans_topics]

    def signal_of(self, topic: str) -> str | None:
        if topic in self.logs_topics:
            return LOGS
        if topic in self.spans_topics:
            return SPANS
        return None


class TracingSettings(BaseModel):
    """OpenTelemetry out (agent/tracing.py): every execution a trace, exported over OTLP/gRPC
    (``COORDINATOR_TRACING__ENDPOINT=http://127.0.0.1:4317``, a Collector or a Jaeger). No endpoint:
    off, and nothing is made or sent."""

    #: the OTLP/gRPC endpoint; ``https://`` for TLS
    endpoint: str = ""
    #: the ``service.name`` of the agent's spans (the worker does not read spans of this service)
    service_name: str = "chaos-coordinator"
    #: seconds a finished span waits to be exported with others
    export_delay: float = Field(default=0.5, gt=0, le=30)
    #: where a person sees a trace, ``{trace_id}`` replaced (e.g. a Jaeger UI:
    #: ``http://127.0.0.1:16686/trace/{trace_id}``); reports link the execution's trace there
    link: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COORDINATOR_",
        env_nested_delimiter="__",
        extra="ignore",
        # read once; what may change while the agent runs lives in agent.policy
        frozen=True,
    )

    instance_id: str = Field(default="coordinator-1", description="this agent's name in events and logs")
    environment: str = "development"

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_client_id: str = "coordinator"
    kafka_request_timeout: Seconds = 5.0
    #: TLS and SASL for every Kafka client (``COORDINATOR_KAFKA__SECURITY_PROTOCOL`` and friends)
    kafka: KafkaSecurity = KafkaSecurity()
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    redis_key_prefix: str = "coordinator"
    toxiproxy_url: str = "http://127.0.0.1:8474"
    #: supervisord's XML-RPC endpoint (credentials, if any, in the URL: they are never logged)
    supervisor_url: SecretStr = SecretStr("http://127.0.0.1:9001/RPC2")
    #: the Docker Engine API (``unix:///var/run/docker.sock``, ``tcp://host:2376``); empty: ``DOCKER_HOST``,
    #: else the default socket when there is one. Containers are targets only when it is reachable.
    docker_url: str = ""
    #: TLS to a tcp Docker endpoint: the CA that signed the engine's certificate, and a client
    #: certificate and key when the engine asks for one (paths); verification is on unless turned off
    docker_tls_ca: str = ""
    docker_tls_cert: str = ""
    docker_tls_key: str = ""
    docker_tls_verify: bool = True
    #: each driver's own settings group, by driver name: ``COORDINATOR_DRIVERS__<NAME>__<FIELD>``
    #: (or a JSON object in ``COORDINATOR_DRIVERS``); the fields are the driver's (``DriverSpec.
    #: settings_of``), so a new driver brings its settings in its own module. The flat names above
    #: (``COORDINATOR_TOXIPROXY_URL``, ...) still set the built-in drivers' groups
    drivers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    topics: TopicNames = TopicNames()
    #: OpenTelemetry logs and spans read as audit events by the worker (agent/worker/otlp.py)
    otlp: OtlpSettings = OtlpSettings()
    #: the Prometheus server prometheus probes ask when they name none (its base URL)
    prometheus_url: str = ""
    #: the agent's own spans: a trace per execution (agent/tracing.py)
    tracing: TracingSettings = TracingSettings()
    #: replication factor used by ``topics apply``; capped at the broker count
    topic_replication_factor: int = Field(default=3, ge=1)

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8088, ge=0, le=65535)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50058, ge=0, le=65535)
    #: bearer token every gRPC call (but health checks) must carry: ``authorization: Bearer <token>``
    grpc_token: SecretStr | None = None
    #: PEM files: the server's certificate and key turn TLS on; a client CA turns on mutual TLS
    grpc_tls_cert_file: str | None = None
    grpc_tls_key_file: str | None = None
    grpc_tls_client_ca_file: str | None = None

    #: the agent's own entry in the service registry (``registry:services:{name}``)
    registry_name: str = "coordinator"
    #: the host written there (others reach the agent at it); default: the gRPC host, or this
    #: machine's name when that is 0.0.0.0
    registry_host: str | None = None
    #: registry entries live this long without a refresh; older ones are treated as dead
    registry_ttl: Seconds = 15.0

    #: the ecosystem's configuration service (``{url}/api/v1/configuration/{key}``); unset: local settings only
    config_service_url: str | None = None
    #: the ``environment`` asked for
    config_environment: str = ""
    #: how long its answers are cached (and how often the agent asks again)
    config_service_ttl: Seconds = 30.0
    ready_check_timeout: Seconds = 2.0

    content_type: Literal["application/protobuf", "application/json"] = "application/protobuf"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    #: extra directories searched for scenarios, besides the project's scenarios/
    scenario_dirs: list[str] = Field(default_factory=list)
    #: glob patterns of target service names scenarios may touch (JSON list in the environment)
    allowed_targets: list[str] = Field(default_factory=lambda: ["*"])

    #: follow the schedules topic and fire the ticks that fall to this agent (agent.schedules)
    schedules_enabled: bool = True
    #: run history (agent.history): runs kept per scenario, and for how many days at most
    history_runs: int = Field(default=10_000, ge=1)
    history_days: float = Field(default=90.0, gt=0)
    #: the resilience score (metric and ``coordinator history``) is taken over this many recent runs
    history_score_runs: int = Field(default=20, ge=1)

    #: how long a fault's lease lives without its owner's heartbeat before anyone may revert it
    lease_ttl: Seconds = 15.0
    #: how often every agent looks for orphaned leases
    reconcile_interval: Seconds = 5.0
    max_concurrent_executions: int = Field(default=20, ge=1)
    #: on SIGTERM, seconds running executions may take to finish before they are aborted
    shutdown_drain: Seconds = 0.0
    #: on SIGTERM, seconds after the drain by which the process exits whatever it still waits for
    #: (agent.stopping: where it waited is written to stderr, the exit status is 1)
    stop_grace: Seconds = Field(default=45.0, gt=0)
    #: publish process_started / process_exited audit events for what the drivers see their platform
    #: do (agent.platform), polled this often
    platform_events: bool = True
    platform_poll_interval: Seconds = 0.5
    consumer_group: str = "coordinator"
    #: relays the agent runs, as a JSON list: [{"source": "orders.inbound.v1", "topic": "orders.v1"}]
    relays: list[RelaySpec] = Field(default_factory=list)
    #: create missing topics from topics/asyncapi.yaml when the agent starts
    create_topics: bool = False
    #: a dead letter larger than this carries a truncated copy of its original (keep it under the
    #: dead-letter topic's max.message.bytes and the producer's max request size)
    dead_letter_max_bytes: int = Field(default=512 * 1024, ge=4096)
    #: extra time the engine waits for the stream worker's verdicts after each deadline
    verdict_grace: Seconds = 10.0

    #: the stream worker's faust app id (its consumer group and the prefix of its internal topics)
    worker_app_id: str = "coordinator-worker"
    #: partitions of the worker's internal topics and tables
    worker_partitions: int = Field(default=6, ge=1)
    #: how long the worker waits, after a deadline, for audit events that arrive late
    worker_grace: Seconds = 2.0
    #: after a recovery expectation FAILED or was INCONCLUSIVE at its deadline, how long the worker
    #: still looks for the event, and the engine waits to note it on the result (0: not at all)
    late_evidence: Seconds = 10.0
    #: how often deadlines are checked when no event arrives
    worker_tick_interval: Seconds = 0.5
    #: how soon a worker that died without leaving is replaced (Kafka group session timeout)
    worker_session_timeout: Seconds = 10.0
    #: where faust keeps its local files (tables are in memory; faust still wants a directory);
    #: default: a directory under the system's temporary directory, per app id
    worker_data_dir: str | None = None
    #: a file the worker touches on every tick: a container healthcheck reads its age (empty: none)
    worker_alive_file: str = ""
    #: where the worker serves GET /metrics (Prometheus); no port: not served
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)

    devstack_dir: str | None = Field(
        default=None, description="a running devstack to use (tests reuse it instead of starting one)"
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
