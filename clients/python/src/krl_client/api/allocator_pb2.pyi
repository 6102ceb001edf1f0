from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AllocationMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALLOCATION_MODE_UNSPECIFIED: _ClassVar[AllocationMode]
    ALLOCATION_MODE_PAPER: _ClassVar[AllocationMode]
    ALLOCATION_MODE_EB: _ClassVar[AllocationMode]
    ALLOCATION_MODE_UNIFORM: _ClassVar[AllocationMode]
ALLOCATION_MODE_UNSPECIFIED: AllocationMode
ALLOCATION_MODE_PAPER: AllocationMode
ALLOCATION_MODE_EB: AllocationMode
ALLOCATION_MODE_UNIFORM: AllocationMode

class AllocateRequest(_message.Message):
    __slots__ = ("namespace", "step", "prompt_ids", "budget", "min_n", "max_n", "mode", "fallback", "visit_half_life", "objective", "packed", "loss_agg")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    PROMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    MIN_N_FIELD_NUMBER: _ClassVar[int]
    MAX_N_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    VISIT_HALF_LIFE_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    LOSS_AGG_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    step: int
    prompt_ids: _containers.RepeatedScalarFieldContainer[str]
    budget: int
    min_n: int
    max_n: int
    mode: AllocationMode
    fallback: bool
    visit_half_life: float
    objective: str
    packed: bool
    loss_agg: str
    def __init__(self, namespace: _Optional[str] = ..., step: _Optional[int] = ..., prompt_ids: _Optional[_Iterable[str]] = ..., budget: _Optional[int] = ..., min_n: _Optional[int] = ..., max_n: _Optional[int] = ..., mode: _Optional[_Union[AllocationMode, str]] = ..., fallback: _Optional[bool] = ..., visit_half_life: _Optional[float] = ..., objective: _Optional[str] = ..., packed: _Optional[bool] = ..., loss_agg: _Optional[str] = ...) -> None: ...

class PromptAllocation(_message.Message):
    __slots__ = ("prompt_id", "n", "p", "value")
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    P_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    prompt_id: str
    n: int
    p: float
    value: float
    def __init__(self, prompt_id: _Optional[str] = ..., n: _Optional[int] = ..., p: _Optional[float] = ..., value: _Optional[float] = ...) -> None: ...

class AllocateResponse(_message.Message):
    __slots__ = ("allocation_id", "allocations", "objective", "solve_ms", "mode", "budget_used", "gap_bound", "n", "p", "value")
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    SOLVE_MS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_USED_FIELD_NUMBER: _ClassVar[int]
    GAP_BOUND_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    P_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    allocation_id: str
    allocations: _containers.RepeatedCompositeFieldContainer[PromptAllocation]
    objective: float
    solve_ms: float
    mode: AllocationMode
    budget_used: int
    gap_bound: float
    n: _containers.RepeatedScalarFieldContainer[int]
    p: _containers.RepeatedScalarFieldContainer[float]
    value: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, allocation_id: _Optional[str] = ..., allocations: _Optional[_Iterable[_Union[PromptAllocation, _Mapping]]] = ..., objective: _Optional[float] = ..., solve_ms: _Optional[float] = ..., mode: _Optional[_Union[AllocationMode, str]] = ..., budget_used: _Optional[int] = ..., gap_bound: _Optional[float] = ..., n: _Optional[_Iterable[int]] = ..., p: _Optional[_Iterable[float]] = ..., value: _Optional[_Iterable[float]] = ...) -> None: ...

