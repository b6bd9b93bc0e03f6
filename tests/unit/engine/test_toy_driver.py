"""A driver is one module: this file is the whole of a toy driver (selector, faults with their
parameters, rollback action, settings group, the driver itself) and its registration; with that
alone, scenarios can name it, are validated against its models, plan with it, and run through the
engine on in-memory parts."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from pydantic import Field

from agent import codec, drivers
from agent._proto.coordinator.v1 import events_pb2 as S
from agent.drivers.base import DriverSpec, FaultDriver, FaultKind, FaultRequest
from agent.engine import Engine
from agent.errors import ScenarioError
from agent.fields import Duration, NoParameters, Strict
from agent.scenario import load_scenario, plan
from agent.scenario.schema import scenario_schema
from agent.settings import Settings
from agent.testing import MemoryPublisher, MemoryStore


# -- the toy driver: lamps that can be dimmed or made to blink -------------------------------------------
class LampSelector(Strict):
    lamp: str = Field(pattern=r"^[a-z]+$")


class DimParameters(Strict):
    level: int = Field(ge=0, le=100)
    fade: Duration = 0.0


@dataclass(frozen=True)
class LampSettings:
    house: str
    bulbs: int = 1  # set by COORDINATOR_DRIVERS__LAMPS__BULBS


LAMPS: dict[str, int] = {}  # the "backend": lamp -> brightness
LOG: list[str] = []


class LampDriver(FaultDriver):
    name = "lamps"
    settings: LampSettings

    def recipe(self, request: FaultRequest) -> dict[str, Any]:
        return {"lamp": request.selector["lamp"], "level": LAMPS.get(request.selector["lamp"], 100)}

    async def inject(self, request: FaultRequest) -> dict[str, Any]:
        lamp = request.selector["lamp"]
        if request.fault == "dim":
            LAMPS[lamp] = request.parameters["level"]
        LOG.append(f"{request.fault} {lamp} in {self.settings.house}")
        return {"lamp": lamp, "level": LAMPS.get(lamp, 100)}

    async def revert(self, recipe: dict[str, Any]) -> None:
        LAMPS[recipe["lamp"]] = recipe["level"]
        LOG.append(f"revert {recipe['lamp']}")

    async def rollback(self, action: str, selector: dict[str, Any]) -> None:
        LAMPS[selector["lamp"]] = 100
        LOG.append(f"{action} {selector['lamp']}")


SPEC = DriverSpec(
    name="lamps", selector=LampSelector, factory=LampDriver, rollbacks=("lights-on",),
    configure=lambda settings: LampSettings(house=settings.instance_id),
    faults=(FaultKind("dim", DimParameters, True, summary="dim a lamp"),
            FaultKind("blink", NoParameters, False, summary="blink once")),
)


SCENARIO = """\
apiVersion: coordinator/v1
kind: Scenario
metadata: {name: dim-the-hall}
spec:
  targets:
    hall: {driver: lamps, selector: {lamp: hall}}
  steps:
    - {name: dim, fault: dim, target: hall, duration: 0.05s, parameters: {level: 10}}
    - {name: flash, fault: blink, target: hall}
  rollbacks:
    strategy: always
    actions: [{name: back-on, action: lights-on, target: hall}]
