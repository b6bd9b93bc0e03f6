"""``docker-compose.yml`` run for real on a machine with no Docker daemon and no image registry.

The parts, each made once and cached under ``~/.cache/coordinator`` (``COORDINATOR_CACHE_DIR``):

- the engine: podman serving the Docker Engine API on a unix socket (``engine.podman``), with its own
  store, volumes and networks under ``compose-host/`` (the overlay driver: images share layers), and
  netavark + aardvark-dns so services find each other by name, as on Docker;
- the images the compose file names but no registry serves, built locally (``deploy/standins``):
  a Debian bookworm root file system made with ``debootstrap`` (Debian's Python, JRE, Redis and
  HAProxy) imported as ``localhost/coordinator-debian:bookworm`` and tagged as the Dockerfile's base,
  and one stand-in per third-party image, each labelled ``coordinator.standin``;
- the ``docker compose`` CLI (v2), built with ``go install`` from its Go module;
- healthchecks: podman runs them only from systemd timers, which this kind of machine does not have,
  so ``HealthRunner`` runs each running container's check at its interval (and every two seconds
  while it is not yet healthy), which is what ``depends_on: service_healthy`` waits for.

``ComposeHost`` puts these together; ``tests/compose/test_compose.py`` runs the README's compose
commands through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agent.devstack import engine, install, procs
from agent.errors import DevstackError

ROOT = Path(__file__).resolve().parents[2]
STANDINS_DIR = ROOT / "deploy" / "standins"
COMPOSE_MODULE = "github.com/docker/compose/v2"
COMPOSE_VERSION = "v2.29.7"
DEBIAN_SUITE = "bookworm"
#: one root file system for the Dockerfile's base and every stand-in: their layers are shared
ROOTFS_PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates", "openjdk-17-jre-headless",
                   "redis-server", "haproxy", "wget", "procps")
BASE_IMAGE = f"localhost/coordinator-debian:{DEBIAN_SUITE}"
#: each image docker-compose.yml (and the Dockerfile's default base) names -> its stand-in's directory
#: in deploy/standins, or "" for the base itself
STANDINS: dict[str, str] = {
    "docker.io/library/python:3.11-slim": "",
    "docker.io/apache/kafka:4.1.1": "kafka",
    "docker.io/library/redis:7.4-alpine": "redis",
    "ghcr.io/shopify/toxiproxy:2.12.0": "toxiproxy",
    "docker.io/tecnativa/docker-socket-proxy:0.3.0": "docker-socket-proxy",
}
STANDIN_LABEL = "coordinator.standin"
_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
#: host packages: the engine, its runtime, container networking and the root file system's builder
HOST_PACKAGES = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap", "iptables": "iptables"}
NETWORK_HELPERS = {"/usr/lib/podman/netavark": "netavark", "/usr/lib/podman/aardvark-dns": "aardvark-dns"}


def canonical(image: str) -> str:
    """An image reference as the engine stores it: ``redis:7.4-alpine`` -> ``docker.io/library/redis:7.4-alpine``."""
    first = image.split("/", 1)[0]
    if "/" not in image:
        return f"docker.io/library/{image}"
    if "." in first or ":" in first or first == "localhost":
        return image
    return f"docker.io/{image}"


# -- what is made once -----------------------------------------------------------------------------
def ensure_host_packages() -> None:
    for command, package in HOST_PACKAGES.items():
        install._which_or_apt(command, package)
    for path, package in NETWORK_HELPERS.items():
        if not Path(path).exists():
            install._apt(package)


def ensure_compose_cli() -> str:
    """The ``docker compose`` v2 CLI, built from its Go module the first time."""
    return install._go_binary("docker-compose", COMPOSE_MODULE, "cmd", COMPOSE_VERSION)


def ensure_toxiproxy_cli() -> str:
    return install._go_binary("toxiproxy-cli", install.TOXIPROXY_MODULE, "cmd/cli", install.TOXIPROXY_VERSION)


def kafka_image_libs() -> Path:
    """The broker's jars with Kafka's tools (the image's healthcheck runs one), as one set."""
    return install.ensure_jars(install.cache_dir() / f"kafka-image-{install.KAFKA_VERSION}" / "libs",
                               install.BROKER_ARTIFACTS + install.TOOLS_ARTIFACTS)


def ensure_rootfs() -> Path:
    """A tar of a Debian root file system with ``ROOTFS_PACKAGES``, made with debootstrap from the
    machine's default Debian mirror; ``python`` is Python 3, pip installs system-wide as in the
    official Python images, and the machine's CA bundle is trusted (package installs during image
    builds go through the same network as this machine's)."""
    digest = hashlib.sha256(" ".join((DEBIAN_SUITE, *ROOTFS_PACKAGES)).encode()).hexdigest()[:12]
    target = install.cache_dir() / "images" / f"debian-{DEBIAN_SUITE}-{digest}.tar"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="rootfs-", dir=target.parent))
    root = staging / "root"
    try:
        procs.run(["debootstrap", "--variant=minbase", f"--include={','.join(ROOTFS_PACKAGES)}", DEBIAN_SUITE,
                   str(root)], what=f"debootstrap {DEBIAN_SUITE} (Debian's packages for the images)",
                  timeout=1200)
        for cached in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / cached).glob("*"):
                if item.is_file():
                    item.unlink()
        python = root / "usr" / "bin" / "python"
        python.unlink(missing_ok=True)
        python.symlink_to("python3")
        for marker in (root / "usr" / "lib").glob("python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if bundle.exists():
            shutil.copyfile(bundle, root / "etc" / "ssl" / "certs" / "ca-certificates.crt")
        partial = staging / "rootfs.tar"
        procs.run(["tar", "-C", str(root), "-cf", str(partial), "."], what="packing the root file system")
        partial.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def prepare() -> dict[str, float]:
    """Everything the compose host needs that is made once; seconds each part took."""
    took: dict[str, float] = {}
    for name, step in (("host packages", ensure_host_packages), ("root file system", ensure_rootfs),
                       ("compose cli", ensure_compose_cli), ("toxiproxy", install.ensure_toxiproxy),
                       ("toxiproxy cli", ensure_toxiproxy_cli), ("kafka jars", kafka_image_libs)):
        started = time.monotonic()
        step()
        took[name] = round(time.monotonic() - started, 1)
    return took


def _standin_digest(directory: str) -> str:
    source = STANDINS_DIR / directory
    digest = hashlib.sha256()
    for path in sorted(source.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


# -- the engine and its images ---------------------------------------------------------------------
class ComposeHost:
    """The engine with the compose file's images, its healthcheck runner, and the compose CLI."""

    def __init__(self, directory: Path | None = None, project_dir: Path = ROOT) -> None:
        self.dir = directory or install.cache_dir() / "compose-host"
        self.project_dir = project_dir
        self.sock = engine.socket_path(self.dir)
        self.service: subprocess.Popen[bytes] | None = None
        self.health: HealthRunner | None = None
        #: container networking may switch IP forwarding on; it is put back as it was at stop
        self._forwarding: str | None = None

    # the same store for the service and for every podman command
    def podman(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv, env = engine.podman(self.dir, storage_driver="overlay")
        done = subprocess.run([*argv, *args], env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise DevstackError(f"podman {' '.join(args[:3])} failed ({done.returncode}): "
                                f"{(done.stderr or done.stdout).strip()[-2000:]}")
        return done

    def start(self) -> None:
        ensure_host_packages()
        with contextlib.suppress(OSError):
            self._forwarding = _IP_FORWARD.read_text()
        argv, env = engine.command(self.dir, storage_driver="overlay")
        engine.run_dir(self.dir).mkdir(parents=True, exist_ok=True)
        log = (self.dir / "engine.log").open("ab")
        self.service = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while not engine.ready(self.sock):
            if self.service.poll() is not None or time.monotonic() > deadline:
                raise DevstackError(f"the container engine did not start; see {self.dir / 'engine.log'}")
            time.sleep(0.2)
        self.ensure_images()
        self.health = HealthRunner(self)
        self.health.start()

    def stop(self) -> None:
        if self.health is not None:
            self.health.stop()
        if self.service is not None:
            from agent.children import terminate

            terminate(self.service, 15)
            self.service = None
        if self._forwarding is not None:
            with contextlib.suppress(OSError):
                if _IP_FORWARD.read_text() != self._forwarding:
                    _IP_FORWARD.write_text(self._forwarding)

    def __enter__(self) -> ComposeHost:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def has_image(self, name: str, label: str | None = None) -> bool:
        found = self.podman("image", "inspect", name, check=False)
        if found.returncode != 0:
            return False
        if label is None:
            return True
        labels = (json.loads(found.stdout)[0].get("Labels") or {}) if found.stdout.strip() else {}
        return bool(labels.get(STANDIN_LABEL) == label)

    def ensure_images(self) -> dict[str, float]:
        """The base and each stand-in, imported or built when missing or when its files changed."""
        took: dict[str, float] = {}
        started = time.monotonic()
        if not self.has_image(BASE_IMAGE):
            self.podman("import", str(ensure_rootfs()), BASE_IMAGE)
            took["import base"] = round(time.monotonic() - started, 1)
        for image, directory in STANDINS.items():
            if not directory:
                self.podman("tag", BASE_IMAGE, image)
                continue
            label = f"{image}@{_standin_digest(directory)}"
            if self.has_image(image, label):
                continue
            started = time.monotonic()
            with tempfile.TemporaryDirectory(prefix=f"standin-{directory}-", dir=install.cache_dir()) as tmp:
                context = Path(tmp)
                shutil.copytree(STANDINS_DIR / directory, context, dirs_exist_ok=True)
                if directory == "kafka":
                    shutil.copytree(kafka_image_libs(), context / "libs",
                                    ignore=shutil.ignore_patterns(".complete"))
                if directory == "toxiproxy":
                    shutil.copy(install.ensure_toxiproxy(), context / "toxiproxy")
                    shutil.copy(ensure_toxiproxy_cli(), context / "toxiproxy-cli")
                self.podman("build", "--network", "none", "--label", f"{STANDIN_LABEL}={label}", "-t", image,
                            str(context), timeout=900)
            took[f"build {directory}"] = round(time.monotonic() - started, 1)
        return took

    # -- compose -------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """What the compose CLI needs to use this engine: its API, the socket the compose file mounts
        into the socket proxy, and the classic builder (BuildKit's image is not to be had here)."""
        return {"DOCKER_HOST": f"unix://{self.sock}", "DOCKER_SOCKET": str(self.sock), "DOCKER_BUILDKIT": "0",
                "COMPOSE_STATUS_STDOUT": "1"}

    def compose(self, *args: str, timeout: float = 900, output: Path | None = None) -> subprocess.CompletedProcess[str]:
        """``docker compose ARGS`` in the project directory; stdout and stderr together, also appended
        to ``output`` when given."""
        cli = ensure_compose_cli()
        done = subprocess.run([cli, *args], cwd=self.project_dir, env={**os.environ, **self.env()},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
        if output is not None:
            with output.open("a") as log:
                log.write(f"$ docker compose {' '.join(args)}  # exit {done.returncode}\n{done.stdout}\n")
        return done

    def containers(self, project: str | None = None) -> list[dict[str, Any]]:
        params = {"all": "true"}
        if project:
            params["filters"] = json.dumps({"label": [f"com.docker.compose.project={project}"]})
        status, found = engine.call(self.sock, "GET", "/containers/json", params)
        return list(found) if status == 200 and isinstance(found, list) else []

    def inspect(self, container: str) -> dict[str, Any]:
        status, found = engine.call(self.sock, "GET", f"/containers/{container}/json")
        if status != 200 or not isinstance(found, dict):
            raise DevstackError(f"no container {container}: HTTP {status}")
        return found

    def volumes(self) -> list[str]:
        status, found = engine.call(self.sock, "GET", "/volumes")
        return [v["Name"] for v in (found or {}).get("Volumes") or []] if status == 200 else []


class HealthRunner:
    """Runs each running container's healthcheck at its interval, as Docker's daemon does (podman
    leaves it to systemd timers). A container not yet healthy is checked every ``eager`` seconds."""

    def __init__(self, host: ComposeHost, eager: float = 2.0) -> None:
        self.host = host
        self.eager = eager
        self._stop = threading.Event()
        self._last: dict[str, float] = {}
        self._running: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="healthcheck")
        self._thread = threading.Thread(target=self._loop, name="health-runner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self._round()
            except (OSError, ValueError):
                continue  # the engine is restarting or busy: the next round tries again

    def _round(self) -> None:
        status, running = engine.call(self.host.sock, "GET", "/containers/json")
        if status != 200 or not isinstance(running, list):
            return
        now = time.monotonic()
        for container in running:
            ident = container["Id"]
            if ident in self._running:
                continue
            _, detail = engine.call(self.host.sock, "GET", f"/containers/{ident}/json")
            check = ((detail or {}).get("Config") or {}).get("Healthcheck") or {}
            test = check.get("Test") or []
            if not test or test[0] == "NONE":
                continue
            health = ((detail.get("State") or {}).get("Health") or {}).get("Status")
            interval = (check.get("Interval") or 30_000_000_000) / 1e9
            every = interval if health == "healthy" else min(self.eager, interval)
            if now - self._last.get(ident, 0.0) < every:
                continue
            self._last[ident] = now
            self._running.add(ident)
            timeout = (check.get("Timeout") or 30_000_000_000) / 1e9
            self._pool.submit(self._check, ident, timeout + 10)

    def _check(self, ident: str, timeout: float) -> None:
        try:
            self.host.podman("healthcheck", "run", ident, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            pass
        finally:
            self._running.discard(ident)

