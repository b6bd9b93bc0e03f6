"""Kubernetes targets on a real control plane (the stack's kubernetes part: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler built from their Go modules, KWOK playing the kubelet): a
pod of a Deployment deleted and its replacement Ready (PASSED) or never Ready (FAILED), a scale to
zero that another agent scales back after the agent holding it is SIGKILLed, a namespace outside
the allow-list REJECTED, a pod that fails after becoming Ready seen through the watch API by a
``stable`` expectation, and the deployment manifests and their RBAC checked by the API server."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.core_v1 import Container, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, Node, Pod
from lightkube.types import PatchType

from agent import client
from agent._proto.coordinator.v1 import events_pb2 as S
from agent.devstack import Stack, kube, kubebuild
from agent.settings import Settings
from tests.helpers.agent import AgentProcess
from tests.helpers.engine import chaos, chatter, engine_env, read_all, settings_from, status
from tests.integration.test_reliability import _Agents, _one_result

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
#: the KWOK stage that fails a pod's container (exit code 1) when the pod carries this label
FAIL_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"

SCENARIO = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {{name: {name}}}
spec:
  targets:
    web: {{driver: kubernetes, service: web,
          selector: {{namespace: {namespace}, owner: {{kind: Deployment, name: web}}}}}}
  steps:
{steps}
  expectations:
{expectations}
"""
DELETE = "    - {name: delete-a-web-pod, fault: pod-delete, target: web, parameters: {gracePeriod: 0s}}"
READY_AGAIN = """\
    - {name: replacement-ready, after: delete-a-web-pod, attribution: target-window,
       event: {type: pod_ready, service: web}, appears: {within: 10s}}"""
STAYS_UP = """\
    - {name: web-stays-up, after: delete-a-web-pod, event: {service: web},
       stable: {for: 20s, within: 30s, since: pod_ready}}"""


@pytest.fixture(scope="module")
def cluster(stack: Stack) -> Iterator[Path]:
    """The stack's kubernetes part (built the first time); the admin's kubeconfig."""
    began = time.monotonic()
    cached = kubebuild.built() is not None
    timings = stack.up(("kubernetes",), extras=("kubernetes",), timeout=240)
    figures = {"cached build": cached, "up_s": round(time.monotonic() - began, 1), **timings}
    # kept beside the build, for the next reader: was it built in this run, and how long it all took
    (kubebuild.build_dir() / "last-test-start.json").write_text(json.dumps(figures) + "\n")
    yield kube.kubeconfig(stack.dir / "kubernetes")
    stack.stop("kubernetes")


class Shop:
    """A namespace with a three-replica Deployment ``web`` on the fake nodes, through the admin."""

    def __init__(self, api: AsyncClient) -> None:
        self.api = api
        self.namespace = f"shop-{uuid.uuid4().hex[:6]}"

    async def make(self, replicas: int = 3) -> None:
        await self.api.create(Namespace(metadata=ObjectMeta(name=self.namespace)))
        labels = {"app.kubernetes.io/name": "web"}
        await self.api.create(Deployment(
            metadata=ObjectMeta(name="web", namespace=self.namespace),
            spec=DeploymentSpec(replicas=replicas, selector=LabelSelector(matchLabels=labels),
                                template=PodTemplateSpec(metadata=ObjectMeta(labels=labels), spec=PodSpec(
                                    nodeSelector={"type": "kwok"}, terminationGracePeriodSeconds=1,
                                    containers=[Container(name="web", image="web:1")])))))
        await self.wait_ready(replicas)

    async def pods(self) -> list[Pod]:
        return [p async for p in self.api.list(Pod, namespace=self.namespace)]

    async def ready(self) -> list[Pod]:
        return [p for p in await self.pods() if not p.metadata.deletionTimestamp and any(
            c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))]

    async def wait_ready(self, count: int, timeout: float = 60.0) -> list[Pod]:
        deadline = time.monotonic() + timeout
        while len(found := await self.ready()) != count:
            assert time.monotonic() < deadline, f"{len(found)} of {count} web pods Ready in {self.namespace}"
            await asyncio.sleep(0.2)
        return found

    async def replicas(self) -> int:
        return int((await self.api.get(Deployment, "web", namespace=self.namespace)).spec.replicas or 0)

    async def cordon(self, unschedulable: bool) -> None:
        """No room for a new pod anywhere (a full cluster): a replacement stays Pending."""
        for node in kube.NODES:
            await self.api.patch(Node, node, {"spec": {"unschedulable": unschedulable}}, patch_type=PatchType.MERGE)


