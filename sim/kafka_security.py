"""How the sim's services reach Kafka: the brokers and the same security options the agent takes,
from ``SIM_KAFKA_*`` in the environment (the sim does not import the agent):

``SIM_KAFKA_SECURITY_PROTOCOL`` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), ``SIM_KAFKA_SASL_MECHANISM``
(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), ``SIM_KAFKA_SASL_USERNAME``, ``SIM_KAFKA_SASL_PASSWORD``,
``SIM_KAFKA_SSL_CAFILE``, ``SIM_KAFKA_SSL_CERTFILE``, ``SIM_KAFKA_SSL_KEYFILE`` (PEM files).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any

#: the environment names of the settings, in the order they are documented
NAMES = ("SIM_KAFKA_SECURITY_PROTOCOL", "SIM_KAFKA_SASL_MECHANISM", "SIM_KAFKA_SASL_USERNAME",
         "SIM_KAFKA_SASL_PASSWORD", "SIM_KAFKA_SSL_CAFILE", "SIM_KAFKA_SSL_CERTFILE", "SIM_KAFKA_SSL_KEYFILE")


def options(bootstrap: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """aiokafka's connection options for ``bootstrap`` under these settings."""
    env = os.environ if env is None else env
    protocol = env.get("SIM_KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT"
    out: dict[str, Any] = {"bootstrap_servers": bootstrap, "security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=env.get("SIM_KAFKA_SSL_CAFILE") or None)
        if env.get("SIM_KAFKA_SSL_CERTFILE"):
            context.load_cert_chain(env["SIM_KAFKA_SSL_CERTFILE"], env.get("SIM_KAFKA_SSL_KEYFILE") or None)
        out["ssl_context"] = context
    if protocol.startswith("SASL_"):
        out.update(sasl_mechanism=env.get("SIM_KAFKA_SASL_MECHANISM") or "PLAIN",
                   sasl_plain_username=env.get("SIM_KAFKA_SASL_USERNAME", ""),
                   sasl_plain_password=env.get("SIM_KAFKA_SASL_PASSWORD", ""))
    return out


def from_agent(env: Mapping[str, str]) -> dict[str, str]:
    """The sim's settings from the agent's (``COORDINATOR_KAFKA__*``), so one stack's environment
    serves both."""
    out = {}
    for name in NAMES:
        value = env.get("COORDINATOR_KAFKA__" + name.removeprefix("SIM_KAFKA_"))
        if value:
            out[name] = value
    return out
