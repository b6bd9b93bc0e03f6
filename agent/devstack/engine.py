"""The local stack's container engine: podman serving the Docker Engine API on a unix socket.

Machines without a Docker daemon still get a real engine: ``podman system service`` answers the
Docker API (containers, images, events) as Docker does. Its configuration and image store live in
the stack's directory (``docker/``), its run state and socket in a short temporary path named after
the stack (``run_dir``), so two stacks never share containers, and ``down`` removes every container
this engine made. Settings this sandbox needs (checked on Debian 12 as root): the ``runc`` runtime
with the cgroupfs manager (``crun`` refuses hybrid cgroups), file events, ulimits at or below the
current hard limits (no CAP_SYS_RESOURCE), and the ``vfs`` storage driver: overlay leaves a mount
on the store that keeps the stack's directory from being removed; the one image is 2 MB, so copies
cost nothing.

No registry is reachable, so the stack makes its one image itself: ``localhost/coordinator-base:1``,
a static busybox (a shell, ``httpd``, ``sleep``), imported through the API. Containers that run the
project's Python mount the host's ``/usr``, ``/lib*``, Python and the checkout read-only
(``python_binds``) and use the host's network.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import socket
import sys
import tarfile
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from agent.devstack import install
from agent.errors import DevstackError

BASE_IMAGE = "localhost/coordinator-base:1"
#: the label on every container the stack's tests and tools make
STACK_LABEL = "coordinator.devstack"
_TOOLS = ("sh", "sleep", "httpd", "cat", "ls", "kill", "true", "false", "echo", "env")

_CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
[network]
network_config_dir = "{networks}"
"""


def run_dir(directory: Path) -> Path:
    """The engine's run state and socket: a short path of its own (podman refuses a run root over 50
    characters, and a unix socket path is limited to 107 bytes), the same for the same stack."""
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"coordinator-engine-{digest}"


def socket_path(directory: Path) -> Path:
    return run_dir(directory) / "podman.sock"


def podman(directory: Path, storage_driver: str = "vfs") -> tuple[list[str], dict[str, str]]:
    """podman's command line (before the subcommand) and environment for the engine whose files
    live under ``directory``: its store, volumes, networks and configuration there, its run state in
    ``run_dir``. The engine's service and any ``podman`` command on the same store use these."""
    binary = install.ensure_podman()
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "containers.conf"
    nofile, nproc = _limit("RLIMIT_NOFILE", 1024), _limit("RLIMIT_NPROC", 1000)
    conf.write_text(_CONTAINERS_CONF.format(nofile=nofile, nproc=nproc, events=directory / "events.log",
                                            networks=directory / "networks"))
    run = run_dir(directory)
    argv = [binary, "--root", str(directory / "storage"), "--runroot", str(run / "run"),
            "--tmpdir", str(run / "tmp"), "--volumepath", str(directory / "volumes"),
            "--storage-driver", storage_driver, "--cgroup-manager", "cgroupfs", "--runtime", "runc"]
    return argv, {"CONTAINERS_CONF": str(conf)}


def command(directory: Path, storage_driver: str = "vfs") -> tuple[list[str], dict[str, str]]:
    """The engine's service (the Docker API on ``socket_path``): command line and environment."""
    argv, env = podman(directory, storage_driver)
    return [*argv, "system", "service", "--time=0", f"unix://{socket_path(directory)}"], env


def _limit(name: str, wanted: int) -> int:
    import resource

    _, hard = resource.getrlimit(getattr(resource, name))
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def call(sock: Path, method: str, path: str, params: dict[str, Any] | None = None, body: bytes | None = None,
         content_type: str = "application/json", timeout: float = 30.0) -> tuple[int, Any]:
    """One Docker API call over the engine's socket: the status and the decoded JSON (or text)."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    connection = _UnixConnection(sock, timeout)
    try:
        connection.request(method, f"/v1.41{path}{query}", body=body,
                           headers={"Content-Type": content_type} if body is not None else {})
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, raw.decode(errors="replace")


def ready(sock: Path) -> bool:
    try:
        status, _ = call(sock, "GET", "/_ping", timeout=2)
    except OSError:
        return False
    return status == 200


def ensure_base_image(sock: Path) -> None:
    """The stack's busybox image, imported from the host's static busybox when missing."""
    status, _ = call(sock, "GET", f"/images/{BASE_IMAGE}/json")
    if status == 200:
        return
    busybox = install.ensure_busybox()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for tool in _TOOLS:
            link = tarfile.TarInfo(f"bin/{tool}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        for empty in ("tmp", "proc", "sys", "dev", "etc", "work", "root"):
            folder = tarfile.TarInfo(empty)
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(folder)
    repo, _, tag = BASE_IMAGE.rpartition(":")
    # podman takes the tag from the repo (it reads no separate tag for an import); Docker takes both
    status, answer = call(sock, "POST", "/images/create", {"fromSrc": "-", "repo": BASE_IMAGE, "tag": tag},
                          body=archive.getvalue(), content_type="application/x-tar", timeout=120)
    if status != 200:
        raise DevstackError(f"could not import {BASE_IMAGE} into the container engine: HTTP {status} {answer}")


def remove_all(sock: Path) -> int:
    """Remove every container of this engine (its store is the stack's alone); how many there were."""
    status, containers = call(sock, "GET", "/containers/json", {"all": "true"})
    if status != 200:
        return 0
    for container in containers:
        call(sock, "DELETE", f"/containers/{container['Id']}", {"force": "true", "v": "true"}, timeout=60)
    return len(containers)


def python_binds(checkout: Path | None = None) -> list[str]:
    """Read-only mounts that let a container of the base image run this project's Python: the
    host's system directories, the interpreter's prefix and the checkout (with its virtualenv)."""
    root = checkout or Path(__file__).resolve().parents[2]
    paths = {"/usr", "/lib", "/lib64", "/etc/ssl", "/etc/alternatives", sys.base_prefix, str(root)}
    # a symlinked directory (/lib64 -> usr/lib64 on merged-/usr systems) is mounted from its target
    return [f"{os.path.realpath(p)}:{p}:ro" for p in sorted(paths) if os.path.exists(p)]