"""


def test_a_registered_driver_is_part_of_the_scenario_language(lamps: None) -> None:
    scenario = load_scenario(SCENARIO, "hall.yaml")
    steps = plan(scenario)
    assert [(p.kind, p.name, p.duration) for p in steps] == [("fault", "dim", 0.05), ("fault", "flash", 0.0)]
    assert [s.fault for s in scenario.fault_steps()] == ["dim", "blink"]
    with pytest.raises(ScenarioError) as caught:
        load_scenario(SCENARIO.replace("level: 10", "level: 300").replace("lamp: hall", "lamp: Hall")
                      .replace("lights-on", "lights-off"), "hall.yaml")
    problems = {i.path: i.message for i in caught.value.issues}
    assert set(problems) == {"spec.targets.hall.selector.lamp", "spec.steps[0].parameters.level",
                             "spec.rollbacks.actions[0].action"}, problems
    assert "lights-on" in problems["spec.rollbacks.actions[0].action"]
    assert "lamps" in json.dumps(scenario_schema()), "editors learn the new driver from the JSON Schema"


def test_without_registration_the_driver_is_unknown_and_named_as_such() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(SCENARIO, "hall.yaml")
    messages = [i.message for i in caught.value.issues]
    assert any("unknown driver 'lamps'" in m for m in messages), messages


def test_a_fault_name_two_drivers_share_must_mean_the_same_kind_of_fault() -> None:
    class Timed(Strict):
        signal: int = 9

    with pytest.raises(ValueError, match=r"fault 'kill' of driver 'supervisor' is instantaneous, this one lasting"):
        drivers.register(DriverSpec(name="other", selector=LampSelector, factory=LampDriver,
                                    faults=(FaultKind("kill", NoParameters, True),)))
    with pytest.raises(ValueError, match=r"fault 'kill': parameter 'signal' has another type in driver"):
        drivers.register(DriverSpec(name="other", selector=LampSelector, factory=LampDriver,
                                    faults=(FaultKind("kill", Timed, False),)))
    assert "other" not in drivers.specs()
    for spec in drivers.specs().values():  # the built-in drivers share restart, kill, stop and pause
        for other in drivers.specs().values():
            for mine in spec.faults:
                for theirs in other.faults:
                    assert spec is other or mine.name != theirs.name or drivers._clash(mine, theirs) is None


async def run_inline(engine: Engine, scenario: str) -> MemoryPublisher:
    """Run ``scenario`` (YAML) as a request, to its end; what the engine published."""
    out = codec.encode_event(S.ScenarioRequest(request_id="r-1", scenario_yaml=scenario), key="r-1", source="/test")
    await engine.accept(ConsumerRecord("requests", 0, 0, int(time.time() * 1000), 0, None, out.value, None, 0,
                                       len(out.value), list(out.headers)))
    await asyncio.gather(*(r.task for r in list(engine.running.values()) if r.task is not None))
    return engine.publisher  # type: ignore[return-value]


async def test_the_engine_runs_the_new_drivers_faults_with_leases_and_reverts(engine: Engine) -> None:
    publisher = await run_inline(engine, SCENARIO)
    assert [r.status for r in publisher.results] == [S.EXECUTION_STATUS_PASSED], publisher.results[0].reason
    assert LOG == ["dim hall in house-7", "revert hall", "blink hall in house-7", "revert hall", "lights-on hall"]
    assert LAMPS == {"hall": 100}
    kinds = [(e.fault, S.ChaosEventType.Name(e.type)) for e in publisher.chaos_events]
    assert kinds == [("dim", "CHAOS_EVENT_TYPE_INJECTED"), ("dim", "CHAOS_EVENT_TYPE_REVERTED"),
                     ("blink", "CHAOS_EVENT_TYPE_INJECTED"), ("blink", "CHAOS_EVENT_TYPE_REVERTED")]


def test_the_allow_list_applies_a_drivers_entries_through_what_it_says_it_touches(lamps: None) -> None:
    from dataclasses import replace

    from agent.scenario.checks import refused_by_allow_list

    assert refused_by_allow_list("hall", "lamps", {"lamp": "hall"}, ["hall"]) is None, "no lamps: entry to apply"
    silent = refused_by_allow_list("hall", "lamps", {"lamp": "cellar"}, ["hall", "lamps:hall-*"])
    assert silent is not None and "driver 'lamps' does not say what a selector touches" in silent
    unknown = refused_by_allow_list("hall", "candles", {"candle": "x"}, ["*"])
    assert unknown is not None and "driver 'candles' is not a driver this agent has" in unknown

    drivers.unregister("lamps")
    drivers.register(replace(SPEC, touches=lambda selector: [f"lamp-{selector['lamp']}"]))
    assert refused_by_allow_list("hall", "lamps", {"lamp": "hall"}, ["hall", "lamps:lamp-h*"]) is None
    refused = refused_by_allow_list("hall", "lamps", {"lamp": "cellar"}, ["hall", "lamps:lamp-h*"])
    assert refused is not None and "lamps 'lamp-cellar' is not in the agent's allow-list" in refused


async def test_a_rollback_is_refused_for_a_target_the_allow_list_does_not_admit(lamps: None) -> None:
    from agent.drivers import DriverRegistry
    from agent.engine.faults import FaultManager
    from agent.errors import TargetRefused

    scenario = load_scenario(SCENARIO.replace("hall: {driver: lamps, selector: {lamp: hall}}",
                                              "hall: {driver: lamps, selector: {lamp: hall}}\n"
                                              "    cellar: {driver: lamps, selector: {lamp: cellar}}")
                             .replace("action: lights-on, target: hall", "action: lights-on, target: cellar"),
                             "hall.yaml")
    [action] = scenario.spec.rollbacks.actions
    for allowed, outcome in ((["hall"], "refused"), (["hall", "cellar"], "ran")):
        settings = Settings(instance_id="house-7", allowed_targets=allowed)
        faults = FaultManager(settings, MemoryStore(), DriverRegistry(settings), MemoryPublisher(), "agent-a/1")  # type: ignore[arg-type]
        LOG.clear()
        try:
            await faults.rollback(scenario, action)
        except TargetRefused as exc:
            assert outcome == "refused" and "target 'cellar' is not in the agent's allow-list" in str(exc)
            assert LOG == [], "the driver was never called"
        else:
            assert outcome == "ran" and LOG == ["lights-on cellar"]


def test_the_drivers_settings_group_is_read_from_its_own_environment_names(
    lamps: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group is the driver's: its fields come from COORDINATOR_DRIVERS__LAMPS__*, typed by it,
    over what its ``configure`` takes from the agent's settings; nothing was added to settings.py."""
    from agent.drivers import DriverRegistry
    from agent.errors import ConfigError

    monkeypatch.setenv("COORDINATOR_DRIVERS__LAMPS__BULBS", "4")
    made = DriverRegistry(Settings(instance_id="villa")).get("lamps")
    assert made.settings == LampSettings(house="villa", bulbs=4)
    assert DriverRegistry(Settings(drivers={"lamps": {"house": "barn"}})).get("lamps").settings.house == "barn"
    monkeypatch.delenv("COORDINATOR_DRIVERS__LAMPS__BULBS")
    assert DriverRegistry(Settings()).get("lamps").settings.bulbs == 1

    monkeypatch.setenv("COORDINATOR_DRIVERS__LAMPS__WATTS", "60")
    with pytest.raises(ConfigError, match=r"COORDINATOR_DRIVERS__LAMPS__WATTS: the lamps driver has no "
                                          r"setting 'watts'; it has: bulbs, house"):
        DriverRegistry(Settings()).get("lamps")
    monkeypatch.delenv("COORDINATOR_DRIVERS__LAMPS__WATTS")
    monkeypatch.setenv("COORDINATOR_DRIVERS__LAMPS__BULBS", "many")
    with pytest.raises(ConfigError, match=r"COORDINATOR_DRIVERS__LAMPS__BULBS: .*integer.*'many'"):
        DriverRegistry(Settings()).get("lamps")


def test_a_built_in_driver_takes_its_group_from_the_flat_names_and_from_its_own() -> None:
    from agent.drivers import DriverRegistry

    built = DriverRegistry(Settings(toxiproxy_url="http://a:1", drivers={"docker": {"tls_verify": "false"}}))
    assert built.get("toxiproxy").settings.url == "http://a:1"
    assert built.get("docker").settings.tls_verify is False
