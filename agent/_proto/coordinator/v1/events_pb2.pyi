import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATUS_UNSPECIFIED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_PENDING: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_RUNNING: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_PASSED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_FAILED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_ERROR: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_ABORTED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_REJECTED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_TIMED_OUT: _ClassVar[ExecutionStatus]

class ChaosEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHAOS_EVENT_TYPE_UNSPECIFIED: _ClassVar[ChaosEventType]
    CHAOS_EVENT_TYPE_INJECTED: _ClassVar[ChaosEventType]
    CHAOS_EVENT_TYPE_REVERTED: _ClassVar[ChaosEventType]
    CHAOS_EVENT_TYPE_REVERT_FAILED: _ClassVar[ChaosEventType]

class Attribution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTRIBUTION_UNSPECIFIED: _ClassVar[Attribution]
    ATTRIBUTION_CORRELATION_ID: _ClassVar[Attribution]
    ATTRIBUTION_TARGET_WINDOW: _ClassVar[Attribution]
    ATTRIBUTION_ANY: _ClassVar[Attribution]
    ATTRIBUTION_WINDOW: _ClassVar[Attribution]

class ExpectationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPECTATION_KIND_UNSPECIFIED: _ClassVar[ExpectationKind]
    EXPECTATION_KIND_APPEARS: _ClassVar[ExpectationKind]
    EXPECTATION_KIND_ABSENT: _ClassVar[ExpectationKind]
    EXPECTATION_KIND_COUNT: _ClassVar[ExpectationKind]
    EXPECTATION_KIND_ORDER: _ClassVar[ExpectationKind]
    EXPECTATION_KIND_TIME_TO_RECOVER: _ClassVar[ExpectationKind]
    EXPECTATION_KIND_STABLE: _ClassVar[ExpectationKind]

class VerdictStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_STATUS_UNSPECIFIED: _ClassVar[VerdictStatus]
    VERDICT_STATUS_PASSED: _ClassVar[VerdictStatus]
    VERDICT_STATUS_FAILED: _ClassVar[VerdictStatus]
    VERDICT_STATUS_INCONCLUSIVE: _ClassVar[VerdictStatus]

class JournalEntryStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOURNAL_ENTRY_STATUS_UNSPECIFIED: _ClassVar[JournalEntryStatus]
    JOURNAL_ENTRY_STATUS_RUNNING: _ClassVar[JournalEntryStatus]
    JOURNAL_ENTRY_STATUS_SUCCEEDED: _ClassVar[JournalEntryStatus]
    JOURNAL_ENTRY_STATUS_FAILED: _ClassVar[JournalEntryStatus]
    JOURNAL_ENTRY_STATUS_SKIPPED: _ClassVar[JournalEntryStatus]

class ExplorationOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPLORATION_OUTCOME_UNSPECIFIED: _ClassVar[ExplorationOutcome]
    EXPLORATION_OUTCOME_FAILURE_FOUND: _ClassVar[ExplorationOutcome]
    EXPLORATION_OUTCOME_NO_FAILURE: _ClassVar[ExplorationOutcome]
    EXPLORATION_OUTCOME_HALTED: _ClassVar[ExplorationOutcome]
    EXPLORATION_OUTCOME_ERROR: _ClassVar[ExplorationOutcome]
EXECUTION_STATUS_UNSPECIFIED: ExecutionStatus
EXECUTION_STATUS_PENDING: ExecutionStatus
EXECUTION_STATUS_RUNNING: ExecutionStatus
EXECUTION_STATUS_PASSED: ExecutionStatus
EXECUTION_STATUS_FAILED: ExecutionStatus
EXECUTION_STATUS_ERROR: ExecutionStatus
EXECUTION_STATUS_ABORTED: ExecutionStatus
EXECUTION_STATUS_REJECTED: ExecutionStatus
EXECUTION_STATUS_TIMED_OUT: ExecutionStatus
CHAOS_EVENT_TYPE_UNSPECIFIED: ChaosEventType
CHAOS_EVENT_TYPE_INJECTED: ChaosEventType
CHAOS_EVENT_TYPE_REVERTED: ChaosEventType
CHAOS_EVENT_TYPE_REVERT_FAILED: ChaosEventType
ATTRIBUTION_UNSPECIFIED: Attribution
ATTRIBUTION_CORRELATION_ID: Attribution
ATTRIBUTION_TARGET_WINDOW: Attribution
ATTRIBUTION_ANY: Attribution
ATTRIBUTION_WINDOW: Attribution
EXPECTATION_KIND_UNSPECIFIED: ExpectationKind
EXPECTATION_KIND_APPEARS: ExpectationKind
EXPECTATION_KIND_ABSENT: ExpectationKind
EXPECTATION_KIND_COUNT: ExpectationKind
EXPECTATION_KIND_ORDER: ExpectationKind
EXPECTATION_KIND_TIME_TO_RECOVER: ExpectationKind
EXPECTATION_KIND_STABLE: ExpectationKind
VERDICT_STATUS_UNSPECIFIED: VerdictStatus
VERDICT_STATUS_PASSED: VerdictStatus
VERDICT_STATUS_FAILED: VerdictStatus
VERDICT_STATUS_INCONCLUSIVE: VerdictStatus
JOURNAL_ENTRY_STATUS_UNSPECIFIED: JournalEntryStatus
JOURNAL_ENTRY_STATUS_RUNNING: JournalEntryStatus
JOURNAL_ENTRY_STATUS_SUCCEEDED: JournalEntryStatus
JOURNAL_ENTRY_STATUS_FAILED: JournalEntryStatus
JOURNAL_ENTRY_STATUS_SKIPPED: JournalEntryStatus
EXPLORATION_OUTCOME_UNSPECIFIED: ExplorationOutcome
EXPLORATION_OUTCOME_FAILURE_FOUND: ExplorationOutcome
EXPLORATION_OUTCOME_NO_FAILURE: ExplorationOutcome
EXPLORATION_OUTCOME_HALTED: ExplorationOutcome
EXPLORATION_OUTCOME_ERROR: ExplorationOutcome

