"""A local stack: Kafka (KRaft, single node), Redis, Toxiproxy and a container engine (podman
serving the Docker Engine API on a unix socket: ``agent.devstack.engine``) as child processes on
loopback.

All state of one stack lives in one directory (``state.json``, configs, data, ``logs/``), so two
stacks on one machine never collide: each has its own directory and its own free ports, chosen once
and kept for the stack's life (Kafka's data directory remembers its controller address).

``up`` starts whatever is not running and waits until each part answers; ``down`` stops every
process the stack started and leaves nothing running; ``stop``/``start`` act on one part (tests use
them to take Kafka away and bring it back on the same port).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import fcntl
import gc
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.devstack import brokers as brokers_
from agent.devstack import engine, install, kube, kubebuild, otelbuild, procs, secure
from agent.errors import DevstackError
from agent.settings import KafkaSecurity

COMPONENTS = ("kafka", "redis", "toxiproxy", "docker")
#: parts a stack has only when asked (``up(extras=...)``, ``devstack up --with NAME``), kept from then on
EXTRAS = ("kubernetes", "otel", "prometheus")
#: the OpenTelemetry Collector's ports (OTLP over gRPC and over HTTP)
_OTEL_PORTS = ("otel-grpc", "otel-http")
#: the topics the Collector writes OTLP to (its Kafka exporter's default names)
OTLP_LOGS_TOPIC, OTLP_SPANS_TOPIC = "otlp_logs", "otlp_spans"
_PORTS = ("redis", "toxiproxy")

_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.kafkaserver.name = kafka.server.KafkaRaftServer
logger.kafkaserver.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""

_JVM_OPTIONS = ["-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true"]


@dataclass
class ComponentStatus:
    name: str
    running: bool
    pid: int | None
    address: str
    log: str


@dataclass
class StackState:
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    cluster_id: str = ""
    #: TLS and passwords on Kafka and Redis (``up(secure=True)``), fixed when the stack is made
    secure: bool = False
    #: Kafka nodes (1, or 3: ``up(brokers=3)``), fixed when the stack is made
    brokers: int = 1
    #: the optional parts this stack has (``EXTRAS``)
    extras: list[str] = field(default_factory=list)

    def parts(self) -> tuple[str, ...]:
        return (*brokers_.nodes(self.brokers), *COMPONENTS[1:], *self.extras)


class Stack:
    """One local stack in ``directory``. Methods are synchronous and safe to call from any thread."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory).resolve()

    # -- public --------------------------------------------------------------------------------
    def up(self, components: tuple[str, ...] | None = None, *, timeout: float = 120.0,
           secure: bool | None = None, brokers: int | None = None, extras: tuple[str, ...] = ()) -> dict[str, float]:
        """Start the parts not running and wait for them; returns seconds each took to be ready.
        ``components``: default every part (the container engine left out when ``DOCKER_HOST`` names
        an engine already); ``kafka`` means every Kafka node. ``secure``: Kafka over SASL_SSL (SCRAM)
        and mTLS, Redis over TLS with an ACL user; ``brokers``: 1 or 3 Kafka nodes. A stack is made
        one way, once (None: as it was made). ``extras``: optional parts (``kubernetes``) this stack
        has from now on."""
        with self._locked() as state:
            self._fix(state, secure, brokers)
            for extra in extras:
                if extra not in EXTRAS:
                    raise DevstackError(f"unknown optional part '{extra}'; they are {', '.join(EXTRAS)}")
                if extra not in state.extras:
                    state.extras.append(extra)
            if components is None:
                components = tuple(c for c in state.parts() if c != "docker" or not os.environ.get("DOCKER_HOST"))
            elif "kafka" in components:
                components = tuple(dict.fromkeys(
                    n for c in components for n in (brokers_.nodes(state.brokers) if c == "kafka" else (c,))))
            return self._up(state, components, timeout)

    def _up(self, state: StackState, components: tuple[str, ...], timeout: float) -> dict[str, float]:
        """Start ``components`` (names as given) and wait for them, the lock held."""
        _check_names(components, state)
        self._allocate(state)
        started: dict[str, float] = {}
        for name in components:
            if not self._alive(state, name):
                started[name] = time.monotonic()
                state.pids[name] = self._start_node(state, name) if brokers_.is_node(name) else \
                    getattr(self, f"_start_{name}")(state)
                self._save(state)
        timings = {}
        # the quick parts first, so each figure is that part's own start-up time
        for name, t0 in sorted(started.items(), key=lambda item: brokers_.is_node(item[0])):
            self._wait_ready(state, name, t0 + timeout)
            timings[name] = round(time.monotonic() - t0, 3)
        return timings

    def _fix(self, state: StackState, secure: bool | None, brokers: int | None) -> None:
        """Set how the stack is made, once: a made stack cannot change."""
        made = state.cluster_id and (self.dir / "kafka" / "data").exists()
        if brokers is not None and brokers not in (1, brokers_.MAX_BROKERS):
            raise DevstackError(f"--brokers takes 1 or {brokers_.MAX_BROKERS}, not {brokers}")
        for what, wanted, current in (("--secure", secure, state.secure), ("--brokers", brokers, state.brokers)):
            if wanted is not None and wanted != current and made:
                raise DevstackError(f"the stack in '{self.dir}' was made with {what} {current}; "
                                    f"run down and remove the directory, or use another --dir")
        state.secure = state.secure if secure is None else secure
        state.brokers = state.brokers if brokers is None else brokers

    def down(self) -> None:
        with self._locked() as state:
            if self._alive(state, "docker"):  # its containers outlive the engine: remove them first
                engine.remove_all(engine.socket_path(self.dir / "docker"))
            # every Kafka node at once: the last of a cluster stopped alone waits for a quorum that is gone
            with concurrent.futures.ThreadPoolExecutor(max_workers=brokers_.MAX_BROKERS) as pool:
                list(pool.map(lambda node: self._stop(state, node), brokers_.nodes(state.brokers)))
            for name in reversed(state.parts()):
                self._stop(state, name)
            shutil.rmtree(engine.run_dir(self.dir / "docker"), ignore_errors=True)
            self._save(state)

    def start(self, name: str, *, timeout: float = 120.0) -> dict[str, float]:
        """Start one part (``kafka`` is node 1 here; ``kafka-2``, ``kafka-3`` the others)."""
        with self._locked() as state:
            return self._up(state, (name,), timeout)

    def stop(self, name: str) -> None:
        with self._locked() as state:
            _check_names((name,), state)
            self._stop(state, name)
            self._save(state)

    def kill(self, name: str) -> None:
        """SIGKILL one part (a broker that dies without leaving the cluster)."""
        with self._locked() as state:
            _check_names((name,), state)
            pid = state.pids.get(name)
            if pid and self._alive(state, name):
                procs.kill(pid)
            state.pids.pop(name, None)
            self._save(state)

    def status(self) -> list[ComponentStatus]:
        state = self._load()
        return [
            ComponentStatus(
                name=name,
                running=self._alive(state, name),
                pid=state.pids.get(name),
                address=self._address(state, name),
                log=str(self.dir / "logs" / f"{name}.log"),
            )
            for name in state.parts()
        ]

    def is_up(self) -> bool:
        return all(s.running for s in self.status())

    def env(self, listener: str = "sasl") -> dict[str, str]:
        """Settings that point the agent, its tests and its tools at this stack. A secured stack's
        carry its credentials (they are secrets: shown only to whoever reads this stack's files);
        ``listener="mtls"``: Kafka's mTLS listener and the client certificate instead of SCRAM."""
        state = self._load()
        if not state.ports:
            raise DevstackError(f"no stack in '{self.dir}'; run: coordinator devstack up --dir {self.dir}")
        return {
            "COORDINATOR_KAFKA_BOOTSTRAP_SERVERS": self._bootstrap(state, ""),
            "COORDINATOR_REDIS_URL": f"redis://127.0.0.1:{state.ports['redis']}/0",
            **(self._secure_env(state, listener) if state.secure else {}),
            "COORDINATOR_TOXIPROXY_URL": f"http://127.0.0.1:{state.ports['toxiproxy']}",
            "COORDINATOR_TOPIC_REPLICATION_FACTOR": str(min(3, state.brokers)),
            "COORDINATOR_DEVSTACK_DIR": str(self.dir),
            **({"COORDINATOR_DOCKER_URL": f"unix://{engine.socket_path(self.dir / 'docker')}"}
               if "docker" in state.pids else {}),
            **({"COORDINATOR_DRIVERS__KUBERNETES__KUBECONFIG": str(kube.kubeconfig(self.dir / "kubernetes"))}
               if "kubernetes" in state.extras else {}),
            **({"COORDINATOR_OTLP__LOGS_TOPICS": json.dumps([OTLP_LOGS_TOPIC]),
                "COORDINATOR_OTLP__SPANS_TOPICS": json.dumps([OTLP_SPANS_TOPIC]),
                # what the OpenTelemetry SDKs read: the Collector's OTLP/gRPC endpoint
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{state.ports['otel-grpc']}",
                # the agent's executions as traces, to the same Collector (it also writes them to a file)
                "COORDINATOR_TRACING__ENDPOINT": f"http://127.0.0.1:{state.ports['otel-grpc']}"}
               if "otel" in state.extras else {}),
            **({"COORDINATOR_PROMETHEUS_URL": f"http://127.0.0.1:{state.ports['prometheus']}"}
               if "prometheus" in state.extras else {}),
        }

    def _secure_env(self, state: StackState, listener: str) -> dict[str, str]:
        material = secure.ensure(self.dir / "secure")
        redis_url = (f"rediss://{secure.REDIS_USER}:{material.redis_password}@127.0.0.1:{state.ports['redis']}/0"
                     f"?ssl_ca_certs={material.ca}")
        common = {"COORDINATOR_REDIS_URL": redis_url, "COORDINATOR_KAFKA__SSL_CAFILE": material.ca}
        if listener == "mtls":
            return {**common, "COORDINATOR_KAFKA_BOOTSTRAP_SERVERS": self._bootstrap(state, "_mtls"),
                    "COORDINATOR_KAFKA__SECURITY_PROTOCOL": "SSL",
                    "COORDINATOR_KAFKA__SSL_CERTFILE": material.client_cert,
                    "COORDINATOR_KAFKA__SSL_KEYFILE": material.client_key}
        if listener != "sasl":
            raise DevstackError(f"unknown listener '{listener}'; the listeners are sasl and mtls")
        return {**common, "COORDINATOR_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                "COORDINATOR_KAFKA__SASL_MECHANISM": secure.SCRAM,
                "COORDINATOR_KAFKA__SASL_USERNAME": secure.KAFKA_USER,
                "COORDINATOR_KAFKA__SASL_PASSWORD": material.kafka_password}

    @staticmethod
    def _bootstrap(state: StackState, kind: str) -> str:
        return ",".join(f"127.0.0.1:{state.ports[node + kind]}" for node in brokers_.nodes(state.brokers))

    def security(self) -> KafkaSecurity:
        """The Kafka security of this stack's SASL_SSL listener (PLAINTEXT when it is not secured)."""
        state = self._load()
        if not state.secure:
            return KafkaSecurity()
        env = self._secure_env(state, "sasl")
        return KafkaSecurity(security_protocol="SASL_SSL", sasl_mechanism=secure.SCRAM, sasl_username=secure.KAFKA_USER,
                             sasl_password=env["COORDINATOR_KAFKA__SASL_PASSWORD"],  # type: ignore[arg-type]
                             ssl_cafile=env["COORDINATOR_KAFKA__SSL_CAFILE"])

    # -- state ---------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[StackState]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self._load()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> StackState:
        path = self.dir / "state.json"
        if not path.exists():
            return StackState()
        raw = json.loads(path.read_text())
        return StackState(ports=raw.get("ports", {}), pids=raw.get("pids", {}),
                          cluster_id=raw.get("cluster_id", ""), secure=bool(raw.get("secure", False)),
                          brokers=int(raw.get("brokers", 1)), extras=list(raw.get("extras", [])))

    def _save(self, state: StackState) -> None:
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(state.__dict__, indent=2, sort_keys=True))
        tmp.replace(self.dir / "state.json")

    def _allocate(self, state: StackState) -> None:
        taken = set(state.ports.values())
        kube_ports = [f"kubernetes-{name}" for name in kube.PORT_NAMES] if "kubernetes" in state.extras else []
        otel_ports = _OTEL_PORTS if "otel" in state.extras else ()
        prometheus_ports = ("prometheus",) if "prometheus" in state.extras else ()
        for port in (*brokers_.port_names(state.brokers), *_PORTS, *kube_ports, *otel_ports, *prometheus_ports):
            if port not in state.ports:
                candidate = procs.free_port()
                while candidate in taken:  # a port just released can be handed out again
                    candidate = procs.free_port()
                state.ports[port] = candidate
                taken.add(candidate)
        if not state.cluster_id or state.cluster_id.startswith("-"):
            state.cluster_id = new_cluster_id()
        self._save(state)

    def _marker(self, state: StackState, name: str) -> tuple[str, ...]:
        """What identifies our process of ``name`` in /proc (a pid alone may have been reused)."""
        if brokers_.is_node(name):
            return (str(self.dir / name / "server.properties"),)
        return {
            # redis retitles itself to "redis-server 127.0.0.1:PORT" once it runs
            "redis": (f"127.0.0.1:{state.ports.get('redis')}", f"--port {state.ports.get('redis')} ",
                      f"--tls-port {state.ports.get('redis')} "),
            "toxiproxy": (f"-port {state.ports.get('toxiproxy')}",),
            "docker": (f"unix://{engine.socket_path(self.dir / 'docker')}",),
            "kubernetes": (f"agent.devstack.kube {self.dir / 'kubernetes'} ",),
            "otel": (f"--config={self.dir / 'otel' / 'config.yaml'}",),
            "prometheus": (f"--config.file={self.dir / 'prometheus' / 'prometheus.yml'}",),
        }[name]

    def _alive(self, state: StackState, name: str) -> bool:
        return procs.alive(state.pids.get(name), self._marker(state, name))

    def _address(self, state: StackState, name: str) -> str:
        if name == "docker":
            return f"unix://{engine.socket_path(self.dir / 'docker')}"
        if name == "kubernetes":
            port = state.ports.get("kubernetes-apiserver")
            return f"https://127.0.0.1:{port}" if port else "-"
        if name == "otel":
            port = state.ports.get("otel-grpc")
            return f"http://127.0.0.1:{port}" if port else "-"
        if name == "prometheus":
            port = state.ports.get("prometheus")
            return f"http://127.0.0.1:{port}" if port else "-"
        port = state.ports.get(name)
        redis = "rediss://" if state.secure else "redis://"
        scheme = "" if brokers_.is_node(name) else {"redis": redis, "toxiproxy": "http://"}[name]
        return f"{scheme}127.0.0.1:{port}" if port else "-"

    def _stop(self, state: StackState, name: str) -> None:
        procs.stop(state.pids.get(name), self._marker(state, name), grace=15.0)
        state.pids.pop(name, None)

    # -- parts ---------------------------------------------------------------------------------
    def _log(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    def _start_node(self, state: StackState, node: str) -> int:
        libs = install.ensure_kafka()
        java = install.java_binary()
        home = self.dir / node
        home.mkdir(parents=True, exist_ok=True)
        props = home / "server.properties"
        material = secure.ensure(self.dir / "secure") if state.secure else None
        props.write_text(brokers_.properties(node, state.brokers, state.ports, home / "data", material))
        props.chmod(0o600)
        # a secured stack's SCRAM user, written into the metadata log as the storage is formatted
        scram = [arg for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256") for arg in (
            "--add-scram", f"{mechanism}=[name={secure.KAFKA_USER},password={material.kafka_password}]")
        ] if material is not None else []
        log4j = home / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        classpath = f"{libs}/*"
        if not (home / "data" / "meta.properties").exists():
            procs.run([java, *_JVM_OPTIONS, "-cp", classpath, "kafka.tools.StorageTool", "format",
                       f"--cluster-id={state.cluster_id}", f"--config={props}", "--ignore-formatted", *scram],
                      what=f"formatting the log directory of {node}", timeout=120)
        self._busy_port_check(state, (node, f"{node}_controller", *((f"{node}_mtls",) if state.secure else ())))
        return procs.start(
            [java, *_JVM_OPTIONS, f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath,
             "kafka.Kafka", str(props)],
            log_path=self._log(node), cwd=home)

    def _start_redis(self, state: StackState) -> int:
        binary = install.ensure_redis()
        data = self.dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        self._busy_port_check(state, ("redis",))
        listen = ["--port", str(state.ports["redis"])]
        if state.secure:
            material = secure.ensure(self.dir / "secure")
            acl = data / "users.acl"  # the ACL user with its password: a file, not the command line
            acl.write_text(f"user default off\nuser {secure.REDIS_USER} on >{material.redis_password} ~* &* +@all\n")
            acl.chmod(0o600)
            listen = ["--port", "0", "--tls-port", str(state.ports["redis"]), "--tls-cert-file", material.server_cert,
                      "--tls-key-file", material.server_key, "--tls-ca-cert-file", material.ca,
                      "--tls-auth-clients", "optional", "--aclfile", str(acl)]
        return procs.start(
            [binary, *listen, "--bind", "127.0.0.1", "--dir", str(data),
             # append-only file: claims, records and leases survive a Redis restart
             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
             "--daemonize", "no", "--protected-mode", "yes"],
            log_path=self._log("redis"))

    def _start_toxiproxy(self, state: StackState) -> int:
        binary = install.ensure_toxiproxy()
        self._busy_port_check(state, ("toxiproxy",))
        return procs.start([binary, "-host", "127.0.0.1", "-port", str(state.ports["toxiproxy"])],
                           log_path=self._log("toxiproxy"))

    def _start_docker(self, state: StackState) -> int:
        home = self.dir / "docker"
        argv, env = engine.command(home)
        engine.socket_path(home).parent.mkdir(parents=True, exist_ok=True)
        engine.socket_path(home).unlink(missing_ok=True)  # left by an engine that was killed
        return procs.start(argv, log_path=self._log("docker"), env=env)

    def _start_kubernetes(self, state: StackState) -> int:
        bin_dir = kubebuild.ensure_kubernetes(progress=True)
        home = self.dir / "kubernetes"
        (home / "ready").unlink(missing_ok=True)
        ports = {name: state.ports[f"kubernetes-{name}"] for name in kube.PORT_NAMES}
        self._busy_port_check(state, tuple(f"kubernetes-{name}" for name in kube.PORT_NAMES))
        return procs.start([sys.executable, "-m", "agent.devstack.kube", str(home), str(bin_dir), json.dumps(ports)],
                           log_path=self._log("kubernetes"))

    def _kubernetes_ready(self, state: StackState) -> bool:
        return (self.dir / "kubernetes" / "ready").exists()

    def _start_otel(self, state: StackState) -> int:
        if state.secure:
            raise DevstackError("the OpenTelemetry part does not yet speak to a secured Kafka; "
                                "use it in a stack made without --secure")
        binary = otelbuild.ensure_collector(progress=True)
        home = self.dir / "otel"
        home.mkdir(parents=True, exist_ok=True)
        config = home / "config.yaml"
        config.write_text(_otel_config(self._bootstrap(state, "").split(","), state.ports["otel-grpc"],
                                       state.ports["otel-http"], self.traces_file()))
        self._busy_port_check(state, _OTEL_PORTS)
        return procs.start([str(binary), f"--config={config}"], log_path=self._log("otel"))

    def traces_file(self) -> Path:
        """Where the stack's Collector writes every span it gets (OTLP/JSON, one export per line)."""
        return self.dir / "otel" / "traces.jsonl"

    def _start_prometheus(self, state: StackState) -> int:
        binary = install.ensure_prometheus()
        home = self.dir / "prometheus"
        self.scrape_targets().mkdir(parents=True, exist_ok=True)
        config = home / "prometheus.yml"
        config.write_text(_prometheus_config(self.scrape_targets()))
        self._busy_port_check(state, ("prometheus",))
        listen = f"127.0.0.1:{state.ports['prometheus']}"
        return procs.start([binary, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
                            "--storage.tsdb.retention.time=1d", f"--web.listen-address={listen}"],
                           log_path=self._log("prometheus"))

    def scrape_targets(self) -> Path:
        """Where the stack's Prometheus finds what to scrape: Prometheus file service discovery, one
        JSON file per system (``[{"targets": ["127.0.0.1:8061"], "labels": {"service": "risk-monitor"}}]``),
        read again every second."""
        return self.dir / "prometheus" / "targets"

    def _prometheus_ready(self, state: StackState) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{state.ports['prometheus']}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _otel_ready(self, state: StackState) -> bool:
        return all(procs.port_in_use(state.ports[name]) for name in _OTEL_PORTS)

    def _busy_port_check(self, state: StackState, names: tuple[str, ...]) -> None:
        for name in names:
            port = state.ports[name]
            # a port our own part just released can answer for a moment longer
            if not procs.wait_until(lambda: not procs.port_in_use(port), timeout=10.0):  # noqa: B023 - used at once
                raise DevstackError(
                    f"port {state.ports[name]} for {name} is taken by another process; "
                    f"stop it or remove '{self.dir}' to choose new ports")

    def _wait_ready(self, state: StackState, name: str, deadline: float) -> None:
        check = (lambda state: self._kafka_ready(state, name)) if brokers_.is_node(name) else {
            "redis": self._redis_ready, "toxiproxy": self._toxiproxy_ready, "docker": self._docker_ready,
            "kubernetes": self._kubernetes_ready, "otel": self._otel_ready,
            "prometheus": self._prometheus_ready}[name]
        while True:
            # the pid was just started here: no command-line marker needed (and redis rewrites its
            # command line as it starts, which a marker check can catch half written)
            if not procs.alive(state.pids.get(name)):
                raise DevstackError(f"{name} exited during start-up; last lines of {self._log(name)}:\n"
                                    + procs.tail(self._log(name)))
            if check(state):
                return
            if time.monotonic() > deadline:
                raise DevstackError(f"{name} did not become ready in time; last lines of {self._log(name)}:\n"
                                    + procs.tail(self._log(name)))
            time.sleep(0.1)

    def _kafka_ready(self, state: StackState, node: str) -> bool:
        if not procs.port_in_use(state.ports[node]):
            return False
        from agent.health import kafka_cluster

        try:
            _run_async(kafka_cluster(f"127.0.0.1:{state.ports[node]}", timeout=3.0, security=self.security()),
                       quiet=True)
        except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
            return False
        return True

    def _redis_ready(self, state: StackState) -> bool:
        import redis

        try:
            client = (redis.Redis.from_url(self._secure_env(state, "sasl")["COORDINATOR_REDIS_URL"], socket_timeout=1)
                      if state.secure else redis.Redis(host="127.0.0.1", port=state.ports["redis"], socket_timeout=1))
            with client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def _toxiproxy_ready(self, state: StackState) -> bool:
        url = f"http://127.0.0.1:{state.ports['toxiproxy']}/version"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback http
                return bool(response.status == 200)
        except OSError:
            return False


    def _docker_ready(self, state: StackState) -> bool:
        sock = engine.socket_path(self.dir / "docker")
        if not engine.ready(sock):
            return False
        engine.ensure_base_image(sock)
        return True


