"""Faults on Kubernetes workloads, over the API server (lightkube's asyncio client).

===============  ==============================================  =======================================
fault            inject                                          revert
===============  ==============================================  =======================================
pod-delete       DELETE the chosen pods (``gracePeriod``)        wait until the selector has as many
                                                                 Ready pods as before (bounded)
pod-kill         DELETE with grace period 0                      as pod-delete
scale            PATCH the owner's scale to ``replicas``         PATCH it back to the recorded count
rollout-restart  PATCH the owner's pod template (restartedAt)    none: recovery is the expectations'
===============  ==============================================  =======================================

A selector names a ``namespace`` and the pods in it: by ``labels``, by ``owner`` (a Deployment,
StatefulSet or ReplicaSet, whose own selector is used), or both; ``fields`` adds a field selector.
``mode`` and ``value`` choose among the matching pods as for containers (one, all, fixed, percent).
The choice is made before the lease is written (``resolve``): the lease, the chaos event and the
result name exactly the pods touched, and the recipe holds what revert needs (the recorded replica
count of a ``scale``), so any agent can revert it after a crash. Pods are listed in pages of
``page_size`` (one call for a thousand) and deleted concurrently, at most ``concurrency`` at a time;
an API server that sheds load (429) is retried after the time it asks for. There is no client-side
rate limit to queue behind.

The allow-list names what a selector touches as ``NAMESPACE/NAME`` (``kubernetes:shop/*``): the
chosen pods, the owner of a scale or rollout restart, and, for a label selector not yet resolved,
``NAMESPACE/`` (admitted by a pattern that admits the whole namespace).

Pods that match the selector and were created while the fault was active (the replacements of a
deleted pod, pods a scale-down did not stop) are listed when the fault is reverted: ``arrived`` in
the REVERTED chaos event and the result's injection.

The platform: pods in the watched namespaces (``namespaces``; by default those the allow-list's
``kubernetes:NAMESPACE/...`` entries name), followed with the watch API. A container that starts is
``process_started``, one that terminates ``process_exited`` (its exit code), a deleted pod
``process_exited`` (state ``deleted``), a pod that becomes Ready or stops being Ready ``pod_ready``
or ``pod_not_ready``. The instance is the pod's uid, as the faults name the incarnations they end;
the service is the pod's ``app.kubernetes.io/name`` label, else its ``app`` label, else its owner.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError, ConfigError
from lightkube.models.meta_v1 import LabelSelector
from lightkube.resources.apps_v1 import Deployment, ReplicaSet, StatefulSet
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType
from pydantic import Field, model_validator

from agent.drivers.base import (
    ARRIVED,
    ENDED_INSTANCE,
    TOUCHED,
    Choosing,
    DriverSpec,
    FaultDriver,
    FaultKind,
    FaultRequest,
    PlatformEvent,
    choose,
)
from agent.errors import ActionError, RevertError
from agent.fields import Duration, NoParameters, Strict
from agent.settings import Settings

T = TypeVar("T")
#: a namespace or object name as Kubernetes allows it (DNS-1123)
K8sName = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")]
Namespace = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
LabelKey = Annotated[str, Field(pattern=r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")]
LabelValue = Annotated[str, Field(pattern=r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")]
#: the workloads a selector's owner may name (lightkube's resource classes, each with its Scale)
OWNERS: dict[str, Any] = {"Deployment": Deployment, "StatefulSet": StatefulSet, "ReplicaSet": ReplicaSet}
#: the annotation ``kubectl rollout restart`` sets on a pod template
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
FIELD_MANAGER = "chaos-coordinator"
#: the audit event types of a pod's readiness (beside process_started / process_exited)
READY, NOT_READY = "pod_ready", "pod_not_ready"


class Owner(Strict):
    kind: Literal["Deployment", "StatefulSet", "ReplicaSet"] = "Deployment"
    name: K8sName


class KubernetesSelector(Choosing):
    namespace: Namespace
    #: pods carrying every one of these labels
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    #: the pods of this workload (its own label selector)
    owner: Owner | None = None
    #: a field selector on the pods (``status.phase: Running``, ``spec.nodeName: node-1``)
    fields: dict[Annotated[str, Field(pattern=r"^[a-zA-Z.]+$")], str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid(self) -> KubernetesSelector:
        if self.owner is None and not self.labels:
            raise ValueError("a kubernetes selector needs labels or an owner")
        return self


class DeleteParameters(Strict):
    #: how long each pod has to stop (its containers get SIGTERM, then SIGKILL); default: the pod's own
    grace_period: Duration | None = None


class ScaleParameters(Strict):
    #: the replica count the owner is held at while the fault lasts (0: every pod goes)
    replicas: int = Field(ge=0)


@dataclass(frozen=True)
class KubernetesSettings:
    #: a kubeconfig file; empty: in the cluster, the pod's service account, else $KUBECONFIG or ~/.kube/config
    kubeconfig: str = ""
    #: a context of that kubeconfig (empty: its current one)
    context: str = ""
    #: namespaces whose pods become platform events; empty: those the allow-list names
    namespaces: tuple[str, ...] = ()
    #: how long a pod-delete's revert waits for the Ready pods to be back (it undoes nothing)
    settle_s: float = 30.0
    #: pods acted on at once
    concurrency: int = 32
    #: pods per page when listing
    page_size: int = 500
    #: how long a call may take
    timeout_s: float = 10.0


def allowed_namespaces(patterns: list[str]) -> tuple[str, ...]:
    """The namespaces the allow-list's ``kubernetes:NAMESPACE/...`` entries name without wildcards."""
    found = []
    for pattern in patterns:
        driver, _, rest = pattern.partition(":")
        namespace = rest.partition("/")[0]
        if driver == "kubernetes" and namespace and not any(c in namespace for c in "*?["):
            found.append(namespace)
    return tuple(dict.fromkeys(found))


