"""The scenario language: models, safe loading, validation, catalog and dry-run plans."""

from agent.scenario.catalog import Catalog, Entry, default_directories
from agent.scenario.faults import FAULTS
from agent.scenario.models import API_VERSION, Expectation, FaultStep, Scenario, scenario_model
from agent.scenario.plan import plan, render
from agent.scenario.validation import check_text, load_scenario, load_scenario_file

__all__ = [
    "API_VERSION",
    "FAULTS",
    "Catalog",
    "Entry",
    "Expectation",
    "FaultStep",
    "Scenario",
    "check_text",
    "default_directories",
    "load_scenario",
    "load_scenario_file",
    "plan",
    "render",
    "scenario_model",
]
