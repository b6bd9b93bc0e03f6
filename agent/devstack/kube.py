"""A real Kubernetes control plane on loopback: the local stack's ``kubernetes`` part.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built from their Go modules by
``agent.devstack.kubebuild``), and KWOK's controller, which plays the kubelet of fake nodes: it marks
the nodes Ready and the pods scheduled on them Running and Ready, and deletes them as a kubelet
would. Pods run no process; everything else (ReplicaSets replacing pods, the scheduler, watches,
RBAC, server-side dry runs) is the real thing.

The part is one process, ``python -m agent.devstack.kube DIR``, which makes throwaway certificates,
starts the five children in order, makes the fake nodes and writes ``DIR/ready`` with its timings;
it stops them all when it is stopped and exits when one of them dies (the stack then reports the
part down). Its children die with it even when it is killed (``PR_SET_PDEATHSIG``).

Files in ``DIR``: ``pki/`` (the CA, serving and client certificates), ``admin.kubeconfig`` (a
cluster admin, for tests and users), ``agent.kubeconfig`` (user ``chaos-coordinator``, no rights
until a Role grants some: the agent's identity), ``logs/`` (one per child), ``ports.json``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.devstack import secure

#: the fake nodes KWOK manages (pods choose them with ``nodeSelector: {type: kwok}``)
NODES = ("kwok-node-0", "kwok-node-1")
NODE_ANNOTATION = "kwok.x-k8s.io/node"
#: the user the agent is in the local stack (a client certificate's common name), and its group
AGENT_USER = "chaos-coordinator"
PORT_NAMES = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler")
CHILDREN = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
_PR_SET_PDEATHSIG = 1


def kubeconfig(directory: Path, user: str = "admin") -> Path:
    """The kubeconfig of ``user`` (``admin`` or ``agent``) of the cluster in ``directory``."""
    return directory / f"{user}.kubeconfig"


# -- certificates ---------------------------------------------------------------------------------
#: client certificates: file name -> (user, group)
CLIENTS = {"admin": ("admin", "system:masters"), "controller-manager": ("system:kube-controller-manager", ""),
           "scheduler": ("system:kube-scheduler", ""), "kwok": ("kwok", "system:masters"), "agent": (AGENT_USER, "")}


def make_pki(pki: Path) -> None:
    """A CA, the API server's serving certificate, the clients' certificates (:data:`CLIENTS`) and
    the service-account key pair, made once per directory."""
    if (pki / ".complete").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = secure.authority("coordinator devstack kubernetes CA")
    files = {"ca.crt": secure.pem_cert(ca_cert)}
    key, cert = secure.issue(ca_key, ca_cert, "kube-apiserver", server=True, ips=("10.96.0.1",),
                             dns=("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                  "kubernetes.default.svc.cluster.local"))
    files.update({"apiserver.crt": secure.pem_cert(cert), "apiserver.key": secure.pem_key(key)})
    for name, (user, group) in CLIENTS.items():
        key, cert = secure.issue(ca_key, ca_cert, user, server=False, group=group)
        files.update({f"{name}.crt": secure.pem_cert(cert), f"{name}.key": secure.pem_key(key)})
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files["sa.key"] = secure.pem_key(signing)
    files["sa.pub"] = signing.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    for name, data in files.items():
        (pki / name).write_bytes(data)
        (pki / name).chmod(0o600)
    (pki / ".complete").write_text("ok\n")


def write_kubeconfig(path: Path, server: str, pki: Path, client: str, user: str) -> None:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {"client-certificate": str(pki / f"{client}.crt"),
                                          "client-key": str(pki / f"{client}.key")}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
    }
    path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML: every client reads it
    path.chmod(0o600)


# -- the children -----------------------------------------------------------------------------------
def commands(directory: Path, bin_dir: Path, ports: dict[str, int]) -> dict[str, list[str]]:
    pki, run = directory / "pki", directory / "run"
    api = f"https://127.0.0.1:{ports['apiserver']}"
    for name in ("controller-manager", "scheduler", "kwok"):
        write_kubeconfig(run / f"{name}.kubeconfig", api, pki, name, name)

    def trio(name: str) -> list[str]:
        return [f"--{flag}={run / f'{name}.kubeconfig'}"
                for flag in ("kubeconfig", "authentication-kubeconfig", "authorization-kubeconfig")]

    return {
        "etcd": [str(bin_dir / "etcd"), "--name", "local", "--data-dir", str(run / "etcd-data"),
                 "--listen-client-urls", f"http://127.0.0.1:{ports['etcd']}",
                 "--advertise-client-urls", f"http://127.0.0.1:{ports['etcd']}",
                 "--listen-peer-urls", f"http://127.0.0.1:{ports['etcd-peer']}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{ports['etcd-peer']}",
                 "--initial-cluster", f"local=http://127.0.0.1:{ports['etcd-peer']}",
                 "--listen-metrics-urls", "", "--quota-backend-bytes", str(512 << 20), "--unsafe-no-fsync",
                 "--log-level", "warn"],
        "kube-apiserver": [
            str(bin_dir / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
            # a loopback advertise address is no valid Endpoints IP: nothing reconciles the kubernetes service
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=Node,RBAC", "--allow-privileged=true",
            "--profiling=false", "--v=0"],
        "kube-controller-manager": [
            str(bin_dir / "kube-controller-manager"), *trio("controller-manager"), "--bind-address=127.0.0.1",
            f"--secure-port={ports['controller-manager']}", "--leader-elect=false",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=true", "--cluster-name=local", "--v=0"],
        "kube-scheduler": [
            str(bin_dir / "kube-scheduler"), *trio("scheduler"), "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}", "--leader-elect=false", "--v=0"],
        "kwok": [
            str(bin_dir / "kwok"), f"--kubeconfig={run / 'kwok.kubeconfig'}",
            f"--config={bin_dir / 'kwok-stages.yaml'}", "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
            "--manage-nodes-with-label-selector=", "--cidr=10.0.0.1/24", "--node-ip=10.0.0.1",
            "--node-lease-duration-seconds=40"],
    }


def _die_with_parent() -> None:
    """In the child, before exec: killed when the part's process goes, however it goes."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Api:
    """Just enough HTTPS to the API server for the part's own checks (the admin's certificate)."""

    def __init__(self, directory: Path, port: int) -> None:
        pki = directory / "pki"
        self.base = f"https://127.0.0.1:{port}"
        self.context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.base + path, method=method,  # noqa: S310 - https to loopback
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5, context=self.context) as response:  # noqa: S310
                raw = response.read()
                return response.status, json.loads(raw) if raw.startswith(b"{") else raw.decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError:
            return 0, ""