def new_cluster_id() -> str:
    """Like Kafka's Uuid.randomUuid: url-safe base64 of 16 random bytes, never starting with '-'
    (the storage tool would read such an id as an option)."""
    while True:
        candidate = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


def _check_names(names: tuple[str, ...], state: StackState) -> None:
    for name in names:
        if name not in state.parts():
            raise DevstackError(f"unknown stack part '{name}'; the parts are {', '.join(state.parts())}")


def _run_async(coro: Coroutine[Any, Any, Any], *, quiet: bool = False) -> Any:
    """Run a coroutine to completion from sync code, even when the caller's thread has a loop.
    ``quiet``: what the coroutine left unclosed is collected there and then, without warnings (a
    TLS connection that a starting broker drops mid-handshake can be left open by the client; a
    probe that retries many times must not leave them to be reported wherever they are found)."""
    def run() -> Any:
        try:
            return asyncio.run(coro)
        finally:
            if quiet:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ResourceWarning)
                    gc.collect()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def default_dir() -> Path:
    return Path(os.environ.get("COORDINATOR_DEVSTACK_DIR") or ".devstack")


def _otel_config(brokers: list[str], grpc_port: int, http_port: int, traces_file: Path) -> str:
    """The Collector's configuration: OTLP in on loopback, batched for at most 200 ms, out to Kafka
    (logs and spans in the encoding the worker reads by default) and spans to a file too (the
    agent's traces, readable without a tracing backend), none of its own telemetry served (its
    metrics port would clash between stacks)."""
    return json.dumps({
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
                                             "http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"kafka": {"brokers": brokers,
                                "logs": {"topic": OTLP_LOGS_TOPIC, "encoding": "otlp_proto"},
                                "traces": {"topic": OTLP_SPANS_TOPIC, "encoding": "otlp_proto"}},
                      "file": {"path": str(traces_file), "format": "json", "flush_interval": "200ms"}},
        "service": {"telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
                    "pipelines": {"logs": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["kafka"]},
                                  "traces": {"receivers": ["otlp"], "processors": ["batch"],
                                             "exporters": ["kafka", "file"]}}},
    }, indent=2) + "\n"


def _prometheus_config(targets: Path) -> str:
    """Prometheus: every target in ``targets/*.json`` scraped each second (recovery is measured in
    seconds), kept a day."""
    return json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "local", "file_sd_configs": [
            {"files": [str(targets / "*.json")], "refresh_interval": "1s"}]}],
    }, indent=2) + "\n"
