"""A small simulated trading ecosystem for the coordinator to break: trading engine, risk monitor,
exchange and a load generator, each a real process (gRPC, HTTP health, Kafka, Redis registry, audit
events). It stands for the user's system and shares no code with ``agent``.
"""