def service_of(pod: Pod) -> str:
    """What platform events call a pod's workload: its ``app.kubernetes.io/name`` or ``app`` label,
    else its owner (a ReplicaSet's Deployment), else the pod's name."""
    meta = pod.metadata
    labels = (meta.labels if meta else None) or {}
    for key in ("app.kubernetes.io/name", "app"):
        if labels.get(key):
            return str(labels[key])
    for ref in (meta.ownerReferences if meta else None) or []:
        name = ref.name
        template_hash = labels.get("pod-template-hash")
        if ref.kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
            return name.removesuffix(f"-{template_hash}")
        return name
    return str(meta.name if meta else "")


def _ready(pod: Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _alive(pod: Pod) -> bool:
    """Not on its way out, and not finished."""
    return not (pod.metadata and pod.metadata.deletionTimestamp) and \
        (pod.status.phase if pod.status else "") in {"Running", "Pending"}


def _created(pod: Pod) -> float:
    stamp = pod.metadata.creationTimestamp if pod.metadata else None
    return stamp.timestamp() if stamp else 0.0


def _stamp(value: datetime | None) -> str:
    """A time of the pod's status as the API gives it (seconds), the same for every agent."""
    return value.isoformat() if value is not None else ""


def _rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selector_labels(selector: LabelSelector | None) -> dict[str, Any]:
    """A workload's label selector as lightkube's ``labels`` (matchExpressions included)."""
    from lightkube import operators

    if selector is None:
        return {}
    labels: dict[str, Any] = dict(selector.matchLabels or {})
    for expression in selector.matchExpressions or []:
        values, operator = list(expression.values or []), expression.operator
        if operator == "In":
            labels[expression.key] = operators.in_(values)
        elif operator == "NotIn":
            labels[expression.key] = operators.not_in(values)
        elif operator == "Exists":
            labels[expression.key] = operators.exists()
        else:
            labels[expression.key] = operators.not_exists()
    return labels


class KubernetesDriver(FaultDriver):
    name = "kubernetes"
    settings: KubernetesSettings

    def __init__(self, settings: KubernetesSettings) -> None:
        super().__init__(settings)
        self._client: AsyncClient | None = None
        #: API calls made (the bench reads it)
        self.calls = 0

    # -- the API server ------------------------------------------------------------------------------
    def config(self) -> KubeConfig:
        try:
            if self.settings.kubeconfig:
                return KubeConfig.from_file(self.settings.kubeconfig)
            return KubeConfig.from_env()
        except (ConfigError, OSError) as exc:
            raise ActionError(f"no Kubernetes cluster to talk to: {exc} (set COORDINATOR_DRIVERS__KUBERNETES__"
                              f"KUBECONFIG, or run the agent in a pod with a service account)") from exc

    def client(self) -> AsyncClient:
        if self._client is None:
            config = self.config()
            if self.settings.context:
                config = config.get(context_name=self.settings.context)  # type: ignore[assignment]

            async def count(request: httpx2.Request) -> None:
                self.calls += 1

            self._client = AsyncClient(config, field_manager=FIELD_MANAGER, timeout=httpx2.Timeout(
                self.settings.timeout_s))
            # every request counted (the bench's figures): lightkube's HTTP client, reached through its
            # own attributes (a transport of ours would drop the TLS settings it makes from the kubeconfig)
            self._client._client._client.event_hooks["request"].append(count)
        return self._client

    async def _call(self, what: str, call: Callable[[], Awaitable[T]],
                    error: type[ActionError | RevertError] = ActionError) -> T:
        """One API call, retried while the server sheds load (429, after the time it asks for); its
        failures as the driver's errors, with the server's own words."""
        for attempt in range(6):
            try:
                return await call()
            except ApiError as exc:
                code = exc.status.code or 0
                if code == 429 and attempt < 5:
                    wait = exc.response.headers.get("Retry-After") if exc.response is not None else None
                    await asyncio.sleep(float(wait) if wait and wait.isdigit() else 0.2 * 2**attempt)
                    continue
                raise error(f"the API server refused to {what}: {exc.status.message} (HTTP {code})",
                            retryable=code >= 500 or code == 429) from exc
            except (httpx2.HTTPError, OSError) as exc:
                raise error(f"the API server is unreachable to {what}: {type(exc).__name__}: {exc}",
                            retryable=True) from exc
        raise AssertionError("unreachable")

    async def _owner_labels(self, namespace: str, owner: dict[str, str], error: type[ActionError | RevertError]
                            = ActionError) -> tuple[dict[str, Any], int]:
        """An owner's pod selector and its desired replica count."""
        resource = OWNERS[owner["kind"]]
        found = await self._call(f"read {owner['kind']} {namespace}/{owner['name']}",
                                 lambda: self.client().get(resource, owner["name"], namespace=namespace), error)
        spec = found.spec
        return _selector_labels(spec.selector if spec else None), int((spec.replicas if spec else None) or 0)

    async def pods(self, selector: dict[str, Any], error: type[ActionError | RevertError] = ActionError
                   ) -> list[Pod]:
        """Every pod the selector matches (labels, the owner's selector, fields), paged."""
        namespace = selector["namespace"]
        labels: dict[str, Any] = dict(selector.get("labels") or {})
        if selector.get("owner"):
            owned, _ = await self._owner_labels(namespace, selector["owner"], error)
            labels.update(owned)

        async def listed() -> list[Pod]:
            return [pod async for pod in self.client().list(
                Pod, namespace=namespace, labels=labels, fields=dict(selector.get("fields") or {}) or None,
                chunk_size=self.settings.page_size)]

        return await self._call(f"list pods in {namespace}", listed, error)

    async def _bounded(self, items: list[T], act: Callable[[T], Awaitable[Any]]) -> list[Any]:
        """``act`` on every item, at most ``concurrency`` at once; exceptions returned, not raised."""
        gate = asyncio.Semaphore(max(1, self.settings.concurrency))

        async def one(item: T) -> Any:
            async with gate:
                return await act(item)

        return await asyncio.gather(*(one(i) for i in items), return_exceptions=True)

    # -- faults --------------------------------------------------------------------------------------
    async def resolve(self, request: FaultRequest) -> FaultRequest:
        selector = request.selector
        namespace = selector["namespace"]
        since = time.time()
        if request.fault in {"scale", "rollout-restart"}:
            owner = selector.get("owner")
            if not owner:
                raise ActionError(f"{request.fault} acts on a workload: the selector of '{request.target_name}' "
                                  f"needs an owner")
            labels, replicas = await self._owner_labels(namespace, owner)
            return replace(request, selector={**selector, "chosen": [], "replicas_before": replicas,
                                              "since": since})
        pods = [p for p in await self.pods(selector) if _alive(p)]
        if not pods:
            raise ActionError(f"no running pod matches the selector of '{request.target_name}' "
                              f"({_describe(selector)})")
        candidates = [{"name": str(p.metadata.name), "uid": str(p.metadata.uid), "service": service_of(p)}
                      for p in pods if p.metadata]
        chosen = choose(candidates, selector.get("mode", "one"), selector.get("value"))
        ready_before = sum(1 for p in pods if _ready(p))
        return replace(request, selector={**selector, "chosen": chosen, "ready_before": ready_before,
                                          "since": since})

    def recipe(self, request: FaultRequest) -> dict[str, Any]:
        selector = request.selector
        if "chosen" not in selector:
            raise ActionError("the kubernetes driver chooses its pods before the lease (resolve) is written")
        action = {"scale": "scale", "rollout-restart": "none"}.get(request.fault, "await-ready")
        return {"action": action, "namespace": selector["namespace"], "owner": selector.get("owner"),
                "labels": selector.get("labels") or {}, "fields": selector.get("fields") or {},
                "pods": selector["chosen"], "replicas": selector.get("replicas_before"),
                "ready_before": selector.get("ready_before", 0), "since": selector["since"],
                "settle_s": self.settings.settle_s}

    async def inject(self, request: FaultRequest) -> dict[str, Any]:
        selector = request.selector
        namespace = selector["namespace"]
        if request.fault == "scale":
            replicas = int(request.parameters["replicas"])
            await self._scale(namespace, selector["owner"], replicas, ActionError)
            owner = f"{namespace}/{selector['owner']['name']}"
            return {"replicas": {"before": selector["replicas_before"], "now": replicas}, TOUCHED: [owner]}
        if request.fault == "rollout-restart":
            await self._restart(namespace, selector["owner"])
            return {TOUCHED: [f"{namespace}/{selector['owner']['name']}"]}
        grace = 0 if request.fault == "pod-kill" else request.parameters.get("grace_period")
        chosen: list[dict[str, str]] = selector["chosen"]
        results = await self._bounded(chosen, lambda pod: self._delete(namespace, pod, grace))
        failed = [(p, r) for p, r in zip(chosen, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            detail = "; ".join(f"{p['name']}: {r}" for p, r in failed[:5])
            raise ActionError(f"{request.fault} failed on {len(failed)} of {len(chosen)} pod(s): {detail}",
                              retryable=all(getattr(r, "retryable", False) for _, r in failed))
        return {TOUCHED: [f"{namespace}/{p['name']}" for p in chosen],
                ENDED_INSTANCE: ",".join(p["uid"] for p in chosen)}

    async def _delete(self, namespace: str, pod: dict[str, str], grace: float | None) -> None:
        seconds = None if grace is None else max(0, math.ceil(grace))
        try:
            await self._call(f"delete pod {namespace}/{pod['name']}", lambda: self.client().delete(
                Pod, pod["name"], namespace=namespace, grace_period=seconds))
        except ActionError as exc:
            if "(HTTP 404)" not in str(exc):  # gone already: what the fault wanted
                raise

    async def _scale(self, namespace: str, owner: dict[str, str], replicas: int,
                     error: type[ActionError | RevertError]) -> None:
        resource = OWNERS[owner["kind"]]
        await self._call(f"scale {owner['kind']} {namespace}/{owner['name']} to {replicas}",
                         lambda: self.client().patch(resource.Scale, owner["name"], {"spec": {"replicas": replicas}},
                                                     namespace=namespace, patch_type=PatchType.MERGE), error)

    async def _restart(self, namespace: str, owner: dict[str, str]) -> None:
        if owner["kind"] == "ReplicaSet":
            raise ActionError("a ReplicaSet has no rollout to restart: name its Deployment")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: _rfc3339(time.time())}}}}}
        await self._call(f"restart the rollout of {owner['kind']} {namespace}/{owner['name']}",
                         lambda: self.client().patch(OWNERS[owner["kind"]], owner["name"], patch,
                                                     namespace=namespace, patch_type=PatchType.MERGE))

    async def revert(self, recipe: dict[str, Any]) -> dict[str, Any] | None:
        namespace = recipe["namespace"]
        if recipe["action"] == "scale":
            await self._scale(namespace, recipe["owner"], int(recipe["replicas"]), RevertError)
        elif recipe["action"] == "await-ready":
            await self._await_ready(recipe)
        selector = {"namespace": namespace, "labels": recipe.get("labels") or {}, "owner": recipe.get("owner"),
                    "fields": recipe.get("fields") or {}}
        try:
            pods = await self.pods(selector, RevertError)
        except RevertError:
            return None  # what arrived is a report, not the revert: the fault is reverted all the same
        touched = {p["uid"] for p in recipe.get("pods") or []}
        arrived = sorted(f"{namespace}/{p.metadata.name}" for p in pods
                         if p.metadata and p.metadata.uid not in touched and _created(p) >= int(recipe["since"]))
        return {ARRIVED: arrived}

    async def _await_ready(self, recipe: dict[str, Any]) -> None:
        """Until the selector has as many Ready pods as before the fault (not counting those the fault
        deleted), for at most ``settle_s``; nothing is undone, so a workload that does not come back
        is for the expectations to judge, not a failed revert."""
        selector = {"namespace": recipe["namespace"], "labels": recipe.get("labels") or {},
                    "owner": recipe.get("owner"), "fields": recipe.get("fields") or {}}
        gone = {p["uid"] for p in recipe.get("pods") or []}
        deadline = time.monotonic() + float(recipe.get("settle_s") or 0)
        while time.monotonic() < deadline:
            pods = await self.pods(selector, RevertError)
            if sum(1 for p in pods if p.metadata and p.metadata.uid not in gone and _ready(p) and _alive(p)) \
                    >= int(recipe.get("ready_before") or 0):
                return
            await asyncio.sleep(0.5)

    # -- the platform --------------------------------------------------------------------------------
    def platform_events(self, interval: float) -> AsyncIterator[PlatformEvent] | None:
        if not self.settings.namespaces:
            return None
        try:
            self.config()
        except ActionError:
            return None  # no cluster configured: nothing to watch
        return self._watch_all()

    async def _watch_all(self) -> AsyncIterator[PlatformEvent]:
        queue: asyncio.Queue[PlatformEvent | BaseException] = asyncio.Queue()

        async def pump(namespace: str) -> None:
            try:
                async for event in self.watch(namespace):
                    queue.put_nowait(event)
            except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
                queue.put_nowait(exc)

        tasks = [asyncio.ensure_future(pump(ns)) for ns in self.settings.namespaces]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def watch(self, namespace: str) -> AsyncIterator[PlatformEvent]:
        """The pods of ``namespace`` as platform events: listed once (their state known, no events),
        then watched from that list's version."""
        known: dict[str, PodState] = {}
        listing = self.client().list(Pod, namespace=namespace, chunk_size=self.settings.page_size)
        async for pod in listing:
            state = PodState.of(pod)
            known[state.uid] = state
        version = listing.resourceVersion
        async for kind, pod in self.client().watch(Pod, namespace=namespace, resource_version=version):
            state = PodState.of(pod)
            before = known.get(state.uid) or PodState(state.uid, state.service, state.name)
            if kind == "DELETED":
                known.pop(state.uid, None)
                for event in before.changes(state, time.time(), deleted=True):
                    yield event
                continue
            known[state.uid] = state
            for event in before.changes(state, time.time()):
                yield event

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


