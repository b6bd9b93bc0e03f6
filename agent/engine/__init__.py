"""The engine: requests in, executions run, one result out per request.

- ``engine``: ``Engine``, the collaborators built in one place and the command/query API every
  caller uses (Kafka ingress, gRPC, the CLI).
- ``service``: ``coordinator serve``, the engine behind Kafka, HTTP and gRPC, its parts supervised.
- ``execution``: one run of a scenario, step by step, to its result.
- ``faults``: leases, injections, reverts and reconciliation of orphaned faults.
- ``publisher``: the chaos events, progress, results and dead letters the engine sends.
- ``views``: executions as the API shows them, and their updates read back from Kafka.
"""

from agent.engine.engine import Engine

__all__ = ["Engine"]
