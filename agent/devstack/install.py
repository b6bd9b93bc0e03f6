"""Install what the local stack needs, idempotently, into a per-user cache.

- Kafka broker jars: resolved from Maven Central by a tiny pom with Maven.
- ``redis-server``: Debian's package via apt-get (as root), else a message saying what to install.
- Toxiproxy server: ``go install`` of the pinned Go module.
- Java and Maven themselves: Debian's packages via apt-get when missing and root.
- podman (with runc) and a static busybox, for the stack's container engine: Debian's packages.

The cache lives in ``$COORDINATOR_CACHE_DIR`` or ``~/.cache/coordinator``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from agent.devstack import procs
from agent.errors import MissingDependencyError

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
#: must match the log4j-core that kafka-server brings
LOG4J_VERSION = "2.24.3"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2"
TOXIPROXY_VERSION = "v2.12.0"
#: grpcurl: an external gRPC client (reflection, health) for the tests and for users
GRPCURL_MODULE = "github.com/fullstorydev/grpcurl"
GRPCURL_VERSION = "v1.9.3"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>coordinator.devstack</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""
_DEPENDENCY = """    <dependency>
      <groupId>{group}</groupId>
      <artifactId>{artifact}</artifactId>
      <version>{version}</version>
    </dependency>"""
#: the broker; it brings slf4j 1.7 and log4j-core but no binding between them: log4j-slf4j-impl
BROKER_ARTIFACTS = (f"org.apache.kafka:kafka_{SCALA_VERSION}:{KAFKA_VERSION}",
                    f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}")
#: Kafka's command-line tools (kafka-broker-api-versions and the like), for the broker's image
TOOLS_ARTIFACTS = (f"org.apache.kafka:kafka-tools:{KAFKA_VERSION}",)


def cache_dir() -> Path:
    root = os.environ.get("COORDINATOR_CACHE_DIR") or Path.home() / ".cache" / "coordinator"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def kafka_libs() -> Path:
    return cache_dir() / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}" / "libs"


def ensure_kafka() -> Path:
    """Return the directory of the broker's jars, resolving them with Maven the first time."""
    return ensure_jars(kafka_libs(), BROKER_ARTIFACTS)


def ensure_jars(libs: Path, artifacts: tuple[str, ...]) -> Path:
    """``libs``, holding ``artifacts`` (group:artifact:version) and their runtime dependencies as one
    consistent set, resolved with Maven the first time."""
    if (libs / ".complete").exists():
        return libs
    java_binary()
    mvn = _which_or_apt("mvn", "maven")
    staging = Path(tempfile.mkdtemp(prefix="kafka-libs-", dir=libs.parent.parent))
    try:
        dependencies = "\n".join(_DEPENDENCY.format(group=g, artifact=a, version=v)
                                 for g, a, v in (coordinates.split(":") for coordinates in artifacts))
        (staging / "pom.xml").write_text(_POM.format(dependencies=dependencies))
        procs.run(
            [mvn, "-B", "-q", f"{DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime",
             "-DoutputDirectory=libs"],
            what=f"resolving {', '.join(artifacts)} with Maven",
            cwd=staging,
        )
        jars = list((staging / "libs").glob("*.jar"))
        wanted = {f"{coordinates.split(':')[1]}-{coordinates.split(':')[2]}.jar" for coordinates in artifacts}
        if missing := wanted - {j.name for j in jars}:
            raise MissingDependencyError(f"maven did not resolve {', '.join(sorted(missing))}")
        (staging / "libs" / ".complete").write_text(f"{len(jars)} jars\n")
        libs.parent.mkdir(parents=True, exist_ok=True)
        if libs.exists():
            shutil.rmtree(libs)
        (staging / "libs").rename(libs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return libs


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return _which_or_apt("java", "default-jre-headless")


def ensure_redis() -> str:
    return _which_or_apt("redis-server", "redis-server")


def ensure_prometheus() -> str:
    """Debian's Prometheus server (the package's service is not started: the stack runs its own)."""
    return _which_or_apt("prometheus", "prometheus")


def ensure_toxiproxy() -> str:
    """Return the path of ``toxiproxy-server``, building the pinned module with ``go install`` if needed."""
    return _go_binary("toxiproxy-server", TOXIPROXY_MODULE, "cmd/server", TOXIPROXY_VERSION)


def ensure_grpcurl() -> str:
    """Return the path of ``grpcurl``, building the pinned module with ``go install`` if needed; in
    a virtualenv, also linked as ``grpcurl`` in its ``bin`` (``.venv/bin/grpcurl``), where the docs
    say it is."""
    built = _go_binary("grpcurl", GRPCURL_MODULE, "cmd/grpcurl", GRPCURL_VERSION)
    if sys.prefix != sys.base_prefix:
        link = Path(sys.prefix) / "bin" / "grpcurl"
        if not link.exists() or (link.is_symlink() and os.readlink(link) != built):
            link.unlink(missing_ok=True)
            link.symlink_to(built)
    return built


def _go_binary(name: str, module: str, command: str, version: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    target = cache_dir() / "bin" / f"{name}-{version}"
    if target.exists():
        return str(target)
    go = shutil.which("go")
    package = f"{module}/{command}@{version}"
    if not go:
        raise MissingDependencyError(
            f"{name} is not installed and there is no Go toolchain to build it; install Go "
            f"(https://go.dev/doc/install) or run: go install {package}"
        )
    with tempfile.TemporaryDirectory(prefix=f"{name}-", dir=cache_dir()) as tmp:
        procs.run([go, "install", package], what=f"go install {package}", env={"GOBIN": tmp, "CGO_ENABLED": "0"})
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / command.rsplit("/", 1)[-1]), target)
    return str(target)


