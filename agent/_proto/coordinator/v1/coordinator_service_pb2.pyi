import datetime

from agent._proto.coordinator.v1 import events_pb2 as _events_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Execution(_message.Message):
    __slots__ = ("execution_id", "request_id", "scenario_name", "status", "started_at", "ended_at", "labels", "result")
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
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    request_id: str
    scenario_name: str
    status: _events_pb2.ExecutionStatus
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    labels: _containers.ScalarMap[str, str]
    result: _events_pb2.ScenarioResult
    def __init__(self, execution_id: _Optional[str] = ..., request_id: _Optional[str] = ..., scenario_name: _Optional[str] = ..., status: _Optional[_Union[_events_pb2.ExecutionStatus, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., result: _Optional[_Union[_events_pb2.ScenarioResult, _Mapping]] = ...) -> None: ...

class SubmitExecutionRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: _events_pb2.ScenarioRequest
    def __init__(self, request: _Optional[_Union[_events_pb2.ScenarioRequest, _Mapping]] = ...) -> None: ...

class SubmitExecutionResponse(_message.Message):
    __slots__ = ("execution_id", "request_id", "duplicate")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    request_id: str
    duplicate: bool
    def __init__(self, execution_id: _Optional[str] = ..., request_id: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class GetExecutionRequest(_message.Message):
    __slots__ = ("execution_id",)
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    def __init__(self, execution_id: _Optional[str] = ...) -> None: ...

class GetExecutionResponse(_message.Message):
    __slots__ = ("execution",)
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    execution: Execution
    def __init__(self, execution: _Optional[_Union[Execution, _Mapping]] = ...) -> None: ...

class ListExecutionsRequest(_message.Message):
    __slots__ = ("status", "scenario_name", "labels", "page_size", "page_token")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    status: _events_pb2.ExecutionStatus
    scenario_name: str
    labels: _containers.ScalarMap[str, str]
    page_size: int
    page_token: str
    def __init__(self, status: _Optional[_Union[_events_pb2.ExecutionStatus, str]] = ..., scenario_name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExecutionsResponse(_message.Message):
    __slots__ = ("executions", "next_page_token")
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    executions: _containers.RepeatedCompositeFieldContainer[Execution]
    next_page_token: str
    def __init__(self, executions: _Optional[_Iterable[_Union[Execution, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchExecutionRequest(_message.Message):
    __slots__ = ("execution_id",)
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    def __init__(self, execution_id: _Optional[str] = ...) -> None: ...

class WatchExecutionResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _events_pb2.ExecutionProgress
    result: _events_pb2.ScenarioResult
    def __init__(self, progress: _Optional[_Union[_events_pb2.ExecutionProgress, _Mapping]] = ..., result: _Optional[_Union[_events_pb2.ScenarioResult, _Mapping]] = ...) -> None: ...

class CancelExecutionRequest(_message.Message):
    __slots__ = ("execution_id", "reason")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    reason: str
    def __init__(self, execution_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelExecutionResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _events_pb2.ExecutionStatus
    def __init__(self, status: _Optional[_Union[_events_pb2.ExecutionStatus, str]] = ...) -> None: ...

class HaltAllRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class HaltAllResponse(_message.Message):
    __slots__ = ("reverted_faults", "aborted_executions")
    REVERTED_FAULTS_FIELD_NUMBER: _ClassVar[int]
    ABORTED_EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    reverted_faults: int
    aborted_executions: int
    def __init__(self, reverted_faults: _Optional[int] = ..., aborted_executions: _Optional[int] = ...) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResumeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ValidationError(_message.Message):
    __slots__ = ("file", "line", "column", "path", "message")
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    file: str
    line: int
    column: int
    path: str
    message: str
    def __init__(self, file: _Optional[str] = ..., line: _Optional[int] = ..., column: _Optional[int] = ..., path: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ValidateScenarioRequest(_message.Message):
    __slots__ = ("scenario_yaml", "file_name")
    SCENARIO_YAML_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    scenario_yaml: str
    file_name: str
    def __init__(self, scenario_yaml: _Optional[str] = ..., file_name: _Optional[str] = ...) -> None: ...

class ValidateScenarioResponse(_message.Message):
    __slots__ = ("valid", "errors", "scenario_name")
    VALID_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_NAME_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    errors: _containers.RepeatedCompositeFieldContainer[ValidationError]
    scenario_name: str
    def __init__(self, valid: _Optional[bool] = ..., errors: _Optional[_Iterable[_Union[ValidationError, _Mapping]]] = ..., scenario_name: _Optional[str] = ...) -> None: ...

class ListScenariosRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScenarioSummary(_message.Message):
    __slots__ = ("name", "description", "file", "targets", "faults")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    file: str
    targets: _containers.RepeatedScalarFieldContainer[str]
    faults: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., file: _Optional[str] = ..., targets: _Optional[_Iterable[str]] = ..., faults: _Optional[_Iterable[str]] = ...) -> None: ...

class ListScenariosResponse(_message.Message):
    __slots__ = ("scenarios",)
    SCENARIOS_FIELD_NUMBER: _ClassVar[int]
    scenarios: _containers.RepeatedCompositeFieldContainer[ScenarioSummary]
    def __init__(self, scenarios: _Optional[_Iterable[_Union[ScenarioSummary, _Mapping]]] = ...) -> None: ...

class ApplyScheduleRequest(_message.Message):
    __slots__ = ("schedule_yaml", "file_name")
    SCHEDULE_YAML_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    schedule_yaml: str
    file_name: str
    def __init__(self, schedule_yaml: _Optional[str] = ..., file_name: _Optional[str] = ...) -> None: ...

class ApplyScheduleResponse(_message.Message):
    __slots__ = ("schedule",)
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    schedule: _events_pb2.Schedule
    def __init__(self, schedule: _Optional[_Union[_events_pb2.Schedule, _Mapping]] = ...) -> None: ...

class ListSchedulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSchedulesResponse(_message.Message):
    __slots__ = ("schedules",)
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[_events_pb2.Schedule]
    def __init__(self, schedules: _Optional[_Iterable[_Union[_events_pb2.Schedule, _Mapping]]] = ...) -> None: ...

class PauseScheduleRequest(_message.Message):
    __slots__ = ("name", "paused")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    name: str
    paused: bool
    def __init__(self, name: _Optional[str] = ..., paused: _Optional[bool] = ...) -> None: ...

class PauseScheduleResponse(_message.Message):
    __slots__ = ("schedule",)
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    schedule: _events_pb2.Schedule
    def __init__(self, schedule: _Optional[_Union[_events_pb2.Schedule, _Mapping]] = ...) -> None: ...

class DeleteScheduleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteScheduleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("scenario_name", "last")
    SCENARIO_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    scenario_name: str
    last: int
    def __init__(self, scenario_name: _Optional[str] = ..., last: _Optional[int] = ...) -> None: ...

class ExpectationTrend(_message.Message):
    __slots__ = ("name", "runs", "passed", "time_to_recover_p50", "time_to_recover_p95")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_RECOVER_P50_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_RECOVER_P95_FIELD_NUMBER: _ClassVar[int]
    name: str
    runs: int
    passed: int
    time_to_recover_p50: _duration_pb2.Duration
    time_to_recover_p95: _duration_pb2.Duration
    def __init__(self, name: _Optional[str] = ..., runs: _Optional[int] = ..., passed: _Optional[int] = ..., time_to_recover_p50: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., time_to_recover_p95: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class HistoryRun(_message.Message):
    __slots__ = ("execution_id", "status", "ended_at", "time_to_recover", "labels")
    class TimeToRecoverEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _duration_pb2.Duration
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_RECOVER_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    status: _events_pb2.ExecutionStatus
    ended_at: _timestamp_pb2.Timestamp
    time_to_recover: _containers.MessageMap[str, _duration_pb2.Duration]
    labels: _containers.ScalarMap[str, str]
    def __init__(self, execution_id: _Optional[str] = ..., status: _Optional[_Union[_events_pb2.ExecutionStatus, str]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_to_recover: _Optional[_Mapping[str, _duration_pb2.Duration]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetHistoryResponse(_message.Message):
    __slots__ = ("scenario_name", "runs", "passed", "pass_rate", "resilience_score", "target_scores", "expectations", "recent")
    class TargetScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SCENARIO_NAME_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    PASS_RATE_FIELD_NUMBER: _ClassVar[int]
    RESILIENCE_SCORE_FIELD_NUMBER: _ClassVar[int]
    TARGET_SCORES_FIELD_NUMBER: _ClassVar[int]
    EXPECTATIONS_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    scenario_name: str
    runs: int
    passed: int
    pass_rate: float
    resilience_score: float
    target_scores: _containers.ScalarMap[str, float]
    expectations: _containers.RepeatedCompositeFieldContainer[ExpectationTrend]
    recent: _containers.RepeatedCompositeFieldContainer[HistoryRun]
    def __init__(self, scenario_name: _Optional[str] = ..., runs: _Optional[int] = ..., passed: _Optional[int] = ..., pass_rate: _Optional[float] = ..., resilience_score: _Optional[float] = ..., target_scores: _Optional[_Mapping[str, float]] = ..., expectations: _Optional[_Iterable[_Union[ExpectationTrend, _Mapping]]] = ..., recent: _Optional[_Iterable[_Union[HistoryRun, _Mapping]]] = ...) -> None: ...
