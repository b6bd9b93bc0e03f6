"""The local stack used by the demo, the tests and developers: real Kafka, Redis and Toxiproxy."""

from agent.devstack.install import ensure_all
from agent.devstack.stack import COMPONENTS, ComponentStatus, Stack, default_dir

__all__ = ["COMPONENTS", "ComponentStatus", "Stack", "default_dir", "ensure_all"]