def ensure_podman() -> str:
    """podman, which serves the Docker Engine API for the stack's container part, with the runc
    runtime it needs here (Debian's packages)."""
    _which_or_apt("runc", "runc")
    return _which_or_apt("podman", "podman")


def ensure_busybox() -> str:
    """A static busybox: the one binary of the stack's container image."""
    found = Path("/bin/busybox")
    if found.exists() and _static(found):
        return str(found)
    _apt("busybox-static")  # replaces a dynamically linked busybox
    if not (found.exists() and _static(found)):
        raise MissingDependencyError("installed 'busybox-static' but /bin/busybox is not a static binary")
    return str(found)


def _static(binary: Path) -> bool:
    """No program interpreter (the dynamic loader) named in the ELF header's first page."""
    with open(binary, "rb") as file:
        return b"ld-linux" not in file.read(4096)


def ensure_composecheck() -> str:
    """``composecheck`` (tools/composecheck): docker-compose.yml read as compose reads it, built with
    the Go toolchain from the pinned compose-go module (no Docker needed)."""
    source = Path(__file__).resolve().parents[2] / "tools" / "composecheck"
    digest = hashlib.sha256(b"".join((source / f).read_bytes() for f in ("go.mod", "go.sum", "main.go")))
    target = cache_dir() / "bin" / f"composecheck-{digest.hexdigest()[:12]}"
    if target.exists():
        return str(target)
    go = shutil.which("go")
    if not go:
        raise MissingDependencyError("composecheck needs a Go toolchain (https://go.dev/doc/install)")
    target.parent.mkdir(parents=True, exist_ok=True)
    procs.run([go, "build", "-o", str(target), "."], what="go build tools/composecheck", cwd=source,
              env={"CGO_ENABLED": "0"})
    return str(target)


def ensure_asyncapi_check() -> list[str]:
    """The command that reads an AsyncAPI document with the official parser (tools/asyncapi-check,
    ``@asyncapi/parser`` pinned by its package-lock), installed with ``npm ci`` when missing or when
    the lock changed. Node.js and npm: the machine's, else Debian's packages."""
    source = Path(__file__).resolve().parents[2] / "tools" / "asyncapi-check"
    node = _which_or_apt("node", "nodejs")
    npm = _which_or_apt("npm", "npm")
    lock = (source / "package-lock.json").read_bytes()
    stamp = source / "node_modules" / ".installed"
    if not stamp.exists() or stamp.read_text() != hashlib.sha256(lock).hexdigest():
        procs.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], what="npm ci tools/asyncapi-check",
                  cwd=source)
        stamp.write_text(hashlib.sha256(lock).hexdigest())
    return [node, str(source / "check.mjs")]


def ensure_chromium() -> str:
    """A headless-capable Chromium for the browser tests: the machine's, else Debian's package."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return _which_or_apt("chromium", "chromium")


def ensure_kcat() -> str:
    """kcat, the external Kafka client the tests and the README use to publish requests by hand."""
    return _which_or_apt("kcat", "kcat")


def ensure_all() -> dict[str, str]:
    return {
        "kafka": str(ensure_kafka()),
        "java": java_binary(),
        "redis": ensure_redis(),
        "toxiproxy": ensure_toxiproxy(),
        "kcat": ensure_kcat(),
        "grpcurl": ensure_grpcurl(),
        "podman": ensure_podman(),
        "busybox": ensure_busybox(),
    }


def _which_or_apt(command: str, package: str) -> str:
    found = shutil.which(command)
    if found:
        return found
    _apt(package)
    found = shutil.which(command)
    if not found:
        raise MissingDependencyError(f"installed '{package}' but '{command}' is still not on PATH")
    return found


def _apt(package: str) -> None:
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or not apt:
        raise MissingDependencyError(
            f"the package '{package}' is needed and not installed (Debian/Ubuntu: sudo apt-get install {package})")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "--no-install-recommends", package]
    try:
        procs.run(install, what=f"apt-get install {package}", env=env)
    except Exception:  # noqa: BLE001 - a stale package list is the usual cause: refresh once
        procs.run([apt, "update", "-q"], what="apt-get update", env=env)
        procs.run(install, what=f"apt-get install {package}", env=env)