@pytest.fixture
async def shop(cluster: Path) -> AsyncIterator[Shop]:
    api = AsyncClient(KubeConfig.from_file(cluster))
    made = Shop(api)
    await made.make()
    try:
        yield made
    finally:
        await made.cordon(False)
        await api.delete(Namespace, made.namespace)
        await api.close()


@pytest.fixture
def agents(stack_env: dict[str, str], cluster: Path, tmp_path: Path) -> Iterator[_Agents]:
    env = {**engine_env(stack_env, "http://127.0.0.1:9/RPC2"), "COORDINATOR_WORKER_TICK_INTERVAL": "0.2",
           "COORDINATOR_VERDICT_GRACE": "5", "COORDINATOR_DRIVERS__KUBERNETES__KUBECONFIG": str(cluster),
           "COORDINATOR_DRIVERS__KUBERNETES__SETTLE_S": "5"}
    env["COORDINATOR_WORKER_APP_ID"] = f"{env['COORDINATOR_REDIS_KEY_PREFIX']}-worker"
    started = _Agents(env, tmp_path)
    yield started
    for agent in started.all:
        agent.stop()


def _allow(agents: _Agents, shop: Shop) -> None:
    agents.env["COORDINATOR_ALLOWED_TARGETS"] = json.dumps(["web", "ticker", f"kubernetes:{shop.namespace}/*"])


def _scenario(tmp_path: Path, shop: Shop, name: str, steps: str, expectations: str, namespace: str = "") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SCENARIO.format(name=name, namespace=namespace or shop.namespace, steps=steps,
                                    expectations=expectations))
    return str(path)


async def _start(agents: _Agents, *names: str) -> Settings:
    """The stream worker and the agents ``names`` on the agents' settings."""
    from agent import topics

    settings = settings_from(agents.env)
    await topics.apply(settings)
    stream = AgentProcess(agents.env, agents.dir / "worker.log", ("worker", "--loglevel", "info"), r"Ready")
    agents.all.append(stream)
    stream.start(timeout=120)
    for name in names:
        agents.start(name)
    return settings


async def _run(settings: Settings, scenario: str | Any, during: Any = None) -> S.ScenarioResult:
    """Run a scenario (a file, or a request built already) while another service speaks."""
    ticker = asyncio.create_task(chatter(settings, "ticker", "tick"))
    side = asyncio.create_task(during()) if during is not None else None
    request = client.build_request(scenario, {}) if isinstance(scenario, str) else scenario
    try:
        result = await client.run_and_follow(settings, request, timeout=180)
    finally:
        for task in (ticker, side):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (ticker, side) if t is not None), return_exceptions=True)
    assert result is not None, "no result"
    return result


