"""Child processes of the local stack: start detached, find alive, stop, wait for readiness."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from agent.errors import DevstackError

#: children started by this process, kept so they are reaped (not garbage-collected while running)
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def start(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` in its own session (it outlives the caller), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(  # noqa: S603 - list form, no shell
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        except OSError as exc:
            raise DevstackError(f"could not start '{argv[0]}': {exc}") from exc
    _CHILDREN[proc.pid] = proc
    return proc.pid


def alive(pid: int | None, marker: str | tuple[str, ...] | None = None) -> bool:
    """True when ``pid`` runs (not a zombie) and, if given, its command line contains ``marker``
    (or one of several markers: a process may retitle itself after it starts)."""
    if not pid:
        return False
    _reap(pid)
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in {"Z", "X"}:
        return False
    if marker is None:
        return True
    markers = (marker,) if isinstance(marker, str) else marker
    return any(m in cmdline for m in markers)


def stop(pid: int | None, marker: str | tuple[str, ...] | None = None, *, grace: float = 10.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Stopping a dead process is a no-op."""
    if not alive(pid, marker):
        return
    assert pid is not None
    _signal(pid, signal.SIGTERM)
    if wait_until(lambda: not alive(pid), timeout=grace, interval=0.05):
        return
    _signal(pid, signal.SIGKILL)
    if not wait_until(lambda: not alive(pid), timeout=5.0, interval=0.05):
        raise DevstackError(f"process {pid} did not exit after SIGKILL")


def kill(pid: int) -> None:
    """SIGKILL, and wait until it is gone: a process that dies without any chance to leave."""
    _signal(pid, signal.SIGKILL)
    if not wait_until(lambda: not alive(pid), timeout=5.0, interval=0.05):
        raise DevstackError(f"process {pid} did not exit after SIGKILL")


def wait_until(condition: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run(argv: Sequence[str], *, what: str, cwd: Path | None = None, env: Mapping[str, str] | None = None,
        timeout: float = 600.0) -> str:
    """Run a set-up command to completion; raise ``DevstackError`` with its output when it fails."""
    try:
        done = subprocess.run(  # noqa: S603 - list form, no shell
            list(argv),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DevstackError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-20:]
        raise DevstackError(f"{what} failed (exit {done.returncode}):\n" + "\n".join(output))
    return done.stdout


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
