"""A real supervisord running a victim program (a small HTTP server), for process-fault tests."""

from __future__ import annotations

import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent.children import terminate
from agent.devstack.procs import free_port

CONFIG = """\
[supervisord]
nodaemon=true
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
childlogdir={dir}

[inet_http_server]
port=127.0.0.1:{port}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:victim]
command={python} -m http.server {victim_port} --bind 127.0.0.1
autorestart=true
startsecs=1
stopwaitsecs=5
"""


@dataclass
class Supervised:
    url: str
    victim_port: int

    def proxy(self) -> xmlrpc.client.ServerProxy:
        return xmlrpc.client.ServerProxy(self.url)

    def victim(self) -> dict:
        with self.proxy() as proxy:
            return proxy.supervisor.getProcessInfo("victim")  # type: ignore[return-value]

    def wait_running(self, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            info = self.victim()
            if info["statename"] == "RUNNING":
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"victim is {info['statename']}")
            time.sleep(0.1)


@contextmanager
def supervisord(directory: Path) -> Iterator[Supervised]:
    port, victim_port = free_port(), free_port()
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "supervisord.conf"
    conf.write_text(CONFIG.format(dir=directory, port=port, python=sys.executable, victim_port=victim_port))
    binary = Path(sys.executable).parent / "supervisord"
    proc = subprocess.Popen([str(binary), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    supervised = Supervised(f"http://127.0.0.1:{port}/RPC2", victim_port)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                supervised.wait_running(timeout=20)
                break
            except (OSError, xmlrpc.client.Fault):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield supervised
    finally:
        terminate(proc)