def fake_node(name: str) -> dict[str, Any]:
    capacity = {"cpu": "256", "memory": "1Ti", "pods": "1000"}  # room for the bench's thousand pods
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {NODE_ANNOTATION: "fake"},
                         "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
            "spec": {}, "status": {"capacity": capacity, "allocatable": capacity}}


class Cluster:
    """The part's process: children started in order, each waited for, then watched."""

    def __init__(self, directory: Path, bin_dir: Path, ports: dict[str, int]) -> None:
        self.dir, self.bin_dir, self.ports = directory, bin_dir, ports
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}

    def _start(self, name: str, argv: list[str]) -> None:
        logs = self.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "ab") as log:
            self.children[name] = subprocess.Popen(  # noqa: S603 - list form, no shell
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    def _wait(self, name: str, ready: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for child, proc in self.children.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{child} exited ({proc.returncode}) while the control plane started; "
                                       f"see {self.dir / 'logs' / f'{child}.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not ready within {timeout:.0f}s")
            time.sleep(0.1)
        self.timings[name] = round(time.monotonic() - self.started, 2)

    def start(self, timeout: float) -> None:
        make_pki(self.dir / "pki")
        (self.dir / "run").mkdir(parents=True, exist_ok=True)
        api_url = f"https://127.0.0.1:{self.ports['apiserver']}"
        write_kubeconfig(kubeconfig(self.dir, "admin"), api_url, self.dir / "pki", "admin", "admin")
        write_kubeconfig(kubeconfig(self.dir, "agent"), api_url, self.dir / "pki", "agent", AGENT_USER)
        argv = commands(self.dir, self.bin_dir, self.ports)
        api = Api(self.dir, self.ports["apiserver"])
        self._start("etcd", argv["etcd"])
        self._wait("etcd", lambda: _http_ok(f"http://127.0.0.1:{self.ports['etcd']}/health"), timeout)
        self._start("kube-apiserver", argv["kube-apiserver"])
        self._wait("kube-apiserver", lambda: api.call("GET", "/readyz") == (200, "ok"), timeout)
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            self._start(name, argv[name])
        for node in NODES:
            status, answer = api.call("POST", "/api/v1/nodes", fake_node(node))
            if status not in (201, 409):
                raise RuntimeError(f"could not make node {node}: HTTP {status} {answer}")
        self._wait("nodes ready", lambda: all(_node_ready(api, n) for n in NODES), timeout)
        # the controller manager works once it made the default namespace's service account
        self._wait("kube-controller-manager",
                   lambda: api.call("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200, timeout)
        (self.dir / "ready").write_text(json.dumps({"seconds": self.timings, "ports": self.ports}) + "\n")

    def watch(self) -> int:
        """Until stopped, or until a child dies (its exit code)."""
        while True:
            for name, proc in self.children.items():
                if proc.poll() is not None:
                    print(f"{name} exited ({proc.returncode})", file=sys.stderr, flush=True)
                    return 1
            time.sleep(0.5)

    def stop(self) -> None:
        (self.dir / "ready").unlink(missing_ok=True)
        for name in reversed(CHILDREN):  # the API server stops cleanly only while etcd is there
            proc = self.children.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - http to loopback
            return b'"health":"true"' in response.read()
    except OSError:
        return False


def _node_ready(api: Api, name: str) -> bool:
    status, node = api.call("GET", f"/api/v1/nodes/{name}")
    if status != 200 or not isinstance(node, dict):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def main(argv: list[str]) -> int:
    """``python -m agent.devstack.kube DIR BIN_DIR PORTS_JSON [TIMEOUT]``: the part's process."""
    directory, bin_dir, ports = Path(argv[0]), Path(argv[1]), json.loads(argv[2])
    timeout = float(argv[3]) if len(argv) > 3 else 120.0
    cluster = Cluster(directory, bin_dir, ports)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        cluster.start(timeout)
        print(f"control plane ready: {json.dumps(cluster.timings)}", flush=True)
        return cluster.watch()
    except KeyboardInterrupt:
        return 0 if stopping else 130
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"the control plane did not start: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping already: the children go in order
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
