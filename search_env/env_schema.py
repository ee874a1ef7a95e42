"""The env server's wire schema, used by `agent_server`'s env server and by `RemoteSearchEnv`.

Option values are validated whole here (types, ranges, finite numbers), so a bad value is a 422
naming it rather than an error deep inside an env. `request_id` makes create and step idempotent:
a client sends a fresh id per logical call and the same id on its retries, and the server answers
a repeated id with the answer it recorded instead of applying the call again.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from search_env.protocol import SEARCH_R1_TEMPLATE, prompt_shape

# A name a client may give for a split or a data config: never a path (no separator, no leading dot).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
RequestId = Annotated[
    str,
    Field(
        min_length=8,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="fresh per logical call, the same on its retries: a repeated id gets the recorded answer",
    ),
]
MAX_TOPK = 1000
MAX_TURNS = 10**6
# Each `{question}` field repeats the question: templates need one, a few allow for a restatement.
MAX_PROMPT_FIELDS = 16
MAX_PROMPT_TEMPLATE_CHARS = 16384
# A reset's own golden answers: how many (their total size is the server's --max-golden-chars).
MAX_GOLDEN_ANSWERS = 256


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_prompt_template(template: str) -> str:
    """The template if its only replacement fields are plain `{question}`, at most MAX_PROMPT_FIELDS.

    Raises ValueError otherwise: a format spec (`{question:>999999999}`) could make the server build a
    huge string, an attribute or index (`{question.__class__}`) would expose server internals, and each
    field repeats the question (the rendered size is also checked at reset, against the server's
    `--max-prompt-chars`, before the prompt is built).
    """
    shape = prompt_shape(template)
    if shape.fields > MAX_PROMPT_FIELDS:
        raise ValueError(
            f"prompt_template has {shape.fields} '{{question}}' fields, more than the {MAX_PROMPT_FIELDS} allowed"
        )
    return template


class SessionOptions(_Strict):
    """The env options a client may set when it creates a session; the server owns the rest
    (its retriever URL, its limits). `data` is "world:<preset>" or a name the server was given."""

    data: str = Field("world:default", max_length=256, description="world:<preset> or a name the server offers")
    split: Name | None = Field(None, description="one of the data set's splits (default: train, or its only one)")
    data_config: Name | None = Field(None, description="the config of a Hugging Face data set")
    hops: list[Annotated[StrictInt, Field(ge=1, le=16)]] | None = Field(None, min_length=1, max_length=16)
    limit: Annotated[StrictInt, Field(ge=1)] | None = None
    topk: StrictInt = Field(3, ge=1, le=MAX_TOPK)
    max_turns: StrictInt = Field(4, ge=1, le=MAX_TURNS)
    prompt_template: str = Field(SEARCH_R1_TEMPLATE, max_length=MAX_PROMPT_TEMPLATE_CHARS)
    reward: Literal["em", "subem", "f1"] = "em"
    format_score: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)

    @field_validator("prompt_template")
    @classmethod
    def _plain_question_field(cls, value: str) -> str:
        return check_prompt_template(value)


SESSION_OPTIONS = frozenset(SessionOptions.model_fields)


class CreateSessionRequest(_Strict):
    env_id: str = Field("searchgym/SearchQA-v0", description="a registered searchgym env id")
    options: dict[str, Any] = Field(default_factory=dict, description=f"env options: {sorted(SESSION_OPTIONS)}")
    request_id: RequestId | None = None


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


class ResetOptions(_Strict):
    """At most one way to choose the question: `index`, `id`, or `question` with `golden_answers`."""

    index: Annotated[StrictInt, Field(ge=0)] | None = None
    id: Annotated[str, Field(max_length=1024)] | StrictInt | None = None
    question: Annotated[str, Field(min_length=1)] | None = None
    golden_answers: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1, max_length=MAX_GOLDEN_ANSWERS
    )

    @model_validator(mode="after")
    def _one_way(self) -> ResetOptions:
        if (self.question is None) != (self.golden_answers is None):
            raise ValueError("'question' and 'golden_answers' go together")
        if self.index is not None and (self.id is not None or self.question is not None):
            raise ValueError("give one of 'index', 'id', or 'question' with 'golden_answers'")
        return self


class ResetRequest(_Strict):
    seed: Annotated[StrictInt, Field(ge=0)] | None = None
    options: ResetOptions | None = Field(
        default=None, description='{"index": i}, {"id": question_id} or {"question": ..., "golden_answers": [...]}'
    )


class ResetResponse(BaseModel):
    observation: str
    info: dict[str, Any]


class StepRequest(_Strict):
    action: str = Field(description="the text the policy wrote for one turn")
    request_id: RequestId | None = None


class StepResponse(BaseModel):
    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


class BatchStepItem(_Strict):
    session_id: str
    action: str
    request_id: RequestId | None = None


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
