"""Names shared across the agent: header names and Redis key layout.

Topic names live in :class:`agent.settings.TopicNames` (configurable); Redis keys are built here
from the configured prefix so every key the agent writes is listed in one place.
"""

from __future__ import annotations

#: the one documented correlation header, on every event tied to an injection
CORRELATION_HEADER = "correlation-id"
#: the W3C trace context header (https://www.w3.org/TR/trace-context/), on events an execution sends
TRACEPARENT = "traceparent"
#: on a result: the correlation ids of its injections, comma-separated
CORRELATION_IDS_HEADER = "correlation-ids"
TRACEPARENT_HEADER = "traceparent"
#: on a verdict decided by audit rows: when the worker's stages handled the deciding rows, epoch
#: seconds, ``fetched=..,routed=..,judged=..,published=..`` (read by bench/worker_throughput.py)
STAGES_HEADER = "coordinator-stages"

#: dead-letter headers, next to the untouched original key, value and headers
DLQ_REASON_HEADER = "dlq-reason"
DLQ_ERROR_HEADER = "dlq-error"
DLQ_SOURCE_TOPIC_HEADER = "dlq-source-topic"
DLQ_SOURCE_PARTITION_HEADER = "dlq-source-partition"
DLQ_SOURCE_OFFSET_HEADER = "dlq-source-offset"
#: on a dead letter whose original was too large to copy whole: its size in bytes and SHA-256 (hex)
DLQ_ORIGINAL_SIZE_HEADER = "dlq-original-size"
DLQ_ORIGINAL_SHA256_HEADER = "dlq-original-sha256"

#: the ecosystem's service registry layout (a hash per service)
REGISTRY_SERVICE_KEY = "registry:services:{name}"


def redis_key(prefix: str, *parts: str) -> str:
    """``redis_key("coordinator", "lease", cid)`` -> ``"coordinator:lease:<cid>"``."""
    return ":".join([prefix, *parts])
