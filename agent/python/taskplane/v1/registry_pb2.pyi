import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from taskplane.v1 import agent_pb2 as _agent_pb2
from taskplane.v1 import task_pb2 as _task_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SetTaskTypePolicyRequest(_message.Message):
    __slots__ = ("task_type", "paused", "max_running", "concurrency_key", "max_running_per_key", "rate_limit", "refuse_enqueues", "rate_limit_key")
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_PER_KEY_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    REFUSE_ENQUEUES_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_KEY_FIELD_NUMBER: _ClassVar[int]
    task_type: str
    paused: bool
    max_running: int
    concurrency_key: str
    max_running_per_key: int
    rate_limit: str
    refuse_enqueues: bool
    rate_limit_key: str
    def __init__(self, task_type: _Optional[str] = ..., paused: _Optional[bool] = ..., max_running: _Optional[int] = ..., concurrency_key: _Optional[str] = ..., max_running_per_key: _Optional[int] = ..., rate_limit: _Optional[str] = ..., refuse_enqueues: _Optional[bool] = ..., rate_limit_key: _Optional[str] = ...) -> None: ...

class FlowPolicy(_message.Message):
    __slots__ = ("paused", "max_running", "concurrency_key", "max_running_per_key", "rate_limit", "refuse_enqueues", "rate_limit_key")
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_PER_KEY_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    REFUSE_ENQUEUES_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_KEY_FIELD_NUMBER: _ClassVar[int]
    paused: bool
    max_running: int
    concurrency_key: str
    max_running_per_key: int
    rate_limit: str
    refuse_enqueues: bool
    rate_limit_key: str
    def __init__(self, paused: _Optional[bool] = ..., max_running: _Optional[int] = ..., concurrency_key: _Optional[str] = ..., max_running_per_key: _Optional[int] = ..., rate_limit: _Optional[str] = ..., refuse_enqueues: _Optional[bool] = ..., rate_limit_key: _Optional[str] = ...) -> None: ...