class PromptOutcome(_message.Message):
    __slots__ = ("prompt_id", "successes", "trials", "total_tokens")
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_id: str
    successes: int
    trials: int
    total_tokens: int
    def __init__(self, prompt_id: _Optional[str] = ..., successes: _Optional[int] = ..., trials: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class ReportOutcomesRequest(_message.Message):
    __slots__ = ("namespace", "allocation_id", "outcomes", "prompt_ids", "successes", "trials", "total_tokens")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    allocation_id: str
    outcomes: _containers.RepeatedCompositeFieldContainer[PromptOutcome]
    prompt_ids: _containers.RepeatedScalarFieldContainer[str]
    successes: _containers.RepeatedScalarFieldContainer[int]
    trials: _containers.RepeatedScalarFieldContainer[int]
    total_tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, namespace: _Optional[str] = ..., allocation_id: _Optional[str] = ..., outcomes: _Optional[_Iterable[_Union[PromptOutcome, _Mapping]]] = ..., prompt_ids: _Optional[_Iterable[str]] = ..., successes: _Optional[_Iterable[int]] = ..., trials: _Optional[_Iterable[int]] = ..., total_tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class ReportOutcomesResponse(_message.Message):
    __slots__ = ("accepted", "duplicates", "duplicate_prompt_ids")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_PROMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    duplicate_prompt_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., duplicate_prompt_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetPromptStatsRequest(_message.Message):
    __slots__ = ("namespace", "prompt_ids", "step")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_IDS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    prompt_ids: _containers.RepeatedScalarFieldContainer[str]
    step: int
    def __init__(self, namespace: _Optional[str] = ..., prompt_ids: _Optional[_Iterable[str]] = ..., step: _Optional[int] = ...) -> None: ...

class RecentAllocation(_message.Message):
    __slots__ = ("step", "n", "successes")
    STEP_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    step: int
    n: int
    successes: int
    def __init__(self, step: _Optional[int] = ..., n: _Optional[int] = ..., successes: _Optional[int] = ...) -> None: ...

class PromptStats(_message.Message):
    __slots__ = ("prompt_id", "found", "visits", "trials", "successes", "last_step", "last_trials", "last_successes", "evidence_successes", "evidence_failures", "mean_tokens", "posterior_alpha", "posterior_beta", "posterior_mean", "recent", "eb_posterior_mean", "eb_posterior_sd")
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VISITS_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    LAST_TRIALS_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    MEAN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    POSTERIOR_ALPHA_FIELD_NUMBER: _ClassVar[int]
    POSTERIOR_BETA_FIELD_NUMBER: _ClassVar[int]
    POSTERIOR_MEAN_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    EB_POSTERIOR_MEAN_FIELD_NUMBER: _ClassVar[int]
    EB_POSTERIOR_SD_FIELD_NUMBER: _ClassVar[int]
    prompt_id: str
    found: bool
    visits: int
    trials: int
    successes: int
    last_step: int
    last_trials: int
    last_successes: int
    evidence_successes: float
    evidence_failures: float
    mean_tokens: float
    posterior_alpha: float
    posterior_beta: float
    posterior_mean: float
    recent: _containers.RepeatedCompositeFieldContainer[RecentAllocation]
    eb_posterior_mean: float
    eb_posterior_sd: float
    def __init__(self, prompt_id: _Optional[str] = ..., found: _Optional[bool] = ..., visits: _Optional[int] = ..., trials: _Optional[int] = ..., successes: _Optional[int] = ..., last_step: _Optional[int] = ..., last_trials: _Optional[int] = ..., last_successes: _Optional[int] = ..., evidence_successes: _Optional[float] = ..., evidence_failures: _Optional[float] = ..., mean_tokens: _Optional[float] = ..., posterior_alpha: _Optional[float] = ..., posterior_beta: _Optional[float] = ..., posterior_mean: _Optional[float] = ..., recent: _Optional[_Iterable[_Union[RecentAllocation, _Mapping]]] = ..., eb_posterior_mean: _Optional[float] = ..., eb_posterior_sd: _Optional[float] = ...) -> None: ...

class GetPromptStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: _containers.RepeatedCompositeFieldContainer[PromptStats]
    def __init__(self, stats: _Optional[_Iterable[_Union[PromptStats, _Mapping]]] = ...) -> None: ...
