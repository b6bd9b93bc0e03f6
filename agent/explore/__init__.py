"""``coordinator explore``: random fault schedules from a seed, run as ordinary scenario requests, and
the first failing one shrunk to the smallest schedule that still fails (docs/explore.md).

- ``space``: the ``Exploration`` document, validated with positions; a schedule rendered as a scenario;
- ``schedule``: schedules drawn from a seed, their size, the candidates one step smaller;
- ``explorer``: search, confirm (k of n), shrink, halt; what ran, as a report;
- ``kafka``: runs as scenario requests over Kafka; the ``ExplorationResult`` event;
- ``report``: the report as JSON and as one HTML file.
"""

from agent.explore.explorer import Explorer, Outcome, Report, Runner
from agent.explore.kafka import KafkaRunner
from agent.explore.space import Exploration, Space, load_exploration, load_exploration_file

__all__ = ["Exploration", "Explorer", "KafkaRunner", "Outcome", "Report", "Runner", "Space", "load_exploration",
           "load_exploration_file"]
