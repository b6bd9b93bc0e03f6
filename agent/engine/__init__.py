"""The engine: requests in, executions run, one result out per request. The process that serves it
behind Kafka, HTTP and gRPC (``agent.service``) sits above this package: nothing here imports it.

- ``engine``: ``Engine``, the collaborators built in one place and the command/query API every
  caller uses (Kafka ingress, gRPC, the CLI).
- ``execution``: one run of a scenario, step by step, to its result.
- ``faults``: leases, injections, reverts and reconciliation of orphaned faults.
- ``publisher``: the chaos events, progress, results and dead letters the engine sends.
- ``views``: executions as the API shows them, and their updates read back from Kafka.
"""

from agent.engine.engine import Engine

__all__ = ["Engine"]
