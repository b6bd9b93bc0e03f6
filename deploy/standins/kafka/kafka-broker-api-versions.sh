#!/bin/sh
# Kafka's own tool (kafka-tools 4.1.1), as the official image's script runs it.
exec java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp '/opt/kafka/libs/*' \
    org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