@dataclass
class PodState:
    """What platform events are made of: a pod's containers (name -> started at or finished at) and
    its readiness (with when it last changed)."""

    uid: str
    service: str
    name: str
    running: dict[str, str] | None = None
    finished: dict[str, tuple[str, str]] | None = None
    ready: tuple[bool, str] = (False, "")

    @classmethod
    def of(cls, pod: Pod) -> PodState:
        meta, status = pod.metadata, pod.status
        running: dict[str, str] = {}
        finished: dict[str, tuple[str, str]] = {}
        for container in (status.containerStatuses if status else None) or []:
            state = container.state
            if state and state.running:
                running[container.name] = _stamp(state.running.startedAt)
            elif state and state.terminated:
                finished[container.name] = (_stamp(state.terminated.finishedAt), str(state.terminated.exitCode))
        ready = next(((c.status == "True", _stamp(c.lastTransitionTime)) for c in
                      (status.conditions if status else None) or [] if c.type == "Ready"), (False, ""))
        return cls(str(meta.uid if meta else ""), service_of(pod), str(meta.name if meta else ""),
                   running, finished, ready)

    def changes(self, now: PodState, at: float, deleted: bool = False) -> list[PlatformEvent]:
        """The platform events between this state and ``now``."""
        out = []
        base = {"pod": now.name}
        for container, started in (now.running or {}).items():
            if (self.running or {}).get(container) != started:
                out.append(PlatformEvent(now.service, "process_started", now.uid, at,
                                         {**base, "container": container, "state": "running"}, seq=started))
        for container, (finished, code) in (now.finished or {}).items():
            if (self.finished or {}).get(container, ("", ""))[0] != finished:
                out.append(PlatformEvent(now.service, "process_exited", now.uid, at,
                                         {**base, "container": container, "exit_status": code, "state": "exited"},
                                         seq=finished))
        if now.ready[0] != self.ready[0] and not deleted:
            out.append(PlatformEvent(now.service, READY if now.ready[0] else NOT_READY, now.uid, at,
                                     {**base, "state": "ready" if now.ready[0] else "not ready"}, seq=now.ready[1]))
        if deleted:
            out.append(PlatformEvent(now.service, "process_exited", now.uid, at,
                                     {**base, "exit_status": "unknown", "state": "deleted"}, seq="deleted"))
        return out


