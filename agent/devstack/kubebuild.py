"""The Kubernetes control plane's binaries, built once from their Go modules into the cache.

- etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl: ``tools/k8sbuild``, a
  small module that requires ``k8s.io/kubernetes`` (it cannot be ``go install``ed: its staging
  modules are replace directives of its own go.mod) and the etcd server of the same release.
  The version variables are set at link time, as Kubernetes' own build does, so the server reports
  its real version (kubectl refuses the placeholder otherwise).
- KWOK's controller: ``go install`` of its module (it wants other client-go versions than the
  control plane, so it stays out of that module), and its stage files from the same module.

The binaries land in ``<cache>/kubernetes-<digest>/bin``, the digest of the build's inputs; a cold
build takes about ten minutes on two cores (kube-apiserver alone five), a second run none.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

from agent.devstack import gobuild, procs
from agent.devstack.install import cache_dir
from agent.errors import MissingDependencyError

KUBERNETES_VERSION = "v1.37.2"
KWOK_MODULE = "sigs.k8s.io/kwok"
KWOK_VERSION = "v0.8.0"
SOURCE = Path(__file__).resolve().parents[2] / "tools" / "k8sbuild"
#: what the control plane needs, in the order they are built (the slowest first: its figure alone)
COMMANDS = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "etcd": "go.etcd.io/etcd/server/v3",
}
#: KWOK's stages, concatenated into one file: nodes initialised and kept alive by their lease, pods
#: Running and Ready at once, completed and deleted as the kubelet would; and the chaos stage that
#: fails a pod's container when the pod carries its label (a container that dies)
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
    "kustomize/stage/pod/chaos/pod-container-running-failed.yaml",
)
BINARIES = (*COMMANDS, "kwok")


def _ldflags() -> str:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.gitVersion={KUBERNETES_VERSION}", f"-X {package}.gitMajor={major}",
                  f"-X {package}.gitMinor={minor}", f"-X {package}.gitTreeState=clean",
                  f"-X {package}.buildDate=1970-01-01T00:00:00Z"]
    return " ".join(flags)


def build_dir() -> Path:
    """Where this build's binaries go: named by the digest of everything that decides them."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "tools.go"):
        digest.update((SOURCE / name).read_bytes())
    digest.update(f"{KWOK_MODULE}@{KWOK_VERSION} {_ldflags()} {KWOK_STAGES}".encode())
    return cache_dir() / f"kubernetes-{KUBERNETES_VERSION}-{digest.hexdigest()[:12]}"


def built() -> Path | None:
    """The bin directory when the control plane is built, else None (nothing is built)."""
    return gobuild.built(build_dir())


def ensure_kubernetes(progress: bool = False, nice: bool = False) -> Path:
    """The bin directory holding every binary of :data:`BINARIES` and ``kwok-stages.yaml``, built
    the first time (one build at a time: a second caller waits for the first). Figures of the build
    go to ``build.json`` beside it. ``nice``: at the lowest CPU priority (a build beside other work)."""
    def build(staging: Path, go: str, gentle: list[str]) -> dict[str, float]:
        return _build(staging, go, gentle, progress)

    return gobuild.ensure(build_dir(), build, what="the Kubernetes part of the local stack", nice=nice)


def _build(staging: Path, go: str, gentle: list[str], progress: bool) -> dict[str, float]:
    figures: dict[str, float] = {}
    env = {"CGO_ENABLED": "0"}
    for name, package in COMMANDS.items():
        began = time.monotonic()
        flags = ["-ldflags", _ldflags()] if package.startswith("k8s.io/") else ["-ldflags", "-s -w"]
        _say(progress, f"building {name} (the first time only; kube-apiserver takes minutes)")
        procs.run([*gentle, go, "build", "-trimpath", *flags, "-o", str(staging / name), package],
                  what=f"go build {package}", cwd=SOURCE, env=env, timeout=gobuild.BUILD_TIMEOUT_S)
        figures[name] = round(time.monotonic() - began, 1)
    began = time.monotonic()
    _say(progress, "building kwok")
    procs.run([*gentle, go, "install", "-trimpath", "-ldflags", "-s -w", f"{KWOK_MODULE}/cmd/kwok@{KWOK_VERSION}"],
              what=f"go install {KWOK_MODULE}/cmd/kwok@{KWOK_VERSION}", env={**env, "GOBIN": str(staging)},
              timeout=gobuild.BUILD_TIMEOUT_S)
    figures["kwok"] = round(time.monotonic() - began, 1)
    (staging / "kwok-stages.yaml").write_text(_kwok_stages(go))
    return figures


def _kwok_stages(go: str) -> str:
    """The stage files of KWOK's module, as one YAML stream."""
    found = subprocess.run(  # noqa: S603 - list form, no shell
        [go, "mod", "download", "-json", f"{KWOK_MODULE}@{KWOK_VERSION}"],
        capture_output=True, text=True, check=False, cwd=SOURCE)
    if found.returncode != 0:
        raise MissingDependencyError(f"go mod download {KWOK_MODULE}@{KWOK_VERSION}: {found.stderr.strip()[-500:]}")
    module = Path(json.loads(found.stdout)["Dir"])
    return "\n---\n".join((module / stage).read_text().strip() for stage in KWOK_STAGES) + "\n"


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"==> {message}", flush=True)