async def test_a_deleted_pod_whose_replacement_is_ready_within_the_bound_passes(
        agents: _Agents, shop: Shop, tmp_path: Path) -> None:
    _allow(agents, shop)
    settings = await _start(agents, "kube-a")
    before = {p.metadata.name: p.metadata.uid for p in await shop.ready()}
    shipped = client.build_request(str(ROOT / "scenarios" / "delete-a-pod-of-a-deployment.yaml"), {
        "namespace": shop.namespace, "readyWithin": "10s", "stableFor": "5s", "gracePeriod": "0s"})
    result = await _run(settings, shipped)
    verdicts = {v.expectation_name: v.status for v in result.verdicts}
    assert status(result) == "PASSED", result.reason
    assert verdicts == {"replacement-ready": S.VERDICT_STATUS_PASSED, "workload-stays-up": S.VERDICT_STATUS_PASSED}
    [injection] = result.injections
    [touched] = injection.touched
    victim = touched.split("/", 1)[1]
    assert touched.startswith(f"{shop.namespace}/") and victim in before, injection
    after = {p.metadata.name for p in await shop.wait_ready(3)}
    assert victim not in after, "the pod was deleted"
    [replacement] = after - set(before)
    assert list(injection.arrived) == [f"{shop.namespace}/{replacement}"], "the replacement is named in the result"
    events = [e for e in chaos(await read_all(settings.kafka_bootstrap_servers, settings.topics.chaos_events))
              if e.execution_id == result.execution_id]
    [injected] = [e for e in events if e.type == S.CHAOS_EVENT_TYPE_INJECTED]
    assert injected.ended_instance == before[victim], "the incarnation ended is the deleted pod's uid"


async def test_a_replacement_that_never_becomes_ready_fails_with_the_reason(
        agents: _Agents, shop: Shop, tmp_path: Path) -> None:
    _allow(agents, shop)
    settings = await _start(agents, "kube-b")
    await shop.cordon(True)  # the replacement cannot be scheduled: Pending, never Ready
    result = await _run(settings, _scenario(tmp_path, shop, "delete-a-web-pod-no-room", DELETE, READY_AGAIN))
    [verdict] = [v for v in result.verdicts if v.expectation_name == "replacement-ready"]
    assert (status(result), verdict.status) == ("FAILED", S.VERDICT_STATUS_FAILED), (result.reason, verdict.reason)
    assert verdict.reason.startswith("no 'pod_ready from web' by the deadline"), verdict.reason
    assert len(await shop.ready()) == 2, "two left Ready; the replacement Pending"


async def test_a_pod_that_fails_after_becoming_ready_fails_stable_through_the_watch(
        agents: _Agents, shop: Shop, tmp_path: Path) -> None:
    """No service speaks here: the pod's failure comes from the watch API as the agent's own
    process_exited platform event, and the stable expectation fails on it."""
    _allow(agents, shop)
    settings = await _start(agents, "kube-c")

    async def fail_a_survivor() -> None:
        pods = await shop.wait_ready(3, timeout=60)  # the replacement is Ready: the system looks fine
        await asyncio.sleep(3)
        await shop.api.patch(Pod, pods[0].metadata.name, {"metadata": {"labels": {FAIL_LABEL: "true"}}},
                             namespace=shop.namespace, patch_type=PatchType.MERGE)

    scenario = _scenario(tmp_path, shop, "web-stays-up", DELETE, STAYS_UP)
    result = await _run(settings, scenario, during=lambda: _after_injection(settings, fail_a_survivor))
    [verdict] = result.verdicts
    assert (status(result), verdict.status) == ("FAILED", S.VERDICT_STATUS_FAILED), (result.reason, verdict.reason)
    assert "web went down" in verdict.reason and "process_exited (exit status 1)" in verdict.reason, verdict.reason


async def _after_injection(settings: Settings, then: Any) -> None:
    """Once the run's fault went in (its INJECTED chaos event), ``then()``."""
    deadline = time.monotonic() + 60
    while not [e for e in chaos(await read_all(settings.kafka_bootstrap_servers, settings.topics.chaos_events))
               if e.type == S.CHAOS_EVENT_TYPE_INJECTED]:
        assert time.monotonic() < deadline, "no fault went in"
        await asyncio.sleep(0.3)
    await then()


