from google.protobuf import struct_pb2 as _struct_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_ALLOW: _ClassVar[Verdict]
    VERDICT_INTERVENE: _ClassVar[Verdict]
    VERDICT_REMOVE: _ClassVar[Verdict]

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_ERROR: _ClassVar[Severity]
    SEVERITY_WARNING: _ClassVar[Severity]
VERDICT_UNSPECIFIED: Verdict
VERDICT_ALLOW: Verdict
VERDICT_INTERVENE: Verdict
VERDICT_REMOVE: Verdict
SEVERITY_UNSPECIFIED: Severity
SEVERITY_ERROR: Severity
SEVERITY_WARNING: Severity

class Content(_message.Message):
    __slots__ = ("id", "annotations")
    ID_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    annotations: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., annotations: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("content", "policies", "explain", "request_id")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    content: Content
    policies: _containers.RepeatedScalarFieldContainer[str]
    explain: bool
    request_id: str
    def __init__(self, content: _Optional[_Union[Content, _Mapping]] = ..., policies: _Optional[_Iterable[str]] = ..., explain: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("request_id", "content_id", "verdict", "policy", "rule", "interventions", "justifications", "policies", "shadow", "warnings", "policy_set_hash", "trace")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    INTERVENTIONS_FIELD_NUMBER: _ClassVar[int]
    JUSTIFICATIONS_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    POLICY_SET_HASH_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    content_id: str
    verdict: Verdict
    policy: str
    rule: str
    interventions: _containers.RepeatedCompositeFieldContainer[Intervention]
    justifications: _containers.RepeatedCompositeFieldContainer[Justification]
    policies: _containers.RepeatedCompositeFieldContainer[PolicyDecision]
    shadow: _containers.RepeatedCompositeFieldContainer[Justification]
    warnings: _containers.RepeatedCompositeFieldContainer[DecisionWarning]
    policy_set_hash: str
    trace: _struct_pb2.Struct
    def __init__(self, request_id: _Optional[str] = ..., content_id: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., policy: _Optional[str] = ..., rule: _Optional[str] = ..., interventions: _Optional[_Iterable[_Union[Intervention, _Mapping]]] = ..., justifications: _Optional[_Iterable[_Union[Justification, _Mapping]]] = ..., policies: _Optional[_Iterable[_Union[PolicyDecision, _Mapping]]] = ..., shadow: _Optional[_Iterable[_Union[Justification, _Mapping]]] = ..., warnings: _Optional[_Iterable[_Union[DecisionWarning, _Mapping]]] = ..., policy_set_hash: _Optional[str] = ..., trace: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Intervention(_message.Message):
    __slots__ = ("name", "arguments", "policy", "rule")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    name: str
    arguments: _struct_pb2.Struct
    policy: str
    rule: str
    def __init__(self, name: _Optional[str] = ..., arguments: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., policy: _Optional[str] = ..., rule: _Optional[str] = ...) -> None: ...

class Justification(_message.Message):
    __slots__ = ("policy", "version", "rule", "action", "interventions", "reason", "citation", "tags", "conditions", "deciding")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    INTERVENTIONS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CITATION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    DECIDING_FIELD_NUMBER: _ClassVar[int]
    policy: str
    version: str
    rule: str
    action: Verdict
    interventions: _containers.RepeatedCompositeFieldContainer[Intervention]
    reason: str
    citation: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    deciding: bool
    def __init__(self, policy: _Optional[str] = ..., version: _Optional[str] = ..., rule: _Optional[str] = ..., action: _Optional[_Union[Verdict, str]] = ..., interventions: _Optional[_Iterable[_Union[Intervention, _Mapping]]] = ..., reason: _Optional[str] = ..., citation: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., deciding: _Optional[bool] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("expression", "held", "observed")
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    expression: str
    held: bool
    observed: _struct_pb2.Struct
    def __init__(self, expression: _Optional[str] = ..., held: _Optional[bool] = ..., observed: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class PolicyDecision(_message.Message):
    __slots__ = ("policy", "version", "verdict", "rule")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    policy: str
    version: str
    verdict: Verdict
    rule: str
    def __init__(self, policy: _Optional[str] = ..., version: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., rule: _Optional[str] = ...) -> None: ...

class DecisionWarning(_message.Message):
    __slots__ = ("code", "message", "field", "policy", "rule")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    field: str
    policy: str
    rule: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ..., policy: _Optional[str] = ..., rule: _Optional[str] = ...) -> None: ...

class EvaluateBatchRequest(_message.Message):
    __slots__ = ("contents", "policies", "explain", "request_id")
    CONTENTS_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    contents: _containers.RepeatedCompositeFieldContainer[Content]
    policies: _containers.RepeatedScalarFieldContainer[str]
    explain: bool
    request_id: str
    def __init__(self, contents: _Optional[_Iterable[_Union[Content, _Mapping]]] = ..., policies: _Optional[_Iterable[str]] = ..., explain: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class EvaluateBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EvaluateBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[EvaluateBatchResult, _Mapping]]] = ...) -> None: ...

class EvaluateBatchResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: EvaluateResponse
    error: _status_pb2.Status
    def __init__(self, response: _Optional[_Union[EvaluateResponse, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class EvaluateStreamRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: EvaluateRequest
    def __init__(self, request: _Optional[_Union[EvaluateRequest, _Mapping]] = ...) -> None: ...

class EvaluateStreamResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: EvaluateBatchResult
    def __init__(self, result: _Optional[_Union[EvaluateBatchResult, _Mapping]] = ...) -> None: ...

class ValidatePolicyRequest(_message.Message):
    __slots__ = ("source", "path")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    source: str
    path: str
    def __init__(self, source: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class ValidatePolicyResponse(_message.Message):
    __slots__ = ("ok", "diagnostics")
    OK_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    diagnostics: _containers.RepeatedCompositeFieldContainer[Diagnostic]
    def __init__(self, ok: _Optional[bool] = ..., diagnostics: _Optional[_Iterable[_Union[Diagnostic, _Mapping]]] = ...) -> None: ...

class Diagnostic(_message.Message):
    __slots__ = ("code", "severity", "message", "path", "line", "column", "end_line", "end_column", "help")
    CODE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    END_LINE_FIELD_NUMBER: _ClassVar[int]
    END_COLUMN_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    code: str
    severity: Severity
    message: str
    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    help: str
    def __init__(self, code: _Optional[str] = ..., severity: _Optional[_Union[Severity, str]] = ..., message: _Optional[str] = ..., path: _Optional[str] = ..., line: _Optional[int] = ..., column: _Optional[int] = ..., end_line: _Optional[int] = ..., end_column: _Optional[int] = ..., help: _Optional[str] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies", "policy_set_hash")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    POLICY_SET_HASH_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[PolicyInfo]
    policy_set_hash: str
    def __init__(self, policies: _Optional[_Iterable[_Union[PolicyInfo, _Mapping]]] = ..., policy_set_hash: _Optional[str] = ...) -> None: ...

class PolicyInfo(_message.Message):
    __slots__ = ("name", "version", "description", "owner", "schema", "combine", "rule_names", "path", "source_hash")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    COMBINE_FIELD_NUMBER: _ClassVar[int]
    RULE_NAMES_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HASH_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    description: str
    owner: str
    schema: str
    combine: str
    rule_names: _containers.RepeatedScalarFieldContainer[str]
    path: str
    source_hash: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., description: _Optional[str] = ..., owner: _Optional[str] = ..., schema: _Optional[str] = ..., combine: _Optional[str] = ..., rule_names: _Optional[_Iterable[str]] = ..., path: _Optional[str] = ..., source_hash: _Optional[str] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("policy", "source", "policy_set_hash")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    POLICY_SET_HASH_FIELD_NUMBER: _ClassVar[int]
    policy: PolicyInfo
    source: str
    policy_set_hash: str
    def __init__(self, policy: _Optional[_Union[PolicyInfo, _Mapping]] = ..., source: _Optional[str] = ..., policy_set_hash: _Optional[str] = ...) -> None: ...