def _describe(selector: dict[str, Any]) -> str:
    parts = [f"namespace {selector['namespace']}"]
    if selector.get("owner"):
        parts.append(f"{selector['owner']['kind']} {selector['owner']['name']}")
    parts += [f"{k}={v}" for k, v in sorted((selector.get("labels") or {}).items())]
    return ", ".join(parts)


def _configure(settings: Settings) -> KubernetesSettings:
    return KubernetesSettings(namespaces=allowed_namespaces(list(settings.allowed_targets)))


def _touches(selector: dict[str, Any]) -> list[str]:
    """``NAMESPACE/NAME``: the pods chosen, else the owner, else ``NAMESPACE/`` (a label selector)."""
    namespace = selector["namespace"]
    chosen = selector.get("chosen")
    if chosen:
        return [f"{namespace}/{c['name']}" for c in chosen]
    if selector.get("owner"):
        return [f"{namespace}/{selector['owner']['name']}"]
    return [f"{namespace}/"]


def _check_step(fault: FaultKind, selector: dict[str, Any]) -> str | None:
    if fault.name in {"scale", "rollout-restart"} and not selector.get("owner"):
        return f"'{fault.name}' acts on a workload: the target's selector needs an owner (kind and name)"
    return None


def _acts_on(recipe: dict[str, Any]) -> set[str]:
    names = {str(p.get("service")) for p in recipe.get("pods") or [] if p.get("service")}
    if recipe.get("owner"):
        names.add(str(recipe["owner"]["name"]))
    return names


SPEC = DriverSpec(
    name="kubernetes", selector=KubernetesSelector, factory=KubernetesDriver, configure=_configure,
    touches=_touches, acts_on=_acts_on, check_step=_check_step,
    summary="pods and workloads, over the Kubernetes API",
    faults=(
        FaultKind("pod-delete", DeleteParameters, False,
                  summary="delete the chosen pods (graceful); their owner replaces them"),
        FaultKind("pod-kill", NoParameters, False, summary="delete the chosen pods at once (grace period 0)"),
        FaultKind("scale", ScaleParameters, True,
                  summary="hold the owner at a replica count; scaled back to the recorded count on revert"),
        FaultKind("rollout-restart", NoParameters, False,
                  summary="restart the owner's rollout (every pod replaced, as kubectl rollout restart)"),
    ),
)
