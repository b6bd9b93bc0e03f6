"""The kubernetes driver's vocabulary without a cluster: selectors, what they touch for the
allow-list, the namespaces it watches, and pods' changes as platform events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from lightkube.models.core_v1 import (
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStatus,
    PodCondition,
    PodStatus,
)
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Pod
from pydantic import ValidationError

from agent import drivers
from agent.drivers import kubernetes as k
from agent.scenario.checks import refused_by_allow_list

SPEC = drivers.specs()["kubernetes"]


def selector(**given: Any) -> dict[str, Any]:
    return k.KubernetesSelector.model_validate({"namespace": "shop", **given}).model_dump(mode="python")


def test_a_selector_names_pods_by_labels_or_owner_and_says_how_many() -> None:
    assert selector(owner={"name": "web"})["owner"] == {"kind": "Deployment", "name": "web"}
    assert selector(labels={"app.kubernetes.io/name": "web"}, mode="percent", value=50)["value"] == 50
    for wrong, words in (({}, "needs labels or an owner"),
                         ({"owner": {"name": "web"}, "mode": "fixed"}, "needs a value"),
                         ({"owner": {"name": "web"}, "mode": "percent", "value": 150}, "from 1 to 100"),
                         ({"owner": {"name": "Web_1"}}, "pattern"),
                         ({"owner": {"kind": "DaemonSet", "name": "web"}}, "Deployment")):
        with pytest.raises(ValidationError, match=words):
            selector(**wrong)
    with pytest.raises(ValidationError, match="pattern"):
        k.KubernetesSelector.model_validate({"namespace": "Shop!", "owner": {"name": "web"}})


def test_scale_and_rollout_restart_need_an_owner() -> None:
    faults = {f.name: f for f in SPEC.faults}
    assert SPEC.check_step is not None
    assert "needs an owner" in (SPEC.check_step(faults["scale"], selector(labels={"app": "web"})) or "")
    assert SPEC.check_step(faults["scale"], selector(owner={"name": "web"})) is None
    assert SPEC.check_step(faults["pod-delete"], selector(labels={"app": "web"})) is None


def test_what_a_selector_touches_is_namespace_and_name_and_the_allow_list_reads_it() -> None:
    assert SPEC.touches is not None
    assert SPEC.touches(selector(owner={"name": "web"})) == ["shop/web"]
    assert SPEC.touches(selector(labels={"app": "web"})) == ["shop/"]
    chosen = {**selector(owner={"name": "web"}), "chosen": [{"name": "web-1", "uid": "u1"}]}
    assert SPEC.touches(chosen) == ["shop/web-1"]
    allowed = ["web", "kubernetes:shop/*"]
    assert refused_by_allow_list("web", "kubernetes", selector(owner={"name": "web"}), allowed) is None
    assert refused_by_allow_list("web", "kubernetes", selector(labels={"app": "web"}), allowed) is None
    elsewhere = {**selector(owner={"name": "web"}), "namespace": "payments"}
    assert refused_by_allow_list("web", "kubernetes", elsewhere, allowed) == \
        "target 'web': kubernetes 'payments/web' is not in the agent's allow-list"
    # a pattern for some pods of the namespace admits those, not a label selector over all of it
    narrow = ["web", "kubernetes:shop/web-*"]
    assert refused_by_allow_list("web", "kubernetes", chosen, narrow) is None
    assert refused_by_allow_list("web", "kubernetes", selector(labels={"app": "web"}), narrow) is not None


def test_the_watched_namespaces_are_those_the_allow_list_names() -> None:
    assert k.allowed_namespaces(["*", "kubernetes:shop/*", "kubernetes:pay/api-*", "kubernetes:dev-*/x",
                                 "docker:shop", "kubernetes:shop/web"]) == ("shop", "pay")


def pod(uid: str = "u1", *, ready: str = "", running: str = "", exited: tuple[str, int] | None = None,
        labels: dict[str, str] | None = None, owner: str = "web-5d8f7", **meta: Any) -> Pod:
    state = None
    if running:
        state = ContainerState(running=ContainerStateRunning(startedAt=datetime.fromisoformat(running)))
    if exited:
        state = ContainerState(terminated=ContainerStateTerminated(
            exitCode=exited[1], finishedAt=datetime.fromisoformat(exited[0])))
    statuses = [ContainerStatus(name="web", image="web:1", imageID="", ready=bool(ready), restartCount=0,
                                state=state)] if state else []
    conditions = [PodCondition(type="Ready", status="True" if ready else "False",
                               lastTransitionTime=datetime.fromisoformat(ready or "2026-12-05T10:00:00+00:00"))]
    return Pod(metadata=ObjectMeta(name=f"web-5d8f7-{uid}", uid=uid, labels=labels or {"pod-template-hash": "5d8f7"},
                                   ownerReferences=[OwnerReference(apiVersion="apps/v1", kind="ReplicaSet", name=owner,
                                                                   uid="rs")], **meta),
               status=PodStatus(phase="Running", containerStatuses=statuses, conditions=conditions))


def test_a_pods_service_is_its_name_label_else_app_label_else_its_deployment() -> None:
    assert k.service_of(pod(labels={"app.kubernetes.io/name": "checkout", "app": "x"})) == "checkout"
    assert k.service_of(pod(labels={"app": "cart"})) == "cart"
    assert k.service_of(pod()) == "web", "the ReplicaSet's name less the template hash"


def test_a_pods_changes_are_platform_events_each_told_apart_by_when_it_changed() -> None:
    began, later = "2026-12-05T10:00:01+00:00", "2026-12-05T10:00:09+00:00"
    pending = k.PodState.of(pod())
    up = k.PodState.of(pod(running=began, ready=began))
    events = pending.changes(up, at=1.0)
    assert [(e.event_type, e.instance, e.details.get("state")) for e in events] == [
        ("process_started", "u1", "running"), ("pod_ready", "u1", "ready")]
    assert events[0].service == "web" and events[0].details["pod"] == "web-5d8f7-u1"
    assert up.changes(k.PodState.of(pod(running=began, ready=began)), at=2.0) == [], "no change, no event"
    failed = k.PodState.of(pod(exited=(later, 1), ready=later))
    failed.ready = (False, later)
    exits = up.changes(failed, at=3.0)
    assert [(e.event_type, e.details.get("exit_status")) for e in exits] == [("process_exited", "1"),
                                                                             ("pod_not_ready", None)]
    gone = failed.changes(failed, at=4.0, deleted=True)
    assert [(e.event_type, e.details["state"]) for e in gone] == [("process_exited", "deleted")]
    identities = {e.identity for e in [*events, *exits, *gone]}
    assert len(identities) == 5, "each change its own identity, the same for every agent that sees it"
    restarted = k.PodState.of(pod(running=later, ready=began))
    assert [e.identity for e in up.changes(restarted, at=5.0)] == [f"web/u1/process_started/{later}"], \
        "a container started again is a new event of the same incarnation"


def test_deleted_and_finished_pods_are_not_chosen() -> None:
    assert k._alive(pod())
    assert not k._alive(pod(deletionTimestamp=datetime.now(UTC)))
    done = pod()
    done.status.phase = "Succeeded"
    assert not k._alive(done)


def test_its_settings_group_takes_lists_as_json_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.settings import Settings

    monkeypatch.setenv("COORDINATOR_ALLOWED_TARGETS", '["web", "kubernetes:shop/*"]')
    assert SPEC.settings_of(Settings()).namespaces == ("shop",), "by default, the namespaces the allow-list names"
    monkeypatch.setenv("COORDINATOR_DRIVERS__KUBERNETES__NAMESPACES", '["shop", "cart"]')
    monkeypatch.setenv("COORDINATOR_DRIVERS__KUBERNETES__SETTLE_S", "5")
    group = SPEC.settings_of(Settings())
    assert (group.namespaces, group.settle_s) == (("shop", "cart"), 5.0)