class ScenarioRequest(_message.Message):
    __slots__ = ("request_id", "scenario_name", "scenario_yaml", "parameters", "requester", "labels", "dry_run", "requested_at", "baseline")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_NAME_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_YAML_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    scenario_name: str
    scenario_yaml: str
    parameters: _containers.MessageMap[str, _struct_pb2.Value]
    requester: str
    labels: _containers.ScalarMap[str, str]
    dry_run: bool
    requested_at: _timestamp_pb2.Timestamp
    baseline: BaselineGate
    def __init__(self, request_id: _Optional[str] = ..., scenario_name: _Optional[str] = ..., scenario_yaml: _Optional[str] = ..., parameters: _Optional[_Mapping[str, _struct_pb2.Value]] = ..., requester: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., dry_run: _Optional[bool] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., baseline: _Optional[_Union[BaselineGate, _Mapping]] = ...) -> None: ...

class BaselineGate(_message.Message):
    __slots__ = ("runs", "max_ratio")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    MAX_RATIO_FIELD_NUMBER: _ClassVar[int]
    runs: int
    max_ratio: float
    def __init__(self, runs: _Optional[int] = ..., max_ratio: _Optional[float] = ...) -> None: ...

class Expectation(_message.Message):
    __slots__ = ("name", "kind", "event_type", "service", "within", "min_count", "max_count", "sequence", "max_time_to_recover", "match", "attribution", "stable_for", "since", "down", "only_after", "kind_name", "rule")
    class MatchEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    WITHIN_FIELD_NUMBER: _ClassVar[int]
    MIN_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MAX_TIME_TO_RECOVER_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    STABLE_FOR_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    DOWN_FIELD_NUMBER: _ClassVar[int]
    ONLY_AFTER_FIELD_NUMBER: _ClassVar[int]
    KIND_NAME_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ExpectationKind
    event_type: str
    service: str
    within: _duration_pb2.Duration
    min_count: int
    max_count: int
    sequence: _containers.RepeatedScalarFieldContainer[str]
    max_time_to_recover: _duration_pb2.Duration
    match: _containers.ScalarMap[str, str]
    attribution: Attribution
    stable_for: _duration_pb2.Duration
    since: str
    down: _containers.RepeatedScalarFieldContainer[str]
    only_after: str
    kind_name: str
    rule: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ExpectationKind, str]] = ..., event_type: _Optional[str] = ..., service: _Optional[str] = ..., within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., min_count: _Optional[int] = ..., max_count: _Optional[int] = ..., sequence: _Optional[_Iterable[str]] = ..., max_time_to_recover: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., match: _Optional[_Mapping[str, str]] = ..., attribution: _Optional[_Union[Attribution, str]] = ..., stable_for: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., since: _Optional[str] = ..., down: _Optional[_Iterable[str]] = ..., only_after: _Optional[str] = ..., kind_name: _Optional[str] = ..., rule: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ChaosEvent(_message.Message):
    __slots__ = ("correlation_id", "type", "execution_id", "scenario_name", "step_name", "target", "service", "driver", "fault", "parameters", "injected_at", "reverted_at", "error", "expectations", "owner", "ended_instance", "touched", "arrived", "trace_id", "span_id")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_NAME_FIELD_NUMBER: _ClassVar[int]
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    INJECTED_AT_FIELD_NUMBER: _ClassVar[int]
    REVERTED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXPECTATIONS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    ENDED_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    TOUCHED_FIELD_NUMBER: _ClassVar[int]
    ARRIVED_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    type: ChaosEventType
    execution_id: str
    scenario_name: str
    step_name: str
    target: str
    service: str
    driver: str
    fault: str
    parameters: _struct_pb2.Struct
    injected_at: _timestamp_pb2.Timestamp
    reverted_at: _timestamp_pb2.Timestamp
    error: str
    expectations: _containers.RepeatedCompositeFieldContainer[Expectation]
    owner: str
    ended_instance: str
    touched: _containers.RepeatedScalarFieldContainer[str]
    arrived: _containers.RepeatedScalarFieldContainer[str]
    trace_id: str
    span_id: str
    def __init__(self, correlation_id: _Optional[str] = ..., type: _Optional[_Union[ChaosEventType, str]] = ..., execution_id: _Optional[str] = ..., scenario_name: _Optional[str] = ..., step_name: _Optional[str] = ..., target: _Optional[str] = ..., service: _Optional[str] = ..., driver: _Optional[str] = ..., fault: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., injected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reverted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., expectations: _Optional[_Iterable[_Union[Expectation, _Mapping]]] = ..., owner: _Optional[str] = ..., ended_instance: _Optional[str] = ..., touched: _Optional[_Iterable[str]] = ..., arrived: _Optional[_Iterable[str]] = ..., trace_id: _Optional[str] = ..., span_id: _Optional[str] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("id", "service_name", "event_type", "timestamp", "correlation_id", "trace_id", "span_id", "duration", "status", "metadata", "tags", "correlated_to", "payload", "instance")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CORRELATED_TO_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    service_name: str
    event_type: str
    timestamp: _timestamp_pb2.Timestamp
    correlation_id: str
    trace_id: str
    span_id: str
    duration: _duration_pb2.Duration
    status: str
    metadata: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    correlated_to: str
    payload: _struct_pb2.Struct
    instance: str
    def __init__(self, id: _Optional[str] = ..., service_name: _Optional[str] = ..., event_type: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., correlation_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., status: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., correlated_to: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., instance: _Optional[str] = ...) -> None: ...

class ExpectationVerdict(_message.Message):
    __slots__ = ("execution_id", "correlation_id", "expectation_name", "status", "reason", "expected", "observed", "injected_at", "deadline", "first_seen_at", "time_to_recover", "count", "late_evidence_at")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTATION_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    INJECTED_AT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_RECOVER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LATE_EVIDENCE_AT_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    correlation_id: str
    expectation_name: str
    status: VerdictStatus
    reason: str
    expected: str
    observed: str
    injected_at: _timestamp_pb2.Timestamp
    deadline: _timestamp_pb2.Timestamp
    first_seen_at: _timestamp_pb2.Timestamp
    time_to_recover: _duration_pb2.Duration
    count: int
    late_evidence_at: _timestamp_pb2.Timestamp
    def __init__(self, execution_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., expectation_name: _Optional[str] = ..., status: _Optional[_Union[VerdictStatus, str]] = ..., reason: _Optional[str] = ..., expected: _Optional[str] = ..., observed: _Optional[str] = ..., injected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., first_seen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_to_recover: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., count: _Optional[int] = ..., late_evidence_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Injection(_message.Message):
    __slots__ = ("correlation_id", "step_name", "target", "fault", "driver", "injected_at", "reverted_at", "final_state", "error", "reaction", "reacted", "touched", "arrived")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    INJECTED_AT_FIELD_NUMBER: _ClassVar[int]
    REVERTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINAL_STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REACTION_FIELD_NUMBER: _ClassVar[int]
    REACTED_FIELD_NUMBER: _ClassVar[int]
    TOUCHED_FIELD_NUMBER: _ClassVar[int]
    ARRIVED_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    step_name: str
    target: str
    fault: str
    driver: str
    injected_at: _timestamp_pb2.Timestamp
    reverted_at: _timestamp_pb2.Timestamp
    final_state: ChaosEventType
    error: str
    reaction: str
    reacted: bool
    touched: _containers.RepeatedScalarFieldContainer[str]
    arrived: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, correlation_id: _Optional[str] = ..., step_name: _Optional[str] = ..., target: _Optional[str] = ..., fault: _Optional[str] = ..., driver: _Optional[str] = ..., injected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reverted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., final_state: _Optional[_Union[ChaosEventType, str]] = ..., error: _Optional[str] = ..., reaction: _Optional[str] = ..., reacted: _Optional[bool] = ..., touched: _Optional[_Iterable[str]] = ..., arrived: _Optional[_Iterable[str]] = ...) -> None: ...

class JournalEntry(_message.Message):
    __slots__ = ("phase", "name", "status", "started_at", "ended_at", "output", "error")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    phase: str
    name: str
    status: JournalEntryStatus
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    output: str
    error: str
    def __init__(self, phase: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[_Union[JournalEntryStatus, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., output: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ExecutionProgress(_message.Message):
    __slots__ = ("execution_id", "request_id", "scenario_name", "status", "phase", "message", "entry", "at")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    request_id: str
    scenario_name: str
    status: ExecutionStatus
    phase: str
    message: str
    entry: JournalEntry
    at: _timestamp_pb2.Timestamp
    def __init__(self, execution_id: _Optional[str] = ..., request_id: _Optional[str] = ..., scenario_name: _Optional[str] = ..., status: _Optional[_Union[ExecutionStatus, str]] = ..., phase: _Optional[str] = ..., message: _Optional[str] = ..., entry: _Optional[_Union[JournalEntry, _Mapping]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ScenarioResult(_message.Message):
    __slots__ = ("execution_id", "request_id", "scenario_name", "status", "reason", "started_at", "ended_at", "injections", "verdicts", "journal", "requester", "labels", "dry_run", "trace_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    INJECTIONS_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    request_id: str
    scenario_name: str
    status: ExecutionStatus
    reason: str
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    injections: _containers.RepeatedCompositeFieldContainer[Injection]
    verdicts: _containers.RepeatedCompositeFieldContainer[ExpectationVerdict]
    journal: _containers.RepeatedCompositeFieldContainer[JournalEntry]
    requester: str
    labels: _containers.ScalarMap[str, str]
    dry_run: bool
    trace_id: str
    def __init__(self, execution_id: _Optional[str] = ..., request_id: _Optional[str] = ..., scenario_name: _Optional[str] = ..., status: _Optional[_Union[ExecutionStatus, str]] = ..., reason: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., injections: _Optional[_Iterable[_Union[Injection, _Mapping]]] = ..., verdicts: _Optional[_Iterable[_Union[ExpectationVerdict, _Mapping]]] = ..., journal: _Optional[_Iterable[_Union[JournalEntry, _Mapping]]] = ..., requester: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., dry_run: _Optional[bool] = ..., trace_id: _Optional[str] = ...) -> None: ...

class ExplorationResult(_message.Message):
    __slots__ = ("exploration_id", "name", "seed", "outcome", "reason", "started_at", "ended_at", "runs", "search_runs", "shrink_runs", "first_failure_run", "found_faults", "minimal_faults", "minimal_scenario_yaml", "execution_ids", "requester")
    EXPLORATION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_RUNS_FIELD_NUMBER: _ClassVar[int]
    SHRINK_RUNS_FIELD_NUMBER: _ClassVar[int]
    FIRST_FAILURE_RUN_FIELD_NUMBER: _ClassVar[int]
    FOUND_FAULTS_FIELD_NUMBER: _ClassVar[int]
    MINIMAL_FAULTS_FIELD_NUMBER: _ClassVar[int]
    MINIMAL_SCENARIO_YAML_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    exploration_id: str
    name: str
    seed: int
    outcome: ExplorationOutcome
    reason: str
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    runs: int
    search_runs: int
    shrink_runs: int
    first_failure_run: int
    found_faults: _containers.RepeatedScalarFieldContainer[str]
    minimal_faults: _containers.RepeatedScalarFieldContainer[str]
    minimal_scenario_yaml: str
    execution_ids: _containers.RepeatedScalarFieldContainer[str]
    requester: str
    def __init__(self, exploration_id: _Optional[str] = ..., name: _Optional[str] = ..., seed: _Optional[int] = ..., outcome: _Optional[_Union[ExplorationOutcome, str]] = ..., reason: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., runs: _Optional[int] = ..., search_runs: _Optional[int] = ..., shrink_runs: _Optional[int] = ..., first_failure_run: _Optional[int] = ..., found_faults: _Optional[_Iterable[str]] = ..., minimal_faults: _Optional[_Iterable[str]] = ..., minimal_scenario_yaml: _Optional[str] = ..., execution_ids: _Optional[_Iterable[str]] = ..., requester: _Optional[str] = ...) -> None: ...

class Schedule(_message.Message):
    __slots__ = ("name", "scenario_name", "scenario_yaml", "parameters", "interval", "cron", "jitter", "window_start", "window_end", "paused", "labels", "requester", "updated_at")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_NAME_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_YAML_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    JITTER_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    scenario_name: str
    scenario_yaml: str
    parameters: _containers.ScalarMap[str, str]
    interval: _duration_pb2.Duration
    cron: str
    jitter: _duration_pb2.Duration
    window_start: str
    window_end: str
    paused: bool
    labels: _containers.ScalarMap[str, str]
    requester: str
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., scenario_name: _Optional[str] = ..., scenario_yaml: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cron: _Optional[str] = ..., jitter: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., window_start: _Optional[str] = ..., window_end: _Optional[str] = ..., paused: _Optional[bool] = ..., labels: _Optional[_Mapping[str, str]] = ..., requester: _Optional[str] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