class DrainAgentRequest(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: str
    def __init__(self, agent: _Optional[str] = ...) -> None: ...

class DrainAgentResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...

class HandlerInfo(_message.Message):
    __slots__ = ("task_type", "domain", "description", "versions", "capabilities", "registered_at", "updated_at", "live_agents", "default_max_attempts", "default_timeout", "default_retry_policy", "health", "flow")
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    LIVE_AGENTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    task_type: str
    domain: str
    description: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    registered_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    live_agents: int
    default_max_attempts: int
    default_timeout: _duration_pb2.Duration
    default_retry_policy: _task_pb2.RetryPolicy
    health: _containers.RepeatedCompositeFieldContainer[AgentHandlerHealth]
    flow: FlowPolicy
    def __init__(self, task_type: _Optional[str] = ..., domain: _Optional[str] = ..., description: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., live_agents: _Optional[int] = ..., default_max_attempts: _Optional[int] = ..., default_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., default_retry_policy: _Optional[_Union[_task_pb2.RetryPolicy, _Mapping]] = ..., health: _Optional[_Iterable[_Union[AgentHandlerHealth, _Mapping]]] = ..., flow: _Optional[_Union[FlowPolicy, _Mapping]] = ...) -> None: ...

class AgentHandlerHealth(_message.Message):
    __slots__ = ("agent_name", "session_id", "healthy", "message", "checked_at")
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    agent_name: str
    session_id: str
    healthy: bool
    message: str
    checked_at: _timestamp_pb2.Timestamp
    def __init__(self, agent_name: _Optional[str] = ..., session_id: _Optional[str] = ..., healthy: _Optional[bool] = ..., message: _Optional[str] = ..., checked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RegisterTaskTypeRequest(_message.Message):
    __slots__ = ("task_type", "domain", "description", "versions", "capabilities", "default_max_attempts", "default_timeout", "default_retry_policy")
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    task_type: str
    domain: str
    description: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    default_max_attempts: int
    default_timeout: _duration_pb2.Duration
    default_retry_policy: _task_pb2.RetryPolicy
    def __init__(self, task_type: _Optional[str] = ..., domain: _Optional[str] = ..., description: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., default_max_attempts: _Optional[int] = ..., default_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., default_retry_policy: _Optional[_Union[_task_pb2.RetryPolicy, _Mapping]] = ...) -> None: ...

class ListTaskTypesRequest(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: str
    def __init__(self, domain: _Optional[str] = ...) -> None: ...

class ListTaskTypesResponse(_message.Message):
    __slots__ = ("task_types",)
    TASK_TYPES_FIELD_NUMBER: _ClassVar[int]
    task_types: _containers.RepeatedCompositeFieldContainer[HandlerInfo]
    def __init__(self, task_types: _Optional[_Iterable[_Union[HandlerInfo, _Mapping]]] = ...) -> None: ...

class GetTaskTypeRequest(_message.Message):
    __slots__ = ("task_type",)
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    task_type: str
    def __init__(self, task_type: _Optional[str] = ...) -> None: ...

class ValidateTaskTypeRequest(_message.Message):
    __slots__ = ("task_type", "version")
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    task_type: str
    version: str
    def __init__(self, task_type: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ValidateTaskTypeResponse(_message.Message):
    __slots__ = ("valid", "reason", "live_agents")
    VALID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LIVE_AGENTS_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    reason: str
    live_agents: int
    def __init__(self, valid: _Optional[bool] = ..., reason: _Optional[str] = ..., live_agents: _Optional[int] = ...) -> None: ...

class ListDomainsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DomainInfo(_message.Message):
    __slots__ = ("domain", "task_types", "live_agents")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPES_FIELD_NUMBER: _ClassVar[int]
    LIVE_AGENTS_FIELD_NUMBER: _ClassVar[int]
    domain: str
    task_types: _containers.RepeatedScalarFieldContainer[str]
    live_agents: int
    def __init__(self, domain: _Optional[str] = ..., task_types: _Optional[_Iterable[str]] = ..., live_agents: _Optional[int] = ...) -> None: ...

class ListDomainsResponse(_message.Message):
    __slots__ = ("domains",)
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    domains: _containers.RepeatedCompositeFieldContainer[DomainInfo]
    def __init__(self, domains: _Optional[_Iterable[_Union[DomainInfo, _Mapping]]] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("agent_id", "session_id", "agent_name", "domains", "task_types", "max_concurrency", "running", "labels", "connected_at", "last_seen_at", "draining", "handler_health", "feature_flags", "handler_versions")
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
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    HANDLER_HEALTH_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FLAGS_FIELD_NUMBER: _ClassVar[int]
    HANDLER_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    session_id: str
    agent_name: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    task_types: _containers.RepeatedScalarFieldContainer[str]
    max_concurrency: int
    running: int
    labels: _containers.ScalarMap[str, str]
    connected_at: _timestamp_pb2.Timestamp
    last_seen_at: _timestamp_pb2.Timestamp
    draining: bool
    handler_health: _containers.RepeatedCompositeFieldContainer[_agent_pb2.HandlerHealth]
    feature_flags: _containers.ScalarMap[str, bool]
    handler_versions: _containers.RepeatedCompositeFieldContainer[TaskTypeVersions]
    def __init__(self, agent_id: _Optional[str] = ..., session_id: _Optional[str] = ..., agent_name: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ..., task_types: _Optional[_Iterable[str]] = ..., max_concurrency: _Optional[int] = ..., running: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., connected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., draining: _Optional[bool] = ..., handler_health: _Optional[_Iterable[_Union[_agent_pb2.HandlerHealth, _Mapping]]] = ..., feature_flags: _Optional[_Mapping[str, bool]] = ..., handler_versions: _Optional[_Iterable[_Union[TaskTypeVersions, _Mapping]]] = ...) -> None: ...

class TaskTypeVersions(_message.Message):
    __slots__ = ("task_type", "versions")
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    task_type: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task_type: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...
