"""The env server's wire schema, used by `agent_server`'s env server and by `RemoteSearchEnv`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# The env options a client may set when it creates a session; the server owns the rest
# (its retriever URL, its limits). `data` is "world:<preset>" or a name the server was given.
SESSION_OPTIONS = frozenset(
    {"data", "split", "data_config", "hops", "limit", "topk", "max_turns", "prompt_template", "reward", "format_score"}
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateSessionRequest(_Strict):
    env_id: str = Field("searchgym/SearchQA-v0", description="a registered searchgym env id")
    options: dict[str, Any] = Field(default_factory=dict, description=f"env options: {sorted(SESSION_OPTIONS)}")


class SessionInfo(BaseModel):
    session_id: str
    env_id: str
    options: dict[str, Any]
    num_questions: int
    max_action_chars: int
    max_obs_chars: int
    episode_active: bool
    turn: int
    idle_seconds: float


class ResetRequest(_Strict):
    seed: int | None = None
    options: dict[str, Any] | None = Field(
        default=None, description='{"index": i}, {"id": question_id} or {"question": ..., "golden_answers": [...]}'
    )


class ResetResponse(BaseModel):
    observation: str
    info: dict[str, Any]


class StepRequest(_Strict):
    action: str = Field(description="the text the policy wrote for one turn")


class StepResponse(BaseModel):
    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


class BatchStepItem(_Strict):
    session_id: str
    action: str


class BatchStepRequest(_Strict):
    steps: list[BatchStepItem] = Field(description="one step for each of many sessions, searched in one batch")


class StepError(BaseModel):
    status: int
    detail: str


class BatchStepResult(BaseModel):
    session_id: str
    result: StepResponse | None = None
    error: StepError | None = None


class BatchStepResponse(BaseModel):
    results: list[BatchStepResult]
