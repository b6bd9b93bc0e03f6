"""Programs the local stack builds from Go modules (the Kubernetes control plane, the OpenTelemetry
Collector), each into ``<cache>/<name>-<digest>/bin`` once: the digest names every input of the
build, so a changed input builds afresh beside the old one and an unchanged one builds never again.

``ensure(target, build)`` returns the bin directory, calling ``build(staging, go, gentle)`` the first
time, one build at a time (a second caller waits for the first, then finds it done). ``build`` puts
its files in ``staging`` and returns the seconds each took; they go to ``build.json`` beside ``bin``.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from agent.errors import MissingDependencyError

#: one program's build on a busy two-core machine (kube-apiserver: 5.5 min on a quiet one)
BUILD_TIMEOUT_S = 3600.0

Build = Callable[[Path, str, list[str]], dict[str, float]]


def built(target: Path) -> Path | None:
    """The bin directory when the build in ``target`` is complete, else None."""
    bin_dir = target / "bin"
    return bin_dir if (bin_dir / ".complete").exists() else None


def ensure(target: Path, build: Build, *, what: str, nice: bool = False) -> Path:
    """The bin directory of ``target``, built the first time. ``nice``: at the lowest CPU priority
    (a build beside other work); ``what`` names it in the error when Go is missing."""
    done = built(target)
    if done is not None:
        return done
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return built(target) or _build(target, build, what, nice)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(target: Path, build: Build, what: str, nice: bool) -> Path:
    go = shutil.which("go")
    if not go:
        raise MissingDependencyError(f"{what} is built from Go modules: install Go 1.26 or newer "
                                     "(https://go.dev/doc/install)")
    gentle = ["nice", "-n", "19"] if nice and shutil.which("nice") else []
    staging = Path(tempfile.mkdtemp(prefix="bin-", dir=target))
    try:
        figures = build(staging, go, gentle)
        (staging / ".complete").write_text(json.dumps(figures) + "\n")
        final = target / "bin"
        if final.exists():
            shutil.rmtree(final)
        staging.chmod(0o755)  # made by mkdtemp: readable by its owner alone
        staging.rename(final)
        (target / "build.json").write_text(json.dumps({"seconds": figures, "total": round(sum(figures.values()), 1)},
                                                      indent=2) + "\n")
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
