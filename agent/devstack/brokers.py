"""The local stack's Kafka: one KRaft node, or a cluster of three (``devstack up --brokers 3``).

Every node is broker and controller at once; the controllers form one quorum (static voters), so
a three-node cluster survives the loss of any one node. Node 1 is the part ``kafka`` (ports
``kafka``, ``kafka_controller``, ``kafka_mtls``), node N the part ``kafka-N`` (ports ``kafka-N``,
``kafka-N_controller``, ``kafka-N_mtls``). With three nodes, internal topics have three replicas and
need two in sync; ``topics apply`` gives the contract's topics the same (docs/connecting.md).

A secured stack (``--secure``) listens only on TLS: SASL_SSL with SCRAM on the client port, mTLS
on a second port, the brokers' own traffic over mTLS; the controller listener stays plaintext on
loopback.
"""

from __future__ import annotations

from pathlib import Path

from agent.devstack.secure import Material

MAX_BROKERS = 3


def nodes(brokers: int) -> tuple[str, ...]:
    """The parts of a stack's Kafka: ``kafka``, ``kafka-2``, ``kafka-3``."""
    return ("kafka", *(f"kafka-{i}" for i in range(2, brokers + 1)))


def node_id(node: str) -> int:
    return 1 if node == "kafka" else int(node.rpartition("-")[2])


def is_node(name: str) -> bool:
    return name == "kafka" or (name.startswith("kafka-") and name.rpartition("-")[2].isdigit())


def port_names(brokers: int) -> tuple[str, ...]:
    """Every port the stack's Kafka needs (the mTLS ones are kept whether used or not)."""
    return tuple(f"{node}{kind}" for node in nodes(brokers) for kind in ("", "_controller", "_mtls"))


def properties(node: str, brokers: int, ports: dict[str, int], data: Path, material: Material | None) -> str:
    """server.properties of one node."""
    voters = ",".join(f"{node_id(n)}@127.0.0.1:{ports[n + '_controller']}" for n in nodes(brokers))
    port, controller, mtls = ports[node], ports[node + "_controller"], ports[node + "_mtls"]
    replicas, in_sync = min(3, brokers), (2 if brokers >= 3 else 1)
    lines = [
        "process.roles=broker,controller",
        f"node.id={node_id(node)}",
        f"controller.quorum.voters={voters}",
        "controller.listener.names=CONTROLLER",
    ]
    if material is None:
        lines += [
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        ]
    else:
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        lines += [
            f"listeners=SASL_SSL://127.0.0.1:{port},SSL://127.0.0.1:{mtls},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{port},SSL://127.0.0.1:{mtls}",
            "inter.broker.listener.name=SSL",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256",
            f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}",
            f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram}",
            "listener.name.ssl.ssl.client.auth=required",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={material.server_pem}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={material.ca}",
        ]
    lines += [
        f"log.dirs={data}",
        "num.partitions=3",
        f"default.replication.factor={replicas}",
        f"offsets.topic.replication.factor={replicas}",
        "offsets.topic.num.partitions=3",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={in_sync}",
        "transaction.state.log.num.partitions=1",
        f"share.coordinator.state.topic.replication.factor={replicas}",
        f"share.coordinator.state.topic.min.isr={in_sync}",
        "group.initial.rebalance.delay.ms=0",
        "log.cleaner.dedupe.buffer.size=2097152",
        "num.network.threads=2",
        "num.io.threads=2",
        "num.recovery.threads.per.data.dir=1",
        "log.retention.hours=24",
        "auto.create.topics.enable=false",
    ]
    return "\n".join(lines) + "\n"
