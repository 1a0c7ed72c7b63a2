import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from taskplane.v1 import schedule_pb2 as _schedule_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentMessage(_message.Message):
    __slots__ = ("register", "heartbeat", "result", "credit", "drain", "progress")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    register: Register
    heartbeat: Heartbeat
    result: TaskResult
    credit: Credit
    drain: Drain
    progress: Progress
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ..., credit: _Optional[_Union[Credit, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("task_id", "attempt", "fraction", "message")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    fraction: float
    message: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., fraction: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("registered", "assignment", "cancel", "heartbeat_ack")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACK_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    assignment: Assignment
    cancel: Cancel
    heartbeat_ack: HeartbeatAck
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., assignment: _Optional[_Union[Assignment, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., heartbeat_ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Register(_message.Message):
    __slots__ = ("agent_name", "domains", "max_concurrency", "labels", "max_prefetch", "feature_flags")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class FeatureFlagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_PREFETCH_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FLAGS_FIELD_NUMBER: _ClassVar[int]
    agent_name: str
    domains: _containers.RepeatedCompositeFieldContainer[DomainRegistration]
    max_concurrency: int
    labels: _containers.ScalarMap[str, str]
    max_prefetch: int
    feature_flags: _containers.ScalarMap[str, bool]
    def __init__(self, agent_name: _Optional[str] = ..., domains: _Optional[_Iterable[_Union[DomainRegistration, _Mapping]]] = ..., max_concurrency: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., max_prefetch: _Optional[int] = ..., feature_flags: _Optional[_Mapping[str, bool]] = ...) -> None: ...

class DomainRegistration(_message.Message):
    __slots__ = ("domain", "task_types", "schedules")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPES_FIELD_NUMBER: _ClassVar[int]
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    domain: str
    task_types: _containers.RepeatedCompositeFieldContainer[TaskTypeRegistration]
    schedules: _containers.RepeatedCompositeFieldContainer[_schedule_pb2.ScheduleSpec]
    def __init__(self, domain: _Optional[str] = ..., task_types: _Optional[_Iterable[_Union[TaskTypeRegistration, _Mapping]]] = ..., schedules: _Optional[_Iterable[_Union[_schedule_pb2.ScheduleSpec, _Mapping]]] = ...) -> None: ...

class TaskTypeRegistration(_message.Message):
    __slots__ = ("task_type", "description", "versions", "capabilities", "flow")
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    task_type: str
    description: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    flow: FlowLimits
    def __init__(self, task_type: _Optional[str] = ..., description: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., flow: _Optional[_Union[FlowLimits, _Mapping]] = ...) -> None: ...

class FlowLimits(_message.Message):
    __slots__ = ("max_running", "concurrency_key", "max_running_per_key", "rate_limit", "rate_limit_key")
    MAX_RUNNING_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_PER_KEY_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_KEY_FIELD_NUMBER: _ClassVar[int]
    max_running: int
    concurrency_key: str
    max_running_per_key: int
    rate_limit: str
    rate_limit_key: str
    def __init__(self, max_running: _Optional[int] = ..., concurrency_key: _Optional[str] = ..., max_running_per_key: _Optional[int] = ..., rate_limit: _Optional[str] = ..., rate_limit_key: _Optional[str] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("agent_id", "session_id", "lease_duration", "heartbeat_interval", "max_message_bytes")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_DURATION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    session_id: str
    lease_duration: _duration_pb2.Duration
    heartbeat_interval: _duration_pb2.Duration
    max_message_bytes: int
    def __init__(self, agent_id: _Optional[str] = ..., session_id: _Optional[str] = ..., lease_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_message_bytes: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("running_task_ids", "handler_health")
    RUNNING_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    HANDLER_HEALTH_FIELD_NUMBER: _ClassVar[int]
    running_task_ids: _containers.RepeatedScalarFieldContainer[str]
    handler_health: _containers.RepeatedCompositeFieldContainer[HandlerHealth]
    def __init__(self, running_task_ids: _Optional[_Iterable[str]] = ..., handler_health: _Optional[_Iterable[_Union[HandlerHealth, _Mapping]]] = ...) -> None: ...

class HandlerHealth(_message.Message):
    __slots__ = ("task_type", "healthy", "message")
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    task_type: str
    healthy: bool
    message: str
    def __init__(self, task_type: _Optional[str] = ..., healthy: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "attempt", "completed", "failed", "given_back", "ran_for")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    GIVEN_BACK_FIELD_NUMBER: _ClassVar[int]
    RAN_FOR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    completed: Completed
    failed: Failed
    given_back: GivenBack
    ran_for: _duration_pb2.Duration
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., completed: _Optional[_Union[Completed, _Mapping]] = ..., failed: _Optional[_Union[Failed, _Mapping]] = ..., given_back: _Optional[_Union[GivenBack, _Mapping]] = ..., ran_for: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GivenBack(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Completed(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _struct_pb2.Struct
    def __init__(self, result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Failed(_message.Message):
    __slots__ = ("error", "retryable", "retry_after")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    error: str
    retryable: bool
    retry_after: _duration_pb2.Duration
    def __init__(self, error: _Optional[str] = ..., retryable: _Optional[bool] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Credit(_message.Message):
    __slots__ = ("slots",)
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    slots: int
    def __init__(self, slots: _Optional[int] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("task_id", "task_type", "payload", "attempt", "handler_version", "metadata", "lease_expires_at", "timeout", "domain")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    HANDLER_VERSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_type: str
    payload: _struct_pb2.Struct
    attempt: int
    handler_version: str
    metadata: _containers.ScalarMap[str, str]
    lease_expires_at: _timestamp_pb2.Timestamp
    timeout: _duration_pb2.Duration
    domain: str
    def __init__(self, task_id: _Optional[str] = ..., task_type: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., attempt: _Optional[int] = ..., handler_version: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., domain: _Optional[str] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("task_id", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
