"""`SearchQAEnv`: a multi-turn search-QA `gymnasium.Env` that speaks the Search-R1 protocol.

reset() gives the instruction prompt with a question; each step() takes the text the policy wrote
for one turn, acts on its first complete `<search>` or `<answer>`, and returns the new text for the
policy to read (an `<information>` block, the invalid-action message, or "" after an answer).
Searches go over HTTP to a retrieval server (`agent-server retriever`).

Every step is split in two, `plan_step` (check and parse; no state changes) and `apply_step` (update
with the search's outcome), so that several envs can share one `/retrieve` request (`batched_step`,
`SearchQAVectorEnv`) and asyncio callers can await the search (`astep`).

A search never raises out of a step (env_search): its query is fitted to the retriever's limits
(read from its /info), and a search the retriever refuses, fails, or cannot be reached for becomes
an `<information>` observation that says so; the turn is used, and info's `search_error` holds the
reason. One env's bad query thus never costs the other envs of a batch their documents. A retriever
that cannot be reached is first waited for, up to `retriever_wait_s` seconds (0 by default; the
trainer waits out a restart so that an outage does not become failed-search observations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym

from search_env.env_data import load_env_records
from search_env.env_search import SearchOutcome, asearch_queries, search_queries
from search_env.protocol import (
    INVALID_ACTION_MESSAGE,
    SEARCH_R1_TEMPLATE,
    ParsedAction,
    format_question,
    information_block,
    parse_action,
    prompt_shape,
    search_error_block,
)
from search_env.qa_data import QARecord
from search_env.query_sanitizer import replace_lone_surrogates
from search_env.retriever_client import RetrieverClient
from search_env.rewards import RewardConfig, RewardKind, answer_metrics, episode_reward
from search_env.text_spaces import text_space
from search_env.turn_budget import check_turn_budget

DEFAULT_RETRIEVER_URL = "http://127.0.0.1:8000"
StepResult = tuple[str, SupportsFloat, bool, bool, dict[str, Any]]


class EpisodeOver(RuntimeError):
    """step() after the episode terminated or was truncated: call reset() first."""


class EpisodeNotStarted(RuntimeError):
    """step() before the first reset()."""


class ActionTooLong(ValueError):
    """The action text exceeds `max_action_chars`."""


class PromptTooLong(ValueError):
    """The prompt a reset would build exceeds `max_prompt_chars` (found before it is built)."""


class GoldenAnswersTooLong(ValueError):
    """A reset's own golden answers exceed `max_golden_chars` in all."""


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What a step will do, decided before any search is sent."""

    action: ParsedAction

    @property
    def query(self) -> str | None:
        return self.action.content if self.action.kind == "search" else None


class SearchQAEnv(gym.Env[str, str]):
    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        data: str | Path | Sequence[QARecord] = "world:default",
        split: str = "train",
        *,
        data_config: str | None = None,
        hops: Sequence[int] | None = None,
        limit: int | None = None,
        retriever_url: str | Sequence[str] = DEFAULT_RETRIEVER_URL,
        retriever: RetrieverClient | None = None,
        retriever_timeout: float = 30.0,
        retriever_retries: int = 3,
        retriever_wait_s: float = 0.0,
        topk: int = 3,
        max_turns: int = 4,
        prompt_template: str = SEARCH_R1_TEMPLATE,
        reward: RewardKind = "em",
        format_score: float = 0.0,
        max_action_chars: int = 8192,
        max_obs_chars: int = 32768,
        max_prompt_chars: int | None = None,
        max_golden_chars: int | None = None,
        render_mode: str | None = None,
    ):
        """`max_prompt_chars` bounds the reset's prompt (default, and at most, `max_obs_chars`: the
        prompt is the reset's observation); `max_golden_chars` bounds a reset's own golden answers in
        all (None: unbounded, for an in-process caller; the env server sets it).

        Raises ValueError for a bad setting or template (prompt_shape), and what loading `data` raises.
        """
        check_turn_budget(max_turns)
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got topk={topk}")
        self._prompt_shape = prompt_shape(prompt_template)
        max_prompt_chars = max_obs_chars if max_prompt_chars is None else max_prompt_chars
        if not 1 <= max_prompt_chars <= max_obs_chars:
            raise ValueError(f"max_prompt_chars must be in [1, max_obs_chars={max_obs_chars}], got {max_prompt_chars}")
        if self._prompt_shape.rendered_chars("?") > max_prompt_chars:
            raise PromptTooLong(
                f"prompt_template alone has {self._prompt_shape.literal_chars} characters: more than "
                f"max_prompt_chars={max_prompt_chars}"
            )
        if max_golden_chars is not None and max_golden_chars < 1:
            raise ValueError(f"max_golden_chars must be >= 1, got {max_golden_chars}")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.records = load_env_records(data, split=split, config=data_config, hops=hops, limit=limit)
        self.topk = topk
        self.max_turns = max_turns
        self.prompt_template = prompt_template
        self.reward_config = RewardConfig(kind=reward, format_score=format_score)
        self.max_action_chars = max_action_chars
        self.max_obs_chars = max_obs_chars
        self.max_prompt_chars = max_prompt_chars
        self.max_golden_chars = max_golden_chars
        self.render_mode = render_mode
        self._owns_client = retriever is None
        self.retriever = retriever or RetrieverClient(
            retriever_url, timeout=retriever_timeout, retries=retriever_retries, outage_wait_s=retriever_wait_s
        )
        self.observation_space = text_space(max_obs_chars)
        self.action_space = text_space(max_action_chars)
        self._record: QARecord | None = None
        self._done = False
        self._turn = 0
        self._searches: list[str] = []
        self._invalid = 0
        self._transcript: list[str] = []

    # -- reset ------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Start an episode: `options` may give `{"index": i}`, `{"id": question_id}` or
        `{"question": str, "golden_answers": [str, ...]}`; otherwise a question is drawn with the seed.

        Raises ValueError for bad options, PromptTooLong (the size is computed from the template's
        shape, so a refused prompt is never built) and GoldenAnswersTooLong.
        """
        super().reset(seed=seed)
        record = self._pick(options or {})
        chars = self._prompt_shape.rendered_chars(record.question)
        if chars > self.max_prompt_chars:
            raise PromptTooLong(
                f"the prompt would have {chars} characters ({self._prompt_shape.fields} question fields x a "
                f"{len(record.question)}-character question + {self._prompt_shape.literal_chars} of template): "
                f"more than max_prompt_chars={self.max_prompt_chars}"
            )
        prompt = format_question(record.question, self.prompt_template)
        self._record = record
        self._done, self._turn, self._searches, self._invalid = False, 0, [], 0
        self._transcript = [prompt]
        info = {
            "question_id": self._record.id,
            "question": self._record.question,
            "data_source": self._record.data_source,
            "hops": self._record.metadata.get("hops"),
            "turn": 0,
        }
        return prompt, info

    def _pick(self, options: dict[str, Any]) -> QARecord:
        unknown = set(options) - {"index", "id", "question", "golden_answers"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}: use index, id, or question+golden_answers")
        if "question" in options:
            golds = options.get("golden_answers")
            if not golds or not all(isinstance(g, str) for g in golds):
                raise ValueError("reset option 'question' needs 'golden_answers', a non-empty list of strings")
            total = sum(len(g) for g in golds)
            if self.max_golden_chars is not None and total > self.max_golden_chars:
                # Every gold is normalised and matched at the episode's end: their size is that step's cost.
                raise GoldenAnswersTooLong(
                    f"golden_answers of {total} characters in all ({len(golds)} answers): more than "
                    f"max_golden_chars={self.max_golden_chars}"
                )
            custom_id = str(options.get("id", "custom"))
            question = replace_lone_surrogates(str(options["question"]))  # it goes into the prompt: text only
            return QARecord(id=custom_id, question=question, golden_answers=golds)
        if "id" in options:
            for record in self.records:
                if record.id == str(options["id"]):
                    return record
            raise ValueError(f"no question with id {options['id']!r}")
        if "index" in options:
            index = options["index"]
            if not isinstance(index, int) or not 0 <= index < len(self.records):
                raise ValueError(f"index must be an int in [0, {len(self.records)}), got {index!r}")
            return self.records[index]
        return self.records[int(self.np_random.integers(len(self.records)))]

    # -- step -------------------------------------------------------------------------------------
    def plan_step(self, action: str) -> StepPlan:
        """Check and parse an action without changing the episode.

        Raises TypeError (not a str), ActionTooLong, EpisodeNotStarted or EpisodeOver. Lone
        surrogates in the action become U+FFFD: they are not text, and neither a retriever nor a
        JSON answer (the env server's) can carry them.
        """
        if not isinstance(action, str):
            raise TypeError(f"an action is the text of one turn (str), got {type(action).__name__}")
        if len(action) > self.max_action_chars:
            raise ActionTooLong(f"action of {len(action)} characters exceeds max_action_chars={self.max_action_chars}")
        if self._record is None:
            raise EpisodeNotStarted("step() before reset(): call reset() first")
        if self._done:
            raise EpisodeOver("the episode has ended: call reset() to start another")
        return StepPlan(parse_action(replace_lone_surrogates(action)))

    def apply_step(self, plan: StepPlan, search: SearchOutcome | None = None) -> StepResult:
        """Advance the episode by a planned step; `search` is its search's outcome, if it searched."""
        assert self._record is not None
        kind = plan.action.kind
        self._turn += 1
        if kind != "search":
            search = None
        elif search is None:
            search = SearchOutcome(plan.action.content)  # not searched: no documents
        info: dict[str, Any] = {
            "turn": self._turn,
            "action_type": kind,
            "valid_action": kind != "invalid",
            "is_search": kind == "search",
            "query": search.query if search else None,  # as searched, fitted to the retriever's limits
            "query_changes": list(search.changes) if search else [],
            "search_error": search.error if search else None,
            "retrieved_ids": [],
        }
        reward: float = 0.0
        terminated = False
        if search is not None:
            self._searches.append(search.query)
            info["retrieved_ids"] = [d.document.id for d in search.documents]
            if search.error is not None:
                observation = search_error_block(search.error, self.max_obs_chars)
            else:
                contents = [d.document.contents for d in search.documents]
                observation = information_block(contents, self.max_obs_chars)
        elif kind == "answer":
            observation, terminated = "", True
        else:
            self._invalid += 1
            observation = INVALID_ACTION_MESSAGE
        truncated = not terminated and self._turn >= self.max_turns
        info["num_searches"] = len(self._searches)
        info["invalid_actions"] = self._invalid
        if terminated or truncated:
            # The episode's queries once, at its end: in every step's info they would make step replies
            # grow with the episode (each step repeating all earlier searches; the step's own is `query`).
            info["searches"] = list(self._searches)
            self._done = True
            answer = plan.action.content if terminated else None
            metrics = answer_metrics(answer, self._record.golden_answers)
            reward = episode_reward(metrics, answered=answer is not None, config=self.reward_config)
            info |= metrics | {
                "answer": answer,
                "well_formed": bool(answer),
                "golden_answers": list(self._record.golden_answers),
                "question_id": self._record.id,
            }
        self._transcript.append(f"[turn {self._turn}: {kind}]{observation}")
        return observation, reward, terminated, truncated, info

    def step(self, action: str) -> StepResult:
        """One turn. Raises only for a bad call (see plan_step); a failed search is the observation."""
        plan = self.plan_step(action)
        search = search_queries(self.retriever, [plan.query], self.topk)[0] if plan.query is not None else None
        return self.apply_step(plan, search)

    async def astep(self, action: str) -> StepResult:
        """step() for asyncio callers: the search is awaited, not blocking the loop."""
        plan = self.plan_step(action)
        search = None
        if plan.query is not None:
            search = (await asearch_queries(self.retriever, [plan.query], self.topk))[0]
        return self.apply_step(plan, search)

    # -- the rest ---------------------------------------------------------------------------------
    @property
    def question(self) -> QARecord | None:
        return self._record

    @property
    def done(self) -> bool:
        return self._done

    @property
    def turn(self) -> int:
        return self._turn

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return "\n".join(self._transcript)
        return None

    def close(self) -> None:
        if self._owns_client:
            self.retriever.close()
        super().close()


def batched_step(
    envs: Sequence[SearchQAEnv], actions: Sequence[str], retriever: RetrieverClient | None = None
) -> list[StepResult]:
    """Step many envs with ONE `/retrieve` request for all their searches (per distinct topk).

    Every action is checked before anything is sent (plan_step raises for a bad call, and then no
    env has changed). A search the retriever refuses or fails is that env's observation alone; the
    other envs get their documents (env_search).
    """
    if len(envs) != len(actions):
        raise ValueError(f"{len(envs)} envs but {len(actions)} actions")
    plans = [env.plan_step(a) for env, a in zip(envs, actions, strict=True)]
    searches: list[SearchOutcome | None] = [None] * len(envs)
    by_topk: dict[int, list[int]] = {}
    for i, plan in enumerate(plans):
        if plan.query is not None:
            by_topk.setdefault(envs[i].topk, []).append(i)
    client = retriever or (envs[0].retriever if envs else None)
    for topk, idx in by_topk.items():
        assert client is not None
        outcomes = search_queries(client, [plans[i].query or "" for i in idx], topk)
        for i, outcome in zip(idx, outcomes, strict=True):
            searches[i] = outcome
    return [env.apply_step(plan, search) for env, plan, search in zip(envs, plans, searches, strict=True)]