async def test_a_scale_to_zero_is_scaled_back_by_another_agent_after_its_agent_is_killed(
        agents: _Agents, shop: Shop, tmp_path: Path) -> None:
    _allow(agents, shop)
    settings = await _start(agents)
    doomed = agents.start("kube-doomed")
    steps = "    - {name: no-web, fault: scale, target: web, parameters: {replicas: 0}, duration: 120s}"
    wanted = client.build_request(_scenario(tmp_path, shop, "web-scaled-to-zero", steps, "    []"), {})
    await client.submit(settings, wanted)
    deadline = time.monotonic() + 60
    while await shop.replicas() != 0 or not [
            e for e in chaos(await read_all(settings.kafka_bootstrap_servers, settings.topics.chaos_events))
            if e.type == S.CHAOS_EVENT_TYPE_INJECTED]:
        assert time.monotonic() < deadline, "the agent scaled web to 0 and said so"
        await asyncio.sleep(0.2)
    doomed.signal(signal.SIGKILL)
    await asyncio.to_thread(doomed.wait, 30)
    await asyncio.sleep(2)
    assert await shop.replicas() == 0, "nobody scales back while no agent runs"
    agents.start("kube-survivor")
    await shop.wait_ready(3, timeout=90)
    assert await shop.replicas() == 3, "scaled back to the recorded count"
    result = await _one_result(settings, wanted.request_id)
    assert status(result) == "ABORTED", result.reason
    events = [e for e in chaos(await read_all(settings.kafka_bootstrap_servers, settings.topics.chaos_events))
              if e.execution_id == result.execution_id]
    reverted = [e for e in events if e.type == S.CHAOS_EVENT_TYPE_REVERTED]
    assert len(reverted) == 1 and reverted[0].owner.startswith("kube-survivor"), "reverted once, by the survivor"


async def test_a_selector_outside_the_allowed_namespaces_is_rejected_and_nothing_is_touched(
        agents: _Agents, shop: Shop, tmp_path: Path) -> None:
    _allow(agents, shop)
    settings = await _start(agents, "kube-d")
    before = sorted(p.metadata.name for p in await shop.ready())
    elsewhere = _scenario(tmp_path, shop, "delete-elsewhere", DELETE, READY_AGAIN, namespace="kube-system")
    wanted = client.build_request(elsewhere, {})
    await client.submit(settings, wanted)
    result = await _one_result(settings, wanted.request_id)
    assert status(result) == "REJECTED", result.reason
    assert "kubernetes 'kube-system/web' is not in the agent's allow-list" in result.reason, result.reason
    assert sorted(p.metadata.name for p in await shop.ready()) == before


def test_the_manifests_pass_a_server_side_dry_run_and_grant_only_the_allowed_namespaces(cluster: Path) -> None:
    bin_dir = kubebuild.built()
    assert bin_dir is not None
    kubectl = [str(bin_dir / "kubectl"), f"--kubeconfig={cluster}"]
    manifests = ROOT / "deploy" / "kubernetes"
    rbac = (manifests / "rbac-target-namespace.yaml").read_text().replace("TARGET_NAMESPACE", "rbac-shop")

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([*kubectl, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)

    assert run("create", "namespace", "chaos-coordinator").returncode in (0, 1)  # what a dry run cannot make
    dry = run("apply", "--dry-run=server", "-f", str(manifests / "coordinator.yaml"))
    assert dry.returncode == 0, dry.stderr
    assert "deployment.apps/coordinator-agent created (server dry run)" in dry.stdout, dry.stdout
    made = run("apply", "-f", str(manifests / "coordinator.yaml"))
    assert made.returncode == 0, made.stderr
    assert run("create", "namespace", "rbac-shop").returncode in (0, 1)
    granted = run("apply", "-f", "-", stdin=rbac)
    assert granted.returncode == 0, granted.stderr
    account = "system:serviceaccount:chaos-coordinator:coordinator"
    for verb, resource, namespace, allowed in (("delete", "pods", "rbac-shop", "yes"),
                                               ("patch", "deployments/scale", "rbac-shop", "yes"),
                                               ("watch", "pods", "rbac-shop", "yes"),
                                               ("delete", "pods", "kube-system", "no"),
                                               ("list", "pods", "chaos-coordinator", "no"),
                                               ("delete", "namespaces", "", "no"),
                                               ("create", "pods", "rbac-shop", "no")):
        where = ["-n", namespace] if namespace else []
        answer = run("auth", "can-i", verb, resource, *where, f"--as={account}")
        assert answer.stdout.strip() == allowed, (verb, resource, namespace, answer.stdout, answer.stderr)
