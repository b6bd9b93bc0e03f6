"""The contracts hold together: generated code is current, protos follow buf STANDARD naming, and
the topics document names real messages and the configured topics."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from google.protobuf import descriptor_pool

from agent import topics
from agent._proto.coordinator.v1 import coordinator_service_pb2, events_pb2
from agent.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_protos() -> None:
    done = subprocess.run([sys.executable, "scripts/gen_proto.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_enums_start_with_a_prefixed_unspecified_zero_value() -> None:
    for file in (events_pb2.DESCRIPTOR, coordinator_service_pb2.DESCRIPTOR):
        for enum in file.enum_types_by_name.values():
            prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
            assert enum.values[0].number == 0
            assert enum.values[0].name == f"{prefix}UNSPECIFIED", enum.name
            for value in enum.values:
                assert value.name.startswith(prefix), value.name


def test_rpcs_take_a_request_and_return_a_response_of_their_own_name() -> None:
    service = coordinator_service_pb2.DESCRIPTOR.services_by_name["CoordinatorService"]
    assert service.full_name == "coordinator.v1.CoordinatorService"
    for method in service.methods:
        assert method.input_type.name == f"{method.name}Request"
        assert method.output_type.name == f"{method.name}Response"


def test_every_proto_file_lives_in_its_package_directory() -> None:
    for path in (ROOT / "proto").rglob("*.proto"):
        text = path.read_text()
        package = re.search(r"^package ([\w.]+);", text, re.MULTILINE)
        assert package, path
        assert path.parent.relative_to(ROOT / "proto").as_posix() == package.group(1).replace(".", "/")


def test_topics_contract_names_every_configured_topic_and_real_messages() -> None:
    defaults = Settings().topics
    specs = topics.load_contract(settings=Settings())
    assert {s.name for s in specs} == set(defaults.by_channel().values())
    pool = descriptor_pool.Default()
    for spec in specs:
        assert spec.partitions >= 1
        for message in spec.messages:
            if message == "DeadLetter":
                continue
            assert pool.FindMessageTypeByName(message), message


def test_topics_contract_is_asyncapi_3_with_cloudevents_headers_on_every_payload() -> None:
    doc = yaml.safe_load((ROOT / "topics" / "asyncapi.yaml").read_text())
    assert doc["asyncapi"].startswith("3.")
    required = set(doc["components"]["messageTraits"]["CloudEvent"]["headers"]["required"])
    assert required == {"ce_id", "ce_type", "ce_source", "ce_specversion", "ce_time", "content-type"}
    assert "correlation-id" in doc["components"]["messageTraits"]["CloudEvent"]["headers"]["properties"]
    for name, message in doc["components"]["messages"].items():
        assert "key" in message["bindings"]["kafka"], name
        if name != "DeadLetter":
            assert message["traits"][0]["$ref"].endswith("/CloudEvent"), name
    # co-processed topics must have equal partition counts (the stream worker joins them)
    channels = doc["channels"]
    joined = {"chaosEvents", "auditEvents", "verdicts"}
    assert len({channels[c]["bindings"]["kafka"]["partitions"] for c in joined}) == 1


def test_renamed_topics_are_created_under_their_configured_names() -> None:
    settings = Settings(topics={"audit_events": "sut.audit.v2"})
    names = {s.channel: s.name for s in topics.load_contract(settings=settings)}
    assert names["auditEvents"] == "sut.audit.v2"
