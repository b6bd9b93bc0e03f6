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


def _messages() -> dict[str, dict]:
    doc = yaml.safe_load((ROOT / "topics" / "asyncapi.yaml").read_text())
    return {n: m for n, m in doc["components"]["messages"].items() if "x-protobuf-message" in m}


def test_the_payload_schemas_are_generated_from_the_protos_and_current() -> None:
    done = subprocess.run([sys.executable, "scripts/gen_schemas.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_example_is_a_real_message_in_its_json_encoding_and_fits_its_schema() -> None:
    import json

    import jsonschema
    from google.protobuf import json_format

    messages = _messages()
    assert len(messages) == 8
    for name, message in messages.items():
        schema = json.loads((ROOT / "topics" / message["payload"]["$ref"]).read_text())
        [example] = message["examples"]
        proto = descriptor_pool.Default().FindMessageTypeByName(message["x-protobuf-message"])
        parsed = json_format.ParseDict(example["payload"], events_pb2.__dict__[proto.name]())  # a real message
        jsonschema.validate(example["payload"], schema)
        # and what the codec really writes fits the schema too
        written = json.loads(json_format.MessageToJson(parsed, preserving_proto_field_name=name == "AuditEvent"))
        jsonschema.validate(written, schema)


def test_the_official_asyncapi_parser_reads_the_contract_and_refuses_a_broken_one(tmp_path: Path) -> None:
    from agent.devstack.install import ensure_asyncapi_check

    check = ensure_asyncapi_check()
    done = subprocess.run([*check, str(ROOT / "topics" / "asyncapi.yaml")], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "parsed: Chaos coordinator events" in done.stdout
    assert not [line for line in done.stdout.splitlines() if line.startswith(("error", "warning"))], done.stdout
    broken = tmp_path / "asyncapi.yaml"
    broken.write_text((ROOT / "topics" / "asyncapi.yaml").read_text().replace(
        "$ref: '#/components/messages/ChaosEvent'", "$ref: '#/components/messages/ChaosEvnt'"))
    (tmp_path / "schemas").symlink_to(ROOT / "topics" / "schemas")
    refused = subprocess.run([*check, str(broken)], capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 1 and "ChaosEvnt" in refused.stdout, refused.stdout
