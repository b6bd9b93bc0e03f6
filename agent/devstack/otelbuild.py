"""The local stack's OpenTelemetry Collector, built once from its Go modules into the cache.

``tools/otelcol`` is a small module whose ``main.go`` assembles a Collector from the factories the
stack needs (the OTLP receiver, the batch processor, the contrib Kafka exporter, the debug exporter),
every collector module at one release, as the Collector's own builder would generate it. The binary
lands in ``<cache>/otelcol-<version>-<digest>/bin/otelcol``.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from agent.devstack import gobuild, procs
from agent.devstack.install import cache_dir

COLLECTOR_VERSION = "v0.165.0"
SOURCE = Path(__file__).resolve().parents[2] / "tools" / "otelcol"
BINARY = "otelcol"


def build_dir() -> Path:
    """Where this build goes: named by the digest of its module's files."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((SOURCE / name).read_bytes())
    return cache_dir() / f"otelcol-{COLLECTOR_VERSION}-{digest.hexdigest()[:12]}"


def built() -> Path | None:
    """The Collector's binary when it is built, else None."""
    bin_dir = gobuild.built(build_dir())
    return bin_dir / BINARY if bin_dir is not None else None


def ensure_collector(progress: bool = False, nice: bool = False) -> Path:
    """The Collector's binary, built the first time (a few minutes on two cores)."""
    def build(staging: Path, go: str, gentle: list[str]) -> dict[str, float]:
        if progress:
            print("==> building the OpenTelemetry Collector (the first time only; a few minutes)", flush=True)
        began = time.monotonic()
        procs.run([*gentle, go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(staging / BINARY), "."],
                  what="go build of the OpenTelemetry Collector (tools/otelcol)", cwd=SOURCE,
                  env={"CGO_ENABLED": "0"}, timeout=gobuild.BUILD_TIMEOUT_S)
        return {BINARY: round(time.monotonic() - began, 1)}

    return gobuild.ensure(build_dir(), build, what="the OpenTelemetry part of the local stack", nice=nice) / BINARY
